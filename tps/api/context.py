"""What request handlers need, injected through ``initialize(ctx=...)``.

Handlers never reach for globals: the service builds one :class:`ApiContext` and the
route table passes it to every handler.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from tps.actors.alarms import AlarmHub
from tps.actors.board import StatsBoard
from tps.actors.supervisor import SupervisorProxy
from tps.api.control import ControlPlane, FutureWaiter, StreamControl
from tps.api.requests import TrustedProxies
from tps.config import Settings
from tps.history.answers import History
from tps.history.health import HistoryHealth
from tps.live import LiveHub
from tps.store.base import Store

if TYPE_CHECKING:  # cluster mode's modules (and nats-py) load only in cluster mode
    from tps.api.alarms import AlarmsApi
    from tps.cluster.node import ClusterNode

T = TypeVar("T")


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def token(self) -> str:
        """The expected token (for the CLI and the dashboard's own tests)."""
        return self._token.decode()

    def check_header(self, header: str | None) -> bool:
        """True when ``header`` is ``Bearer <the token>``."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        return self.check_token(value.strip()) if scheme.lower() == "bearer" else False

    def check_token(self, token: str | None) -> bool:
        """True when ``token`` equals the configured token (constant time)."""
        if not token:
            return False
        return hmac.compare_digest(token.encode(), self._token)


class QueryRunner(Protocol):
    """What the HTTP layer needs from :class:`tps.actors.query.QueryPool`."""

    async def run(
        self,
        fn: Callable[[Store], T],
        timeout: float | None = None,
        key: Hashable | None = None,
    ) -> T:
        """``fn(store)`` run on a query actor, awaited without blocking the IO loop."""

    async def ping(self, timeout: float) -> bool:
        """Whether the store answers, asked apart from the queries (for /ready)."""


class MetricsRecorder(Protocol):
    """What the HTTP layer needs from :class:`tps.api.metrics.Metrics`."""

    def observe_query(self, operation: str, seconds: float) -> None:
        """Record one query of ``operation`` taking ``seconds``."""

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""


@dataclass
class ApiContext:
    """Collaborators of the HTTP layer.

    ``supervisor`` is the typed proxy of :class:`tps.actors.supervisor.Supervisor` and
    ``board`` its :class:`~tps.actors.board.StatsBoard`; both are None in the ``api``
    role (no readers in this process), and so is ``hub``. ``queries`` is the query
    actor pool (None in the ``ingest`` role); ``metrics`` the Prometheus metrics.
    Handlers change streams through :attr:`control`; ``/health``, ``/ready`` and
    ``/metrics`` read the board and never ask the supervisor. ``history`` answers
    ``temperatureStatistics`` and ``temperatureSeries``.
    """

    settings: Settings
    auth: TokenAuth
    queries: QueryRunner | None
    metrics: MetricsRecorder | None
    supervisor: SupervisorProxy | None = None
    board: StatsBoard | None = None
    hub: LiveHub | None = None
    waiter: FutureWaiter = field(default_factory=FutureWaiter)
    token_path: str | None = None
    on_close: list[Callable[[], None]] = field(default_factory=list)
    alarms: AlarmsApi | None = None
    """Limits and alarms (issue 11); None when the process has none."""
    alarm_hub: AlarmHub | None = None
    """Alarm events as they happen (None where no keeper runs: role ``api``)."""
    history: History = field(default_factory=lambda: History(None))
    """Answers statistics and series (from the hot tier where there is one)."""
    history_health: HistoryHealth | None = None
    """The ``history`` section of /health (None: not shown)."""
    cluster: ClusterNode | None = None
    proxies: TrustedProxies = field(init=False)
    """Whose ``X-Forwarded-For`` is believed (``TPS_TRUSTED_PROXIES``)."""

    def __post_init__(self) -> None:
        self.proxies = TrustedProxies(self.settings.trusted_proxies)

    @property
    def control(self) -> StreamControl | None:
        """Stream control: the shared registry in cluster mode (any role), else the
        supervisor (None without one)."""
        if self.cluster is not None:
            from tps.api.cluster_control import ClusterControlPlane

            return ClusterControlPlane(self.cluster, self.board)
        if self.supervisor is None:
            return None
        return ControlPlane(self.supervisor, self.waiter)
