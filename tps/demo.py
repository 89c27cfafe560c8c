"""``tps demo``: three simulated satellites and the whole service, zero setup.

Runs the simulator in this process, points one feed at each simulated satellite, and
runs TPS in the ``all`` role on the embedded SQLite store (unless ``TPS_INFLUX_URL`` is
set), then prints where to look. Feeds may reach loopback only when
``TPS_FEED_ALLOW`` names it; the demo adds exactly its simulator's ``host:port``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from tps.actors.stats import StreamState
from tps.config import FeedConfig, Settings
from tps.feeds.simulator import Simulator, SimulatorConfig
from tps.logging_setup import configure_logging
from tps.redact import redact_url
from tps.service import Service

logger = logging.getLogger(__name__)


def run_demo(
    settings: Settings,
    *,
    feeds: int,
    sim_port: int,
    interval: float,
    wait: Callable[[], object],
) -> int:
    """Run the demo until ``wait()`` returns (the CLI waits for SIGINT/SIGTERM).

    ``feeds`` simulated satellites on ``sim_port`` (0: any), one reading every
    ``interval`` seconds each, unless ``settings`` name feeds of their own.
    Returns the exit code.
    """
    configure_logging(settings.log_level, settings.log_format)
    simulator = Simulator(SimulatorConfig(port=sim_port, interval=interval)).start()
    if not settings.feeds:
        simulated = tuple(FeedConfig(name=f"sat{i}", url=simulator.url(f"sat{i}"))
                          for i in range(1, feeds + 1))
        # The simulator listens on loopback, where feeds may go only when named
        # explicitly: the demo names exactly its own simulator's address and port.
        own = f"{simulator.config.host}:{simulator.port}"
        settings = replace(settings, feeds=simulated, role="all",
                           feed_allow=(*settings.feed_allow, own))
    service = Service(settings)
    try:
        service.start()
        base = f"http://{settings.http_host}:{service.http_port}"
        print(f"""
TPS demo is running: {_feeds_line(service)}, store: {
            redact_url(settings.influx_url) if settings.influx_url
            else f"SQLite in {settings.data_dir}"}.
  Dashboard      {base}/
  GraphiQL       {base}/graphql
  REST streams   {base}/api/streams
  Health         {base}/health
  Metrics        {base}/metrics
  Control token  {service.token}   (later: tps token --data-dir {settings.data_dir})
Press Ctrl-C to stop.
""", flush=True)
        wait()
    finally:
        service.stop()
        simulator.stop()
    return 0


def _feeds_line(service: Service) -> str:
    """The feeds as they really are: a stream an operator stopped before a restart stays
    stopped (the registry remembers it), and the banner says so."""
    streams = service.supervisor.list_streams().get(timeout=10)
    stopped = [s.name for s in streams if s.state == StreamState.STOPPED]
    line = f"{len(streams)} simulated satellite feeds"
    if stopped:
        names = ", ".join(stopped)
        line += (f" ({len(streams) - len(stopped)} running; stopped before this restart and "
                 f"left stopped: {names} - resume with 'tps streams start "
                 f"{stopped[0]} --server {_base(service)}')")
    return line


def _base(service: Service) -> str:
    return f"http://{service.settings.http_host}:{service.http_port}"
