/* Mounts GraphiQL (vendored UMD build) on the TPS GraphQL endpoint.
 *
 * Queries and mutations are POSTed as JSON; subscriptions go over TPS's websocket
 * (graphql-transport-ws) through the small client in gqlws.js. The example tabs come
 * from the server (the seed README's smoke-test queries) in #graphiql-config.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("graphiql-config").textContent);
  const endpoint = config.endpoint || "/graphql";
  let ws = null;

  function isSubscription(params) {
    const query = params.query || "";
    if (params.operationName) {
      const named = new RegExp("\\bsubscription\\s+" + params.operationName + "\\b");
      if (named.test(query)) return true;
      return false;
    }
    return /^\s*subscription\b/.test(query.replace(/^\s*(#[^\n]*\n\s*)*/, ""));
  }

  async function fetcher(params, options) {
    const headers = Object.assign({}, (options && options.headers) || {});
    if (isSubscription(params)) {
      if (!ws) {
        ws = new window.TpsGraphQLWs(endpoint, {
          connectionParams: () => headers,
        });
      }
      return ws.iterate({
        query: params.query,
        variables: params.variables || undefined,
        operationName: params.operationName || undefined,
      });
    }
    const response = await fetch(endpoint, {
      method: "POST",
      headers: Object.assign({"Content-Type": "application/json", Accept: "application/json"}, headers),
      body: JSON.stringify(params),
      credentials: "same-origin",
    });
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      return {errors: [{message: "HTTP " + response.status + ": " + text.slice(0, 500)}]};
    }
  }

  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: config.tabs,
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: false,
    })
  );
})();
