"""Wires TPS together for one role and runs it.

``all``: readers, writer, query pool, live hub and the whole HTTP API in one process.
``ingest``: readers and writer, plus the control plane, /health and /metrics over HTTP.
``api``: query pool and the HTTP API only; current values and subscriptions come from
the store.

Cluster mode (``TPS_NATS_URL`` set, see ``tps.cluster``) changes the wiring, not the
parts: the readers' writer publishes to JetStream instead of writing the store
(``ClusterNode.publisher``), the supervisor starts the readers the feed leases give
this instance (``SupervisorReaderControl``) and keeps no registry file (the cluster's is
in NATS), ``writer`` and ``all`` write JetStream's readings into the store, ``api`` and
``all`` feed their live hub from NATS, and the control plane is the shared registry on
every role.
"""

from __future__ import annotations

import functools
import gc
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pykka

from tps.actors.alarms import AlarmParts
from tps.actors.board import StatsBoard
from tps.actors.history import HistoryActor
from tps.actors.query import QueryPool
from tps.actors.reader import StreamReader
from tps.actors.stats import WriterStats
from tps.actors.supervisor import Supervisor, SupervisorProxy, supervisor_proxy
from tps.actors.writer import WriterHandle
from tps.api.alarms import AlarmsApi
from tps.api.app import HttpFrontend, bind
from tps.api.context import ApiContext, TokenAuth
from tps.api.metrics import Metrics
from tps.config import Settings
from tps.config.registry import StreamRegistry
from tps.datadir import DataDirLock, prepare_data_dir
from tps.errors import ConfigError
from tps.feeds.destinations import FeedDestinations
from tps.feeds.poller import FeedPoller
from tps.history.answers import History
from tps.history.backfill import BackfillProgress
from tps.history.health import HistoryHealth
from tps.history.hot import HotTier
from tps.history.kept_raw import KeptRaw
from tps.live import LiveHub
from tps.model import Reading
from tps.redact import redact_url
from tps.store import Store, open_store
from tps.token import load_or_create_token

if TYPE_CHECKING:  # cluster mode's modules (and nats-py) load only in cluster mode
    from tps.cluster.control import SupervisorReaderControl
    from tps.cluster.node import ClusterNode

logger = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.001
"""Seconds a thread runs Python before another may take the interpreter lock."""


class Service:
    """The running TPS process: build with settings, then ``start()`` and ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: LiveHub | None = None
        self.writer: WriterHandle | None = None
        self.writer_stats: WriterStats | None = None
        self.queries: QueryPool | None = None
        self.supervisor_ref: pykka.ActorRef[Supervisor] | None = None
        self._supervisor: SupervisorProxy | None = None
        self.http: pykka.ActorRef[HttpFrontend] | None = None
        self.feed_poller: FeedPoller | None = None
        self.hot: HotTier | None = None
        self.history_actor: pykka.ActorRef[HistoryActor] | None = None
        self.kept_raw: KeptRaw | None = None
        self.http_port: int = settings.http_port
        self.token: str = ""
        self._lock: DataDirLock | None = None
        self.alarms: AlarmParts | None = None
        self.cluster: ClusterNode | None = None
        self._reader_control: SupervisorReaderControl | None = None

    @property
    def supervisor(self) -> SupervisorProxy:
        """The supervisor's typed proxy (once :meth:`start` has run)."""
        if self._supervisor is None:
            raise RuntimeError("the service has not started")
        return self._supervisor

    def _store(self) -> Store:
        return open_store(self.settings)

    def start(self) -> None:
        """Start every actor of the role and the HTTP server; raises on failure.

        A process that ingests holds the data dir's lock (:mod:`tps.datadir`) until
        :meth:`stop`; a data dir TPS cannot use is a ConfigError, one line.
        """
        settings = self.settings
        if settings.role == "api":
            prepare_data_dir(settings.data_dir)  # token and SQLite only: no lock
        else:
            self._lock = DataDirLock.acquire(settings.data_dir)
        try:
            sockets = bind(settings.http_host, settings.http_port)
        except OSError as exc:
            self._release_lock()
            raise ConfigError("TPS_HTTP_PORT", f"cannot listen on {settings.http_host}:"
                              f"{settings.http_port}: {exc.strerror}") from None
        self.http_port = int(sockets[0].getsockname()[1])
        try:
            self._start_actors(sockets)
        except BaseException as exc:
            # Leave no actor thread behind: a half-started service would keep the
            # process alive after the error is reported.
            for sock in sockets:
                sock.close()
            self.stop()
            problem = _data_dir_problem(exc, settings.data_dir)
            if problem is not None:
                raise problem from None
            raise

    def _start_actors(self, sockets: list[socket.socket]) -> None:
        settings = self.settings
        role = settings.role
        ingests = role in ("all", "ingest")
        self.token, token_path = load_or_create_token(settings)

        # The addresses no feed may reach, with the HTTP port actually bound.
        destinations = FeedDestinations.from_settings(settings, http_port=self.http_port)
        if role == "all" or (settings.clustered and role == "api"):
            self.hub = LiveHub()
        # History (rollups, hot tier, backfill) rides on the writer's own store writes,
        # so it runs where readings are written to the store: the ingesting process in
        # single-node mode, the writers (roles ``all`` and ``writer``) in cluster mode,
        # where each stream has one writer at a time (partition leases).
        history_here = (role in ("all", "writer") if settings.clustered else ingests)
        if role == "all" and history_here:
            # The newest readings in memory, fed by the writer's acknowledgements.
            self.hot = HotTier(int(settings.hot_window * 1e9), settings.hot_max_bytes)
        progress = BackfillProgress() if history_here and settings.rollups else None
        if settings.clustered:
            from tps.cluster.control import SupervisorReaderControl
            from tps.cluster.node import ClusterNode

            self._reader_control = SupervisorReaderControl() if ingests else None
            self.cluster = ClusterNode(
                settings, control=self._reader_control,
                live=self.hub.publish if self.hub is not None else None,
                store_factory=self._store,
                http=f"http://{settings.http_host}:{self.http_port}", hot=self.hot)
        reader_factory = None
        if ingests:
            self.writer_stats = WriterStats()
            if self.cluster is not None:
                from tps.cluster.readings import PUBLISH_INTERVAL

                # The readers' writer publishes to JetStream (its "store"), promptly.
                self.writer = WriterHandle(
                    replace(settings, rollups=False,
                            flush_interval=min(settings.flush_interval, PUBLISH_INTERVAL)),
                    self.cluster.publisher, self.writer_stats)
            else:
                self.writer = WriterHandle(settings, self._store, self.writer_stats,
                                           hot=self.hot)
            self.feed_poller = FeedPoller().start()
            reader_factory = functools.partial(StreamReader.start, poller=self.feed_poller,
                                               destinations=destinations)
        if role in ("all", "api"):
            self.queries = QueryPool(self._store, settings.query_pool_size,
                                     timeout=settings.influx_timeout + 5,
                                     answer_ttl=settings.query_cache_ttl)

        if ingests and self.cluster is not None:
            # Cluster mode: the keeper's events go to JetStream; the HTTP layer reads the
            # cluster's alarm log as every instance follows it (tps.cluster.alarms).
            assert self.cluster.alarm_publisher is not None
            self.alarms = AlarmParts.start_cluster(self.cluster.alarm_publisher)
        elif ingests:
            self.alarms = AlarmParts.start(settings)
        registry = (StreamRegistry(settings.data_dir / "streams.json")
                    if role != "api" and not settings.clustered else None)
        board_writer = self.writer_stats
        if board_writer is None and self.cluster is not None and self.cluster.writer is not None:
            board_writer = self.cluster.writer.stats
        board = StatsBoard(board_writer)
        self.supervisor_ref = Supervisor.start(
            # In cluster mode the feed leases say which streams this process reads.
            settings.with_feeds(()) if settings.clustered else settings,
            sink=self._sink if ingests else None,
            writer=self.writer, queries=self.queries, registry=registry,
            hub=None if settings.clustered else self.hub, board=board,
            reader_factory=reader_factory, destinations=destinations,
            # (In cluster mode limits come from the shared registry and a stream's alarms
            # follow its lease: the reader control drives the keeper, not the supervisor.)
            alarms=self.alarms.keeper if self.alarms is not None and self.cluster is None
            else None,
        )
        self._supervisor = supervisor_proxy(self.supervisor_ref)
        if self._reader_control is not None:
            assert self.cluster is not None and self.alarms is not None
            self._reader_control.bind(self._supervisor,
                                      self.cluster.attach_keeper(self.alarms.keeper))
        if self.cluster is not None:
            self.cluster.start()

        if self.hot is not None or progress is not None:
            # Loads the hot tier, then backfills rollups: its own store connection. (In
            # cluster mode the hot tier holds only the streams this writer writes, and
            # the backfill runs while this instance holds the cluster's backfill lease.)
            gate = self.cluster.backfill if self.cluster is not None else None
            self.history_actor = HistoryActor.start(
                self._store, self.hot, progress,
                [] if settings.clustered else [feed.name for feed in settings.feeds],
                gate=gate)
        metrics = Metrics.from_board(board)
        # Raw readings of final spans, for a process whose questions all go to the store
        # (with a hot tier, its own budget holds the recent readings instead).
        kept_raw = KeptRaw(settings.kept_raw_max_bytes if self.hot is None else 0,
                           store_factory=self._store)
        self.kept_raw = kept_raw
        ctx = ApiContext(
            settings=settings, auth=TokenAuth(self.token), queries=self.queries,
            metrics=metrics, supervisor=self._supervisor if role != "api" else None,
            board=board if role != "api" else None, hub=self.hub,
            token_path=str(token_path) if token_path else None, cluster=self.cluster,
            alarm_hub=(self.cluster.alarm_hub if self.cluster is not None else
                       self.alarms.hub if self.alarms is not None else None),
            history=History(self.hot, kept_raw=kept_raw),
            history_health=HistoryHealth(
                settings.rollups and (history_here or not settings.clustered),
                self.hot, progress, kept_raw),
        )
        if self.cluster is not None:
            from tps.api.cluster_alarms import ClusterAlarmsApi

            ctx.alarms = ClusterAlarmsApi(ctx, self.cluster)
            metrics.watch_alarms(self.cluster.alarm_board)
        else:
            ctx.alarms = AlarmsApi(
                ctx, board=self.alarms.board if self.alarms is not None else None,
                keeper=self.alarms.keeper if self.alarms is not None else None,
                health=self.alarms.health if self.alarms is not None else None)
            if self.alarms is not None:
                metrics.watch_alarms(self.alarms.board)
        # Big answers and seeds are built on worker threads; each time the IO loop wants
        # the interpreter lock back it waits up to the switch interval (5 ms by default,
        # per system call). 1 ms keeps /ready and small requests quick meanwhile.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.http = HttpFrontend.start(ctx, sockets)
        # Everything built so far (schema, modules, actors) lives as long as the process:
        # keep it out of the collector's full scans, which otherwise stall the IO loop
        # for tens of milliseconds (the p99 of every request) on this machine.
        gc.freeze()
        logger.info("TPS started: role %s, %d feed(s), store %s, HTTP on http://%s:%d/%s",
                    role, len(settings.feeds),
                    redact_url(settings.influx_url) if settings.influx_url
                    else f"SQLite in {settings.data_dir}",
                    settings.http_host, self.http_port,
                    f", cluster instance {self.cluster.instance}" if self.cluster else "")

    def _sink(self, readings: Sequence[Reading]) -> None:
        # Spool/buffer first: a reading counts as received only once the writer has it.
        if self.writer is not None:
            self.writer.submit(readings)
        if self.alarms is not None:
            self.alarms.check(readings)
        if self.hub is not None and self.cluster is None:
            # (In cluster mode the hub is fed from NATS, like every other instance's.)
            self.hub.publish(readings)

    def stop(self) -> bool:
        """Stop readers, flush the writer (bounded), stop everything; True if all written."""
        clean = True
        if self.cluster is not None:
            # Readers first, then leases: the other instances take our feeds at once.
            self.cluster.hand_back(self.settings.shutdown_timeout)
        supervisor = self._supervisor
        if supervisor is not None:
            try:
                clean = bool(supervisor.shutdown(self.settings.shutdown_timeout).get(
                    timeout=self.settings.shutdown_timeout + 10))
            except Exception:
                logger.exception("Supervisor shutdown failed; stopping remaining actors")
                clean = False
            self._log_final_counts(supervisor)
        if self.alarms is not None:
            self.alarms.stop()
        if self.history_actor is not None:
            self.history_actor.stop(timeout=10)
        if self.kept_raw is not None:
            self.kept_raw.close()
        if self.http is not None:
            self.http.stop(timeout=10)
        if self.supervisor_ref is not None:
            self.supervisor_ref.stop(timeout=10)
        if self.feed_poller is not None:
            self.feed_poller.stop()
        if self._reader_control is not None:
            self._reader_control.close()
        if self.cluster is not None:
            self.cluster.close()
        self._release_lock()
        return clean

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _log_final_counts(self, supervisor: SupervisorProxy) -> None:
        # One line per stream, so an operator (and the SIGTERM test) can reconcile what
        # was received with what the store holds.
        try:
            streams = supervisor.list_streams().get(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            return
        for stats in streams:
            logger.info("Final count: stream %s received %d readings, rejected %d",
                        stats.name, stats.received, stats.rejected)


def _data_dir_problem(exc: BaseException, data_dir: Path) -> ConfigError | None:
    """A start-up failure caused by a file in the data dir TPS may not use, as the one
    line an operator needs (else None: a real bug keeps its traceback)."""
    if isinstance(exc, ConfigError) or not isinstance(exc, OSError) or not exc.filename:
        return None
    try:
        inside = Path(str(exc.filename)).resolve().is_relative_to(data_dir.resolve())
    except OSError:
        inside = False
    if not inside:
        return None
    return ConfigError("TPS_DATA_DIR", f"cannot use {exc.filename}: {exc.strerror}")
