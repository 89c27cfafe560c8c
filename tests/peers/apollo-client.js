// What an Apollo Client 3 user sees of TPS: HttpLink for queries and mutations,
// GraphQLWsLink (graphql-ws) for subscriptions, InMemoryCache. Prints one JSON object
// with what each check observed; tests/test_real_clients.py asserts on it.
//
//   node apollo-client.js '{"http": "...", "ws": "...", "token": "...", "stream": "sat1"}'
'use strict';

const WebSocket = require('ws');
const { createClient } = require('graphql-ws');
const {
  ApolloClient, InMemoryCache, HttpLink, split, gql,
} = require('@apollo/client/core');
const { GraphQLWsLink } = require('@apollo/client/link/subscriptions');
const { getMainDefinition } = require('@apollo/client/utilities');

const config = JSON.parse(process.argv[2]);
// Apollo's GraphQLWsLink tests errors against the global WebSocket, which browsers and
// Node 22 have and Node 20 lacks.
if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WebSocket;

function makeClient({ headers = {}, connectionParams = {} } = {}) {
  const wsClient = createClient({
    url: config.ws, webSocketImpl: WebSocket, connectionParams, retryAttempts: 0, lazy: true,
  });
  const http = new HttpLink({ uri: config.http, headers });
  const ws = new GraphQLWsLink(wsClient);
  // Everything goes over the socket when asked (to check mutations there too).
  const link = split(({ query, getContext }) => {
    const def = getMainDefinition(query);
    return getContext().overSocket
      || (def.kind === 'OperationDefinition' && def.operation === 'subscription');
  }, ws, http);
  return { client: new ApolloClient({ link, cache: new InMemoryCache() }), wsClient };
}

// An ApolloError as the fields a user's code reads.
function describe(error) {
  return {
    networkError: error.networkError ? String(error.networkError.message || error.networkError) : null,
    statusCode: error.networkError && error.networkError.statusCode || null,
    graphQLErrors: (error.graphQLErrors || []).map((e) => ({
      message: e.message, extensions: e.extensions || {},
    })),
    // graphql-ws reports subscription errors as a plain array of GraphQL errors.
    errors: Array.isArray(error) ? error.map((e) => ({ message: e.message, extensions: e.extensions || {} })) : undefined,
    message: error.message,
    stack: process.env.TPS_DEBUG_STACK ? String(error.stack) : undefined,
  };
}

async function attempt(fn) {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error: describe(error) };
  }
}

function firstEvent(client, query, variables, timeoutMs = 10000) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { sub.unsubscribe(); resolve({ ok: false, timeout: true }); }, timeoutMs);
    const sub = client.subscribe({ query, variables }).subscribe({
      next: (result) => {
        clearTimeout(timer);
        sub.unsubscribe();
        if (result.errors && result.errors.length) {
          resolve({ ok: false, error: describe({ graphQLErrors: result.errors }) });
        } else {
          resolve({ ok: true, value: result.data });
        }
      },
      error: (error) => { clearTimeout(timer); resolve({ ok: false, error: describe(error) }); },
    });
  });
}

async function main() {
  const out = {};
  const anon = makeClient();
  const wrong = makeClient({ headers: { Authorization: 'Bearer wrong-token' },
    connectionParams: { token: 'wrong-token' } });
  const admin = makeClient({ headers: { Authorization: `Bearer ${config.token}` },
    connectionParams: { token: config.token } });
  const stream = config.stream;

  out.current = await attempt(async () => (await anon.client.query({
    query: gql`query Current($s: String) { currentTemperature(stream: $s) { time value stream } }`,
    variables: { s: stream },
  })).data);

  out.badDateTime = await attempt(() => anon.client.query({
    query: gql`{ temperatureStatistics(after: "yesterday") { count } }`,
  }));

  out.badDateTimeVariable = await attempt(() => anon.client.query({
    query: gql`query Stats($after: DateTime) { temperatureStatistics(after: $after) { count } }`,
    variables: { after: 'yesterday' },
  }));

  out.epochNanos = await attempt(async () => (await anon.client.query({
    query: gql`query Stats($after: DateTime) { temperatureStatistics(after: $after) { count } }`,
    variables: { after: '1690549200000000000' },
  })).data);

  out.unknownStream = await attempt(() => anon.client.query({
    query: gql`{ currentTemperature(stream: "nosuch") { value } }`,
  }));

  out.mutationWithoutToken = await attempt(() => anon.client.mutate({
    mutation: gql`mutation { toggleFeed(input: {status: off}) { status } }`,
  }));

  out.mutationWithWrongToken = await attempt(() => wrong.client.mutate({
    mutation: gql`mutation { toggleFeed(input: {status: off}) { status } }`,
  }));

  out.streams = await attempt(async () => (await anon.client.query({
    query: gql`{ streams { id name state received protocol } }`,
  })).data);
  out.streamByName = await attempt(async () => (await anon.client.query({
    query: gql`query One($n: String!) { stream(name: $n) { id name state received } }`,
    variables: { n: stream },
  })).data);
  out.cacheKeys = Object.keys(anon.client.cache.extract());

  out.toggleOff = await attempt(async () => (await admin.client.mutate({
    mutation: gql`mutation Toggle($status: FeedStatus!, $s: String) {
      toggleFeed(input: {status: $status, stream: $s}) { status streams { id state } } }`,
    variables: { status: 'off', s: stream },
  })).data);
  out.toggleOnWithString = await attempt(async () => (await admin.client.mutate({
    mutation: gql`mutation { toggleFeed(input: {status: "on", stream: "${stream}"}) { status streams { id state } } }`,
  })).data);

  // Reads over a socket whose connection_init carried a wrong token.
  out.subscriptionWithWrongToken = await firstEvent(wrong.client,
    gql`subscription S($s: String) { temperature(stream: $s) { value stream } }`, { s: stream });
  out.mutationOverSocketWithWrongToken = await attempt(() => wrong.client.mutate({
    mutation: gql`mutation { toggleFeed(input: {status: off}) { status } }`,
    context: { overSocket: true },
  }));
  out.subscriptionToUnknownStream = await firstEvent(anon.client,
    gql`subscription { temperature(stream: "nosuch") { value } }`, {});

  // Paging through the stored readings of the stream, three pages.
  const pages = [];
  let cursor = null;
  for (let i = 0; i < 3; i += 1) {
    // eslint-disable-next-line no-await-in-loop
    const page = await attempt(async () => (await anon.client.query({
      query: gql`query Page($s: String, $c: String) {
        temperatureMeasurementsPage(stream: $s, first: 5, cursor: $c) {
          readings { time value stream } nextCursor hasMore } }`,
      variables: { s: stream, c: cursor },
      fetchPolicy: 'network-only',
    })).data);
    pages.push(page);
    if (!page.ok) break;
    cursor = page.value.temperatureMeasurementsPage.nextCursor;
  }
  out.pages = pages;

  for (const c of [anon, wrong, admin]) {
    c.client.stop();
    // eslint-disable-next-line no-await-in-loop
    await c.wsClient.dispose();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((error) => {
  process.stderr.write(`apollo-client.js failed: ${error && error.stack || error}\n`);
  process.exit(1);
});
