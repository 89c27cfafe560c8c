/* The TPS dashboard: current value, rolling average and state per stream, a live chart,
 * and stop/start/add controls.
 *
 * Data sources, all on this server:
 *  - GET /api/streams every 2 s: the stream list, states and counters (REST);
 *  - one GraphQL query at load for the chart's recent history;
 *  - GraphQL subscriptions over a websocket for every new reading and each stream's
 *    rolling average. When the websocket is down the poll's last value still feeds
 *    the chart, so the page degrades instead of freezing.
 * Elements carry stable hooks for tests: tr[data-stream=NAME] .current/.average/.state,
 * button.stop/.start, #chart[data-points], #live-status[data-state].
 */
(function () {
  "use strict";

  const WINDOW_S = 5 * 60; // chart span
  const MAX_POINTS = 3000; // per stream, bounds memory if a feed is fast
  const POLL_MS = 2000;
  const AVG_WINDOW = 20;
  const TOKEN_KEY = "tps-control-token";
  const COLORS = ["#2962ff", "#e8710a", "#1e8e3e", "#c5221f", "#9334e6", "#12a4af", "#b06000", "#5f6368"];

  const streams = new Map(); // name -> {info, row, points: [[t, v]], avg, stopAvg, color}
  const rows = document.getElementById("stream-rows");
  const template = document.getElementById("stream-row");
  const chartEl = document.getElementById("chart");
  const message = document.getElementById("message");
  const liveStatus = document.getElementById("live-status");
  let chart = null;
  let chartNames = "";
  let dirty = true;
  let wsLive = false;

  // ---- small helpers -------------------------------------------------------------

  /* Seconds since the epoch from an ISO 8601 string (any number of fraction digits)
   * or a number in s, ms or ns. */
  function toSeconds(time) {
    if (time === null || time === undefined) return NaN;
    if (typeof time === "number") {
      if (time > 1e17) return time / 1e9;
      if (time > 1e11) return time / 1e3;
      return time;
    }
    const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(String(time));
    if (!m) return Date.parse(time) / 1000;
    const frac = m[2] ? Number("0." + m[2]) : 0;
    return Date.parse(m[1] + (m[3] || "Z")) / 1000 + frac;
  }

  function fmtValue(v) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(2) : "\u2013";
  }

  function fmtTime(seconds) {
    if (!isFinite(seconds)) return "";
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function say(text, kind) {
    message.textContent = text;
    message.dataset.kind = kind || "info";
  }

  // ---- control token and REST calls ------------------------------------------------

  function getToken(ask) {
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (!token && ask) {
      token = window.prompt("Control token (TPS_CONTROL_TOKEN, or the token file in the data dir):");
      if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
    }
    return token ? token.trim() : null;
  }

  async function control(method, path, body) {
    const token = getToken(true);
    if (!token) {
      say("No control token given; nothing changed.", "error");
      return null;
    }
    const response = await fetch(path, {
      method: method,
      headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
      body: JSON.stringify(body || {}),
    });
    let payload = null;
    try {
      payload = await response.json();
    } catch (e) {
      payload = null;
    }
    if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    if (!response.ok) {
      const err = payload && payload.error ? payload.error : {};
      say((err.message || response.statusText) + " (HTTP " + response.status + ")", "error");
      return null;
    }
    return payload || {};
  }

  async function stopOrStart(name, action) {
    const result = await control("POST", "/api/streams/" + encodeURIComponent(name) + "/" + action);
    if (result) say(name + ": " + (action === "stop" ? "stopped" : "started"));
    poll();
  }

  // ---- streams table -------------------------------------------------------------

  function streamList(payload) {
    if (Array.isArray(payload)) return payload;
    if (payload && Array.isArray(payload.streams)) return payload.streams;
    return [];
  }

  function ensureStream(name) {
    let s = streams.get(name);
    if (s) return s;
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.stream = name;
    const color = COLORS[streams.size % COLORS.length];
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    row.querySelector(".name").append(swatch, document.createTextNode(name));
    row.querySelector("button.stop").addEventListener("click", () => stopOrStart(name, "stop"));
    row.querySelector("button.start").addEventListener("click", () => stopOrStart(name, "start"));
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    rows.append(row);
    s = {info: {}, row: row, points: [], avg: null, stopAvg: null, color: color};
    streams.set(name, s);
    s.stopAvg = live.subscribe(
      {
        query: "subscription ($stream: String) { averageTemperature(windowSize: " + AVG_WINDOW +
          ", stream: $stream) { value } }",
        variables: {stream: name},
      },
      {
        next: (payload) => {
          const data = payload && payload.data && payload.data.averageTemperature;
          if (data && typeof data.value === "number") {
            s.avg = data.value;
            renderRow(s);
          }
        },
        error: () => {},
      }
    );
    dirty = true;
    return s;
  }

  function dropStream(name) {
    const s = streams.get(name);
    if (!s) return;
    if (s.stopAvg) s.stopAvg();
    s.row.remove();
    streams.delete(name);
    dirty = true;
  }

  function addPoint(s, t, v) {
    if (!isFinite(t) || typeof v !== "number") return false;
    const pts = s.points;
    if (pts.length && t <= pts[pts.length - 1][0]) return false; // already have it
    pts.push([t, v]);
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    dirty = true;
    return true;
  }

  function clientAverage(s) {
    const tail = s.points.slice(-AVG_WINDOW);
    if (!tail.length) return null;
    return tail.reduce((sum, p) => sum + p[1], 0) / tail.length;
  }

  function renderRow(s) {
    const info = s.info;
    const row = s.row;
    const last = s.points.length ? s.points[s.points.length - 1] : null;
    const value = last ? last[1] : info.last_value;
    const time = last ? last[0] : toSeconds(info.last_time);
    row.querySelector(".current").textContent = fmtValue(value);
    row.querySelector(".current").dataset.value = typeof value === "number" ? String(value) : "";
    row.querySelector(".average").textContent = fmtValue(s.avg !== null ? s.avg : clientAverage(s));
    const state = row.querySelector(".state");
    state.textContent = info.state || "unknown";
    state.dataset.state = info.state || "unknown";
    row.querySelector(".error").textContent = info.last_error || "";
    row.querySelector(".received").textContent = info.received !== undefined ? info.received : "";
    row.querySelector(".rejected").textContent = info.rejected !== undefined ? info.rejected : "";
    row.querySelector(".time").textContent = fmtTime(time);
    row.title = (info.url || "") + (info.protocol ? " (" + info.protocol + ")" : "") +
      (info.reconnects ? ", " + info.reconnects + " reconnects" : "");
    row.querySelector("button.stop").disabled = info.state === "stopped";
    row.querySelector("button.start").disabled = info.state !== "stopped";
  }

  async function poll() {
    let list;
    try {
      const response = await fetch("/api/streams", {headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      list = streamList(await response.json());
    } catch (e) {
      liveStatus.title = "stream list unavailable: " + e.message;
      return;
    }
    const seen = new Set();
    for (const info of list) {
      if (!info || typeof info.name !== "string") continue;
      seen.add(info.name);
      const s = ensureStream(info.name);
      s.info = info;
      s.listed = true;
      // Without the websocket the poll is the only source of new points.
      if (!wsLive) addPoint(s, toSeconds(info.last_time), info.last_value);
      renderRow(s);
    }
    // Forget streams the server removed (not ones only known from live readings,
    // e.g. in the api role, where this process has no stream list).
    for (const [name, s] of Array.from(streams)) if (s.listed && !seen.has(name)) dropStream(name);
    if (!streams.size) {
      rows.innerHTML = '<tr class="empty"><td colspan="8">no streams yet - add one below</td></tr>';
    }
  }

  // ---- live readings -------------------------------------------------------------

  const live = new window.TpsGraphQLWs("/graphql", {
    onStatus: (state, detail) => {
      wsLive = state === "live";
      liveStatus.dataset.state = state;
      liveStatus.textContent = state === "live" ? "live" : state;
      liveStatus.title = detail || "live updates over the GraphQL websocket";
    },
  });

  function onReading(reading) {
    if (!reading || typeof reading.stream !== "string") return;
    const s = streams.get(reading.stream) || ensureStream(reading.stream);
    if (addPoint(s, toSeconds(reading.time), reading.value)) renderRow(s);
  }

  live.subscribe({query: "subscription { temperature { time value stream } }"}, {
    next: (payload) => {
      const data = payload && payload.data && payload.data.temperature;
      if (Array.isArray(data)) data.forEach(onReading);
      else onReading(data);
    },
    error: (errors) => say("live subscription failed: " + JSON.stringify(errors), "error"),
  });

  async function loadHistory() {
    const after = new Date(Date.now() - WINDOW_S * 1000).toISOString();
    const query = '{ temperatureMeasurements(after: "' + after + '", limit: 20000) { time value stream } }';
    try {
      const response = await fetch("/graphql", {
        method: "POST",
        headers: {"Content-Type": "application/json", Accept: "application/json"},
        body: JSON.stringify({query: query}),
      });
      const payload = await response.json();
      const items = (payload.data && payload.data.temperatureMeasurements) || [];
      const byStream = new Map();
      for (const r of items) {
        if (!r || typeof r.stream !== "string") continue;
        if (!byStream.has(r.stream)) byStream.set(r.stream, []);
        byStream.get(r.stream).push([toSeconds(r.time), r.value]);
      }
      for (const [name, pts] of byStream) {
        const s = ensureStream(name);
        pts.sort((a, b) => a[0] - b[0]);
        // History goes before whatever the websocket delivered meanwhile.
        const first = s.points.length ? s.points[0][0] : Infinity;
        const older = pts.filter((p) => p[0] < first && isFinite(p[0]) && typeof p[1] === "number");
        s.points = older.concat(s.points).slice(-MAX_POINTS);
        renderRow(s);
      }
      dirty = true;
    } catch (e) {
      // The chart fills from live readings anyway.
    }
  }

  // ---- chart ---------------------------------------------------------------------

  function chartData(names) {
    const horizon = Date.now() / 1000 - WINDOW_S;
    const rowsByTime = new Map();
    let count = 0;
    names.forEach((name, i) => {
      const s = streams.get(name);
      while (s.points.length && s.points[0][0] < horizon) s.points.shift();
      for (const [t, v] of s.points) {
        let r = rowsByTime.get(t);
        if (!r) rowsByTime.set(t, (r = new Array(names.length).fill(null)));
        r[i] = v;
        count++;
      }
    });
    const times = Array.from(rowsByTime.keys()).sort((a, b) => a - b);
    const data = [times];
    names.forEach((_, i) => data.push(times.map((t) => rowsByTime.get(t)[i])));
    return {data: data, count: count};
  }

  function chartSize() {
    return {width: Math.max(300, chartEl.clientWidth), height: 320};
  }

  function render() {
    if (!dirty) return;
    dirty = false;
    const names = Array.from(streams.keys()).sort();
    const {data, count} = chartData(names);
    if (!chart || chartNames !== names.join("\n")) {
      if (chart) chart.destroy();
      chartNames = names.join("\n");
      const series = [{label: "time"}].concat(names.map((name) => ({
        label: name,
        stroke: streams.get(name).color,
        width: 2,
        spanGaps: true,
        points: {show: false},
        value: (u, v) => fmtValue(v),
      })));
      const size = chartSize();
      chart = new uPlot({
        width: size.width,
        height: size.height,
        series: series,
        // At least a minute wide, so a fresh page draws a line growing to the right
        // instead of stretching two readings across the whole chart.
        scales: {x: {time: true, range: (u, min, max) => [min, Math.max(max, min + 60)]}},
        axes: [{}, {label: "\u00b0C", values: (u, ticks) => ticks.map((v) => v.toFixed(1))}],
        legend: {live: true},
      }, data, chartEl);
    } else {
      chart.setData(data);
    }
    chartEl.dataset.points = String(count);
  }

  window.addEventListener("resize", () => {
    if (chart) chart.setSize(chartSize());
  });

  // ---- controls ------------------------------------------------------------------

  document.getElementById("token-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (getToken(true)) say("Token stored for this browser tab.");
  });

  document.getElementById("add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const name = form.elements.name.value.trim();
    const url = form.elements.url.value.trim();
    const result = await control("POST", "/api/streams", {name: name, url: url});
    if (result) {
      say("Added " + name + ".");
      form.reset();
    }
    poll();
  });

  setInterval(render, 250);
  setInterval(() => {
    dirty = true; // the window slides even when nothing arrives
  }, 5000);
  setInterval(poll, POLL_MS);
  poll().then(loadHistory);
})();
