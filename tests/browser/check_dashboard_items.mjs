// Drives Debian's headless chromium through the dashboard items of issues 10, 11 and 15.
//
//   node tests/browser/check_dashboard_items.mjs <base-url> <token> <artifacts-dir> <feed-url> <sim-url-of-sat4>
//
// Against a running TPS whose streams sat1..sat3 read a simulator and whose store holds
// a few hours of history (sat2 with a hole in it). <feed-url> is a plain-JSON feed
// whose values the test process controls: when the driver needs values sent it prints
// one line `{"ask": "push", "values": [...]}` and waits for `ok` on stdin (and
// `{"ask": "connected"}` waits until a reader is connected to the feed).
//
// Steps, each checked: range picker (series requests, a band drawn, statistics for the
// same window, a gap where history has a hole), 30 d, a custom range, the URL round
// trip (a second page opened at the URL shows the same view), zoom by drag (a narrower
// window and a finer series), CSV of buckets and of live readings, a stopped stream's
// gap, adding streams with a protocol, limit bands and row colours when the controlled
// feed goes out of limits, acknowledge and shelve from the alarm panel (a comment that
// is markup stays text), the health panel against /health, Remove, and a 390 px
// viewport without horizontal scrolling. Screenshots go to <artifacts-dir>. Any request
// leaving the TPS origin is blocked and reported; console errors (CSP violations
// included) fail the run. Prints the asks, then one JSON report; exit 0 only when every
// step passed.

import {chromium} from "playwright-core";
import {mkdtempSync, rmSync, mkdirSync, readFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {createInterface} from "node:readline";

const [baseArg, token, artifacts, feedUrl, sat4Url] = process.argv.slice(2);
if (!baseArg || !token || !artifacts || !feedUrl || !sat4Url) {
  console.error("usage: check_dashboard_items.mjs <base-url> <token> <artifacts-dir> <feed-url> <sat4-url>");
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, "");
const origin = new URL(base).origin;
const STEP_TIMEOUT = Number(process.env.TPS_BROWSER_STEP_TIMEOUT_MS || 15000);
const LADDER = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

const result = {ok: false, step: "launch", external_requests: [], console_errors: [], page_errors: [], screenshots: []};
const profile = mkdtempSync(join(tmpdir(), "tps-chromium-"));
const stdinLines = createInterface({input: process.stdin})[Symbol.asyncIterator]();
let context = null;

function fail(message) {
  throw new Error(message);
}

function check(condition, message) {
  if (!condition) fail(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* Ask the test process to do something (push feed values); waits for its "ok". */
async function ask(request) {
  process.stdout.write(JSON.stringify({ask: request.ask, ...request}) + "\n");
  const {value, done} = await stdinLines.next();
  if (done || value.trim() !== "ok") fail("the test process answered " + JSON.stringify(value) + " to " + JSON.stringify(request));
}

async function rest(method, path, body) {
  const init = {method, headers: {Authorization: "Bearer " + token}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(base + path, init);
  const text = await response.text();
  return {status: response.status, body: text ? JSON.parse(text) : null};
}

async function graphql(query, variables) {
  const response = await fetch(base + "/graphql", {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({query, variables}),
  });
  const payload = await response.json();
  if (payload.errors) fail("GraphQL: " + JSON.stringify(payload.errors));
  return payload.data;
}

// --- what the pages ask the server ----------------------------------------------------
const requests = []; // {page, op, variables, at}

function watchRequests(page, tag) {
  page.on("request", (req) => {
    if (req.method() !== "POST" || !req.url().endsWith("/graphql")) return;
    let body = null;
    try {
      body = req.postDataJSON();
    } catch (e) {
      return;
    }
    const m = /^\s*(?:query|subscription|mutation)\s+(\w+)/.exec((body && body.query) || "");
    requests.push({page: tag, op: m ? m[1] : null, variables: (body && body.variables) || {}, query: body.query, at: Date.now()});
  });
}

async function nextRequest(tag, op, since, predicate) {
  const deadline = Date.now() + STEP_TIMEOUT;
  while (Date.now() < deadline) {
    const hit = requests.slice(since).find((r) => r.page === tag && r.op === op && (!predicate || predicate(r)));
    if (hit) return hit;
    await sleep(50);
  }
  fail("no " + op + " request from " + tag + " (saw: " + requests.slice(since).map((r) => r.op).join(", ") + ")");
}

const windowOf = (r) => (Date.parse(r.variables.b) - Date.parse(r.variables.a)) / 1000;
const seriesStreams = (r) => Object.keys(r.variables).filter((k) => /^s\d+$/.test(k)).sort().map((k) => r.variables[k]);

// --- reading the page -----------------------------------------------------------------
const chartData = (page) => page.$eval("#chart", (el) => ({...el.dataset}));

async function waitChart(page, predicate, arg) {
  await page.waitForFunction(predicate, arg === undefined ? null : arg);
  return chartData(page);
}

/* Wait until the chart draws the series answered to `request` (its window). */
const drawn = (page, request) => page.waitForFunction(
  (w) => document.querySelector("#chart").dataset.window === w, request.variables.a + "/" + request.variables.b);

/* The chart's series labels and data (undefined as "u", so null stays null). */
const plotted = (page) => page.evaluate(() => {
  const u = window.tpsDashboard.chart();
  return {labels: u.series.map((s) => s.label), data: u.data.map((col) => Array.from(col, (v) => (v === undefined ? "u" : v)))};
});

/* Times (s) of explicit gaps (null) in the series labelled `label`. */
function gapTimes(p, label) {
  const i = p.labels.indexOf(label);
  if (i < 0) return [];
  return p.data[0].filter((t, k) => p.data[i][k] === null);
}

async function shot(page, name, options) {
  const path = join(artifacts, name);
  await page.screenshot({path, fullPage: true, ...(options || {})});
  result.screenshots.push(path);
  return path;
}

async function rowState(page, name) {
  return page.$eval(`tr[data-stream="${name}"]`, (row) => ({
    alarm: row.dataset.alarm,
    badge: row.querySelector(".alarm-state").textContent,
    state: row.querySelector(".state").textContent,
    protocol: row.querySelector(".protocol").textContent,
    value: row.querySelector(".current").dataset.value,
    background: getComputedStyle(row.querySelector("td")).backgroundColor,
    time: row.querySelector(".time time").textContent,
    datetime: row.querySelector(".time time").getAttribute("datetime"),
  }));
}

async function csvDownload(page) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#csv-button")]);
  const path = await download.path();
  return {name: download.suggestedFilename(), text: readFileSync(path, "utf8")};
}

function parseCsv(text) {
  check(text.endsWith("\r\n"), "CSV lines must end with CRLF");
  const lines = text.slice(0, -2).split("\r\n");
  return {header: lines[0], rows: lines.slice(1).map((line) => line.split(","))};
}

/* The canvas pixel (r, g, b, alpha) at a value position of the chart. */
const pixelAt = (page, t, v) => page.evaluate(([t, v]) => {
  const u = window.tpsDashboard.chart();
  const x = Math.round(u.valToPos(t, "x", true));
  const y = Math.round(u.valToPos(v, "y", true));
  return Array.from(u.ctx.getImageData(x, y, 1, 1).data);
}, [t, v]);

try {
  mkdirSync(artifacts, {recursive: true});
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.TPS_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
    ],
    viewport: {width: 1280, height: 900},
    acceptDownloads: true,
    timeout: 30000,
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + "/") || url === origin || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
    result.external_requests.push(url);
    return route.abort();
  });
  const page = context.pages()[0] || (await context.newPage());
  watchRequests(page, "main");
  page.on("console", (msg) => {
    if (msg.type() === "error") result.console_errors.push(msg.text().slice(0, 300));
  });
  page.on("pageerror", (err) => result.page_errors.push(String(err).slice(0, 300)));
  page.on("dialog", (dialog) => dialog.accept(dialog.type() === "prompt" ? token : undefined));

  result.step = "load";
  await page.goto(base + "/", {waitUntil: "load"});
  await page.waitForFunction(() => ["sat1", "sat2", "sat3"].every((n) => {
    const cell = document.querySelector(`tr[data-stream="${n}"] .current`);
    return cell && cell.dataset.value;
  }));
  await page.waitForFunction(() => document.querySelector("#live-status").dataset.state === "live");
  const first = await rowState(page, "sat1");
  result.last_reading_text = first.time;
  // Date, time and zone: "2026-11-29 22:26:14 UTC" (or UTC+hh:mm).
  check(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC([+-]\d\d:\d\d)?$/.test(first.time), "last reading without date or zone: " + first.time);
  check(ISO_UTC.test(first.datetime), "last reading's datetime attribute is not ISO UTC: " + first.datetime);

  // --- issue 10: ranges -------------------------------------------------------------
  result.step = "range 6 h: series request and bands";
  let mark = requests.length;
  await page.click('#range-buttons button[data-range="6h"]');
  const series6h = await nextRequest("main", "DashboardSeries", mark);
  const stats6h = await nextRequest("main", "DashboardStatistics", mark);
  await drawn(page, series6h);
  let chart = await chartData(page);
  check(chart.mode === "history" && Number(chart.points) > 0, "6 h chart: " + JSON.stringify(chart));
  const plotWidth = await page.evaluate(() => window.tpsDashboard.chart().bbox.width / devicePixelRatio);
  result.series_6h = {window_s: windowOf(series6h), points: series6h.variables.p, streams: seriesStreams(series6h),
    plot_width: plotWidth, interval: Number(chart.interval), bands: Number(chart.bands), gaps: Number(chart.gaps)};
  check(Math.abs(windowOf(series6h) - 6 * 3600) < 2, "6 h range asked for " + windowOf(series6h) + " s");
  check(Math.abs(series6h.variables.p - plotWidth) <= 2, `points ${series6h.variables.p} for a ${plotWidth} px plot`);
  check(JSON.stringify(seriesStreams(series6h)) === JSON.stringify(["sat1", "sat2", "sat3"]), "series not asked per stream: " + seriesStreams(series6h));
  check(/stream: \$s0/.test(series6h.query) && !/sat1/.test(series6h.query), "stream names must travel as variables");
  check(LADDER.includes(Number(chart.interval)), "interval off the ladder: " + chart.interval);
  check(6 * 3600 / Number(chart.interval) <= series6h.variables.p + 1, "more buckets than points");
  check(Number(chart.bands) === 3, "a min-max band per stream expected, got " + chart.bands);
  check(await page.$eval('#range-buttons button[data-range="6h"]', (b) => b.getAttribute("aria-pressed")) === "true", "6 h not pressed");
  check(new URL(page.url()).search === "?range=6h", "URL does not keep the range: " + page.url());
  // sat2's stored history has a hole (see the test): it is drawn as a gap.
  let p = await plotted(page);
  const holes = gapTimes(p, "sat2 mean");
  result.sat2_gap_times = holes;
  check(holes.length >= 1, "sat2's hole is not drawn as a gap");

  result.step = "range 6 h: statistics of the same window";
  check(stats6h.variables.a === series6h.variables.a && stats6h.variables.b === series6h.variables.b,
    "statistics asked for another window than the series");
  await page.waitForFunction(() => document.querySelector('#stats dd[data-stat="count"]').dataset.value !== "");
  const shown = await page.$$eval("#stats dd", (dds) => Object.fromEntries(dds.map((d) => [d.dataset.stat, Number(d.dataset.value)])));
  const truth = (await graphql("query($a: DateTime!, $b: DateTime!) { temperatureStatistics(after: $a, before: $b) { min max mean count } }",
    {a: stats6h.variables.a, b: stats6h.variables.b})).temperatureStatistics;
  result.stats_6h = {shown, truth};
  // The window ends at the request's now: readings of its last second may have been
  // stored only after the page asked, so the later answer may count a few more.
  check(shown.count > 1000 && truth.count - shown.count >= 0 && truth.count - shown.count < 40,
    "count shown " + shown.count + " vs " + truth.count);
  check(shown.min === truth.min && Math.abs(shown.max - truth.max) < 1.5, "min/max differ from the server's");

  result.step = "range 6 h: one stream, band pixels";
  mark = requests.length;
  await page.selectOption("#stream-select", "sat1");
  const seriesSat1 = await nextRequest("main", "DashboardSeries", mark);
  check(JSON.stringify(seriesStreams(seriesSat1)) === '["sat1"]', "selected stream not asked alone");
  const statsSat1 = await nextRequest("main", "DashboardStatistics", mark);
  check(statsSat1.variables.s === "sat1", "statistics not for the selected stream");
  await drawn(page, seriesSat1);
  check((await chartData(page)).bands === "1", "one band expected for one stream");
  check(new URL(page.url()).search === "?range=6h&stream=sat1", "URL does not keep the stream: " + page.url());
  p = await plotted(page);
  // Between each bucket's max and min (a pixel column at its time) the band's fill
  // shows: the stream's colour at 25% opacity (the canvas is transparent, the page's
  // white shows through), except where a line crosses.
  const band = await page.evaluate(() => {
    const u = window.tpsDashboard.chart();
    let fill = 0;
    let columns = 0;
    for (let k = 0; k < u.data[0].length; k++) {
      const [lo, hi] = [u.data[1][k], u.data[2][k]];
      if (typeof lo !== "number" || typeof hi !== "number") continue;
      const x = Math.round(u.valToPos(u.data[0][k], "x", true));
      const top = Math.round(u.valToPos(hi, "y", true)) + 2;
      const bottom = Math.round(u.valToPos(lo, "y", true)) - 2;
      if (bottom <= top) continue;
      columns++;
      const pixels = u.ctx.getImageData(x, top, 1, bottom - top).data;
      for (let i = 0; i < pixels.length; i += 4) {
        const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
        if (a > 40 && a < 100 && Math.max(r, g, b) - Math.min(r, g, b) > 80) fill++;
      }
    }
    return {columns, fill};
  });
  result.band_pixels = band;
  check(band.columns > 10 && band.fill > band.columns, "no band fill between min and max: " + JSON.stringify(band));
  await shot(page, "dashboard-history-1280.png");

  result.step = "URL round trip";
  const link = page.url();
  const second = await context.newPage();
  watchRequests(second, "second");
  second.on("pageerror", (err) => result.page_errors.push("second: " + String(err).slice(0, 300)));
  mark = requests.length;
  await second.goto(link, {waitUntil: "load"});
  const again = await nextRequest("second", "DashboardSeries", mark);
  await drawn(second, again);
  result.round_trip = {
    url: link,
    pressed: await second.$eval('#range-buttons button[aria-pressed="true"]', (b) => b.dataset.range),
    stream: await second.$eval("#stream-select", (s) => s.value),
    heading: await second.$eval("#chart-heading", (h) => h.textContent),
    window_s: windowOf(again),
    streams: seriesStreams(again),
  };
  check(result.round_trip.pressed === "6h" && result.round_trip.stream === "sat1", "the link shows another view");
  check(Math.abs(result.round_trip.window_s - 6 * 3600) < 2 && result.round_trip.streams.join() === "sat1", "the link asked another series");
  await second.close();

  result.step = "zoom by drag";
  const before = Number((await chartData(page)).interval);
  const over = await page.locator("#chart .u-over").boundingBox();
  mark = requests.length;
  await page.mouse.move(over.x + over.width * 0.80, over.y + over.height / 2);
  await page.mouse.down();
  await page.mouse.move(over.x + over.width * 0.95, over.y + over.height / 2, {steps: 6});
  await page.mouse.up();
  const zoomed = await nextRequest("main", "DashboardSeries", mark);
  await drawn(page, zoomed);
  chart = await chartData(page);
  check(Number(chart.interval) < before, `zooming in did not give a finer series (${before} s -> ${chart.interval} s)`);
  const zoomUrl = new URL(page.url());
  result.zoom = {window_s: windowOf(zoomed), interval_before: before, interval_after: Number(chart.interval),
    url: zoomUrl.search, pressed: await page.$$eval('#range-buttons button[aria-pressed="true"]', (bs) => bs.length)};
  check(windowOf(zoomed) < 6 * 3600 * 0.2 && windowOf(zoomed) > 6 * 3600 * 0.1, "zoom window " + windowOf(zoomed) + " s");
  check(zoomUrl.searchParams.get("from") && zoomUrl.searchParams.get("to") && zoomUrl.searchParams.get("stream") === "sat1",
    "zoomed window not in the URL: " + zoomUrl.search);
  check(Math.abs(Date.parse(zoomUrl.searchParams.get("from")) - Date.parse(zoomed.variables.a)) < 1000, "URL and request disagree");
  check(result.zoom.pressed === 0, "a relative range still shows as pressed after a zoom");

  result.step = "CSV of series buckets";
  const bucketsShown = Number(chart.points);
  let csv = await csvDownload(page);
  let parsed = parseCsv(csv.text);
  result.csv_history = {name: csv.name, header: parsed.header, rows: parsed.rows.length, first: parsed.rows[0], buckets_shown: bucketsShown};
  check(parsed.header === "stream,time,min,max,mean,count", "CSV header: " + parsed.header);
  check(parsed.rows.length === bucketsShown && bucketsShown > 0, `CSV has ${parsed.rows.length} rows, chart ${bucketsShown} buckets`);
  const zoomFrom = Date.parse(zoomed.variables.a) / 1000;
  const zoomTo = Date.parse(zoomed.variables.b) / 1000;
  for (const row of parsed.rows) {
    check(row.length === 6 && row[0] === "sat1" && ISO_UTC.test(row[1]), "CSV row: " + row.join(","));
    const t = Date.parse(row[1]) / 1000;
    check(t >= zoomFrom - Number(chart.interval) && t <= zoomTo, "CSV row outside the visible window: " + row[1]);
    check(Number(row[2]) <= Number(row[4]) && Number(row[4]) <= Number(row[3]) && Number(row[5]) > 0, "CSV bucket values: " + row.join(","));
  }
  check(/^tps-sat1-\d{8}T\d{6}Z-\d{8}T\d{6}Z\.csv$/.test(csv.name), "CSV file name: " + csv.name);

  result.step = "range 30 d";
  mark = requests.length;
  await page.click('#range-buttons button[data-range="30d"]');
  const series30 = await nextRequest("main", "DashboardSeries", mark);
  await drawn(page, series30);
  chart = await chartData(page);
  result.series_30d = {window_s: windowOf(series30), interval: Number(chart.interval), points: series30.variables.p};
  check(Math.abs(windowOf(series30) - 30 * 86400) < 2 && LADDER.includes(Number(chart.interval)) &&
    30 * 86400 / Number(chart.interval) <= series30.variables.p + 1, "30 d series: " + JSON.stringify(result.series_30d));

  result.step = "custom range";
  const custom = await page.evaluate(() => {
    const now = Math.floor(Date.now() / 1000);
    return {from: window.TpsDash.toLocalInput(now - 7200), to: window.TpsDash.toLocalInput(now - 3600)};
  });
  await page.fill('#custom-range input[name="from"]', custom.from);
  await page.fill('#custom-range input[name="to"]', custom.to);
  mark = requests.length;
  await page.click('#custom-range button[type="submit"]');
  const seriesCustom = await nextRequest("main", "DashboardSeries", mark);
  await drawn(page, seriesCustom);
  result.custom = {window_s: windowOf(seriesCustom), url: new URL(page.url()).search};
  check(Math.abs(windowOf(seriesCustom) - 3600) < 1.5, "custom range asked " + windowOf(seriesCustom) + " s");
  check(result.custom.url.includes("from=") && result.custom.url.includes("to="), "custom range not in the URL");

  // --- issue 15: a stopped stream's gap, live CSV -------------------------------------------
  result.step = "live: a stopped stream's gap";
  await page.click('#range-buttons button[data-range="live"]');
  check(new URL(page.url()).search === "?stream=sat1", "live view URL: " + page.url());
  await waitChart(page, () => {
    const d = document.querySelector("#chart").dataset;
    return d.mode === "live" && d.streams === "sat1" && Number(d.points) > 10;
  });
  const gapsBefore = Number((await chartData(page)).gaps);
  await page.click('tr[data-stream="sat1"] button.stop');
  await page.waitForFunction(() => document.querySelector('tr[data-stream="sat1"] .state').textContent === "stopped");
  const stoppedAt = Date.now() / 1000;
  await sleep(3500);
  await page.click('tr[data-stream="sat1"] button.start');
  const startedAt = Date.now() / 1000;
  await page.waitForFunction(() => document.querySelector('tr[data-stream="sat1"] .state').textContent === "subscribed");
  await waitChart(page, (n) => Number(document.querySelector("#chart").dataset.gaps) > n, gapsBefore);
  p = await plotted(page);
  const stopGaps = gapTimes(p, "sat1").filter((t) => t > stoppedAt - 3 && t < startedAt + 3);
  result.stop_gap = {gaps_before: gapsBefore, gap_times: stopGaps, stopped_at: stoppedAt, started_at: startedAt};
  check(stopGaps.length === 1, "the stop is not one gap in the line: " + JSON.stringify(result.stop_gap));
  await page.locator("#chart-section").screenshot({path: join(artifacts, "dashboard-stop-gap.png")});
  result.screenshots.push(join(artifacts, "dashboard-stop-gap.png"));

  result.step = "CSV of live readings";
  csv = await csvDownload(page);
  parsed = parseCsv(csv.text);
  result.csv_live = {name: csv.name, header: parsed.header, rows: parsed.rows.length, first: parsed.rows[0]};
  check(parsed.header === "stream,time,value", "live CSV header: " + parsed.header);
  check(parsed.rows.length > 10, "live CSV has " + parsed.rows.length + " rows");
  for (const row of parsed.rows) check(row.length === 3 && row[0] === "sat1" && ISO_UTC.test(row[1]) && isFinite(Number(row[2])), "live CSV row: " + row);
  const times = parsed.rows.map((r) => Date.parse(r[1]));
  check(times.every((t, i) => i === 0 || t >= times[i - 1]), "live CSV not in time order");

  // --- issue 15: add with a protocol --------------------------------------------------------
  result.step = "add streams with a protocol";
  for (const [name, url, protocol] of [["hot1", feedUrl, "json"], ["sat4", sat4Url, "graphql-transport-ws"]]) {
    await page.fill('#add-form input[name="name"]', name);
    await page.fill('#add-form input[name="url"]', url);
    await page.selectOption('#add-form select[name="protocol"]', protocol);
    await page.click('#add-form button[type="submit"]');
    await page.waitForSelector(`tr[data-stream="${name}"]`);
  }
  const configured = await rest("GET", "/api/streams/hot1");
  const sat4 = await rest("GET", "/api/streams/sat4");
  check(configured.body.protocol === "json" && sat4.body.protocol === "graphql-transport-ws",
    "protocols not sent: " + configured.body.protocol + ", " + sat4.body.protocol);
  await page.waitForFunction(() => document.querySelector('tr[data-stream="sat4"] .current').dataset.value);
  result.sat4_row = await rowState(page, "sat4");
  check(result.sat4_row.protocol === "graphql-transport-ws", "sat4 shows protocol " + result.sat4_row.protocol);
  await ask({ask: "connected"});
  await ask({ask: "push", values: [20.0]});
  await page.waitForFunction(() => document.querySelector('tr[data-stream="hot1"] .current').dataset.value === "20");
  result.hot1_row = await rowState(page, "hot1");
  check(result.hot1_row.protocol === "json" && result.hot1_row.alarm === "OK", "hot1 row: " + JSON.stringify(result.hot1_row));
  const okBackground = result.hot1_row.background;

  // --- issue 11: limits, row colours, the alarm panel --------------------------------------
  result.step = "limits drawn";
  const limits = await rest("PUT", "/api/streams/hot1/limits", {yellowLow: 10, yellowHigh: 30, redLow: 0, redHigh: 40});
  check(limits.status === 200, "setting limits: HTTP " + limits.status);
  await page.selectOption("#stream-select", "hot1");
  await page.waitForFunction(() => (document.querySelector("#chart").dataset.limitBands || "").split(" ").includes("yellowHigh"));
  await ask({ask: "push", values: [21.0, 22.0]});
  chart = await waitChart(page, () => {
    const d = document.querySelector("#chart").dataset;
    return d.streams === "hot1" && Number(d.points) >= 2;
  });
  result.limit_bands = chart.limitBands;
  check(["yellowHigh", "yellowLow"].every((z) => chart.limitBands.split(" ").includes(z)), "limit bands drawn: " + chart.limitBands);
  // Probe the middle of the plot (no data there yet): above yellowHigh, and inside.
  const probe = await page.evaluate(() => {
    const u = window.tpsDashboard.chart();
    return {t: (u.scales.x.min + u.scales.x.max) / 2, above: (30 + u.scales.y.max) / 2};
  });
  const yellow = await pixelAt(page, probe.t, probe.above);
  const inside = await pixelAt(page, probe.t, 21.3);
  result.limit_pixels = {yellow_zone: yellow, inside, probe};
  // The yellow zone is rgba(249, 171, 0, 0.22) on a transparent canvas; inside the
  // limits nothing is painted but (maybe) a faint grid line.
  check(yellow[0] > 200 && yellow[1] > 120 && yellow[2] < 60 && yellow[3] > 40 && yellow[3] < 80,
    "no yellow zone above yellowHigh: " + yellow);
  check(inside[3] < 30, "the range inside the limits is shaded: " + inside);
  check((await page.textContent("#limits-text")).includes("above 30"), "limits not described in text");

  result.step = "out of limits: rows coloured, alarm panel";
  await ask({ask: "push", values: [31.5]});
  await page.waitForFunction(() => document.querySelector('tr[data-stream="hot1"]').dataset.alarm === "WARNING");
  await page.waitForSelector('#alarm-rows tr[data-severity="WARNING"]');
  const warning = await rowState(page, "hot1");
  const alarmId = await page.$eval('#alarm-rows tr[data-severity="WARNING"]', (tr) => tr.dataset.alarmId);
  await ask({ask: "push", values: [41.0]});
  await page.waitForFunction(() => document.querySelector('tr[data-stream="hot1"]').dataset.alarm === "CRITICAL");
  await page.waitForFunction((id) => {
    const tr = document.querySelector(`#alarm-rows tr[data-alarm-id="${id}"]`);
    return tr && tr.dataset.severity === "CRITICAL";
  }, alarmId);
  const critical = await rowState(page, "hot1");
  result.rows = {ok: okBackground, warning: warning.background, critical: critical.background,
    warning_text: warning.badge, critical_text: critical.badge, alarm_id: alarmId};
  check(warning.badge === "WARNING" && critical.badge === "CRITICAL", "alarm state not written as text");
  check(new Set([okBackground, warning.background, critical.background]).size === 3, "row colours: " + JSON.stringify(result.rows));
  check(await page.$eval("#alarm-count", (e) => e.dataset.count) === "1", "escalation made a second alarm");
  await shot(page, "dashboard-alarm-1280.png");

  result.step = "acknowledge from the panel";
  const comment = 'on it <img src=x onerror="window.__xss=1"> & "quoted"';
  const alarmRow = `#alarm-rows tr[data-alarm-id="${alarmId}"]`;
  await page.fill(`${alarmRow} input.comment`, comment);
  await page.click(`${alarmRow} button.ack`);
  await page.waitForFunction((sel) => document.querySelector(sel).dataset.state === "ACKNOWLEDGED", alarmRow);
  const acked = await rest("GET", "/api/alarms/" + alarmId);
  result.acknowledged = {state: acked.body.state, comment: acked.body.acknowledgeComment,
    note: await page.$eval(`${alarmRow} .note`, (n) => n.textContent)};
  check(acked.body.state === "ACKNOWLEDGED" && acked.body.acknowledgeComment === comment, "server did not get the acknowledgement");
  check(result.acknowledged.note.includes("<img src=x"), "the comment is not shown as text");
  check(await page.evaluate(() => document.querySelectorAll("#alarms-section img").length === 0 && window.__xss === undefined),
    "a comment became markup");
  check(await page.$eval(`${alarmRow} button.ack`, (b) => b.disabled), "acknowledge still enabled");

  result.step = "back inside: cleared, in the recent list";
  await ask({ask: "push", values: [20.0]});
  await page.waitForFunction(() => document.querySelector('tr[data-stream="hot1"]').dataset.alarm === "OK");
  await page.waitForSelector(`#alarm-recent li[data-alarm-id="${alarmId}"]`);
  result.recent_text = await page.$eval(`#alarm-recent li[data-alarm-id="${alarmId}"]`, (li) => li.textContent);
  check(result.recent_text.includes("cleared") && result.recent_text.includes("<img"), "recent entry: " + result.recent_text);

  result.step = "shelve from the panel";
  await ask({ask: "push", values: [32.0]});
  await page.waitForFunction((old) => {
    const tr = document.querySelector('#alarm-rows tr[data-severity="WARNING"]');
    return tr && tr.dataset.alarmId !== old;
  }, alarmId);
  const shelveRow = '#alarm-rows tr[data-severity="WARNING"]';
  const shelvedId = await page.$eval(shelveRow, (tr) => tr.dataset.alarmId);
  await page.fill(`#alarm-rows tr[data-alarm-id="${shelvedId}"] input.comment`, "maintenance");
  await page.selectOption(`#alarm-rows tr[data-alarm-id="${shelvedId}"] select.shelve-for`, "900");
  await page.click(`#alarm-rows tr[data-alarm-id="${shelvedId}"] button.shelve`);
  await page.waitForFunction((id) => document.querySelector(`#alarm-rows tr[data-alarm-id="${id}"]`).dataset.state === "SHELVED", shelvedId);
  const shelved = await rest("GET", "/api/alarms/" + shelvedId);
  const until = (Date.parse(shelved.body.shelvedUntil) - Date.now()) / 1000;
  result.shelved = {state: shelved.body.state, comment: shelved.body.shelveComment, seconds_left: until};
  check(shelved.body.state === "SHELVED" && shelved.body.shelveComment === "maintenance" && until > 800 && until <= 900,
    "shelve: " + JSON.stringify(result.shelved));
  await page.locator("#alarms-section").screenshot({path: join(artifacts, "dashboard-alarm-panel-1280.png")});
  result.screenshots.push(join(artifacts, "dashboard-alarm-panel-1280.png"));

  // --- issue 15: health ---------------------------------------------------------------------
  result.step = "health panel";
  await page.waitForFunction(() => document.querySelector('#health dd[data-field="alarms"]').dataset.value === "1");
  const health = await (await fetch(base + "/health")).json();
  const panel = await page.$$eval("#health dd", (dds) => Object.fromEntries(dds.map((d) => [d.dataset.field, {text: d.textContent, value: d.dataset.value}])));
  result.health = {panel, status: await page.$eval("#health-status", (e) => e.textContent), server: {
    store: health.store.reachable, buffered: health.writer.buffered, lag: health.writer.oldest_unwritten_age_s,
    spool: health.writer.spool.bytes, alarms: health.alarms.open}};
  check(panel.store.value === "true" && panel.store.text === "reachable" && health.store.reachable === true, "store in the panel");
  check(/^\d+$/.test(panel.backlog.value) && panel.backlog.text.includes("unwritten"), "backlog in the panel");
  check(panel.lag.value !== "" && isFinite(Number(panel.lag.value)) && Number(panel.lag.value) < 30, "writer lag in the panel");
  check(/^\d+$/.test(panel.spool.value) && /(B|KiB|MiB) in \d+ segment/.test(panel.spool.text), "spool in the panel");
  check(panel.alarms.value === String(health.alarms.open), "open alarms in the panel");
  check(result.health.status === health.status, "status in the panel");

  // --- issue 15: 390 px -----------------------------------------------------------------------
  result.step = "390 px";
  await page.setViewportSize({width: 390, height: 844});
  await sleep(600); // the chart follows the resize
  result.scroll_width_live = await page.evaluate(() => document.documentElement.scrollWidth);
  check(result.scroll_width_live <= 390, "horizontal overflow at 390 px (live): " + result.scroll_width_live);
  await shot(page, "dashboard-390.png");
  mark = requests.length;
  await page.click('#range-buttons button[data-range="24h"]');
  await drawn(page, await nextRequest("main", "DashboardSeries", mark));
  result.scroll_width_history = await page.evaluate(() => document.documentElement.scrollWidth);
  check(result.scroll_width_history <= 390, "horizontal overflow at 390 px (history): " + result.scroll_width_history);
  await shot(page, "dashboard-390-history.png");
  await page.setViewportSize({width: 1280, height: 900});

  // --- issue 15: remove -------------------------------------------------------------------------
  result.step = "remove";
  await page.click('tr[data-stream="hot1"] button.remove');
  await page.waitForFunction(() => !document.querySelector('tr[data-stream="hot1"]'));
  const list = await rest("GET", "/api/streams");
  result.after_remove = list.body.streams.map((s) => s.name).sort();
  check(!result.after_remove.includes("hot1"), "hot1 still on the server");
  check(await page.$eval("#stream-select", (s) => s.value) === "", "the removed stream is still selected");
  check(new URL(page.url()).searchParams.get("stream") === null, "the removed stream is still in the URL");

  if (result.external_requests.length) fail("pages tried to load external URLs");
  if (result.page_errors.length) fail("uncaught page errors");
  if (result.console_errors.length) fail("console errors (CSP violations count)");
  result.step = "done";
  result.ok = true;
} catch (err) {
  result.error = String(err && err.message ? err.message : err).slice(0, 1500);
} finally {
  if (context) {
    try {
      const page = context.pages()[0];
      if (page && !result.ok) await page.screenshot({path: join(artifacts, "dashboard-failure.png"), fullPage: true});
    } catch (e) {
      // best effort
    }
    await context.close().catch(() => {});
  }
  rmSync(profile, {recursive: true, force: true});
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
