// What a graphql-ws (graphql-transport-ws) client user sees of TPS's WebSocket: the
// npm library's own client, as GraphiQL and Apollo's GraphQLWsLink use it. Prints one
// JSON object with what each check observed; tests/test_real_clients.py asserts on it.
//
//   node graphql-ws-client.js '{"ws": "...", "token": "...", "stream": "sat1"}'
'use strict';

const WebSocket = require('ws');
const { createClient } = require('graphql-ws');

const config = JSON.parse(process.argv[2]);

function client(connectionParams, closes) {
  return createClient({
    url: config.ws,
    webSocketImpl: WebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: false,
    on: { closed: (event) => closes.push({ code: event.code, reason: event.reason }) },
  });
}

function errorsOf(error) {
  if (Array.isArray(error)) return error.map((e) => ({ message: e.message, extensions: e.extensions || {} }));
  if (error && typeof error.code === 'number') return [{ message: `socket closed ${error.code} ${error.reason}` }];
  return [{ message: String(error && error.message || error) }];
}

// The first result (or the error) of one operation.
function once(c, query, variables = {}, timeoutMs = 10000) {
  return new Promise((resolve) => {
    let dispose = () => {};
    const timer = setTimeout(() => { dispose(); resolve({ timeout: true }); }, timeoutMs);
    dispose = c.subscribe({ query, variables }, {
      next: (result) => { clearTimeout(timer); dispose(); resolve({ result }); },
      error: (error) => { clearTimeout(timer); resolve({ errors: errorsOf(error) }); },
      complete: () => { clearTimeout(timer); resolve({ completed: true }); },
    });
  });
}

async function main() {
  const out = {};
  const wrongCloses = [];
  const wrong = client({ token: 'wrong-token' }, wrongCloses);
  out.readWithWrongToken = await once(wrong,
    'subscription S($s: String) { temperature(stream: $s) { value stream } }', { s: config.stream });
  out.mutationWithWrongToken = await once(wrong,
    'mutation { toggleFeed(input: {status: off}) { status } }');
  out.unknownStream = await once(wrong, 'subscription { temperature(stream: "nosuch") { value } }');
  out.queryAfterErrors = await once(wrong, '{ streams { id } }');
  out.closesWhileInUse = [...wrongCloses];
  await wrong.dispose();

  const adminCloses = [];
  const admin = client({ token: config.token }, adminCloses);
  out.mutationWithToken = await once(admin,
    'mutation T($s: String) { toggleFeed(input: {status: on, stream: $s}) { status } }', { s: config.stream });
  await admin.dispose();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error) => {
  process.stderr.write(`graphql-ws-client.js failed: ${error && error.stack || error}\n`);
  process.exit(1);
});
