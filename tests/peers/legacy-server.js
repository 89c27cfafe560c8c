// Legacy `graphql-ws` protocol peer (npm subscriptions-transport-ws), path /graphql.
'use strict';

const http = require('http');
const { execute, subscribe } = require('graphql');
const { SubscriptionServer } = require('subscriptions-transport-ws');
const { schema, options, makeRoot, ready } = require('./schema');

const { port, intervalMs } = options();
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
SubscriptionServer.create(
  { schema, execute, subscribe, rootValue: makeRoot(intervalMs), keepAlive: 1000 },
  { server, path: '/graphql' },
);
server.listen(port, '127.0.0.1', () => ready('legacy', server));
