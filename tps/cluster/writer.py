"""The writer role in cluster mode: readings from JetStream into the store, with rollups.

Readings are split into fixed partitions (:mod:`tps.cluster.names`); a writer instance
holds the leases of some of them (:mod:`tps.cluster.leases`, assigned by bounded-load
rendezvous hashing over the live writer instances) and runs one
:class:`~tps.cluster.readings.ReadingsConsumer` per partition it holds. So each stream
has one writer at a time and its readings arrive in publish order - what the
single-node writer's rollups ("state + batch", folded on acknowledgement) need.

:class:`StoreWriter` is a thin actor around one store connection. Each partition's
consumer (on the NATS link's loop) tells it the batches it fetches (``BatchFetched``);
the actor writes everything waiting in one store write - readings plus the rollup
points and coverage marks they change (:mod:`tps.cluster.rollups`) - and acknowledges
the batches only when the store accepted it. A failed write is retried, with the same
fold, after a backoff told later (the actor never sleeps), while the consumers keep
the batches "in progress" so JetStream does not redeliver them. The hot tier (role
``all``) gets each acknowledged batch of the partitions held.

Hand-over is break-before-make: the partition's consumer stops fetching, the actor
writes what it holds of that partition (or gives it back to JetStream when the store
is down), forgets the rollup state and hot-tier streams of the partition - another
writer writes them from now on - and only then is the lease deleted. A writer killed
mid-batch never acknowledges: JetStream redelivers its batches to the partition's next
owner after the ack wait (then often after newer ones: see :mod:`tps.cluster.rollups`
for how late readings keep the rollups exact).

The actor writes a partition's batches only while its lease is valid
(:meth:`~tps.cluster.leases.LeaseSet.valid`: confirmed by the server within half the
TTL), so a writer cut off from NATS stops writing before the lease can pass to
another writer.
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
from tps.cluster.jetstream import warn_legacy_consumer
from tps.cluster.link import NatsLink
from tps.cluster.names import PARTITIONS, lease_partition, partition_of
from tps.cluster.readings import ConsumerStats, FetchedBatch, ReadingsConsumer
from tps.cluster.rollups import ClusterFold, fold_batch
from tps.errors import PartialWrite, StoreError
from tps.history.hot import HotTier
from tps.history.rollup import RollupState, repair
from tps.ingest.backoff import Backoff
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

_WARN_EVERY = 10.0
_FENCE_RECHECK = 0.5  # seconds between looks at a partition whose lease is not confirmed


@dataclass(frozen=True, slots=True)
class BatchFetched:
    """A batch arrived from JetStream (consumer -> writer)."""

    batch: FetchedBatch


@dataclass(frozen=True, slots=True)
class RetryStore:
    """The backoff after a failure has passed: try again (timer -> writer)."""

    generation: int


@dataclass(frozen=True, slots=True)
class ReleasePartition:
    """Stop writing ``partition``: write what is held of it (unless ``lost``), give the
    rest back, forget its streams, then call ``done`` (lease set -> writer)."""

    partition: int
    lost: bool
    done: Callable[[], None]


@dataclass
class RollupCounters:
    """What the cluster writer's rollups did (written by the actor, read by /health)."""

    late_batches: int = 0
    replays_skipped: int = 0
    streams_recomputed: int = 0
    partial_writes: int = 0


class StoreWriter(pykka.ThreadingActor):
    """Writes fetched batches (with their rollups) to its store, acknowledging each once
    stored. ``valid(partition)`` says whether the partition's lease is still ours."""

    def __init__(self, store_factory: StoreFactory, stats: WriterStats,
                 on_failure: Callable[[BaseException], None] | None = None, *,
                 rollups: bool = False, hot: HotTier | None = None,
                 valid: Callable[[int], bool] = lambda _partition: True,
                 counters: RollupCounters | None = None) -> None:
        super().__init__()
        self._store_factory = store_factory
        self._stats = stats
        self._on_failure_cb = on_failure
        self._rollups = RollupState() if rollups else None
        self._hot = hot
        self._valid = valid
        self._counters = counters or RollupCounters()
        self._store: Store | None = None
        self._ready = False
        self._waiting: list[FetchedBatch] = []
        self._current: tuple[list[FetchedBatch], ClusterFold] | None = None
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
        if self._current is not None:
            self._waiting[0:0] = self._current[0]
            self._current = None
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
        elif isinstance(message, ReleasePartition):
            self._release_partition(message)
        else:
            logger.warning("Store writer ignored unexpected message %r", message)
        return None

    # --- writing --------------------------------------------------------------------------

    def _attempt(self) -> None:
        try:
            if self._store is None:
                self._store = self._store_factory()
            if not self._ready:
                self._store.ensure_ready()
                self._ready = True
            while self._write_next(self._store):
                pass
        except (StoreError, OSError) as exc:
            self._failed(exc)
            return
        self._backoff.reset()
        if self._outage_since is not None:
            logger.warning("Store is reachable again after %.1f s",
                           time.monotonic() - self._outage_since)
            self._outage_since = None
        self._stats.store_reachable = True

    def _write_next(self, store: Store) -> bool:
        """Write the current group of batches (forming it from what waits); False when
        nothing more can be written now."""
        if self._current is None:
            batches = [b for b in self._waiting if self._valid(b.partition)]
            if not batches:
                if self._waiting and not self._retry_pending:
                    self._later(_FENCE_RECHECK)  # a lease to be confirmed again
                return False
            for batch in batches:
                self._waiting.remove(batch)
            readings = [r for batch in batches for r in batch.readings]
            uncertain = {r.stream for batch in batches if batch.redelivered
                         for r in batch.readings}
            self._current = (batches, fold_batch(store, self._rollups, readings, uncertain))
        batches, fold = self._current
        if not all(self._valid(b.partition) for b in batches):
            # A lease is no longer confirmed: write nothing of it until it is again (or
            # is handed back, which gives the batches back to JetStream).
            self._waiting[0:0] = batches
            self._current = None
            if not self._retry_pending:
                self._later(_FENCE_RECHECK)
            return False
        exact = True
        try:
            store.write(fold.readings, fold.rollups)
        except PartialWrite as exc:
            logger.error("Store accepted a batch of %d readings but refused %s of them: %s",
                         len(fold.readings), exc.dropped or "some", exc)
            self._counters.partial_writes += 1
            exact = False
        self._current = None
        self._written(store, batches, fold, exact)
        return True

    def _written(self, store: Store, batches: list[FetchedBatch], fold: ClusterFold,
                 exact: bool) -> None:
        state = self._rollups
        if state is not None:
            if fold.pending is not None:
                state.commit(fold.pending)
            if fold.recomputed:
                state.forget(fold.recomputed)
            if fold.replays or fold.recomputed:
                self._counters.late_batches += 1
                self._counters.replays_skipped += fold.replays
                self._counters.streams_recomputed += len(fold.recomputed)
        if not exact:
            streams = {r.stream for r in fold.readings}
            if self._hot is not None:
                self._hot.forget(streams)
            if state is not None:
                try:
                    repair(store, state, fold.readings)
                except StoreError as exc:
                    state.forget(streams)
                    logger.error("Rollups of %s may count readings the store dropped (%s); "
                                 "run 'tps rollup --rebuild' for that time", sorted(streams),
                                 exc)
        elif self._hot is not None:
            try:
                if fold.recomputed:
                    self._hot.forget(fold.recomputed)  # loaded again from the store
                self._hot.append(fold.in_order)
            except Exception:  # memory is a copy: never let it stop the writer
                logger.exception("Hot tier refused a batch; its streams are read from the "
                                 "store until loaded again")
                self._hot.forget({r.stream for r in fold.readings})
        for batch in batches:
            batch.ack()
            self._stats.buffered -= len(batch)
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
        self._later(delay)

    def _later(self, delay: float) -> None:
        self._generation += 1
        self._retry_pending = True
        tell_later(delay, self.actor_ref, RetryStore(self._generation))

    # --- hand-over ------------------------------------------------------------------------

    def _release_partition(self, message: ReleasePartition) -> None:
        partition = message.partition
        try:
            if not message.lost and self._ready and not self._retry_pending:
                self._attempt()  # write what we hold of it while the lease is ours
            current = self._current
            if current is not None and any(b.partition == partition for b in current[0]):
                # Formed with this partition's batches: give those back, keep the rest
                # waiting (their fold is made again).
                self._current = None
                self._waiting[0:0] = current[0]
            kept = []
            for batch in self._waiting:
                if batch.partition == partition:
                    batch.release()
                    self._stats.buffered -= len(batch)
                else:
                    kept.append(batch)
            self._waiting = kept
            streams: set[str] = set()
            if self._rollups is not None:
                streams = {s for s in self._rollups.streams() if partition_of(s) == partition}
                self._rollups.forget(streams)
            if self._hot is not None:
                self._hot.forget(s for s in self._hot.streams() if partition_of(s) == partition)
            logger.info("Partition %d handed %s: %d stream(s) forgotten here", partition,
                        "over (lost)" if message.lost else "back", len(streams))
        finally:
            message.done()


class ClusterWriterService:
    """The writer parts of an instance: a :class:`StoreWriter` fed by one consumer per
    partition it holds.

    As the partition leases' :class:`~tps.cluster.leases.LeaseWork` it starts and
    stops those consumers (on the link's loop). ``own_all`` starts every partition's
    consumer without leases (tests and tools with a single writer).
    """

    def __init__(self, link: NatsLink, store_factory: StoreFactory, stats: WriterStats,
                 batch_size: int, flush_interval: float, *, rollups: bool = False,
                 hot: HotTier | None = None) -> None:
        self.stats = stats
        self.rollup_counters = RollupCounters()
        self._link = link
        self._store_factory = store_factory
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._rollups = rollups
        self._hot = hot
        self._ref: pykka.ActorRef[StoreWriter] | None = None
        self._consumers: dict[int, ReadingsConsumer] = {}  # loop thread only
        self._retired = ConsumerStats()
        self.valid: Callable[[int], bool] = lambda _partition: True
        """Whether a partition's lease is ours right now (set by the node)."""

    def start(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Start the actor (again, after a crash)."""
        if self._ref is not None and self._ref.is_alive():
            return
        first = self._ref is None
        self._ref = StoreWriter.start(self._store_factory, self.stats, on_failure,
                                      rollups=self._rollups, hot=self._hot,
                                      valid=lambda p: self.valid(p),
                                      counters=self.rollup_counters)
        if first:
            self._link.submit(self._warn_legacy)

    async def _warn_legacy(self) -> None:
        await self._link.connected()
        with contextlib.suppress(Exception):
            await warn_legacy_consumer(self._link.js)

    def own_all(self) -> None:
        """Consume every partition, no leases asked (a lone writer; tests)."""
        async def start_all() -> None:
            for partition in range(PARTITIONS):
                self._start_partition(partition)
        self._link.submit(start_all).result(5)

    def partitions(self) -> list[int]:
        """Partitions consumed now (any thread; a snapshot)."""
        return sorted(self._consumers)

    @property
    def consumer_stats(self) -> ConsumerStats:
        """Counters summed over every partition consumer, past and present."""
        total = ConsumerStats(**vars(self._retired))
        for consumer in list(self._consumers.values()):
            for name, value in vars(consumer.stats).items():
                if isinstance(value, int):
                    setattr(total, name, getattr(total, name) + value)
                elif value is not None:
                    total.last_error = value
        return total

    # --- partitions (loop thread; see PartitionWork) -------------------------------------

    def _start_partition(self, partition: int) -> None:
        if partition in self._consumers:
            return
        consumer = ReadingsConsumer(self._link, self._deliver, batch_size=self._batch_size,
                                    linger=self._flush_interval, partition=partition)
        self._consumers[partition] = consumer
        consumer.start()

    def _stop_partition(self, partition: int, on_stopped: Callable[[], None],
                        lost: bool) -> None:
        consumer = self._consumers.pop(partition, None)

        async def stop() -> None:
            if consumer is not None:
                await consumer.stopped()
                for name, value in vars(consumer.stats).items():
                    if isinstance(value, int):
                        setattr(self._retired, name, getattr(self._retired, name) + value)
            ref = self._ref
            try:
                if ref is None:
                    raise pykka.ActorDeadError("no writer")
                ref.tell(ReleasePartition(partition, lost, on_stopped))
            except pykka.ActorDeadError:
                on_stopped()

        self._link.submit_task(stop)

    def _deliver(self, batch: FetchedBatch) -> None:
        ref = self._ref
        try:
            if ref is None:
                raise pykka.ActorDeadError("no writer")
            ref.tell(BatchFetched(batch))
        except pykka.ActorDeadError:
            batch.release()  # nobody to write it: the partition's next owner has it

    def is_alive(self) -> bool:
        """True while the writer actor runs."""
        return self._ref is not None and self._ref.is_alive()

    def stop(self, timeout: float) -> None:
        """Stop fetching, then stop the actor (unwritten batches go back to JetStream)."""
        consumers = list(self._consumers.values())
        self._consumers = {}
        for consumer in consumers:
            consumer.stop()
        ref, self._ref = self._ref, None
        if ref is not None:
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                ref.stop(block=True, timeout=timeout)


class PartitionWork:
    """The partition leases' work: a partition's consumer runs while its lease is held."""

    def __init__(self, service: ClusterWriterService) -> None:
        self._service = service

    def start(self, key: str) -> None:
        """Consume the partition of ``key``."""
        partition = lease_partition(key)
        if partition is not None:
            self._service._start_partition(partition)

    def stop(self, key: str, on_stopped: Callable[[], None], lost: bool) -> None:
        """Stop consuming it; ``on_stopped`` once the writer let go of its batches."""
        partition = lease_partition(key)
        if partition is None:
            on_stopped()
            return
        self._service._stop_partition(partition, on_stopped, lost)
