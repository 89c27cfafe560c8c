"""The history actor: background work that must never delay ingest or queries.

In this order, one chunk per message so the mailbox stays responsive:

1. fill the hot tier from the store (``all`` role; :mod:`tps.history.loader`);
2. backfill missing rollups (roles that write, when ``TPS_ROLLUPS`` is on;
   :mod:`tps.history.backfill`);
3. every ``LOOK_EVERY`` seconds, load streams that appeared in the hot tier since
   (streams added at runtime).

It has its own store connection - never the writer's, never a query actor's - and a
failed store call is retried after a backoff. In cluster mode a ``gate`` (the
cluster's ``backfill`` lease, :class:`tps.cluster.node.BackfillGate`) lets one writer
instance backfill at a time: the backfill waits until the gate allows it, and the
gate is told when it is done. Progress is readable from any thread
through the hot tier's :meth:`~tps.history.hot.HotTier.status` and the
:class:`~tps.history.backfill.BackfillProgress` it is given.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import pykka

from tps.actors.timer import tell_later
from tps.errors import StoreError
from tps.history.backfill import Backfill, BackfillProgress
from tps.history.hot import HotTier
from tps.history.loader import HotLoader
from tps.ingest.backoff import Backoff
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

LOOK_EVERY = 10.0
"""Seconds between looks for streams that need loading into the hot tier."""


@dataclass(frozen=True, slots=True)
class HistoryStep:
    """Do the next chunk of background work (actor -> itself, timer -> actor)."""


class BackfillGateLike(Protocol):
    """May the backfill run here now (``allowed``); is it still wanted (``wanted``)."""

    allowed: bool
    wanted: bool
    on_allowed: Callable[[], None]


class HistoryActor(pykka.ThreadingActor):
    """Loads the hot tier and backfills rollups in the background (see module doc).

    ``hot`` is None where there is no hot tier; ``progress`` None where there is no
    backfill. ``streams`` are the streams to load first (the configured feeds).
    """

    def __init__(self, store_factory: StoreFactory, hot: HotTier | None,
                 progress: BackfillProgress | None, streams: Sequence[str] = (), *,
                 gate: BackfillGateLike | None = None) -> None:
        super().__init__()
        self._gate = gate
        self._store_factory = store_factory
        self._hot = hot
        self._progress = progress
        self._initial = list(streams)
        self._store: Store | None = None
        self._loader: HotLoader | None = None
        self._loading = False
        self._loaded_once = hot is None
        self._backfill: Backfill | None = None
        self._backoff = Backoff(initial=1.0, cap=30.0)
        self._cancel_timer: Any = None

    def on_start(self) -> None:
        """Begin working."""
        if self._gate is not None:
            ref = self.actor_ref

            def allowed() -> None:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(HistoryStep())

            self._gate.on_allowed = allowed
        self.actor_ref.tell(HistoryStep())

    def on_stop(self) -> None:
        """Close the store; a load in progress ends where it got to."""
        self._close()

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        """Log and release; history work is best effort (queries stay exact without it)."""
        logger.error("History actor crashed: %s; the hot tier and backfill stop where they "
                     "got to (queries stay exact, from the store)", exception_value)
        if self._progress is not None and exception_value is not None:
            self._progress.update(state="failed", last_error=str(exception_value))
        self._close()

    def _close(self) -> None:
        if self._cancel_timer is not None:
            self._cancel_timer()
        if self._loader is not None and self._loading:
            self._loader.finish()
            self._loading = False
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # closing must not mask the real problem
                logger.debug("Closing the history store failed", exc_info=True)
            self._store = None

    def on_receive(self, message: Any) -> Any:
        """Dispatch :class:`HistoryStep`."""
        if not isinstance(message, HistoryStep):
            logger.warning("History actor ignored unexpected message %r", message)
            return None
        try:
            more = self._step()
        except StoreError as exc:
            delay = self._backoff.next_delay()
            logger.warning("History work failed (%s); retrying in %.1f s", exc, delay)
            if self._loading and self._loader is not None:
                self._loader.finish()  # keeps what it got; older readings: the store
                self._loading = False
            self._backfill = None  # prepared again from what the store says then
            self._later(delay)
            return None
        self._backoff.reset()
        if more:
            self.actor_ref.tell(HistoryStep())
        else:
            self._later(LOOK_EVERY)
        return None

    def _later(self, delay: float) -> None:
        self._cancel_timer = tell_later(delay, self.actor_ref, HistoryStep())

    def _step(self) -> bool:
        """One chunk of work; True when there is more to do right away."""
        store = self._store
        if store is None:
            store = self._store = self._store_factory()
            store.ensure_ready()
        hot = self._hot
        if hot is not None:
            if self._loader is None:
                self._loader = HotLoader(hot, store)
            if self._loading:
                if self._loader.step():
                    return True
                self._loader.finish()
                self._loading = False
                return True
            waiting = self._unloaded(hot)
            if waiting:
                self._loader.begin(waiting)
                self._loading = True
                return True
        if self._progress is not None and self._progress.status().state != "done":
            if self._gate is not None and not self._gate.allowed:
                return False  # another instance backfills; the gate wakes us
            if self._backfill is None:
                self._backfill = Backfill(store, self._progress)
            if self._backfill.step():
                return True
            if self._gate is not None:
                self._gate.wanted = False  # done: hand the lease to the next writer
        return False

    def _unloaded(self, hot: HotTier) -> list[str]:
        """Streams to load next: the configured ones first, then any the tier holds
        without having loaded them."""
        names = hot.unloaded()
        if not self._loaded_once:
            self._loaded_once = True
            names = list(dict.fromkeys([*self._initial, *names]))
        return names
