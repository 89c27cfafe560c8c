"""``/health`` (liveness and a JSON summary) and ``/ready`` (can this process serve?).

``/health`` always answers 200 while the HTTP loop runs, with ``status`` ``ok`` or
``degraded`` and the details an operator needs: which actors are alive, every
stream's state, the writer's buffer and oldest unwritten reading's age, the spool,
and whether the store answers; in cluster mode also the NATS connection, the
instances seen, the leases held. ``/ready`` is for load balancers: 200 only when the
store answers a ping and the supervisor runs (in the ``api`` role, which has no
supervisor, only the store counts) and, in cluster mode, NATS is connected and the
cluster's buckets are watched; else 503.

The store is pinged on the query pool's own probe actor (its own connection, never
queued behind queries) with a short timeout (one ping at a time, its answer reused for
a second), so a stopped InfluxDB turns ``/ready`` to 503 within about three seconds, a
busy prober never ties up the query actors, and query actors busy with heavy answers
never make the process look unready.

Everything else comes from the supervisor's :class:`~tps.actors.board.StatsBoard`,
read on the IO loop without asking any actor: a supervisor busy with a slow control
call never delays a health check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import tornado.web

from tps.actors.board import health_summary, supervisor_running
from tps.actors.stats import WriterStats
from tps.api.context import ApiContext
from tps.api.errors import JsonErrorsMixin

logger = logging.getLogger(__name__)

PING_TIMEOUT = 2.0
Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def writer_json(stats: WriterStats | None, now_ns: int | None = None) -> dict[str, Any] | None:
    """The writer and spool figures of /health."""
    if stats is None:
        return None
    now_ns = time.time_ns() if now_ns is None else now_ns
    oldest = stats.oldest_unwritten_ns
    return {
        "buffered": stats.buffered,
        "oldest_unwritten_age_s": None if oldest is None else max(0.0, (now_ns - oldest) / 1e9),
        "points_written": stats.points_written,
        "write_failures": stats.write_failures,
        "write_retries": stats.write_retries,
        "dropped": stats.dropped,
        "store_reachable": stats.store_reachable,
        "last_error": stats.last_error,
        "spool": {
            "enabled": stats.spool_enabled,
            "bytes": stats.spool_bytes,
            "segments": stats.spool_segments,
            "replayed": stats.spool_replayed,
            "truncated": stats.spool_truncated,
            "dropped": stats.spool_dropped,
            "errors": stats.spool_errors,
        },
    }


class StoreProbe:
    """Answers "is the store reachable?" for /health and /ready without piling up pings.

    At most one ping is in flight; every caller waits at most ``timeout`` for it, and a
    result is reused for ``ttl`` seconds, so a load balancer polling /ready many times
    a second costs the store one cheap request per second and can never tie up the
    query actors. Without a query pool (``ingest`` role) the writer's view is used.
    Lives on the IO loop thread only.
    """

    def __init__(self, ctx: ApiContext, ttl: float = 1.0, timeout: float = PING_TIMEOUT) -> None:
        self._ctx = ctx
        self._ttl = ttl
        self._timeout = timeout
        self._last: tuple[bool, str | None] | None = None
        self._last_at = 0.0
        self._inflight: asyncio.Future[tuple[bool, str | None]] | None = None

    async def reachable(self) -> tuple[bool, str | None]:
        """(reachable, why not) - fresh within ``ttl`` seconds."""
        if self._last is not None and time.monotonic() - self._last_at < self._ttl:
            return self._last
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._ping())
        try:
            result = await asyncio.wait_for(asyncio.shield(self._inflight), self._timeout)
        except TimeoutError:
            result = (False, f"store did not answer a ping within {self._timeout:g} s")
        self._last, self._last_at = result, time.monotonic()
        return result

    async def _ping(self) -> tuple[bool, str | None]:
        queries = self._ctx.queries
        if queries is None:
            return self._writer_view()
        try:
            ok = await queries.ping(self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            return False, str(exc) or type(exc).__name__
        return ok, None if ok else "store did not answer the ping"

    def _writer_view(self) -> tuple[bool, str | None]:
        stats = self._ctx.board.writer() if self._ctx.board is not None else None
        if stats is None:
            return False, "no query pool and no writer in this process"
        return stats.store_reachable, None if stats.store_reachable else stats.last_error


class _HealthBase(JsonErrorsMixin):
    ctx: ApiContext
    probe: StoreProbe

    def initialize(self, ctx: ApiContext, probe: StoreProbe) -> None:
        """Receive the API context and the shared store probe from the route table."""
        self.ctx = ctx
        self.probe = probe

    def set_default_headers(self) -> None:
        """JSON, never cached."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    async def store_reachable(self) -> tuple[bool, str | None]:
        """Whether the store answers (see :class:`StoreProbe`)."""
        return await self.probe.reachable()

    def supervisor_health(self) -> dict[str, Any] | None:
        """The supervisor's summary from the board, or None in a process without one."""
        board = self.ctx.board
        return None if board is None else health_summary(board)

    def writer_stats(self) -> WriterStats | None:
        """The writer's stats (None without one)."""
        board = self.ctx.board
        return None if board is None else board.writer()


class HealthHandler(_HealthBase):
    """``GET /health``: 200 with a JSON summary while the process serves."""

    async def get(self) -> None:
        """Liveness plus the summary."""
        supervisor = self.supervisor_health()
        reachable, store_error = await self.store_reachable()
        stats = self.writer_stats()
        troubled = supervisor is not None and (
            not supervisor.get("alive") or bool(supervisor.get("failed"))
        )
        degraded = not reachable or troubled
        body = {
            "status": "degraded" if degraded else "ok",
            "role": self.ctx.settings.role,
            "supervisor": supervisor,
            "streams": (supervisor or {}).get("streams", {}),
            "writer": writer_json(stats),
            "store": {"reachable": reachable, "error": store_error},
            "alarms": self.ctx.alarms.health() if self.ctx.alarms is not None else None,
            "history": (self.ctx.history_health.as_dict()
                        if self.ctx.history_health is not None else None),
        }
        cluster = self.ctx.cluster
        if cluster is not None:
            body["cluster"] = cluster.health()
            if not cluster.ready():
                body["status"] = "degraded"
        self.finish(json.dumps(body))

    async def head(self) -> None:
        """The same status without the body (probes that only look at the status)."""
        await self.get()


class ReadyHandler(_HealthBase):
    """``GET /ready``: 200 when the store answers and the supervisor runs, else 503."""

    async def get(self) -> None:
        """Readiness."""
        reachable, store_error = await self.store_reachable()
        reasons = [] if reachable else [f"store unreachable: {store_error}"]
        board = self.ctx.board
        if board is not None and not supervisor_running(board.view()):
            reasons.append("supervisor not running")
        cluster = self.ctx.cluster
        if cluster is not None and not cluster.ready():
            status = cluster.link.status()
            reasons.append(f"NATS cluster not usable: connection {status.state}"
                           + (f" ({status.last_error})" if status.last_error else ""))
        self.set_status(503 if reasons else 200)
        self.finish(json.dumps({"ready": not reasons, "reasons": reasons}))

    async def head(self) -> None:
        """The same status without the body."""
        await self.get()


def routes(ctx: ApiContext) -> list[Route]:
    """The /health and /ready routes."""
    kwargs = {"ctx": ctx, "probe": StoreProbe(ctx)}
    return [(r"/health", HealthHandler, kwargs), (r"/ready", ReadyHandler, kwargs)]
