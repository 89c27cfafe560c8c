"""The browser side of TPS: the dashboard at ``/``, GraphiQL, and their static assets.

Everything a browser loads comes from ``tps/api/static/`` inside the package (the
chart library, React and GraphiQL are vendored there by ``tools/vendor_assets.sh``), so
the pages work on a machine with no internet. GraphiQL itself is served by the GraphQL
handler on ``GET /graphql`` when the client prefers HTML; it calls :func:`graphiql_html`.
"""

from __future__ import annotations

import html
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import tornado.web

from tps.api.context import ApiContext

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The folder served under ``/static/`` (shipped as package data)."""

Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]

# The seed README's smoke test, exactly as written there, plus the challenge's
# spelling of the current reading. GraphiQL opens one tab per entry.
EXAMPLE_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "Current Temperature",
        "query {\n  currentTemperature {\n    time\n    value\n   }\n}\n",
    ),
    (
        "Min and Max over a Time Range",
        "query {\n"
        'temperatureStatistics(after: "2023-07-28T13:00:00+00:00", '
        'before: "2023-07-28T14:00:00+00:00") {\n'
        "min\nmax\n}\n}\n",
    ),
    (
        "Last Two Seconds",
        "query MyQuery {\n  temperatureMeasurements {  \n    time\n    value\n  }\n}\n",
    ),
    (
        "Live readings (subscription)",
        "subscription {\n  temperature {\n    time\n    value\n    stream\n  }\n}\n",
    ),
)

_GRAPHIQL_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TPS GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/vendor/graphiql/graphiql.min.css">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql" data-endpoint="{endpoint}">Loading GraphiQL&hellip;</div>
<script id="graphiql-config" type="application/json">{config}</script>
<script src="/static/vendor/react/react.production.min.js"></script>
<script src="/static/vendor/react-dom/react-dom.production.min.js"></script>
<script src="/static/vendor/graphiql/graphiql.min.js"></script>
<script src="/static/gqlws.js"></script>
<script src="/static/graphiql-init.js"></script>
</body>
</html>
"""


def graphiql_html(endpoint: str = "/graphql") -> str:
    """The GraphiQL page: assets from ``/static/``, the seed's smoke-test queries as tabs.

    Queries and mutations are POSTed to ``endpoint``; subscriptions go over a websocket
    to the same path (``graphql-transport-ws``). Headers typed into GraphiQL's header
    editor (e.g. ``{"Authorization": "Bearer ..."}`` for mutations) are sent along.
    """
    tabs = [{"query": query} for _title, query in EXAMPLE_QUERIES]
    config = {"endpoint": endpoint, "tabs": tabs}
    # "</" must not appear inside the <script> element; JSON allows escaping "/".
    config_json = json.dumps(config).replace("</", "<\\/")
    return _GRAPHIQL_TEMPLATE.format(endpoint=html.escape(endpoint), config=config_json)


DASHBOARD_CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
"""The dashboard's Content-Security-Policy: its own files only, no inline script or
style, no frames around it. Stream names and alarm comments are user data and the page
sets them only as text; this header is the second line: even markup that slipped in
could run no script and send nothing elsewhere. (``connect-src 'self'`` covers the
same-origin websocket in current browsers; styles that scripts set through the CSSOM,
as uPlot does, are not inline styles.)"""


@cache
def _dashboard_page() -> bytes:
    return (STATIC_DIR / "index.html").read_bytes()


class DashboardHandler(tornado.web.RequestHandler):
    """``GET /``: the live dashboard (a static page; its script talks to the APIs)."""

    def initialize(self, ctx: ApiContext) -> None:
        """Keep the context (unused today; the route table passes it to every handler)."""
        self.ctx = ctx

    def get(self) -> None:
        """Serve the dashboard page, never cached so an upgrade shows at once."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", DASHBOARD_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.write(_dashboard_page())


class StaticHandler(tornado.web.StaticFileHandler):
    """``/static/...`` from the package folder; vendored files may be cached for a day.

    Tornado already answers conditional requests (ETag / If-Modified-Since); the
    dashboard's own files are revalidated each load so an upgrade shows at once.
    """

    def set_extra_headers(self, path: str) -> None:
        """Cache vendored libraries (versioned by the vendor script), revalidate the rest."""
        if path.startswith("vendor/"):
            self.set_header("Cache-Control", "public, max-age=86400")
        else:
            self.set_header("Cache-Control", "no-cache")


def routes(ctx: ApiContext) -> list[Route]:
    """The dashboard at ``/`` and the static assets under ``/static/``."""
    if not (STATIC_DIR / "index.html").is_file():
        # A broken install (package data not shipped) should say so once, clearly.
        logger.error("Dashboard assets missing in %s; / and /static/ will answer 404", STATIC_DIR)
    return [
        (r"/", DashboardHandler, {"ctx": ctx}),
        (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
    ]
