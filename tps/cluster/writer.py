"""The writer role in cluster mode: readings from JetStream into the store.

:class:`StoreWriter` is a thin actor around one store connection. The
:class:`~tps.cluster.readings.ReadingsConsumer` (on the NATS link's loop) tells it each
fetched batch (``BatchFetched``); the actor writes the batch and acknowledges it only
when the store accepted it. A failed write is retried after a backoff by a message
told later - the actor never sleeps, so it keeps answering - while the consumer keeps
the batch's messages "in progress" so JetStream does not hand them to another writer.
A writer killed mid-batch never acknowledges: JetStream redelivers the batch to a
surviving writer after the ack wait, and writes are idempotent per (stream, time), so
a batch the dead writer had in fact stored is stored once.

Any number of writers share the durable consumer; each fetch goes to one of them, so
one stream's readings may be split over several writers, in no particular order
between them (the store does not care; see the README on rollups and alarms).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from tps.actors.stats import WriterStats
from tps.actors.timer import tell_later
from tps.cluster.link import NatsLink
from tps.cluster.readings import FetchedBatch, ReadingsConsumer
from tps.errors import StoreError
from tps.ingest.backoff import Backoff
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

_WARN_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class BatchFetched:
    """A batch arrived from JetStream (consumer -> writer)."""

    batch: FetchedBatch


@dataclass(frozen=True, slots=True)
class RetryStore:
    """The backoff after a failure has passed: try again (timer -> writer)."""

    generation: int


class StoreWriter(pykka.ThreadingActor):
    """Writes fetched batches to its store, acknowledging each once stored."""

    def __init__(self, store_factory: StoreFactory, stats: WriterStats,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        super().__init__()
        self._store_factory = store_factory
        self._stats = stats
        self._on_failure_cb = on_failure
        self._store: Store | None = None
        self._ready = False
        self._waiting: list[FetchedBatch] = []
        self._backoff = Backoff(initial=0.5, cap=5.0)
        self._generation = 0
        self._retry_pending = False
        self._outage_since: float | None = None
        self._last_warning = 0.0

    def on_start(self) -> None:
        """Prepare the store (retried with backoff until it works)."""
        self._attempt()

    def on_stop(self) -> None:
        """Give unwritten batches back to JetStream at once, close the store."""
        self._shutdown()

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        """Same as a stop, then tell the owner."""
        self._shutdown()
        if self._on_failure_cb is not None and exception_value is not None:
            self._on_failure_cb(exception_value)

    def _shutdown(self) -> None:
        for batch in self._waiting:
            batch.release()
        self._waiting.clear()
        self._stats.buffered = 0
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                logger.debug("Closing the store failed", exc_info=True)
            self._store = None

    def on_receive(self, message: Any) -> Any:
        """Dispatch the writer's messages."""
        if isinstance(message, BatchFetched):
            self._waiting.append(message.batch)
            self._stats.buffered += len(message.batch)
            if not self._retry_pending:
                self._attempt()
        elif isinstance(message, RetryStore):
            if message.generation == self._generation:
                self._retry_pending = False
                self._attempt()
        else:
            logger.warning("Store writer ignored unexpected message %r", message)
        return None

    def _attempt(self) -> None:
        try:
            if self._store is None:
                self._store = self._store_factory()
            if not self._ready:
                self._store.ensure_ready()
                self._ready = True
            while self._waiting:
                batch = self._waiting[0]
                self._write(self._store, batch)
                self._waiting.pop(0)
                self._stats.buffered -= len(batch)
        except (StoreError, OSError) as exc:
            self._failed(exc)
            return
        self._backoff.reset()
        if self._outage_since is not None:
            logger.warning("Store is reachable again after %.1f s",
                           time.monotonic() - self._outage_since)
            self._outage_since = None
        self._stats.store_reachable = True

    def _write(self, store: Store, batch: FetchedBatch) -> None:
        store.write(batch.readings)
        batch.ack()
        self._stats.points_written += len(batch)
        self._stats.batches_written += 1

    def _failed(self, exc: BaseException) -> None:
        self._stats.write_failures += 1
        self._stats.write_retries += 1
        self._stats.store_reachable = False
        self._stats.last_error = str(exc)
        delay = self._backoff.next_delay()
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning("Store write failed (%s); %d readings from JetStream wait (not "
                           "acknowledged, kept in progress); retrying in %.1f s", exc,
                           self._stats.buffered, delay)
        self._generation += 1
        self._retry_pending = True
        tell_later(delay, self.actor_ref, RetryStore(self._generation))


class ClusterWriterService:
    """The writer role's parts: a :class:`StoreWriter` fed by a ReadingsConsumer."""

    def __init__(self, link: NatsLink, store_factory: StoreFactory, stats: WriterStats,
                 batch_size: int, flush_interval: float) -> None:
        self.stats = stats
        self._link = link
        self._store_factory = store_factory
        self._ref: pykka.ActorRef[StoreWriter] | None = None
        self.consumer = ReadingsConsumer(link, self._deliver, batch_size=batch_size,
                                         linger=flush_interval)

    def start(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Start the actor (again, after a crash) and, the first time, the consumer."""
        if self._ref is not None and self._ref.is_alive():
            return
        first = self._ref is None
        self._ref = StoreWriter.start(self._store_factory, self.stats, on_failure)
        if first:
            self.consumer.start()

    def _deliver(self, batch: FetchedBatch) -> None:
        ref = self._ref
        try:
            if ref is None:
                raise pykka.ActorDeadError("no writer")
            ref.tell(BatchFetched(batch))
        except pykka.ActorDeadError:
            batch.release()  # nobody to write it: any writer may have it again

    def is_alive(self) -> bool:
        """True while the writer actor runs."""
        return self._ref is not None and self._ref.is_alive()

    def stop(self, timeout: float) -> None:
        """Stop fetching, then stop the actor (unwritten batches go back to JetStream)."""
        self.consumer.stop()
        ref, self._ref = self._ref, None
        if ref is not None:
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                ref.stop(block=True, timeout=timeout)
