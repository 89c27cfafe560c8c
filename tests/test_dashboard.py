"""The dashboard and GraphiQL pages without a browser: served, complete, and offline.

A real Tornado server on a bound loopback socket serves ``tps.api.ui.routes``; the
checks fetch what a browser would fetch. The page's pure rules (``dashboard-lib.js``)
run in node. The headless-browser runs are in ``test_browser.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import graphql
import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from tps.api import ui
from tps.api.context import ApiContext, TokenAuth
from tps.config import Settings

STATIC = ui.STATIC_DIR
OWN_FILES = ("index.html", "dashboard.js", "dashboard-lib.js", "dashboard.css", "gqlws.js",
             "graphiql-init.js")
LIB_CHECK = Path(__file__).resolve().parent / "browser" / "check_dashboard_lib.mjs"
VENDORED = (
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/react/react.production.min.js",
    "vendor/react-dom/react-dom.production.min.js",
    "vendor/graphiql/graphiql.min.js",
    "vendor/graphiql/graphiql.min.css",
)


@dataclass
class Response:
    """What a GET returned."""

    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode()


class UiServer:
    """``ui.routes`` behind a real HTTP server on its own IO-loop thread."""

    def __init__(self) -> None:
        ctx = ApiContext(settings=Settings(), auth=TokenAuth("t" * 32), queries=None, metrics=None)
        self._app = tornado.web.Application(ui.routes(ctx), compress_response=True)
        self._sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = self._sockets[0].getsockname()[1]
        self._loop: tornado.ioloop.IOLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(5), "UI test server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = tornado.ioloop.IOLoop.current()
        server = tornado.httpserver.HTTPServer(self._app)
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._started.set)
        self._loop.start()
        server.stop()
        self._loop.close(all_fds=False)

    def get(self, path: str) -> Response:
        """GET ``path`` (gzip-decoded when the server compressed it)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                body = resp.read()
                if resp.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                return Response(resp.status, resp.headers.get("Content-Type", ""), body)
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.headers.get("Content-Type", ""), exc.read())

    def close(self) -> None:
        """Stop the loop and its thread."""
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[UiServer]:
    """One UI server for the module's checks."""
    srv = UiServer()
    yield srv
    srv.close()


def referenced_assets(page: str) -> list[str]:
    """Every ``src``/``href`` a page loads (scripts, stylesheets), in order."""
    return re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', page)


def test_dashboard_is_served_at_the_root_as_html(server: UiServer) -> None:
    page = server.get("/")
    assert page.status == 200
    assert page.content_type.startswith("text/html")
    hooks = ('id="chart"', 'id="stream-rows"', 'id="add-form"', 'class="stop"', 'class="start"',
             'class="remove"', 'id="range-buttons"', 'id="stream-select"', 'id="custom-range"',
             'id="stats"', 'id="csv-button"', 'id="alarm-rows"', 'class="ack"', 'class="shelve"',
             'id="health"', 'name="protocol"')
    for hook in hooks:
        assert hook in page.text, hook


def test_every_asset_the_dashboard_references_is_served(server: UiServer) -> None:
    assets = [a for a in referenced_assets(server.get("/").text) if not a.startswith("data:")]
    assert "/static/vendor/uplot/uPlot.iife.min.js" in assets
    for asset in assets:
        response = server.get(asset)
        assert response.status == 200, asset
        assert response.body, asset


def test_every_asset_the_graphiql_page_references_is_served(server: UiServer) -> None:
    assets = [a for a in referenced_assets(ui.graphiql_html()) if not a.startswith("data:")]
    assert "/static/vendor/graphiql/graphiql.min.js" in assets
    assert "/static/vendor/react/react.production.min.js" in assets
    for asset in assets:
        response = server.get(asset)
        assert response.status == 200, asset
        assert response.body, asset


def test_scripts_and_styles_are_served_with_their_content_types(server: UiServer) -> None:
    assert "javascript" in server.get("/static/dashboard.js").content_type
    assert server.get("/static/dashboard.css").content_type.startswith("text/css")
    assert "javascript" in server.get("/static/vendor/graphiql/graphiql.min.js").content_type


def test_static_handler_serves_nothing_outside_the_static_folder(server: UiServer) -> None:
    for path in ("/static/../ui.py", "/static/%2e%2e/ui.py", "/static/vendor/../../context.py"):
        assert server.get(path).status in (403, 404), path
    assert server.get("/static/no-such-file.js").status == 404


def test_own_pages_and_scripts_name_no_external_host() -> None:
    # The pages must work with no internet: nothing of ours may point at a CDN.
    for name in OWN_FILES:
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://", text), name
    assert not re.search(r"https?://", ui.graphiql_html())


def test_vendored_styles_load_nothing_from_other_hosts() -> None:
    # Library JS mentions URLs in comments and error messages; what matters is that
    # stylesheets fetch no fonts or images from elsewhere (GraphiQL inlines its fonts).
    for name in VENDORED:
        if name.endswith(".css"):
            css = (STATIC / name).read_text()
            assert "@import" not in css, name
            for target in re.findall(r"url\(\s*['\"]?([^'\")]+)", css):
                assert target.startswith("data:"), (name, target[:60])


def test_vendored_files_are_recorded_with_versions_and_licenses() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    for name in VENDORED:
        path = STATIC / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert name.removeprefix("vendor/") in readme, name
        assert (path.parent / "LICENSE").is_file(), name
    assert re.search(r"\| graphiql \| 3\.\d+\.\d+ \|", readme)
    assert re.search(r"\| uplot \| 1\.\d+\.\d+ \|", readme)


def test_vendored_files_carry_no_dangling_source_map_references() -> None:
    for name in VENDORED:
        assert "sourceMappingURL" not in (STATIC / name).read_text()[-400:], name


def graphiql_config(page: str) -> dict[str, object]:
    block = r'<script id="graphiql-config" type="application/json">(.*?)</script>'
    match = re.search(block, page, re.S)
    assert match, "no GraphiQL config block"
    config: dict[str, object] = json.loads(match.group(1))
    return config


def test_graphiql_page_opens_the_seed_smoke_test_queries_as_tabs() -> None:
    config = graphiql_config(ui.graphiql_html())
    tabs = config["tabs"]
    assert isinstance(tabs, list)
    queries = [tab["query"] for tab in tabs]
    assert "currentTemperature" in queries[0]
    assert any("temperatureStatistics" in q for q in queries)
    assert any("temperatureMeasurements" in q for q in queries)
    assert config["endpoint"] == "/graphql"


def test_graphiql_example_queries_are_valid_against_the_tps_schema() -> None:
    from tps.api.graphql.schema import build_schema

    schema = build_schema().graphql_schema
    for title, query in ui.EXAMPLE_QUERIES:
        errors = graphql.validate(schema, graphql.parse(query))
        assert not errors, (title, errors)


def test_graphiql_config_cannot_close_its_script_element() -> None:
    hostile = '/graphql"</script><script>alert(1)</script>'
    page = ui.graphiql_html(hostile)
    assert page.count("</script>") == ui.graphiql_html().count("</script>")
    assert graphiql_config(page)["endpoint"] == hostile


def test_dashboard_page_is_never_cached_but_vendored_libraries_are(server: UiServer) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Cache-Control"] == "no-cache"
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/static/vendor/uplot/uPlot.iife.min.js"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert "max-age" in resp.headers["Cache-Control"]



# --- safety and accessibility of the dashboard page ------------------------------------


def test_dashboard_is_served_with_a_strict_content_security_policy(server: UiServer) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/")
    with urllib.request.urlopen(request, timeout=10) as resp:
        policy = resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy


class _Page(HTMLParser):
    """What the checks below need from index.html."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.style_attributes = 0
        self.event_attributes: list[str] = []
        self.buttons_without_type = 0
        self.unlabelled: list[str] = []
        self._label_depth = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.style_attributes += "style" in names
        self.event_attributes += [n for n in names if n.startswith("on")]
        if tag == "script":
            self._in_script = "src" not in names
        if tag == "button" and names.get("type") not in ("button", "submit"):
            self.buttons_without_type += 1
        if tag == "label":
            self._label_depth += 1
        if tag in ("input", "select", "textarea") and not self._label_depth \
                and "aria-label" not in names:
            self.unlabelled.append(str(names.get("name") or names.get("id") or tag))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_dashboard_page_has_no_inline_code_and_labels_every_control() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    # Nothing the CSP would block (and no handler attributes to inject into).
    assert page.inline_scripts == 0
    assert page.style_attributes == 0
    assert page.event_attributes == []
    # Buttons are buttons that say what they do; every input has a label.
    assert page.buttons_without_type == 0
    assert page.unlabelled == []


def test_dashboard_scripts_never_turn_data_into_markup() -> None:
    # Stream names and alarm comments are user data: they are only ever set as text.
    for name in ("dashboard.js", "dashboard-lib.js", "gqlws.js"):
        code = (STATIC / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, (name, sink)


def test_dashboard_rules_hold_in_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install Node.js 18+ (e.g. `apt-get install -y nodejs`)",
                    pytrace=False)
    # A zone with a half-hour offset, so the time-zone label is checked too.
    completed = subprocess.run([node, str(LIB_CHECK)], env={**os.environ, "TZ": "Asia/Kolkata"},
                               capture_output=True, text=True, timeout=60)
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["ok"], json.dumps(report["failures"], indent=1)
    assert report["checks"] > 50
