"""Prometheus metrics: counters read from the stats objects at scrape time.

Actors do not call into Prometheus on their hot paths; they update their plain stats
objects (``tps/actors/stats.py``) and a custom collector turns those into metric
families when ``/metrics`` is scraped. Only the query latency histogram is observed
directly (by the GraphQL layer, through :meth:`Metrics.observe_query`).

Each :class:`Metrics` owns its own ``CollectorRegistry``, so two TPS instances in one
process (tests) never share or collide on metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tps.actors.alarms import AlarmBoard
from tps.actors.board import StatsBoard
from tps.actors.stats import StreamState, StreamStats, SupervisorStats, WriterStats
from tps.api.context import ApiContext

logger = logging.getLogger(__name__)

Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _none() -> None:
    return None


def _no_streams() -> list[StreamStats]:
    return []


class StatsCollector(Collector):
    """Builds metric families from the stats objects on every scrape.

    The stats' dicts and sets are replaced by their writers, never changed in place
    (``tps/actors/stats.py``), so iterating them here needs no lock and no retry.
    """

    def __init__(
        self,
        stream_stats: Callable[[], Iterable[StreamStats]],
        writer_stats: Callable[[], WriterStats | None],
        supervisor_stats: Callable[[], SupervisorStats | None],
    ) -> None:
        self._streams = stream_stats
        self._writer = writer_stats
        self._supervisor = supervisor_stats

    def collect(self) -> Iterator[Any]:
        """Yield every TPS metric family."""
        yield from self._stream_families(list(self._streams()))
        writer = self._writer()
        if writer is not None:
            yield from self._writer_families(writer)
        supervisor = self._supervisor()
        if supervisor is not None:
            restarts = CounterMetricFamily(
                "tps_actor_restarts", "Restarts of crashed actors by the supervisor",
                labels=["actor"],
            )
            for actor, count in supervisor.restarts.items():
                restarts.add_metric([actor], count)
            failed = GaugeMetricFamily(
                "tps_actor_failed", "1 for an actor the supervisor gave up restarting",
                labels=["actor"],
            )
            for actor in sorted(supervisor.failed):
                failed.add_metric([actor], 1)
            yield restarts
            yield failed

    @staticmethod
    def _stream_families(streams: list[StreamStats]) -> Iterator[Any]:
        received = CounterMetricFamily(
            "tps_readings_received", "Readings accepted from a feed", labels=["stream"]
        )
        rejected = CounterMetricFamily(
            "tps_readings_rejected", "Feed frames rejected, by reason", labels=["stream", "reason"]
        )
        reconnects = CounterMetricFamily(
            "tps_stream_reconnects", "Reconnections to a feed", labels=["stream"]
        )
        state = GaugeMetricFamily(
            "tps_stream_state", "1 for the stream's current state", labels=["stream", "state"]
        )
        last = GaugeMetricFamily(
            "tps_stream_last_value", "Newest value read from the stream", labels=["stream"]
        )
        for stats in streams:
            received.add_metric([stats.name], stats.received)
            for reason, count in stats.rejected_by_reason.items():
                rejected.add_metric([stats.name, reason], count)
            reconnects.add_metric([stats.name], stats.reconnects)
            for each in StreamState:
                state.add_metric([stats.name, str(each)], 1 if stats.state == each else 0)
            if stats.last_value is not None:
                last.add_metric([stats.name], stats.last_value)
        yield from (received, rejected, reconnects, state, last)

    @staticmethod
    def _writer_families(w: WriterStats) -> Iterator[Any]:
        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        oldest = w.oldest_unwritten_ns
        age = 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)
        yield counter("tps_points_written", "Points written to the store", w.points_written)
        yield counter("tps_write_batches", "Batches written to the store", w.batches_written)
        yield counter("tps_write_failures", "Failed store writes", w.write_failures)
        yield counter("tps_write_retries", "Retried store writes", w.write_retries)
        yield counter("tps_readings_dropped", "Readings dropped because the buffer was full",
                      w.dropped)
        yield gauge("tps_writer_buffered_readings", "Readings waiting to be written", w.buffered)
        yield gauge("tps_writer_oldest_unwritten_age_seconds",
                    "Age of the oldest reading not yet written", age)
        yield gauge("tps_store_reachable", "1 while the store accepts writes",
                    1 if w.store_reachable else 0)
        yield gauge("tps_spool_bytes", "Bytes in the on-disk spool", w.spool_bytes)
        yield gauge("tps_spool_segments", "Segment files in the spool", w.spool_segments)
        yield gauge("tps_spool_oldest_age_seconds", "Age of the oldest spooled unwritten "
                    "reading", age if w.spool_enabled else 0.0)
        yield counter("tps_spool_replayed", "Readings replayed from the spool at start",
                      w.spool_replayed)
        yield counter("tps_spool_truncated", "Torn spool records cut off at start",
                      w.spool_truncated)
        yield counter("tps_spool_dropped", "Readings dropped from the spool at its size bound",
                      w.spool_dropped)
        yield counter("tps_spool_errors", "Spool I/O errors", w.spool_errors)


class AlarmCollector(Collector):
    """``tps_alarms_active{stream,severity}``: open alarms, read from the alarm board."""

    def __init__(self, board: AlarmBoard) -> None:
        self._board = board

    def collect(self) -> Iterator[Any]:
        """One gauge family from the keeper's latest view (no actor is asked)."""
        family = GaugeMetricFamily("tps_alarms_active", "Alarms not yet cleared, by stream "
                                   "and severity.", labels=["stream", "severity"])
        for (stream, severity), count in sorted(self._board.view.counts.items()):
            family.add_metric([stream, severity], count)
        yield family


class Metrics:
    """The metrics of one TPS process, in a registry of its own.

    ``stream_stats``, ``writer_stats`` and ``supervisor_stats`` are called at every
    scrape from the HTTP thread: they must be cheap and must not message actors
    (``StatsBoard.streams`` etc. are). In the ``api`` role pass the defaults: the
    stream and writer figures are then absent and only query latency is exported.
    """

    def __init__(
        self,
        stream_stats: Callable[[], Iterable[StreamStats]] = _no_streams,
        writer_stats: Callable[[], WriterStats | None] = _none,
        supervisor_stats: Callable[[], SupervisorStats | None] = _none,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(stream_stats, writer_stats, supervisor_stats))
        self._query_seconds = Histogram(
            "tps_query_duration_seconds",
            "Time to answer a query, by operation",
            labelnames=["operation"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )

    @classmethod
    def from_board(cls, board: StatsBoard) -> Metrics:
        """Metrics over everything the supervisor's :class:`StatsBoard` holds."""
        return cls(board.streams, board.writer, board.supervisor)

    def watch_alarms(self, board: AlarmBoard) -> None:
        """Export the alarm board's counts as ``tps_alarms_active``."""
        self.registry.register(AlarmCollector(board))

    def observe_query(self, operation: str, seconds: float) -> None:
        """Record one query of ``operation`` (e.g. ``temperatureStatistics``) taking ``seconds``."""
        self._query_seconds.labels(operation=operation).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics`` in the Prometheus text format."""

    ctx: ApiContext

    def initialize(self, ctx: ApiContext) -> None:
        """Receive the API context from the route table."""
        self.ctx = ctx

    def get(self) -> None:
        """Render the registry (reads plain counters only: fast, never blocks)."""
        metrics = self.ctx.metrics
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(metrics.render() if metrics is not None else b"")


def routes(ctx: ApiContext) -> list[Route]:
    """The /metrics route."""
    return [(r"/metrics", MetricsHandler, {"ctx": ctx})]
