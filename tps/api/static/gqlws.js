/* A tiny graphql-transport-ws client (no bundler, no dependencies).
 *
 * TPS serves GraphQL subscriptions on the same path as queries. This client keeps one
 * websocket, subscribes any number of operations over it, answers pings, and on a
 * dropped connection reconnects with backoff and re-subscribes everything still wanted,
 * so a page left open survives a TPS restart.
 *
 *   const client = new TpsGraphQLWs("/graphql", {onStatus: (s) => ...});
 *   const stop = client.subscribe({query, variables}, {next, error, complete});
 */
(function (global) {
  "use strict";

  function wsUrl(path) {
    const url = new URL(path, global.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  class TpsGraphQLWs {
    constructor(path, options) {
      this.url = wsUrl(path || "/graphql");
      this.options = options || {};
      this.subs = new Map(); // id -> {payload, sink}
      this.nextId = 1;
      this.ws = null;
      this.acked = false;
      this.retry = 0;
      this.timer = null;
      this.closed = false;
    }

    status(state, detail) {
      if (this.options.onStatus) this.options.onStatus(state, detail);
    }

    connect() {
      if (this.ws || this.closed) return;
      this.status("connecting");
      const ws = new WebSocket(this.url, "graphql-transport-ws");
      this.ws = ws;
      this.acked = false;
      ws.onopen = () => {
        const payload = this.options.connectionParams ? this.options.connectionParams() : {};
        ws.send(JSON.stringify({type: "connection_init", payload: payload || {}}));
      };
      ws.onmessage = (event) => this.onMessage(event.data);
      ws.onclose = (event) => this.onClose(event);
      ws.onerror = () => {}; // onclose follows and carries the details
    }

    onMessage(data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch (e) {
        return; // not ours to crash on; the server speaks JSON
      }
      const sub = msg.id !== undefined ? this.subs.get(msg.id) : undefined;
      switch (msg.type) {
        case "connection_ack":
          this.acked = true;
          this.retry = 0;
          this.status("live");
          for (const [id, s] of this.subs) this.sendSubscribe(id, s.payload);
          break;
        case "ping":
          this.send({type: "pong"});
          break;
        case "next":
          if (sub) sub.sink.next(msg.payload);
          break;
        case "error":
          if (sub) {
            this.subs.delete(msg.id);
            if (sub.sink.error) sub.sink.error(msg.payload);
          }
          break;
        case "complete":
          if (sub) {
            this.subs.delete(msg.id);
            if (sub.sink.complete) sub.sink.complete();
          }
          break;
        default:
          break;
      }
    }

    onClose(event) {
      this.ws = null;
      this.acked = false;
      if (this.closed) return;
      // Nothing wanted any more: stay closed until the next subscribe().
      if (this.subs.size === 0) {
        this.status("idle");
        return;
      }
      const delay = Math.min(10000, 500 * Math.pow(2, this.retry++));
      this.status("offline", "closed (" + event.code + (event.reason ? " " + event.reason : "") +
        "); retrying in " + Math.round(delay / 1000) + " s");
      this.timer = setTimeout(() => {
        this.timer = null;
        this.connect();
      }, delay);
    }

    send(msg) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    }

    sendSubscribe(id, payload) {
      this.send({id: id, type: "subscribe", payload: payload});
    }

    /* Subscribe; returns a function that unsubscribes. */
    subscribe(payload, sink) {
      const id = String(this.nextId++);
      this.subs.set(id, {payload: payload, sink: sink});
      if (this.acked) this.sendSubscribe(id, payload);
      else this.connect();
      return () => {
        if (this.subs.delete(id) && this.acked) this.send({id: id, type: "complete"});
      };
    }

    /* The same subscription as an async iterator (what GraphiQL's fetcher may return). */
    iterate(payload) {
      const queue = [];
      let wake = null;
      let done = false;
      const push = (item) => {
        queue.push(item);
        if (wake) {
          wake();
          wake = null;
        }
      };
      const stop = this.subscribe(payload, {
        next: (value) => push({value: value}),
        error: (errors) => push({value: {errors: errors}, last: true}),
        complete: () => push({last: true}),
      });
      return {
        [Symbol.asyncIterator]() {
          return this;
        },
        async next() {
          while (!done) {
            if (queue.length) {
              const item = queue.shift();
              if (item.last) done = true;
              if (item.value !== undefined) return {value: item.value, done: false};
            } else {
              await new Promise((resolve) => (wake = resolve));
            }
          }
          return {value: undefined, done: true};
        },
        async return() {
          done = true;
          stop();
          return {value: undefined, done: true};
        },
      };
    }

    close() {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.ws) this.ws.close(1000, "bye");
    }
  }

  global.TpsGraphQLWs = TpsGraphQLWs;
})(window);
