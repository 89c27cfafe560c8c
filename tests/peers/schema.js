// Shared schema of the independent test peers: `subscription { temperature }` emits
// 1.0, 2.0, 3.0, ... (a per-subscription sequence, so a test can see any gap) every
// INTERVAL seconds.
'use strict';

const { buildSchema } = require('graphql');

const schema = buildSchema(`
  type Query { ping: String }
  type Subscription { temperature: Float, humidity: Float }
`);

function options() {
  // argv: [port] [interval-seconds]; env PORT / INTERVAL as fallbacks.
  const port = Number(process.argv[2] || process.env.PORT || 0);
  const interval = Number(process.argv[3] || process.env.INTERVAL || 0.5);
  return { port, intervalMs: Math.max(0, interval * 1000) };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function makeRoot(intervalMs) {
  async function* sequence(field) {
    let n = 0;
    for (;;) {
      await sleep(intervalMs);
      n += 1;
      yield { [field]: n, humidity: n };
    }
  }
  return {
    temperature: () => sequence('temperature'),
    humidity: () => sequence('humidity'),
  };
}

function ready(name, server) {
  // Tests wait for this exact line; the port is the one the OS gave us.
  process.stdout.write(`READY ${name} port=${server.address().port}\n`);
}

module.exports = { schema, options, makeRoot, ready };
