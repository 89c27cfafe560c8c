// `graphql-transport-ws` protocol peer (npm graphql-ws with ws), path /graphql.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');
const { useServer } = require('graphql-ws/lib/use/ws');
const { schema, options, makeRoot, ready } = require('./schema');

const { port, intervalMs } = options();
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ server, path: '/graphql' });
useServer({ schema, roots: { subscription: makeRoot(intervalMs) } }, wss);
server.listen(port, '127.0.0.1', () => ready('modern', server));
