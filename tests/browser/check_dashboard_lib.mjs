// The dashboard's pure rules (tps/api/static/dashboard-lib.js), checked in node without
// a browser: the view <-> URL, windows, zoom, buckets per pixel, gaps, limit zones, CSV.
//
//   TZ=Asia/Kolkata node tests/browser/check_dashboard_lib.mjs
//
// (run in a zone with a half-hour offset, so the zone label is tested too). Prints one
// JSON object {ok, checks, failures}; exit code 0 only when every check passed.

import {readFileSync} from "node:fs";
import {runInNewContext} from "node:vm";

const source = readFileSync(new URL("../../tps/api/static/dashboard-lib.js", import.meta.url), "utf8");
const sandbox = {window: {}, URLSearchParams, Date, Math, Intl};
runInNewContext(source, sandbox);
const L = sandbox.window.TpsDash;

const failures = [];
let checks = 0;

function eq(name, got, want) {
  checks++;
  const a = JSON.stringify(got);
  const b = JSON.stringify(want);
  if (a !== b) failures.push({name, got: a, want: b});
}

function ok(name, condition, detail) {
  checks++;
  if (!condition) failures.push({name, detail: detail === undefined ? null : JSON.stringify(detail)});
}

// --- the view and its URL ------------------------------------------------------------
eq("default view", L.parseView(""), {range: "live", from: null, to: null, stream: null});
eq("relative range and stream", L.parseView("?range=6h&stream=sat1"), {range: "6h", from: null, to: null, stream: "sat1"});
eq("unknown range falls back to live", L.parseView("?range=3y").range, "live");
eq("a stream name TPS would refuse is ignored", L.parseView("?stream=%3Cimg%20src%3Dx%3E").stream, null);
const custom = L.parseView("?from=2026-11-29T10:00:00Z&to=2026-11-29T11:00:00.5Z&range=1h");
eq("from/to win over range", [custom.range, custom.from, custom.to], ["custom", 1795946400, 1795950000.5]);
eq("from after to is ignored", L.parseView("?from=2026-11-29T11:00:00Z&to=2026-11-29T10:00:00Z").range, "live");
for (const search of ["", "?range=1h", "?from=2026-11-29T10%3A00%3A00.000Z&to=2026-11-29T11%3A00%3A00.000Z&stream=sat2"]) {
  eq("URL round trip " + search, L.viewToSearch(L.parseView(search)), search);
}
const odd = L.parseView("?range=30d&stream=a.b:c-d_1");
eq("view round trip through the URL", L.parseView(L.viewToSearch(odd)), odd);
eq("live view has a bare URL", L.viewToSearch({range: "live", from: null, to: null, stream: null}), "");
ok("only range, from, to and stream go in the URL",
  /^\?from=[^&]+&to=[^&]+&stream=s$/.test(L.viewToSearch({range: "custom", from: 1, to: 2, stream: "s", token: "secret"})));

// --- windows, zoom, points ------------------------------------------------------------
eq("relative window ends now", L.windowOf({range: "24h"}, 1000000), [1000000 - 86400, 1000000]);
eq("live window", L.windowOf({range: "live"}, 1000), [700, 1000]);
eq("custom window", L.windowOf({range: "custom", from: 5, to: 9}, 1000), [5, 9]);
eq("zoom keeps a wide selection", L.zoomWindow(300, 100, 1000), [100, 300]);
eq("zoom never narrower than 10 s", L.zoomWindow(100, 102, 1000), [96, 106]);
eq("zoom never past now", L.zoomWindow(990, 1010, 1000), [980, 1000]);
eq("zoom out 4x around the middle, not past now", L.zoomOutWindow(100, 200, 1000, 4), [-50, 350]);
eq("zoom out stops at now", L.zoomOutWindow(900, 1000, 1000, 4), [600, 1000]);
eq("a bucket per pixel", L.pointsForWidth(1105.4), 1105);
eq("points at least 10", L.pointsForWidth(3), 10);
eq("points at most 10,000", L.pointsForWidth(50000), 10000);

// --- gaps -----------------------------------------------------------------------------
const jitter = [];
for (let i = 0; i < 100; i++) jitter.push(i * 0.2 + (i % 3) * 0.05);
const live = L.gapThreshold(jitter, {minGap: 2});
ok("feed jitter is no gap", live >= 2 && jitter.every((t, i) => i === 0 || t - jitter[i - 1] <= live), live);
const stopped = jitter.concat([jitter[99] + 4, jitter[99] + 4.2]);
const rows = stopped.map((t) => [t, 20]);
const gapped = L.withGaps(rows, L.gapThreshold(stopped, {minGap: 2}));
eq("a 4 s stop is one gap", gapped.filter((r) => r[1] === null).length, 1);
eq("the gap sits inside the stop", gapped[100][0] > jitter[99] && gapped[100][0] < jitter[99] + 4, true);
const dense = [0, 30, 60, 90, 150, 180];
eq("a dense series breaks at a missing bucket", L.gapThreshold(dense, {interval: 30}), 45);
const sparse = [0, 120, 240, 360, 480, 600];
eq("a slow feed's series breaks only at 3x its spacing", L.gapThreshold(sparse, {interval: 30}), 360);
const data = L.align([[[1, 10], [3, 30]], L.withGaps([[1, 5], [2, 6], [9, 7]], 3)], 1);
eq("aligned times", data[0], [1, 2, 3, 5.5, 9]);
eq("no point at another stream's time is undefined (spanned)", data[1].map((v) => (v === undefined ? "u" : v)), [10, "u", 30, "u", "u"]);
eq("an explicit gap is null (a break)", data[2].map((v) => (v === undefined ? "u" : v)), [5, 6, "u", null, 7]);
eq("gaps counted", L.countGaps(data[2]), 1);
eq("three columns per stream", L.align([[[1, 1, 2, 3]]], 3), [[1], [1], [2], [3]]);

// --- limits ---------------------------------------------------------------------------
eq("no limits, no zones", L.limitZones(null), []);
eq("yellow and red high", L.limitZones({yellowHigh: 30, redHigh: 40}).map((z) => [z.name, z.level, z.from, z.to]),
  [["yellowHigh", "warning", 30, 40], ["redHigh", "critical", 40, Infinity]]);
eq("yellow low alone runs to the bottom", L.limitZones({yellowLow: 10}).map((z) => [z.name, z.from, z.to]), [["yellowLow", -Infinity, 10]]);
eq("red low alone", L.limitZones({redLow: 0, staleAfter: 5}).map((z) => [z.name, z.from, z.to]), [["redLow", -Infinity, 0]]);
eq("y range widened to the nearest limits", L.yRange(20, 22, {yellowHigh: 30, redHigh: 40, yellowLow: 10}).map((v) => Math.round(v * 10) / 10), [8.4, 31.6]);
eq("y range with red only", L.yRange(20, 22, {redHigh: 25}).map((v) => Math.round(v * 100) / 100), [19.6, 25.4]);
eq("y range of no data", L.yRange(Infinity, -Infinity, null), [0, 1]);
eq("limits described in words", L.describeLimits({yellowLow: 10, yellowHigh: 30, redHigh: 40, staleAfter: 5}),
  "warning below 10 or above 30; critical above 40; stale after 5 s");
eq("tick decimals", [L.tickDecimals([20.9, 20.95]), L.tickDecimals([20, 20.5]), L.tickDecimals([10, 20])], [2, 1, 1]);

// --- CSV ------------------------------------------------------------------------------
eq("numbers stay numbers, negative ones too", [L.csvCell(-3.5), L.csvCell(0), L.csvCell(NaN), L.csvCell(null)], ["-3.5", "0", "", ""]);
eq("text a spreadsheet would run gets an apostrophe", [L.csvCell("=1+1"), L.csvCell("-x"), L.csvCell("@a"), L.csvCell("+1")], ["'=1+1", "'-x", "'@a", "'+1"]);
eq("quotes, commas and line breaks are quoted", [L.csvCell('a"b'), L.csvCell("a,b"), L.csvCell("a\nb")], ['"a""b"', '"a,b"', '"a\nb"']);
eq("a CSV document", L.buildCsv(["stream", "time", "value"], [["s", "2026-11-29T10:00:00Z", 1.5]]),
  "stream,time,value\r\ns,2026-11-29T10:00:00Z,1.5\r\n");
eq("file name", L.csvFileName("sat1", 1795946400.7, 1795950000), "tps-sat1-20261129T100000Z-20261129T110000Z.csv");
eq("file name, all streams", L.csvFileName(null, 0, 1), "tps-all-19700101T000000Z-19700101T000001Z.csv");

// --- time -----------------------------------------------------------------------------
eq("server text kept to the nanosecond", L.isoUtc("2026-11-29T10:00:00.123456789+00:00", 0), "2026-11-29T10:00:00.123456789Z");
eq("another zone is converted", L.isoUtc("2026-11-29T12:00:00+02:00", 0), "2026-11-29T10:00:00.000Z");
eq("no text: from seconds", L.isoUtc(null, 1795946400.25), "2026-11-29T10:00:00.250Z");
eq("nine fraction digits read", L.toSeconds("2026-11-29T10:00:00.123456789+00:00"), 1795946400.1234567);
eq("epoch ns read", L.toSeconds(1795946400123456789), 1795946400.1234567);
const zone = L.zoneLabel(new Date(1795946400000));
eq("zone label (run with TZ=Asia/Kolkata)", zone, process.env.TZ === "Asia/Kolkata" ? "UTC+05:30" : zone);
ok("date, time and zone", /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC([+-]\d\d:\d\d)?$/.test(L.fmtDateTime(1795946400)), L.fmtDateTime(1795946400));
if (process.env.TZ === "Asia/Kolkata") eq("local time shown", L.fmtDateTime(1795946400), "2026-11-29 15:30:00 UTC+05:30");
eq("datetime-local round trip", L.fromLocalInput(L.toLocalInput(1795946400)), 1795946400);
eq("empty datetime-local", Number.isNaN(L.fromLocalInput("")), true);
eq("durations", [L.fmtDuration(0.345), L.fmtDuration(42), L.fmtDuration(243), L.fmtDuration(7500)], ["0.34 s", "42 s", "4 min 3 s", "2 h 5 min"]);
eq("bytes", [L.fmtBytes(512), L.fmtBytes(2048), L.fmtBytes(3 * 1024 * 1024)], ["512 B", "2.0 KiB", "3.0 MiB"]);
eq("intervals", [L.fmtInterval(5), L.fmtInterval(120), L.fmtInterval(7200), L.fmtInterval(86400)], ["5 s", "2 min", "2 h", "1 d"]);

console.log(JSON.stringify({ok: failures.length === 0, checks, failures}));
process.exit(failures.length ? 1 : 0);
