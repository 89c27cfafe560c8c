/* The TPS dashboard: streams with their alarm state, a chart at any range, alarms with
 * acknowledge and shelve, service health, CSV export.
 *
 * Data sources, all on this server:
 *  - GraphQL `streams` every 2 s: states, counters, limits and alarm state per stream;
 *  - GraphQL subscriptions over one websocket: every new reading (the live range and the
 *    table), each stream's rolling average, and `alarmEvents` for the alarm panel. When
 *    the websocket is down the poll's last value still feeds the live chart, so the page
 *    degrades instead of freezing;
 *  - history ranges: one `temperatureSeries` request (an alias per shown stream, buckets
 *    = the plot's width in pixels) and one `temperatureStatistics` for the same window;
 *  - `alarms(active: true)` and the last 24 h of `alarms(after:)` at load and after a
 *    reconnect; `/health` every 5 s;
 *  - REST for changes (add, stop, start, remove, acknowledge, shelve), with the control
 *    token typed in once per tab (kept in sessionStorage, sent only as a header).
 *
 * The view (range and stream) lives in the URL (`?range=6h&stream=sat1`, or
 * `?from=...&to=...` for a custom or zoomed window), so a link shows the same view.
 * User data (stream names, alarm comments) is only ever set as text, never as HTML.
 *
 * Stable hooks for the browser tests: tr[data-stream=NAME][data-alarm] .current/.average/
 * .state/.alarm-state, button.stop/.start/.remove, #chart[data-mode][data-streams][data-points]
 * [data-gaps][data-bands][data-limit-bands][data-interval][data-window] (the series'
 * "after/before" once drawn), #stats dd[data-stat],
 * #alarm-rows tr[data-alarm-id], #health dd[data-field], #live-status[data-state].
 */
(function () {
  "use strict";

  const L = window.TpsDash;
  const LIVE_S = L.RANGES.live;
  const MAX_LIVE_POINTS = 3000; // per stream, bounds memory if a feed is fast
  const MAX_SHOWN = 8; // streams drawn at once in the "all streams" view
  const POLL_MS = 2000;
  const HEALTH_MS = 5000;
  const AVG_WINDOW = 20;
  const RECENT_ALARMS_S = 24 * 3600;
  const MAX_RECENT_ALARMS = 20;
  const TOKEN_KEY = "tps-control-token";
  const COLORS = ["#2962ff", "#e8710a", "#1e8e3e", "#c5221f", "#9334e6", "#12a4af", "#b06000", "#5f6368"];
  const RANGE_TITLES = {
    live: "Live, last 5 minutes", "1h": "Last hour", "6h": "Last 6 hours", "24h": "Last 24 hours",
    "7d": "Last 7 days", "30d": "Last 30 days",
  };
  const PROTOCOL_NAMES = {graphql_ws: "graphql-ws", graphql_transport_ws: "graphql-transport-ws"};
  const ALARM_FIELDS = "id stream severity state value limit limitName triggeredAt updatedAt " +
    "mostSevereValue outOfLimits acknowledged acknowledgedAt acknowledgeComment shelvedUntil " +
    "shelveComment returnedAt clearedAt";
  const STREAMS_QUERY = "query DashboardStreams { streams { name state received rejected " +
    "lastValue lastTime lastError url protocol negotiatedProtocol reconnects alarmState " +
    "limits { yellowLow yellowHigh redLow redHigh staleAfter deadband persistence } } }";

  const el = (id) => document.getElementById(id);
  const rows = el("stream-rows");
  const chartEl = el("chart");
  const message = el("message");
  const liveStatus = el("live-status");
  const streamSelect = el("stream-select");
  const customForm = el("custom-range");

  const streams = new Map(); // name -> {info, row, points: [[t, v, iso]], avg, stopAvg, color, listed}
  const removed = new Map(); // name -> when removed here (ignore its late readings)
  const activeAlarms = new Map(); // id -> alarm (not CLEARED)
  const alarmRows = new Map(); // id -> <tr>
  let recentAlarms = []; // newest first
  let view = L.parseView(window.location.search);
  let series = null; // {from, to, interval, points, names, byStream: Map name -> buckets}
  let chart = null;
  let chartKey = "";
  let dirty = true;
  let wsLive = false;
  let seriesSeq = 0;
  let seriesInFlight = false;
  let seriesTriedAt = 0;
  let statsSeq = 0;
  let refreshTimer = null;
  let loadGeneration = 0;
  let pollSoon = null;

  // ---- small helpers -------------------------------------------------------------

  function say(text, kind) {
    message.textContent = text;
    message.dataset.kind = kind || "info";
  }

  function now() {
    return Date.now() / 1000;
  }

  function isoOf(seconds) {
    return new Date(seconds * 1000).toISOString();
  }

  function hexToRgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function colorOf(name) {
    const s = streams.get(name);
    return s ? s.color : COLORS[0];
  }

  function setTime(timeEl, seconds, iso) {
    timeEl.textContent = L.fmtDateTime(seconds);
    const text = L.isoUtc(iso, seconds);
    if (text) timeEl.setAttribute("datetime", text);
    else timeEl.removeAttribute("datetime");
  }

  function emptyRow(tbody, columns, text) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = document.createElement("td");
    td.colSpan = columns;
    td.textContent = text;
    tr.append(td);
    tbody.replaceChildren(tr);
  }

  class GraphQLError extends Error {
    constructor(errors) {
      super(errors.map((e) => e.message).join("; "));
      this.errors = errors;
    }
  }

  /* POST a GraphQL read; returns `data`. Throws GraphQLError when there is no data,
   * and reports partial errors (e.g. one unknown stream) through `onErrors`. */
  async function gql(query, variables, onErrors) {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: {"Content-Type": "application/json", Accept: "application/json"},
      body: JSON.stringify({query: query, variables: variables || {}}),
    });
    const payload = await response.json();
    const errors = Array.isArray(payload.errors) ? payload.errors : [];
    if (!payload.data) throw new GraphQLError(errors.length ? errors : [{message: "HTTP " + response.status}]);
    if (errors.length && onErrors) onErrors(new GraphQLError(errors));
    return payload.data;
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

  /* A changing REST call with the control token; returns the JSON answer ({} when
   * empty) or null after saying what went wrong. */
  async function control(method, path, body) {
    const token = getToken(true);
    if (!token) {
      say("No control token given; nothing changed.", "error");
      return null;
    }
    const init = {method: method, headers: {"Authorization": "Bearer " + token}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      say("TPS did not answer: " + e.message, "error");
      return null;
    }
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
    const result = await control("POST", "/api/streams/" + encodeURIComponent(name) + "/" + action, {});
    if (result) say(name + ": " + (action === "stop" ? "stopped" : "started"));
    poll();
  }

  async function removeStream(name) {
    if (!window.confirm("Remove stream " + name + "? Its reader stops; readings already stored stay.")) return;
    const result = await control("DELETE", "/api/streams/" + encodeURIComponent(name));
    if (result) {
      say("Removed " + name + ".");
      removed.set(name, now());
      dropStream(name);
      if (view.stream === name) setView({range: view.range, from: view.from, to: view.to, stream: null}, true);
    }
    poll();
  }

  // ---- streams table -------------------------------------------------------------

  function ensureStream(name) {
    let s = streams.get(name);
    if (s) return s;
    const row = el("stream-row").content.firstElementChild.cloneNode(true);
    row.dataset.stream = name;
    const pick = row.querySelector("button.pick");
    pick.textContent = name;
    pick.title = "show " + name + " on the chart";
    pick.addEventListener("click", () => setView({range: view.range, from: view.from, to: view.to,
      stream: view.stream === name ? null : name}, true));
    row.querySelector("button.stop").addEventListener("click", () => stopOrStart(name, "stop"));
    row.querySelector("button.start").addEventListener("click", () => stopOrStart(name, "start"));
    row.querySelector("button.remove").addEventListener("click", () => removeStream(name));
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    rows.append(row);
    s = {info: {}, row: row, points: [], avg: null, stopAvg: null, color: COLORS[0], listed: false};
    streams.set(name, s);
    sortRows();
    recolor();
    s.stopAvg = live.subscribe(
      {
        query: "subscription DashboardAverage($stream: String) { averageTemperature(windowSize: " +
          AVG_WINDOW + ", stream: $stream) { value } }",
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
    syncStreamOptions();
    dirty = true;
    return s;
  }

  function dropStream(name) {
    const s = streams.get(name);
    if (!s) return;
    if (s.stopAvg) s.stopAvg();
    s.row.remove();
    streams.delete(name);
    recolor();
    syncStreamOptions();
    if (!streams.size) emptyRow(rows, 9, "no streams yet - add one below");
    dirty = true;
  }

  /* Rows in name order (readings may create them in any order). */
  function sortRows() {
    const names = Array.from(streams.keys()).sort();
    const current = Array.from(rows.querySelectorAll("tr.stream")).map((tr) => tr.dataset.stream);
    if (current.join("\n") !== names.join("\n")) rows.append(...names.map((name) => streams.get(name).row));
  }

  /* Colours follow the names' order, so a stream keeps its colour from page to page
   * (and in a shared link) whatever order its readings arrived in. */
  function recolor() {
    Array.from(streams.keys()).sort().forEach((name, i) => {
      const s = streams.get(name);
      s.color = COLORS[i % COLORS.length];
      s.row.querySelector(".swatch").style.background = s.color;
    });
    chartKey = ""; // the series' colours changed: build the chart again
    dirty = true;
  }

  function addPoint(s, t, v, iso) {
    if (!isFinite(t) || typeof v !== "number") return false;
    const pts = s.points;
    if (pts.length && t <= pts[pts.length - 1][0]) return false; // already have it
    pts.push([t, v, iso || null]);
    if (pts.length > MAX_LIVE_POINTS) pts.splice(0, pts.length - MAX_LIVE_POINTS);
    if (view.range === "live") dirty = true;
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
    const value = last ? last[1] : info.lastValue;
    const time = last ? last[0] : L.toSeconds(info.lastTime);
    const current = row.querySelector(".current");
    current.textContent = L.fmtValue(value);
    current.dataset.value = typeof value === "number" ? String(value) : "";
    row.querySelector(".average").textContent = L.fmtValue(s.avg !== null ? s.avg : clientAverage(s));
    const level = info.alarmState || "OK";
    row.dataset.alarm = level;
    const badge = row.querySelector(".alarm-state");
    badge.textContent = level;
    badge.dataset.level = level;
    const state = row.querySelector(".state");
    state.textContent = info.state || "\u2013";
    state.dataset.state = info.state || "unknown";
    const protocol = info.negotiatedProtocol || info.protocol;
    row.querySelector(".protocol").textContent = protocol ? PROTOCOL_NAMES[protocol] || protocol : "";
    row.querySelector(".error").textContent = info.lastError || "";
    row.querySelector(".received").textContent = info.received !== undefined && info.received !== null ? info.received : "";
    row.querySelector(".rejected").textContent = info.rejected !== undefined && info.rejected !== null ? info.rejected : "";
    setTime(row.querySelector(".time time"), time, last ? last[2] : info.lastTime);
    row.title = (info.url || "") + (info.protocol ? " (protocol " + (PROTOCOL_NAMES[info.protocol] || info.protocol) + ")" : "") +
      (info.reconnects ? ", " + info.reconnects + " reconnects" : "");
    row.querySelector("button.stop").disabled = !info.state || info.state === "stopped";
    row.querySelector("button.start").disabled = info.state !== "stopped";
    row.querySelector("button.remove").disabled = !info.state;
    const pick = row.querySelector("button.pick");
    pick.setAttribute("aria-pressed", view.stream === s.row.dataset.stream ? "true" : "false");
  }

  async function poll() {
    let list;
    try {
      const data = await gql(STREAMS_QUERY);
      list = Array.isArray(data.streams) ? data.streams : [];
    } catch (e) {
      liveStatus.title = "stream list unavailable: " + e.message;
      return;
    }
    const seen = new Set();
    for (const info of list) {
      if (!info || typeof info.name !== "string") continue;
      seen.add(info.name);
      removed.delete(info.name);
      const s = ensureStream(info.name);
      if (info.name === shownLimitsStream() && JSON.stringify(info.limits) !== JSON.stringify(s.info.limits)) {
        dirty = true; // the limit bands change
      }
      s.info = info;
      s.listed = true;
      // Without the websocket the poll is the only source of new points.
      if (!wsLive) addPoint(s, L.toSeconds(info.lastTime), info.lastValue, info.lastTime);
      renderRow(s);
    }
    // Forget streams the server no longer lists (not ones only known from live readings,
    // e.g. in the api role before their first reading is stored).
    for (const [name, s] of Array.from(streams)) if (s.listed && !seen.has(name)) dropStream(name);
    if (!streams.size) emptyRow(rows, 9, "no streams yet - add one below");
    renderLimitsText();
  }

  function pollShortly() {
    if (pollSoon) return;
    pollSoon = setTimeout(() => {
      pollSoon = null;
      poll();
    }, 150);
  }

  function syncStreamOptions() {
    const names = Array.from(streams.keys()).sort();
    if (view.stream && !names.includes(view.stream)) names.push(view.stream);
    const have = Array.from(streamSelect.options).slice(1).map((o) => o.value);
    if (have.join("\n") !== names.join("\n")) {
      const options = names.map((name) => new Option(name, name));
      streamSelect.replaceChildren(new Option("all streams", ""), ...options);
    }
    streamSelect.value = view.stream || "";
  }

  // ---- live readings -------------------------------------------------------------

  const live = new window.TpsGraphQLWs("/graphql", {
    onStatus: (state, detail) => {
      const wasLive = wsLive;
      wsLive = state === "live";
      liveStatus.dataset.state = state;
      liveStatus.textContent = state === "live" ? "live" : state;
      liveStatus.title = detail || "live updates over the GraphQL websocket";
      // Alarm events may have been missed while the socket was down.
      if (wsLive && !wasLive) loadAlarms();
    },
  });

  function onReading(reading) {
    if (!reading || typeof reading.stream !== "string" || removed.has(reading.stream)) return;
    const s = streams.get(reading.stream) || ensureStream(reading.stream);
    if (addPoint(s, L.toSeconds(reading.time), reading.value, reading.time)) renderRow(s);
  }

  live.subscribe({query: "subscription DashboardReadings { temperature { time value stream } }"}, {
    next: (payload) => {
      const data = payload && payload.data && payload.data.temperature;
      if (Array.isArray(data)) data.forEach(onReading);
      else onReading(data);
    },
    error: (errors) => say("live subscription failed: " + JSON.stringify(errors), "error"),
  });

  /* The live range's first five minutes, from the store, before what the socket pushes. */
  async function loadRecent() {
    const after = isoOf(now() - LIVE_S);
    let items = [];
    try {
      const data = await gql("query DashboardRecent($after: DateTime) { temperatureMeasurements(" +
        "after: $after, limit: 20000) { time value stream } }", {after: after});
      items = data.temperatureMeasurements || [];
    } catch (e) {
      return; // the chart fills from live readings anyway
    }
    const byStream = new Map();
    for (const r of items) {
      if (!r || typeof r.stream !== "string" || removed.has(r.stream)) continue;
      if (!byStream.has(r.stream)) byStream.set(r.stream, []);
      byStream.get(r.stream).push([L.toSeconds(r.time), r.value, r.time]);
    }
    for (const [name, pts] of byStream) {
      const s = ensureStream(name);
      pts.sort((a, b) => a[0] - b[0]);
      // History goes before whatever the websocket delivered meanwhile.
      const first = s.points.length ? s.points[0][0] : Infinity;
      const older = pts.filter((p) => p[0] < first && isFinite(p[0]) && typeof p[1] === "number");
      s.points = older.concat(s.points).slice(-MAX_LIVE_POINTS);
      renderRow(s);
    }
    dirty = true;
  }

  // ---- the view: range, stream, URL ------------------------------------------------

  function isLive() {
    return view.range === "live";
  }

  /* Streams drawn: the selected one, or the first MAX_SHOWN by name. */
  function shownNames() {
    if (view.stream) return [view.stream];
    return Array.from(streams.keys()).sort().slice(0, MAX_SHOWN);
  }

  /* The stream whose limits are drawn: only when one stream is shown. */
  function shownLimitsStream() {
    const names = shownNames();
    return names.length === 1 ? names[0] : null;
  }

  function shownLimits() {
    const name = shownLimitsStream();
    const s = name ? streams.get(name) : null;
    return s && s.info ? s.info.limits || null : null;
  }

  /* The window on screen: the fetched one in history ranges, the sliding 5 minutes live. */
  function visibleWindow() {
    if (isLive()) {
      const t = now();
      return [t - LIVE_S, t];
    }
    if (series) return [series.from, series.to];
    return L.windowOf(view, now());
  }

  function setView(next, push) {
    view = {range: next.range, from: next.from, to: next.to, stream: next.stream || null};
    const url = window.location.pathname + L.viewToSearch(view);
    if (push) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
    applyView();
  }

  window.addEventListener("popstate", () => {
    view = L.parseView(window.location.search);
    applyView();
  });

  function applyView() {
    for (const button of document.querySelectorAll("#range-buttons button")) {
      button.setAttribute("aria-pressed", button.dataset.range === view.range ? "true" : "false");
    }
    syncStreamOptions();
    for (const s of streams.values()) renderRow(s);
    series = null;
    dirty = true;
    renderHeading();
    renderLimitsText();
    loadView();
  }

  function renderHeading() {
    const [from, to] = L.windowOf(view, now());
    let title = RANGE_TITLES[view.range];
    if (view.range === "custom") title = L.fmtDateTime(from) + " to " + L.fmtDateTime(to);
    el("chart-heading").textContent = title + " \u2013 " + (view.stream || "all streams");
    el("tz-note").textContent = "(times in " + L.zoneLabel(new Date()) + ")";
    customForm.elements.from.value = L.toLocalInput(from);
    customForm.elements.to.value = L.toLocalInput(to);
  }

  function renderLimitsText() {
    const name = shownLimitsStream();
    const limits = shownLimits();
    const text = el("limits-text");
    if (!name) {
      text.textContent = "Pick one stream to see its limits on the chart.";
    } else if (limits) {
      text.textContent = "Limits of " + name + " (shaded): " + L.describeLimits(limits) + ".";
    } else {
      text.textContent = name + " has no limits.";
    }
  }

  /* (Re)load what the view needs now, and schedule the next refresh of a sliding range. */
  async function loadView() {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = null;
    const generation = ++loadGeneration; // only the newest load schedules the next one
    const [from, to] = L.windowOf(view, now());
    const jobs = [loadStatistics(from, to)];
    if (!isLive()) jobs.push(loadSeries(from, to));
    await Promise.all(jobs);
    if (generation !== loadGeneration || view.range === "custom") return;
    // Sliding ranges refresh at their bucket interval (5 s to a minute).
    const every = isLive() ? 5000 : Math.min(60000, Math.max(5000, series && series.interval ? series.interval * 1000 : 5000));
    refreshTimer = setTimeout(loadView, every);
  }

  async function loadSeries(from, to) {
    const names = shownNames();
    const points = L.pointsForWidth(plotWidth());
    const seq = ++seriesSeq;
    if (!names.length) {
      series = {from: from, to: to, interval: null, points: points, names: names, byStream: new Map()};
      dirty = true;
      return;
    }
    // Names travel as variables, never inside the document text.
    const variables = {a: isoOf(from), b: isoOf(to), p: points};
    const defs = ["$a: DateTime!", "$b: DateTime!", "$p: Int!"];
    const fields = names.map((name, i) => {
      variables["s" + i] = name;
      defs.push("$s" + i + ": String");
      return "s" + i + ": temperatureSeries(after: $a, before: $b, points: $p, stream: $s" + i +
        ") { interval buckets { time min max mean count } }";
    });
    let data;
    seriesInFlight = true;
    seriesTriedAt = now();
    try {
      data = await gql("query DashboardSeries(" + defs.join(", ") + ") { " + fields.join(" ") + " }",
        variables, (err) => say("history: " + err.message, "error"));
    } catch (e) {
      if (seq === seriesSeq) say("history unavailable: " + e.message, "error");
      return;
    } finally {
      if (seq === seriesSeq) seriesInFlight = false;
    }
    if (seq !== seriesSeq) return; // a newer question is on its way
    const byStream = new Map();
    let interval = null;
    names.forEach((name, i) => {
      const answer = data["s" + i];
      if (!answer) return;
      interval = answer.interval;
      byStream.set(name, answer.buckets.map((b) => ({
        t: L.toSeconds(b.time), iso: b.time, min: b.min, max: b.max, mean: b.mean, count: b.count,
      })));
    });
    series = {from: from, to: to, interval: interval, points: points, names: names, byStream: byStream};
    dirty = true;
  }

  async function loadStatistics(from, to) {
    const seq = ++statsSeq;
    let stats = null;
    try {
      const data = await gql("query DashboardStatistics($a: DateTime!, $b: DateTime!, $s: String) { " +
        "temperatureStatistics(after: $a, before: $b, stream: $s) { min max mean count } }",
        {a: isoOf(from), b: isoOf(to), s: view.stream});
      stats = data.temperatureStatistics;
    } catch (e) {
      stats = null;
    }
    if (seq !== statsSeq) return;
    for (const key of ["count", "min", "mean", "max"]) {
      const dd = document.querySelector('#stats dd[data-stat="' + key + '"]');
      const value = stats ? stats[key] : null;
      dd.textContent = key === "count" ? (typeof value === "number" ? String(value) : "\u2013") : L.fmtValue(value);
      dd.dataset.value = typeof value === "number" ? String(value) : "";
    }
    el("stats-window").textContent = "(" + (view.stream || "all streams") + ", " + L.fmtDateTime(from) +
      " to " + L.fmtDateTime(to) + ")";
    el("stats").dataset.from = isoOf(from);
    el("stats").dataset.to = isoOf(to);
  }

  // ---- chart ---------------------------------------------------------------------

  function liveData(names) {
    const [from] = visibleWindow();
    const perStream = names.map((name) => {
      const s = streams.get(name);
      if (!s) return [];
      while (s.points.length && s.points[0][0] < from - 60) s.points.shift();
      const pts = s.points.filter((p) => p[0] >= from).map((p) => [p[0], p[1]]);
      return L.withGaps(pts, L.gapThreshold(pts.map((p) => p[0]), {minGap: 2}));
    });
    return L.align(perStream, 1);
  }

  function historyData(names) {
    const perStream = names.map((name) => {
      const buckets = (series && series.byStream.get(name)) || [];
      const pts = buckets.map((b) => [b.t, b.min, b.max, b.mean]);
      return L.withGaps(pts, L.gapThreshold(pts.map((p) => p[0]), {interval: series.interval || 1}));
    });
    return L.align(perStream, 3);
  }

  function plotWidth() {
    if (chart) return chart.bbox.width / (window.devicePixelRatio || 1);
    return Math.max(100, chartEl.clientWidth - 70);
  }

  function chartSize() {
    const narrow = window.matchMedia("(max-width: 700px)").matches;
    return {width: Math.max(200, chartEl.clientWidth), height: narrow ? 240 : 320};
  }

  /* The limits' zones, shaded behind the series, with a dashed line and a name at each
   * limit (the text says what the colour means). */
  function drawLimitZones(u) {
    const zones = L.limitZones(shownLimits());
    const drawn = [];
    if (zones.length) {
      const ctx = u.ctx;
      const {left, top, width, height} = u.bbox;
      const ratio = window.devicePixelRatio || 1;
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      for (const z of zones) {
        const yTo = z.to === Infinity ? top : u.valToPos(z.to, "y", true);
        const yFrom = z.from === -Infinity ? top + height : u.valToPos(z.from, "y", true);
        const y0 = Math.max(top, Math.min(yTo, yFrom));
        const y1 = Math.min(top + height, Math.max(yTo, yFrom));
        if (y1 - y0 < 0.5) continue; // outside the y range shown
        ctx.fillStyle = z.level === "critical" ? "rgba(217,48,37,0.14)" : "rgba(249,171,0,0.22)";
        ctx.fillRect(left, y0, width, y1 - y0);
        drawn.push(z.name);
        const limit = z.name.endsWith("High") ? z.from : z.to;
        const y = u.valToPos(limit, "y", true);
        if (y >= top && y <= top + height) {
          ctx.strokeStyle = z.level === "critical" ? "#c5221f" : "#b06000";
          ctx.lineWidth = ratio;
          ctx.setLineDash([6 * ratio, 4 * ratio]);
          ctx.beginPath();
          ctx.moveTo(left, y);
          ctx.lineTo(left + width, y);
          ctx.stroke();
          ctx.setLineDash([]);
          ctx.fillStyle = ctx.strokeStyle;
          ctx.font = 11 * ratio + "px system-ui, sans-serif";
          ctx.textAlign = "left"; // uPlot leaves its axes' alignment behind
          ctx.textBaseline = z.name.endsWith("High") ? "bottom" : "top";
          ctx.fillText(z.name + " " + limit, left + 4 * ratio, y + (z.name.endsWith("High") ? -2 : 2) * ratio);
        }
      }
      ctx.restore();
    }
    chartEl.dataset.limitBands = drawn.join(" ");
  }

  /* A drag across the chart: show that window (a finer series is fetched). */
  function onSelect(u) {
    const sel = u.select;
    if (!sel || sel.width < 4) return;
    const a = u.posToVal(sel.left, "x");
    const b = u.posToVal(sel.left + sel.width, "x");
    u.setSelect({left: 0, top: 0, width: 0, height: 0}, false);
    const [from, to] = L.zoomWindow(a, b, now());
    setView({range: "custom", from: from, to: to, stream: view.stream}, true);
  }

  function makeChart(mode, names, data) {
    const fmt = (u, v) => L.fmtValue(v);
    const seriesOpts = [{label: "time", value: (u, t) => (t === null || t === undefined ? "" : L.fmtDateTime(t))}];
    const bands = [];
    names.forEach((name, i) => {
      const color = colorOf(name);
      if (mode === "live") {
        seriesOpts.push({label: name, stroke: color, width: 2, spanGaps: false, value: fmt});
        return;
      }
      const base = 1 + i * 3;
      const edge = {stroke: hexToRgba(color, 0.5), width: 1, spanGaps: false, points: {show: false}, value: fmt};
      seriesOpts.push(Object.assign({label: name + " min"}, edge));
      seriesOpts.push(Object.assign({label: name + " max"}, edge));
      seriesOpts.push({label: name + " mean", stroke: color, width: 2, spanGaps: false, value: fmt});
      bands.push({series: [base + 1, base], fill: hexToRgba(color, 0.25)});
    });
    const size = chartSize();
    return new uPlot({
      width: size.width,
      height: size.height,
      series: seriesOpts,
      bands: bands,
      scales: {
        x: {time: true, range: () => visibleWindow()},
        y: {range: (u, min, max) => L.yRange(min, max, shownLimits())},
      },
      axes: [{space: 80}, {label: "\u00b0C", values: (u, ticks) => ticks.map((v) => v.toFixed(L.tickDecimals(ticks)))}],
      cursor: {drag: {x: true, y: false, setScale: false}},
      legend: {live: true},
      hooks: {drawClear: [drawLimitZones], setSelect: [onSelect]},
    }, data, chartEl);
  }

  function render() {
    if (!dirty) return;
    dirty = false;
    const mode = isLive() ? "live" : "history";
    const names = shownNames();
    const ready = mode === "live" || (series && series.names.join("\n") === names.join("\n"));
    // The streams shown changed (one appeared or went): ask again, at most every 5 s.
    if (!ready && !seriesInFlight && now() - seriesTriedAt > 5) loadView();
    const data = mode === "live" ? liveData(names) : ready ? historyData(names) : L.align(names.map(() => []), 3);
    const key = mode + "|" + names.join("\n");
    if (!chart || key !== chartKey) {
      if (chart) chart.destroy();
      chartKey = key;
      chart = makeChart(mode, names, data);
    } else {
      chart.setData(data);
    }
    let points = 0;
    let gaps = 0;
    const step = mode === "live" ? 1 : 3;
    for (let i = 1; i < data.length; i += step) {
      const column = mode === "live" ? data[i] : data[i + 2]; // the value or the mean
      for (const v of column) if (typeof v === "number") points++;
      gaps += L.countGaps(column);
    }
    chartEl.dataset.mode = mode;
    chartEl.dataset.streams = names.join(" ");
    chartEl.dataset.points = String(points);
    chartEl.dataset.gaps = String(gaps);
    chartEl.dataset.bands = mode === "history" && ready ? String(names.filter((n) => (series.byStream.get(n) || []).length).length) : "0";
    chartEl.dataset.interval = mode === "history" && ready && series.interval ? String(series.interval) : "";
    chartEl.dataset.loaded = mode === "live" || ready ? "true" : "false";
    chartEl.dataset.window = mode === "history" && ready ? isoOf(series.from) + "/" + isoOf(series.to) : "";
    const note = el("chart-note");
    if (mode === "history" && ready && series.interval) {
      note.textContent = L.fmtInterval(series.interval) + " buckets: shaded band from min to max, line = mean. " +
        "Drag across the chart to zoom in.";
    } else {
      note.textContent = "Raw readings as they arrive. Drag across the chart to zoom in.";
    }
    if (!view.stream && streams.size > MAX_SHOWN) {
      note.textContent += " Showing the first " + MAX_SHOWN + " streams; pick one to see it alone.";
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    if (chart) chart.setSize(chartSize());
    clearTimeout(resizeTimer);
    // A much wider or narrower plot wants a different number of buckets.
    resizeTimer = setTimeout(() => {
      if (series && !isLive() && Math.abs(L.pointsForWidth(plotWidth()) - series.points) > series.points * 0.2) loadView();
    }, 400);
  });

  // ---- CSV export ----------------------------------------------------------------

  /* The data on screen as CSV: raw readings live, series buckets otherwise (bucket
   * start times); ISO 8601 UTC times; gaps are not rows. */
  function exportCsv() {
    const names = shownNames();
    const [from, to] = visibleWindow();
    let header;
    const out = [];
    if (isLive()) {
      header = ["stream", "time", "value"];
      for (const name of names) {
        const s = streams.get(name);
        if (!s) continue;
        for (const p of s.points) if (p[0] >= from && p[0] <= to) out.push([p[0], name, L.isoUtc(p[2], p[0]), p[1]]);
      }
    } else {
      header = ["stream", "time", "min", "max", "mean", "count"];
      for (const name of names) {
        for (const b of (series && series.byStream.get(name)) || []) {
          out.push([b.t, name, L.isoUtc(b.iso, b.t), b.min, b.max, b.mean, b.count]);
        }
      }
    }
    out.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    const text = L.buildCsv(header, out.map((r) => r.slice(1)));
    const blob = new Blob([text], {type: "text/csv;charset=utf-8"});
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = L.csvFileName(view.stream, from, to);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
    say("Exported " + out.length + (isLive() ? " readings" : " buckets") + " as " + link.download + ".");
  }

  // ---- alarms --------------------------------------------------------------------

  async function loadAlarms() {
    let data;
    try {
      data = await gql("query DashboardAlarms($after: DateTime) { active: alarms(active: true) { " +
        ALARM_FIELDS + " } recent: alarms(after: $after) { " + ALARM_FIELDS + " } }",
      {after: isoOf(now() - RECENT_ALARMS_S)});
    } catch (e) {
      el("alarm-count").textContent = "unavailable";
      el("alarm-count").title = e.message;
      return;
    }
    activeAlarms.clear();
    for (const a of data.active || []) activeAlarms.set(a.id, a);
    recentAlarms = (data.recent || []).filter((a) => a.state === "CLEARED")
      .sort((a, b) => L.toSeconds(b.updatedAt) - L.toSeconds(a.updatedAt)).slice(0, MAX_RECENT_ALARMS);
    renderAlarms();
  }

  function upsertAlarm(alarm) {
    if (!alarm || typeof alarm.id !== "string") return;
    if (alarm.state === "CLEARED") {
      activeAlarms.delete(alarm.id);
      recentAlarms = [alarm].concat(recentAlarms.filter((a) => a.id !== alarm.id)).slice(0, MAX_RECENT_ALARMS);
    } else {
      activeAlarms.set(alarm.id, alarm);
    }
    renderAlarms();
  }

  live.subscribe({query: "subscription DashboardAlarmEvents { alarmEvents { type time comment alarm { " +
    ALARM_FIELDS + " } } }"}, {
    next: (payload) => {
      const event = payload && payload.data && payload.data.alarmEvents;
      if (!event) return;
      upsertAlarm(event.alarm);
      pollShortly(); // the rows' alarm state
    },
    error: () => {}, // a process without alarms; the panel says so from loadAlarms
  });

  function describeValue(a) {
    const v = typeof a.value === "number" ? a.value : null;
    if (a.severity === "STALE") {
      return "silent " + (v !== null ? Math.round(v) + " s" : "") + (a.limit !== null && a.limit !== undefined ? " (staleAfter " + a.limit + " s)" : "");
    }
    let text = L.fmtValue(v);
    if (a.limitName) text += " (" + a.limitName + " " + a.limit + ")";
    if (typeof a.mostSevereValue === "number" && a.mostSevereValue !== v) text += ", worst " + L.fmtValue(a.mostSevereValue);
    return text;
  }

  function describeState(a) {
    let text = a.state;
    if (a.state === "SHELVED" && a.shelvedUntil) text += " until " + L.fmtDateTime(L.toSeconds(a.shelvedUntil));
    return text;
  }

  function makeAlarmRow(a) {
    const row = el("alarm-row").content.firstElementChild.cloneNode(true);
    row.dataset.alarmId = a.id;
    row.querySelector("button.ack").addEventListener("click", () => alarmAction(a.id, "acknowledge", row));
    row.querySelector("button.shelve").addEventListener("click", () => alarmAction(a.id, "shelve", row));
    return row;
  }

  function renderAlarmRow(row, a) {
    row.dataset.state = a.state;
    row.dataset.severity = a.severity;
    const severity = row.querySelector(".severity");
    severity.textContent = a.severity;
    severity.dataset.level = a.severity;
    row.querySelector(".stream").textContent = a.stream;
    const state = row.querySelector(".lifecycle-body");
    state.textContent = describeState(a);
    const comment = a.acknowledgeComment || a.shelveComment;
    if (comment) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = "\u201c" + comment + "\u201d";
      state.append(note);
    }
    row.querySelector(".value").textContent = describeValue(a);
    setTime(row.querySelector(".since time"), L.toSeconds(a.triggeredAt), a.triggeredAt);
    row.querySelector("button.ack").disabled = !!a.acknowledged;
    row.querySelector("button.shelve").disabled = a.state === "SHELVED";
    row.querySelector("input.comment").setAttribute("aria-label", "comment for the " + a.severity + " alarm of " + a.stream);
  }

  const SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, STALE: 2};

  function renderAlarms() {
    const tbody = el("alarm-rows");
    const list = Array.from(activeAlarms.values()).sort((a, b) =>
      (SEVERITY_ORDER[a.severity] ?? 3) - (SEVERITY_ORDER[b.severity] ?? 3) ||
      L.toSeconds(b.triggeredAt) - L.toSeconds(a.triggeredAt));
    for (const [id, row] of Array.from(alarmRows)) {
      if (!activeAlarms.has(id)) {
        row.remove();
        alarmRows.delete(id);
      }
    }
    const empty = tbody.querySelector("tr.empty");
    if (list.length && empty) empty.remove();
    // New rows go where the order puts them; existing rows stay put, so a comment being
    // typed keeps its focus.
    list.forEach((a, i) => {
      let row = alarmRows.get(a.id);
      if (!row) {
        row = makeAlarmRow(a);
        alarmRows.set(a.id, row);
        const next = list.slice(i + 1).map((b) => alarmRows.get(b.id)).find((r) => r && r.parentNode === tbody);
        tbody.insertBefore(row, next || null);
      }
      renderAlarmRow(row, a);
    });
    if (!list.length) emptyRow(tbody, 6, "no open alarms");
    const count = el("alarm-count");
    count.textContent = list.length + " open";
    count.dataset.count = String(list.length);
    count.removeAttribute("title");

    const recent = el("alarm-recent");
    const items = recentAlarms.map((a) => {
      const li = document.createElement("li");
      li.dataset.alarmId = a.id;
      const badge = document.createElement("span");
      badge.className = "severity";
      badge.dataset.level = a.severity;
      badge.textContent = a.severity;
      const time = document.createElement("time");
      setTime(time, L.toSeconds(a.triggeredAt), a.triggeredAt);
      const text = " " + a.stream + ", " + describeValue(a) + ", cleared" +
        (a.acknowledgeComment ? " \u2013 \u201c" + a.acknowledgeComment + "\u201d" : "") + ", raised ";
      li.append(badge, document.createTextNode(text), time);
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "none";
      items.push(li);
    }
    recent.replaceChildren(...items);
  }

  async function alarmAction(id, action, row) {
    const input = row.querySelector("input.comment");
    const comment = input.value.trim();
    const body = comment ? {comment: comment} : {};
    if (action === "shelve") body.seconds = Number(row.querySelector("select.shelve-for").value);
    const result = await control("POST", "/api/alarms/" + encodeURIComponent(id) + "/" + action, body);
    if (!result || typeof result.id !== "string") return;
    input.value = "";
    upsertAlarm(result);
    say("Alarm of " + result.stream + " " + (action === "shelve" ? "shelved" : "acknowledged") + ".");
    pollShortly();
  }

  // ---- health ----------------------------------------------------------------------

  function setHealth(field, text, value) {
    const dd = document.querySelector('#health dd[data-field="' + field + '"]');
    dd.textContent = text;
    dd.dataset.value = value === undefined || value === null ? "" : String(value);
  }

  async function pollHealth() {
    let h;
    try {
      const response = await fetch("/health", {headers: {Accept: "application/json"}});
      h = await response.json();
    } catch (e) {
      const status = el("health-status");
      status.textContent = "unreachable";
      status.dataset.status = "unreachable";
      return;
    }
    const status = el("health-status");
    status.textContent = h.status || "unknown";
    status.dataset.status = h.status || "unknown";
    const store = h.store || {};
    setHealth("store", store.reachable ? "reachable" : "unreachable" + (store.error ? ": " + store.error : ""),
      store.reachable === true);
    const w = h.writer;
    if (w) {
      const age = w.oldest_unwritten_age_s;
      setHealth("lag", typeof age === "number" ? L.fmtDuration(age) : "nothing unwritten", typeof age === "number" ? age : 0);
      setHealth("backlog", w.buffered + (w.buffered === 1 ? " reading" : " readings") + " unwritten", w.buffered);
      const spool = w.spool || {};
      setHealth("spool", spool.enabled ? L.fmtBytes(spool.bytes) + " in " + spool.segments +
        (spool.segments === 1 ? " segment" : " segments") : "off", spool.enabled ? spool.bytes : "");
      setHealth("written", w.points_written + " points, " + w.write_failures + " failed writes" +
        (w.dropped ? ", " + w.dropped + " dropped" : ""), w.points_written);
    } else {
      for (const field of ["lag", "backlog", "spool", "written"]) setHealth(field, "no writer in this process", null);
    }
    setHealth("alarms", h.alarms ? String(h.alarms.open) : "\u2013", h.alarms ? h.alarms.open : null);
    const hist = h.history;
    if (hist) {
      const bf = hist.backfill || {};
      const hot = hist.hot;
      setHealth("history", "backfill " + (bf.state || "?") + (bf.state !== "done" && typeof bf.done === "number" ?
        " " + Math.round(bf.done * 100) + "%" : "") + (hot ? ", hot tier " + L.fmtBytes(hot.bytes) : ""), bf.state || "");
    } else {
      setHealth("history", "\u2013", null);
    }
    el("health-updated").textContent = "updated " + L.fmtDateTime(now());
  }

  // ---- controls ------------------------------------------------------------------

  el("token-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (getToken(true)) say("Token stored for this browser tab.");
  });

  el("add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const name = form.elements.name.value.trim();
    const url = form.elements.url.value.trim();
    const protocol = form.elements.protocol.value;
    removed.delete(name);
    const result = await control("POST", "/api/streams", {name: name, url: url, protocol: protocol});
    if (result) {
      say("Added " + name + (protocol !== "auto" ? " (" + protocol + ")" : "") + ".");
      form.reset();
    }
    poll();
  });

  for (const button of document.querySelectorAll("#range-buttons button")) {
    button.addEventListener("click", () => setView({range: button.dataset.range, from: null, to: null, stream: view.stream}, true));
  }

  streamSelect.addEventListener("change", () => {
    setView({range: view.range, from: view.from, to: view.to, stream: streamSelect.value || null}, true);
  });

  customForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const from = L.fromLocalInput(customForm.elements.from.value);
    const to = L.fromLocalInput(customForm.elements.to.value);
    if (!isFinite(from) || !isFinite(to) || to <= from) {
      say("The range needs a start before its end.", "error");
      return;
    }
    setView({range: "custom", from: from, to: to, stream: view.stream}, true);
  });

  el("zoom-out").addEventListener("click", () => {
    const [from, to] = visibleWindow();
    const [a, b] = L.zoomOutWindow(from, to, now(), 4);
    setView({range: "custom", from: a, to: b, stream: view.stream}, true);
  });

  el("csv-button").addEventListener("click", exportCsv);

  // Expose the chart to the browser tests (read-only use: pixel positions of values).
  window.tpsDashboard = Object.freeze({chart: () => chart, view: () => Object.assign({}, view)});

  setInterval(render, 250);
  setInterval(() => {
    if (isLive()) dirty = true; // the live window slides even when nothing arrives
  }, 1000);
  setInterval(poll, POLL_MS);
  setInterval(pollHealth, HEALTH_MS);
  renderHeading();
  renderLimitsText();
  pollHealth();
  loadAlarms();
  poll().then(() => {
    applyView();
    return loadRecent();
  });
})();
