// Drives Debian's headless chromium through the TPS dashboard and GraphiQL.
//
//   node tests/browser/check_dashboard.mjs <base-url> <token> <screenshot-path> [stream [name=ws-url]]
//
// Loads `/`, reads a current value, waits for the chart's point count to grow, stops a
// stream with its button (answering the token prompt) and waits for the state to read
// "stopped", saves a screenshot, starts the stream again, optionally adds the feed
// `name=ws-url` with the form and waits for its first value; then opens GraphiQL
// (`/graphql`, a normal navigation sends Accept: text/html), runs the currentTemperature
// tab and reads the value from the result panel. Any request leaving the TPS origin is
// blocked and reported (the pages must work offline). Prints one JSON object; exit code
// 0 only when every step passed.
//
// Chromium: $TPS_CHROMIUM or /usr/bin/chromium (apt-get install -y chromium).
// Never downloads a browser (playwright-core only).

import {chromium} from "playwright-core";
import {mkdtempSync, rmSync, mkdirSync} from "node:fs";
import {tmpdir} from "node:os";
import {dirname, join} from "node:path";

const [baseArg, token, screenshot, wantedStream, addFeed] = process.argv.slice(2);
if (!baseArg || !token || !screenshot) {
  console.error("usage: check_dashboard.mjs <base-url> <token> <screenshot-path> [stream]");
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, "");
const origin = new URL(base).origin;
const STEP_TIMEOUT = Number(process.env.TPS_BROWSER_STEP_TIMEOUT_MS || 15000);

const result = {ok: false, step: "launch", external_requests: [], console_errors: [], page_errors: []};
const profile = mkdtempSync(join(tmpdir(), "tps-chromium-"));
let context = null;

function fail(message) {
  throw new Error(message);
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.TPS_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
    ],
    viewport: {width: 1280, height: 900},
    timeout: 30000,
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  // Offline proof: everything must come from TPS itself.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + "/") || url === origin || url.startsWith("data:")) return route.continue();
    result.external_requests.push(url);
    return route.abort();
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (msg) => {
    if (msg.type() === "error") result.console_errors.push(msg.text().slice(0, 300));
  });
  page.on("pageerror", (err) => result.page_errors.push(String(err).slice(0, 300)));
  page.on("dialog", (dialog) => dialog.accept(dialog.type() === "prompt" ? token : undefined));

  // --- dashboard ---------------------------------------------------------------------
  result.step = "dashboard: load";
  await page.goto(base + "/", {waitUntil: "load"});
  result.title = await page.title();

  result.step = "dashboard: current value";
  const valueHandle = await page.waitForFunction(
    (wanted) => {
      const cells = document.querySelectorAll("tr[data-stream] .current");
      for (const cell of cells) {
        const name = cell.closest("tr").dataset.stream;
        if (wanted && name !== wanted) continue;
        if (cell.dataset.value) return {stream: name, value: Number(cell.dataset.value), text: cell.textContent};
      }
      return null;
    },
    wantedStream || null,
  );
  const current = await valueHandle.jsonValue();
  result.stream = current.stream;
  result.current_value = current.value;
  result.current_text = current.text;
  if (!Number.isFinite(current.value)) fail("current value is not a number: " + current.text);

  result.step = "dashboard: chart grows";
  const pointsOf = () => page.$eval("#chart", (el) => Number(el.dataset.points || 0));
  await page.waitForFunction(() => Number(document.querySelector("#chart").dataset.points) > 0);
  result.points_before = await pointsOf();
  await page.waitForFunction(
    (before) => Number(document.querySelector("#chart").dataset.points) > before,
    result.points_before,
  );
  result.points_after = await pointsOf();
  result.chart_canvas = await page.$$eval("#chart canvas", (els) => els.length);
  if (!result.chart_canvas) fail("no chart canvas drawn");
  result.live_status = await page.$eval("#live-status", (el) => el.dataset.state);

  result.step = "dashboard: stop stream";
  const row = `tr[data-stream="${result.stream}"]`;
  result.state_before = await page.$eval(`${row} .state`, (el) => el.textContent);
  await page.click(`${row} button.stop`);
  await page.waitForFunction((sel) => document.querySelector(sel).textContent === "stopped", `${row} .state`);
  result.state_after_stop = await page.$eval(`${row} .state`, (el) => el.textContent);
  result.token_stored = await page.evaluate(() => sessionStorage.getItem("tps-control-token") !== null);

  result.step = "dashboard: screenshot";
  mkdirSync(dirname(screenshot), {recursive: true});
  await page.screenshot({path: screenshot, fullPage: true});
  result.screenshot = screenshot;

  result.step = "dashboard: start stream";
  await page.click(`${row} button.start`);
  await page.waitForFunction((sel) => document.querySelector(sel).textContent !== "stopped", `${row} .state`);
  result.state_after_start = await page.$eval(`${row} .state`, (el) => el.textContent);

  if (addFeed) {
    result.step = "dashboard: add stream";
    const [name, ...rest] = addFeed.split("=");
    await page.fill('#add-form input[name="name"]', name);
    await page.fill('#add-form input[name="url"]', rest.join("="));
    await page.click('#add-form button[type="submit"]');
    const added = `tr[data-stream="${name}"]`;
    await page.waitForFunction((sel) => {
      const cell = document.querySelector(sel + " .current");
      return cell && cell.dataset.value ? true : null;
    }, added);
    result.added_stream = name;
    result.added_state = await page.$eval(`${added} .state`, (el) => el.textContent);
    result.added_value = Number(await page.$eval(`${added} .current`, (el) => el.dataset.value));
    result.message = await page.$eval("#message", (el) => el.textContent);
  }

  // --- GraphiQL ------------------------------------------------------------------------
  result.step = "graphiql: load";
  const response = await page.goto(base + "/graphql", {waitUntil: "load"});
  result.graphiql_content_type = response.headers()["content-type"] || "";
  await page.waitForSelector(".graphiql-container .graphiql-execute-button");

  result.step = "graphiql: query editor";
  // The first example tab holds the seed's currentTemperature query; make sure the
  // editor really shows it (replace its text if a stored session changed it).
  const query = "query {\n  currentTemperature {\n    time\n    value\n  }\n}";
  const editorText = await page.evaluate(() => {
    const cm = document.querySelector(".graphiql-query-editor .CodeMirror");
    return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : null;
  });
  if (!editorText || !editorText.includes("currentTemperature")) {
    await page.evaluate((q) => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(q), query);
  }
  result.graphiql_query = (await page.evaluate(
    () => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.getValue(),
  )).replace(/\s+/g, " ").trim();

  result.step = "graphiql: run";
  await page.click(".graphiql-execute-button");
  const resultHandle = await page.waitForFunction(() => {
    const cm = document.querySelector(".result-window .CodeMirror");
    const text = cm && cm.CodeMirror ? cm.CodeMirror.getValue() : "";
    return /"value"\s*:\s*-?\d/.test(text) || /"errors"/.test(text) ? text : null;
  });
  const resultText = await resultHandle.jsonValue();
  result.graphiql_result = resultText.slice(0, 400);
  const match = /"value"\s*:\s*(-?[\d.eE+-]+)/.exec(resultText);
  if (!match) fail("GraphiQL result has no value: " + resultText.slice(0, 300));
  result.graphiql_value = Number(match[1]);

  result.step = "graphiql: screenshot";
  const graphiqlShot = screenshot.replace(/(\.png)?$/, "-graphiql.png");
  await page.screenshot({path: graphiqlShot});
  result.graphiql_screenshot = graphiqlShot;

  if (result.external_requests.length) fail("pages tried to load external URLs");
  if (result.page_errors.length) fail("uncaught page errors");
  result.step = "done";
  result.ok = true;
} catch (err) {
  result.error = String(err && err.message ? err.message : err).slice(0, 1500);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, {recursive: true, force: true});
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
