"""The batching writer: readings from every feed into the store, none lost.

Two objects, one job:

* :class:`WriterHandle` is what the rest of TPS holds. ``submit`` is called from feed
  threads: it hands the readings to the :class:`~tps.ingest.pipeline.Pipeline` (disk
  spool when ``TPS_SPOOL`` is on, in-memory buffer) and rings the actor's doorbell when
  a full batch is waiting. The handle *owns* the pipeline, so it outlives any one
  writer actor: when the actor crashes and the supervisor calls ``start`` again, the
  new actor finds every reading the dead one had not yet written (with the spool off
  as well as on).

* :class:`BatchingWriter` is the actor that decides *when* to write: a full batch
  (``TPS_BATCH_SIZE``), a tick (``TPS_FLUSH_INTERVAL``), a flush request. A failed write
  is retried with exponential backoff by a message told later - the actor never
  sleeps, so its mailbox stays responsive during an outage. A write is acknowledged
  (buffer trimmed, spool checkpoint advanced) only after the store accepted it; writes
  are idempotent per (stream, time), so retrying an ambiguous failure cannot duplicate.

What goes to memory and what to the spool (the memory bound, overflow, refill) is the
plain policy in :mod:`tps.ingest.pipeline`, which also writes down the one lock order.

Rollups (``TPS_ROLLUPS``, :mod:`tps.history.rollup`): each batch is written with the
rollup points it changes ("state + batch") in the same store request, and folded into
the actor's state only when the store acknowledged it; the acknowledged batch is then
appended to the hot tier (``all`` role). A stream's open buckets are rewritten at
most every ``TPS_ROLLUP_WRITE_INTERVAL`` (and in the batch that closes them): a flush
tick with no readings still writes the streams that are due, and a final flush (stop,
``WriterHandle.flush``) writes every stream. A partial write (the store dropped some
readings) recomputes the touched hours from raw readings and drops those streams from
the hot tier, which loads them again.

Durability: the syncer thread fsyncs the spool every ``TPS_SPOOL_SYNC_INTERVAL``
(group commit), so a ``kill -9`` loses at most the readings of the last interval.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from tps.actors.messages import BatchWaiting, Flush, InjectFailure
from tps.actors.stats import WriterStats
from tps.actors.timer import Ticker, tell_later
from tps.config.settings import Settings
from tps.errors import PartialWrite, StoreError, StoreUnavailable
from tps.history.buckets import Runs, runs_by_stream
from tps.history.hot import HotTier
from tps.history.rollup import PendingFold, RollupState, adopt, repair
from tps.ingest.backoff import Backoff
from tps.ingest.buffer import Batch
from tps.ingest.pipeline import Pipeline
from tps.model import Reading
from tps.ratelimit import RateLimitedLog
from tps.store.base import Store, StoreFactory

logger = logging.getLogger(__name__)

_WARN_EVERY = 10.0  # seconds between repeated warnings of the same kind
_DRAIN_BUDGET = 0.25  # seconds of writing per message before yielding the mailbox


@dataclass(frozen=True, slots=True)
class RetryWrite:
    """The backoff after a failed write has passed: try again (timer -> writer).

    Only the newest scheduled retry counts (``generation``), so an early attempt made
    for a flush request does not leave two retry chains running.
    """

    generation: int = 0


@dataclass(frozen=True, slots=True)
class ConnectStore:
    """Prepare the store (``ensure_ready``), again after a backoff (timer -> writer)."""


class BatchingWriter(pykka.ThreadingActor):
    """Writes buffered readings to the store in batches; retries without sleeping."""

    def __init__(
        self,
        pipeline: Pipeline,
        stats: WriterStats,
        settings: Settings,
        store_factory: StoreFactory,
        on_failure: Callable[[BaseException], None] | None = None,
        backoff: Backoff | None = None,
        hot: HotTier | None = None,
    ) -> None:
        super().__init__()
        # Rollups are folded only on acknowledgement (tps.history.rollup); a restarted
        # actor adopts its streams from the store again.
        self._rollups = RollupState(settings.rollup_write_interval) if settings.rollups \
            else None
        self._hot = hot
        self._pipeline = pipeline
        self._stats = stats  # the store's fields; the pipeline keeps the others
        self._settings = settings
        self._store_factory = store_factory
        self._on_failure_cb = on_failure
        self._store: Store | None = None
        self._ready = False
        self._retry_pending = False
        self._retry_generation = 0
        # Capped at 5 s, not the readers' 30 s: a failed write costs one refused
        # connection, and a store that is back should be written to promptly.
        self._backoff = backoff or Backoff(initial=0.5, cap=5.0)
        self._ticker: Ticker | None = None
        self._outage_since: float | None = None
        self._warnings = RateLimitedLog(_WARN_EVERY)

    # --- lifecycle ----------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the flush ticker and prepare the store (which drains the spool)."""
        try:
            self._ticker = Ticker(self._settings.flush_interval, self.actor_ref,
                                  Flush()).start()
            self._connect()
        except Exception:
            # pykka only logs a failure in on_start and stops the actor, without calling
            # on_failure: the supervisor would never hear of it, and nothing would be
            # written again while /ready said 200.
            self.on_failure(*sys.exc_info())
            raise

    def on_stop(self) -> None:
        """Stop ticking and close the store (the handle flushed before stopping us)."""
        self._shutdown()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release resources and tell the handle's owner (the supervisor)."""
        self._shutdown()
        logger.error("Writer actor crashed: %s; buffered readings are kept by the handle",
                     exception_value)
        if self._on_failure_cb is not None and exception_value is not None:
            self._on_failure_cb(exception_value)

    def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # closing must not mask the real problem
                logger.debug("Closing the store failed", exc_info=True)
            self._store = None

    def on_receive(self, message: Any) -> Any:
        """Dispatch the writer's messages."""
        if isinstance(message, BatchWaiting):
            if self._ready and not self._retry_pending:
                self._drain(partial=False)
        elif isinstance(message, Flush):
            if message.final and self._retry_pending:
                # Someone waits for this flush (shutdown): one attempt now rather than
                # at the end of a backoff the store may no longer need.
                self._retry_pending = False
            self._drain(partial=True, final=message.final)
        elif isinstance(message, RetryWrite):
            if message.generation == self._retry_generation:
                self._retry_pending = False
                self._drain(partial=True)
        elif isinstance(message, ConnectStore):
            self._connect()
        elif isinstance(message, InjectFailure):
            raise RuntimeError(message.reason)
        else:
            logger.warning("Writer ignored unexpected message %r", message)
        return None

    def waiting(self) -> int:
        """Readings waiting in memory (answered from the mailbox: proves it is free)."""
        return self._pipeline.waiting()

    # --- store preparation ------------------------------------------------------------

    def _connect(self) -> None:
        try:
            if self._store is None:
                self._store = self._store_factory()
            self._store.ensure_ready()
        except (StoreError, OSError) as exc:
            delay = self._backoff.next_delay()
            self._unreachable(exc, "preparing the store", delay)
            self._retry_later(ConnectStore(), delay)
            return
        self._ready = True
        self._drain(partial=True)

    # --- writing --------------------------------------------------------------------------

    def _drain(self, partial: bool, final: bool = False) -> None:
        """Write full batches (and, if ``partial``, the last partial one); ``final``:
        with every stream's open rollup buckets."""
        if not self._ready or self._retry_pending or self._store is None:
            return
        self._pipeline.clear_doorbell()
        started = time.monotonic()
        size = self._settings.batch_size
        while True:
            batch = self._pipeline.next_batch(size)
            if not batch.readings:
                if partial:
                    self._write_open_buckets(final)
                return
            if len(batch) < size and not partial:
                return
            # Split per stream once, for the rollups and the hot tier.
            runs = runs_by_stream(batch.readings) \
                if self._rollups is not None or self._hot is not None else None
            try:
                pending = self._fold(batch.readings, final, runs)
                self._store.write(batch.readings, pending.write if pending else None)
            except StoreError as exc:
                self._write_failed(exc, batch)
                return
            self._written(batch, pending=pending, runs=runs)
            if time.monotonic() - started > _DRAIN_BUDGET:
                # Let status requests and stop messages in before writing on.
                self.actor_ref.tell(Flush(final=final))
                return

    def _fold(self, readings: list[Reading], final: bool = False, runs: Runs | None = None
              ) -> PendingFold | None:
        """The rollups to write with ``readings`` (adopting new streams first)."""
        state, store = self._rollups, self._store
        if state is None or store is None:
            return None
        streams = state.unadopted(readings) if runs is None \
            else [stream for stream in runs if stream not in state]
        if streams:
            adopt(store, state, streams)
        return state.prepare(readings, everything=final, runs=runs)

    def _write_open_buckets(self, final: bool) -> None:
        """No readings wait: write the open buckets of streams that are due (all when
        ``final``), so a stream that fell silent is written too."""
        state, store = self._rollups, self._store
        if state is None or store is None or not (final or state.due()):
            return
        pending = state.prepare((), everything=final)
        if pending.write:
            try:
                store.write_rollups(pending.write)
            except StoreError as exc:
                # Nothing is lost: the buckets stay open in the state and are written
                # with a later batch or tick (the coverage mark waits with them).
                self._stats.write_failures += 1
                self._warnings.log(logger, logging.WARNING, "rollups",
                                   "Writing open rollup buckets failed (%s); retrying at "
                                   "the next flush", exc)
                return
        state.commit(pending)

    def _written(self, batch: Batch, refused: int = 0, pending: PendingFold | None = None,
                 exact: bool = True, runs: Runs | None = None) -> None:
        """The store accepted ``batch`` (all of it when ``exact``)."""
        if pending is not None and self._rollups is not None:
            self._rollups.commit(pending)
        if self._hot is not None and exact:
            try:
                self._hot.append(batch.readings, runs)
            except Exception:  # memory is a copy: never let it stop ingest
                logger.exception("Hot tier refused a batch; its streams are read from the "
                                 "store until loaded again")
                self._hot.forget({r.stream for r in batch.readings})
        waiting = self._pipeline.waiting()
        self._pipeline.ack(batch, refused)
        self._backoff.reset()
        if self._outage_since is not None:
            logger.warning(
                "Store is reachable again after %.1f s: writing the %d readings that waited",
                time.monotonic() - self._outage_since, waiting,
            )
            self._outage_since = None
            self._warnings.reset("unreachable")
        self._stats.store_reachable = True

    def _write_failed(self, exc: StoreError, batch: Batch) -> None:
        self._stats.write_failures += 1
        self._stats.last_error = str(exc)
        if isinstance(exc, PartialWrite):
            # The store kept the batch except points it will never accept (outside the
            # retention policy, type conflict): retrying cannot help, so move on.
            logger.error("Store accepted a batch of %d readings but refused %s of them: %s",
                         len(batch), exc.dropped or "some", exc)
            self._diverged(batch.readings)
            self._written(batch, refused=exc.dropped, exact=False)
            self.actor_ref.tell(Flush())
            return
        delay = self._backoff.next_delay()
        if isinstance(exc, StoreUnavailable):
            self._unreachable(exc, f"writing {len(batch)} readings", delay)
        else:
            # Refused (bad credentials, missing database, ...): not the readings' fault,
            # so they are kept and retried until the operator fixes the store.
            self._warnings.log(
                logger, logging.ERROR, "refused",
                "Store refused a write of %d readings (%s); retrying in %.1f s - check "
                "the InfluxDB credentials and database", len(batch), exc, delay,
            )
            self._stats.store_reachable = False
        self._stats.write_retries += 1
        self._retry_generation += 1
        self._retry_later(RetryWrite(self._retry_generation), delay)

    def _diverged(self, readings: list[Reading]) -> None:
        """The store kept only part of a batch: rollups and memory counted all of it."""
        streams = {r.stream for r in readings}
        if self._hot is not None:
            self._hot.forget(streams)  # loaded again from the store
        if self._rollups is not None and self._store is not None:
            try:
                repair(self._store, self._rollups, readings)
            except StoreError as exc:
                self._rollups.forget(streams)
                logger.error("Rollups of %s may count readings the store dropped (%s); "
                             "run 'tps rollup --rebuild' for that time", sorted(streams), exc)

    def _unreachable(self, exc: BaseException, doing: str, delay: float) -> None:
        self._stats.store_reachable = False
        self._stats.last_error = str(exc)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        self._warnings.log(
            logger, logging.WARNING, "unreachable",
            "Store unreachable while %s (%s); %d readings waiting in memory%s; "
            "retrying in %.1f s (backoff up to %.0f s)",
            doing, exc, self._pipeline.waiting(),
            " and more in the spool" if self._pipeline.overflow else "",
            delay, self._backoff.cap,
        )

    def _retry_later(self, message: RetryWrite | ConnectStore, delay: float) -> None:
        logger.debug("Writer retrying in %.2f s", delay)
        self._retry_pending = isinstance(message, RetryWrite)
        tell_later(delay, self.actor_ref, message)


class WriterHandle:
    """Thread-safe front of the writer; survives writer actor restarts.

    The handle owns the buffer and the spool (see the module docstring), so a crashed
    actor loses nothing: ``start`` again and the new actor writes what is left.
    ``backoff`` makes each actor's retry backoff (default 0.5 s doubling up to 5 s).
    ``hot`` is the hot tier each acknowledged batch is appended to (``all`` role).
    """

    def __init__(self, settings: Settings, store_factory: StoreFactory, stats: WriterStats,
                 *, backoff: Callable[[], Backoff] | None = None,
                 hot: HotTier | None = None) -> None:
        self._hot = hot
        self._settings = settings
        self._store_factory = store_factory
        self._backoff = backoff
        self.stats = stats
        self._pipeline = Pipeline(settings, stats)
        self._ref: pykka.ActorRef[BatchingWriter] | None = None
        self._syncer: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        """(Re)start the writer actor; it writes what is buffered or spooled first."""
        if self._ref is not None and self._ref.is_alive():
            return
        self._ref = BatchingWriter.start(
            self._pipeline, self.stats, self._settings, self._store_factory, on_failure,
            self._backoff() if self._backoff is not None else None, self._hot,
        )
        if self._pipeline.spool is not None and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="spool-sync",
                                            daemon=True)
            self._syncer.start()

    def submit(self, readings: Sequence[Reading]) -> None:
        """Take one stream's readings (any thread): spooled and buffered on return."""
        if not readings:
            return
        if not isinstance(readings, tuple):
            readings = tuple(readings)  # the caller may reuse its list
        if self._pipeline.add(readings):
            self._tell(BatchWaiting())

    def flush(self, timeout: float) -> bool:
        """Block the caller until everything submitted so far is acknowledged by the
        store, or ``timeout`` passes; True if all was written."""
        target = self._pipeline.flush_target()
        self._tell(Flush(final=True))
        return self._pipeline.wait_written(target, timeout)

    def stop(self, timeout: float) -> bool:
        """Final flush (bounded by ``timeout``), stop the actor, close the spool.

        True if nothing was left unwritten. What is left stays in the spool (when on)
        and is replayed by the next start.
        """
        deadline = time.monotonic() + timeout
        done = self.flush(timeout)
        if not done:
            logger.warning(
                "Writer stopping with %d readings unwritten%s", self._pipeline.waiting(),
                " (kept in the spool for the next start)" if self._pipeline.spool else "",
            )
        ref, self._ref = self._ref, None
        if ref is not None:
            try:
                ref.stop(block=True, timeout=max(1.0, deadline - time.monotonic()))
            except pykka.Timeout:
                logger.warning("Writer actor did not stop in time (a write is hanging)")
            except pykka.ActorDeadError:
                pass
        self._stopping.set()
        if self._syncer is not None:
            self._syncer.join(timeout=2.0)
            self._syncer = None
        self._pipeline.close()
        return done

    def is_alive(self) -> bool:
        """True while the writer actor runs."""
        return self._ref is not None and self._ref.is_alive()

    def inject_failure(self, reason: str) -> None:
        """Make the actor raise ``RuntimeError(reason)`` through its real failure path."""
        self._tell(InjectFailure(reason))

    def answers_within(self, timeout: float) -> bool:
        """True when the actor answers a request within ``timeout`` (mailbox is free)."""
        ref = self._ref
        if ref is None:
            return False
        try:
            ref.proxy().waiting().get(timeout=timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            return False
        return True

    def _tell(self, message: Any) -> None:
        ref = self._ref
        if ref is None:
            return
        # A dead actor is fine: the readings are in the handle's buffer and spool, and
        # the restarted actor takes them from there.
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(message)

    def _sync_loop(self) -> None:
        """Group commit: fsync the spool every ``TPS_SPOOL_SYNC_INTERVAL``."""
        while not self._stopping.wait(self._settings.spool_sync_interval):
            self._pipeline.sync_spool()
