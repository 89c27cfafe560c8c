// GraphiQL's fetcher as TPS serves it (tps/api/static/graphiql-init.js): subscriptions
// through tps/api/static/gqlws.js with the headers editor's content as connection_init
// payload, everything else POSTed with those headers. Runs the page's own gqlws.js in
// node (a window shim and the ws package's WebSocket) and prints one JSON object.
//
//   node graphiql-fetcher.js '{"http": "http://127.0.0.1:PORT/graphql", "headers": {...}}'
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');
const WebSocket = require('ws');

const config = JSON.parse(process.argv[2]);
const source = fs.readFileSync(
  path.join(__dirname, '..', '..', 'tps', 'api', 'static', 'gqlws.js'), 'utf8');
const window = { location: { href: config.http } };
vm.runInNewContext(source, {
  window, WebSocket, URL, JSON, Map, Promise, Symbol, setTimeout, clearTimeout, console,
});

async function firstOf(iterator, timeoutMs) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ timeout: true }), timeoutMs);
  });
  const first = iterator.next().then((item) => ({ value: item.value }));
  const result = await Promise.race([first, timeout]);
  clearTimeout(timer);
  await iterator.return();
  return result;
}

async function main() {
  const headers = config.headers || {};
  const statuses = [];
  const ws = new window.TpsGraphQLWs('/graphql', {
    connectionParams: () => headers,
    onStatus: (state, detail) => statuses.push(detail ? `${state}: ${detail}` : state),
  });
  const out = {};
  out.subscription = await firstOf(ws.iterate({
    query: 'subscription { temperature { value stream } }',
  }), 10000);
  out.unknownStream = await firstOf(ws.iterate({
    query: 'subscription { temperature(stream: "nosuch") { value } }',
  }), 10000);
  const response = await fetch(config.http, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
    body: JSON.stringify({ query: 'mutation { toggleFeed(input: {status: off}) { status } }' }),
  });
  out.mutation = { status: response.status, body: await response.json() };
  out.statuses = statuses;
  ws.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error) => {
  process.stderr.write(`graphiql-fetcher.js failed: ${error && error.stack || error}\n`);
  process.exit(1);
});
