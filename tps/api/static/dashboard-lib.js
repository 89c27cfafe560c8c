/* Pure helpers of the TPS dashboard: no DOM, no network, no clock of their own.
 *
 * Everything here takes its inputs as arguments (the current time included), so the
 * rules the page follows - which window a range means, how many buckets a chart of a
 * given width asks for, where a line must break, how a CSV cell is written, what the
 * URL of a view is - are tested directly in node (tests/browser/check_dashboard_lib.mjs)
 * as well as through the page. Exposed as `window.TpsDash`.
 *
 * Times are seconds since the epoch as floats (what uPlot draws); the ISO 8601 text the
 * server sent is kept beside them where it must be reproduced exactly (CSV).
 */
(function (global) {
  "use strict";

  /* The range picker's relative ranges, in seconds. `live` draws raw pushed readings;
   * the others draw temperatureSeries buckets and slide with the clock. */
  const RANGES = Object.freeze({
    live: 5 * 60,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 24 * 3600,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
  });
  const MIN_WINDOW_S = 10; // a zoom never narrows below this (the series ladder starts at 1 s)
  const MAX_WINDOW_S = 10000 * 86400; // what temperatureSeries accepts
  const MAX_POINTS = 10000; // temperatureSeries' upper bound
  const STREAM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/; // tps.config.settings.validate_feed_name

  // ---- time --------------------------------------------------------------------------

  /* Seconds since the epoch from an ISO 8601 string (any number of fraction digits) or
   * a number in s, ms or ns. NaN when it is neither. */
  function toSeconds(time) {
    if (time === null || time === undefined || time === "") return NaN;
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

  /* ISO 8601 in UTC with a `Z`: the server's own text when it has one (all nine or six
   * fraction digits kept), else built from `seconds` (millisecond precision). */
  function isoUtc(text, seconds) {
    if (typeof text === "string" && text) {
      if (/[+-]00:?00$/.test(text)) return text.replace(/[+-]00:?00$/, "Z");
      if (/Z$/.test(text)) return text;
      const s = toSeconds(text);
      if (isFinite(s)) return new Date(s * 1000).toISOString();
    }
    return isFinite(seconds) ? new Date(seconds * 1000).toISOString() : "";
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  /* "UTC", "UTC+01:00", "UTC-05:30" for a Date's local offset. */
  function zoneLabel(date) {
    const offset = -date.getTimezoneOffset(); // minutes east of UTC
    if (offset === 0) return "UTC";
    const sign = offset > 0 ? "+" : "-";
    const abs = Math.abs(offset);
    return "UTC" + sign + pad2(Math.floor(abs / 60)) + ":" + pad2(abs % 60);
  }

  /* A reading's time for people: local date and time with the zone,
   * "2026-11-29 23:26:14 UTC+01:00". Empty for a missing time. */
  function fmtDateTime(seconds) {
    if (!isFinite(seconds)) return "";
    const d = new Date(seconds * 1000);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds()) + " " +
      zoneLabel(d);
  }

  /* The value of an <input type="datetime-local"> (local time, to the second). */
  function toLocalInput(seconds) {
    const d = new Date(Math.floor(seconds) * 1000);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + "T" +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }

  /* Seconds from an <input type="datetime-local"> value (local time); NaN if empty. */
  function fromLocalInput(value) {
    if (!value) return NaN;
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?$/.exec(value);
    if (!m) return NaN;
    const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]),
      Number(m[5]), Number(m[6] || 0));
    return d.getTime() / 1000;
  }

  function fmtValue(v) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(2) : "\u2013";
  }

  /* "0.35 s", "12 s", "4 min 3 s", "2 h 5 min". */
  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "\u2013";
    if (seconds < 10) return seconds.toFixed(2) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  function fmtBytes(bytes) {
    if (typeof bytes !== "number" || !isFinite(bytes)) return "\u2013";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
    if (bytes < 1024 * 1024 * 1024) return (bytes / 1024 / 1024).toFixed(1) + " MiB";
    return (bytes / 1024 / 1024 / 1024).toFixed(2) + " GiB";
  }

  /* "5 s", "2 min", "1 h", "1 d": a series interval. */
  function fmtInterval(seconds) {
    if (!isFinite(seconds)) return "";
    if (seconds % 86400 === 0) return seconds / 86400 + " d";
    if (seconds % 3600 === 0) return seconds / 3600 + " h";
    if (seconds % 60 === 0) return seconds / 60 + " min";
    return seconds + " s";
  }

  // ---- the view: range and stream, and its URL ---------------------------------------

  /* The view a URL query string asks for: `range=1h` (or live, the default) or
   * `from=...&to=...` (ISO 8601; a custom window), and `stream=NAME` (default: all).
   * Anything invalid falls back to the default rather than failing the page. */
  function parseView(search) {
    const params = new URLSearchParams(search || "");
    const view = {range: "live", from: null, to: null, stream: null};
    const stream = params.get("stream");
    if (stream && STREAM_NAME.test(stream)) view.stream = stream;
    const from = toSeconds(params.get("from"));
    const to = toSeconds(params.get("to"));
    if (isFinite(from) && isFinite(to) && to > from && to - from <= MAX_WINDOW_S) {
      view.range = "custom";
      view.from = from;
      view.to = to;
      return view;
    }
    const range = params.get("range");
    if (range && Object.prototype.hasOwnProperty.call(RANGES, range)) view.range = range;
    return view;
  }

  /* The query string of a view (with the leading "?"; empty for the default view).
   * Only the range and the stream name go in: never a token or anything secret. */
  function viewToSearch(view) {
    const params = new URLSearchParams();
    if (view.range === "custom") {
      params.set("from", new Date(view.from * 1000).toISOString());
      params.set("to", new Date(view.to * 1000).toISOString());
    } else if (view.range && view.range !== "live") {
      params.set("range", view.range);
    }
    if (view.stream) params.set("stream", view.stream);
    const text = params.toString();
    return text ? "?" + text : "";
  }

  /* [from, to] in seconds of a view at `now` (relative ranges end now). */
  function windowOf(view, now) {
    if (view.range === "custom") return [view.from, view.to];
    const span = RANGES[view.range] || RANGES.live;
    return [now - span, now];
  }

  /* A zoom from a drag selection [a, b]: at least MIN_WINDOW_S wide (widened around its
   * middle) and never past `now`. */
  function zoomWindow(a, b, now) {
    let from = Math.min(a, b);
    let to = Math.max(a, b);
    if (to - from < MIN_WINDOW_S) {
      const mid = (from + to) / 2;
      from = mid - MIN_WINDOW_S / 2;
      to = mid + MIN_WINDOW_S / 2;
    }
    if (to > now) {
      from -= to - now;
      to = now;
    }
    return [from, to];
  }

  /* The window `factor` times wider around the same middle, never past `now`. */
  function zoomOutWindow(from, to, now, factor) {
    const mid = (from + to) / 2;
    const half = Math.min(MAX_WINDOW_S, (to - from) * (factor || 4)) / 2;
    let a = mid - half;
    let b = mid + half;
    if (b > now) {
      a -= b - now;
      b = now;
    }
    return [a, b];
  }

  /* Buckets to ask temperatureSeries for: one per CSS pixel of the plot. */
  function pointsForWidth(px) {
    const n = Math.round(Number(px) || 0);
    return Math.max(10, Math.min(MAX_POINTS, n));
  }

  // ---- gaps ---------------------------------------------------------------------------

  function median(values) {
    if (!values.length) return NaN;
    const sorted = values.slice().sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }

  /* Seconds between two points beyond which a line must break.
   *
   * Live readings (no `interval`): 5 times the stream's usual spacing (the median of
   * its last 50 steps), at least `minGap` - so a stopped or silent stream breaks while
   * a feed's jitter never does. Series buckets (`interval` seconds): a dense series
   * (usually one bucket per interval) breaks at any missing bucket; a sparse one (a slow
   * feed, mostly empty buckets) at 3 times its usual spacing. */
  function gapThreshold(times, options) {
    const opts = options || {};
    const steps = [];
    for (let i = Math.max(1, times.length - 50); i < times.length; i++) steps.push(times[i] - times[i - 1]);
    const usual = median(steps);
    if (opts.interval) {
      if (!isFinite(usual) || usual <= opts.interval * 1.5) return opts.interval * 1.5;
      return usual * 3;
    }
    const minGap = opts.minGap || 2;
    return isFinite(usual) ? Math.max(minGap, usual * 5) : minGap;
  }

  /* The (time, values) rows of one stream with a row of nulls inserted wherever the
   * step exceeds `threshold`: uPlot breaks a line at null (spanGaps off) and spans
   * `undefined`, which marks only "no point of this stream at another's time". */
  function withGaps(rows, threshold) {
    const out = [];
    for (let i = 0; i < rows.length; i++) {
      if (i > 0 && rows[i][0] - rows[i - 1][0] > threshold) {
        const gap = [(rows[i][0] + rows[i - 1][0]) / 2];
        for (let c = 1; c < rows[i].length; c++) gap.push(null);
        out.push(gap);
      }
      out.push(rows[i]);
    }
    return out;
  }

  /* uPlot's aligned data from several streams' rows ([t, col1, col2, ...], sorted):
   * [times, ...every column of stream 0, ...of stream 1, ...]; a stream without a
   * point at a time gets `undefined` there (spanned), its own gap rows give null. */
  function align(streamRows, columns) {
    const index = new Map();
    for (const rows of streamRows) for (const r of rows) index.set(r[0], true);
    const times = Array.from(index.keys()).sort((a, b) => a - b);
    times.forEach((t, i) => index.set(t, i));
    const data = [times];
    for (const rows of streamRows) {
      const cols = [];
      for (let c = 0; c < columns; c++) cols.push(new Array(times.length).fill(undefined));
      for (const r of rows) {
        const i = index.get(r[0]);
        for (let c = 0; c < columns; c++) cols[c][i] = r[c + 1];
      }
      data.push(...cols);
    }
    return data;
  }

  /* How many explicit gaps (null runs) a column holds. */
  function countGaps(column) {
    let n = 0;
    for (let i = 0; i < column.length; i++) if (column[i] === null && (i === 0 || column[i - 1] !== null)) n++;
    return n;
  }

  // ---- limits -------------------------------------------------------------------------

  /* The shaded zones of a stream's limits, in value space, outermost last:
   * [{level: "warning"|"critical", from, to, name}], with +-Infinity for open ends.
   * A yellow zone runs from its limit to the red one (or without end). */
  function limitZones(limits) {
    if (!limits) return [];
    const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
    const yl = num(limits.yellowLow), yh = num(limits.yellowHigh);
    const rl = num(limits.redLow), rh = num(limits.redHigh);
    const zones = [];
    if (yh !== null) zones.push({level: "warning", name: "yellowHigh", from: yh, to: rh !== null ? rh : Infinity});
    if (rh !== null) zones.push({level: "critical", name: "redHigh", from: rh, to: Infinity});
    if (yl !== null) zones.push({level: "warning", name: "yellowLow", from: rl !== null ? rl : -Infinity, to: yl});
    if (rl !== null) zones.push({level: "critical", name: "redLow", from: -Infinity, to: rl});
    return zones;
  }

  /* The y range to draw: the data's, widened to show the nearest limit on each side
   * (yellow, or red where there is no yellow) so a band is always in view. */
  function yRange(min, max, limits) {
    let lo = isFinite(min) ? min : null;
    let hi = isFinite(max) ? max : null;
    if (limits) {
      const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
      const high = num(limits.yellowHigh) !== null ? num(limits.yellowHigh) : num(limits.redHigh);
      const low = num(limits.yellowLow) !== null ? num(limits.yellowLow) : num(limits.redLow);
      for (const v of [high, low]) {
        if (v === null) continue;
        lo = lo === null ? v : Math.min(lo, v);
        hi = hi === null ? v : Math.max(hi, v);
      }
    }
    if (lo === null || hi === null) return [0, 1];
    if (hi === lo) return [lo - 1, hi + 1];
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  /* "yellow 18 to 30, red 15 to 40" for people (text beside the coloured bands). */
  function describeLimits(limits) {
    if (!limits) return "";
    const parts = [];
    const pair = (word, low, high) => {
      const has = (v) => typeof v === "number" && isFinite(v);
      if (has(low) && has(high)) parts.push(word + " below " + low + " or above " + high);
      else if (has(high)) parts.push(word + " above " + high);
      else if (has(low)) parts.push(word + " below " + low);
    };
    pair("warning", limits.yellowLow, limits.yellowHigh);
    pair("critical", limits.redLow, limits.redHigh);
    if (typeof limits.staleAfter === "number") parts.push("stale after " + limits.staleAfter + " s");
    return parts.join("; ");
  }

  /* Decimals that tell the y axis' ticks apart (0.05 apart: 2), at least 1, at most 4. */
  function tickDecimals(ticks) {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    if (!(step > 0) || !isFinite(step)) return 1;
    return Math.max(1, Math.min(4, Math.ceil(-Math.log10(step) - 1e-9)));
  }

  // ---- CSV ----------------------------------------------------------------------------

  /* One CSV cell (RFC 4180 quoting). Text that a spreadsheet would run as a formula
   * (=, +, -, @, tab, CR first) gets a leading apostrophe; numbers are written as
   * numbers, so negative temperatures stay numbers. */
  function csvCell(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") return isFinite(value) ? String(value) : "";
    let text = String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;
    if (/[",\r\n]/.test(text)) text = '"' + text.replace(/"/g, '""') + '"';
    return text;
  }

  /* A CSV document: a header row and the rows, CRLF line ends (RFC 4180). */
  function buildCsv(header, rows) {
    const lines = [header.map(csvCell).join(",")];
    for (const row of rows) lines.push(row.map(csvCell).join(","));
    return lines.join("\r\n") + "\r\n";
  }

  /* A file name for an export: tps-<stream or all>-<from>-<to>.csv (UTC, to the second). */
  function csvFileName(stream, from, to) {
    const stamp = (s) => new Date(Math.floor(s) * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    return "tps-" + (stream || "all") + "-" + stamp(from) + "-" + stamp(to) + ".csv";
  }

  global.TpsDash = Object.freeze({
    RANGES, MIN_WINDOW_S, MAX_POINTS, toSeconds, isoUtc, zoneLabel, fmtDateTime, toLocalInput,
    fromLocalInput, fmtValue, fmtDuration, fmtBytes, fmtInterval, parseView, viewToSearch,
    windowOf, zoomWindow, zoomOutWindow, pointsForWidth, gapThreshold, withGaps, align,
    countGaps, limitZones, yRange, describeLimits, tickDecimals, csvCell, buildCsv, csvFileName,
  });
})(typeof window !== "undefined" ? window : globalThis);
