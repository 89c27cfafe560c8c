"""Readings on NATS: the publisher (ingest side), the writers' consumer, the live feed.

One JetStream stream (``TPS_READINGS``, subjects ``tps.readings.<partition>.<stream>``,
see :mod:`tps.cluster.names`) carries every accepted reading as InfluxDB line protocol -
byte for byte what ``tps.store.lineprotocol.encode_readings`` writes to InfluxDB - so
Telegraf's ``nats_consumer`` input can read it as it is.

* :class:`ReadingsPublisher` answers the ``Store.write`` contract on the ingest side:
  the batching writer hands it a batch, it publishes one message per stream and
  returns only when JetStream acknowledged every one of them; otherwise it raises
  ClusterUnavailable and the writer retries the whole batch later (the local spool
  keeps it meanwhile). Each message carries ``Nats-Msg-Id`` built from its content
  (stream, first and last time, count), so re-publishing the same readings inside the
  stream's two-minute duplicate window stores them once. A retry that groups
  differently publishes some readings twice; the store's idempotence per
  (stream, time) makes that harmless, and the live feed drops repeats by time.
* :class:`ReadingsConsumer` runs on the link's loop for a writer that holds a
  partition's lease: it fetches from that partition's durable consumer, lingers up to
  the flush interval for a full batch, and hands one :class:`FetchedBatch` at a time
  to its owner (the writer actor). The batch's messages are acknowledged only when the
  owner calls :meth:`FetchedBatch.ack` - after the store accepted the readings - and
  are kept "in progress" meanwhile, so a store outage does not trigger redelivery,
  while a writer killed mid-batch has its messages redelivered to the partition's
  next owner after ``WRITER_ACK_WAIT`` (by then, maybe after newer messages: the
  writer's fold handles readings that arrive late, :mod:`tps.cluster.rollups`).
* :class:`LiveFeed` is a plain (core NATS) subscription to the same subjects, pushed
  to the instance's live hub: api instances see every instance's readings as they
  are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from tps.cluster.jetstream import (
    TRANSIENT_ERRORS,
    WRITER_ACK_WAIT,
    ensure_readings_stream,
)
from tps.cluster.link import NatsLink, unavailable
from tps.cluster.names import (
    READINGS_STREAM,
    READINGS_SUBJECTS,
    readings_subject,
    writers_consumer,
)
from tps.errors import ClusterUnavailable, StoreError
from tps.history.buckets import Aggregate
from tps.history.planner import Piece
from tps.history.types import CoverageRange, RollupWrite
from tps.ingest.backoff import Backoff
from tps.model import Reading, Statistics
from tps.store.base import StreamArrays
from tps.store.lineprotocol import decode_readings, encode_readings

logger = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
PUBLISH_INTERVAL = 0.05
"""Seconds between the ingest side's publishes of a partial batch (its writer's flush
interval in cluster mode, when ``TPS_FLUSH_INTERVAL`` is longer): JetStream is where
a reading counts as received and where every instance's live hub gets it, so it goes
out promptly; ``TPS_FLUSH_INTERVAL`` batches the store writes of the writers."""
MAX_READINGS_PER_MESSAGE = 4000  # ~220 KB of line protocol: well under NATS's 1 MB


def group_by_stream(readings: Sequence[Reading]) -> dict[str, list[Reading]]:
    """One list per stream, each in the batch's order (oldest first)."""
    groups: dict[str, list[Reading]] = {}
    for reading in readings:
        group = groups.get(reading.stream)
        if group is None:
            group = groups[reading.stream] = []
        group.append(reading)
    return groups


def message_id(readings: Sequence[Reading]) -> str:
    """The deduplication id of one stream's run of readings (same readings, same id)."""
    first, last = readings[0], readings[-1]
    return f"{first.stream}:{first.time_ns}:{last.time_ns}:{len(readings)}"


def messages_for(readings: Sequence[Reading]) -> list[tuple[str, bytes, str]]:
    """(subject, line-protocol payload, message id) per stream and chunk of a batch.

    Raises ValueError when a reading cannot be encoded (nothing is published then).
    """
    messages = []
    for stream, group in group_by_stream(readings).items():
        subject = readings_subject(stream)
        for start in range(0, len(group), MAX_READINGS_PER_MESSAGE):
            chunk = group[start:start + MAX_READINGS_PER_MESSAGE]
            messages.append((subject, encode_readings(chunk), message_id(chunk)))
    return messages


class ReadingsPublisher:
    """The ingest side's "store" in cluster mode: JetStream is where a batch is stored.

    Used by one writer actor (blocking calls, bounded by ``timeout``). It answers no
    queries: the query methods raise StoreError.
    """

    def __init__(self, link: NatsLink, timeout: float = 5.0) -> None:
        self._link = link
        self._timeout = timeout
        self._ready = False
        self.published = 0  # messages acknowledged by JetStream (read by stats)

    def ensure_ready(self) -> None:
        """Create (or find) the readings stream and the writers' consumer."""
        self._link.call(self._ensure, self._timeout)
        self._ready = True

    async def _ensure(self) -> None:
        await self._link.connected()
        try:
            await ensure_readings_stream(self._link.js)
        except nats.js.errors.ServiceUnavailableError as exc:
            raise unavailable(exc, "creating the readings stream") from None
        except nats.js.errors.APIError as exc:
            raise StoreError(f"JetStream refused the readings stream: {exc}") from None
        except TRANSIENT_ERRORS as exc:
            raise unavailable(exc, "creating the readings stream") from None

    def ping(self) -> bool:
        """True while the NATS connection is up."""
        return self._link.status().connected

    def write(self, readings: Sequence[Reading], rollups: RollupWrite | None = None) -> None:
        """Publish the batch; returns once JetStream acknowledged all of it.

        Raises ClusterUnavailable (retry later) or StoreError (JetStream refused it, or
        ``rollups`` were given: the cluster's writers keep no rollups yet).
        """
        if rollups is not None:
            raise StoreError("the JetStream readings publisher carries no rollups")
        try:
            messages = messages_for(readings)
        except ValueError as exc:
            raise StoreError(f"cannot encode readings: {exc}") from None
        if not messages:
            return
        if not self._link.status().connected:
            raise ClusterUnavailable("not connected to NATS")
        self._link.call(lambda: self._publish(messages), self._timeout)

    async def _publish(self, messages: list[tuple[str, bytes, str]]) -> None:
        js = self._link.js
        try:
            # No ``wait_stall``: with it nats-py yields to the loop after every message,
            # so each went out in a packet of its own and the stream leader replicated
            # them one by one - three times the NATS CPU of sending the batch at once.
            futures = [
                await js.publish_async(subject, payload, headers={MSG_ID: msg_id})
                for subject, payload, msg_id in messages
            ]
            acks = await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        except nats.js.errors.ServiceUnavailableError as exc:
            raise unavailable(exc, f"publishing {len(messages)} messages") from None
        except nats.js.errors.APIError as exc:
            raise StoreError(f"JetStream refused a readings message: {exc}") from None
        except TRANSIENT_ERRORS as exc:
            raise unavailable(exc, f"publishing {len(messages)} messages") from None
        self.published += len(acks)

    # --- the rest of the Store protocol: not a query store --------------------------

    def _no_queries(self) -> StoreError:
        return StoreError("the JetStream readings publisher answers no queries")

    def current(self, stream: str | None = None) -> Reading | None:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def statistics(self, after_ns: int | None, before_ns: int | None,
                   stream: str | None = None) -> Statistics:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def measurements(self, after_ns: int | None, before_ns: int | None,
                     stream: str | None = None, *, last: int | None = None,
                     limit: int = 10_000) -> list[Reading]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def average(self, window_size: int, stream: str | None = None) -> float | None:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def count(self, stream: str | None = None) -> int:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def stream_names(self) -> list[str]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def write_rollups(self, rollups: RollupWrite) -> None:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def newest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def oldest_times(self, streams: Sequence[str] | None = None) -> dict[str, int]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def raw_aggregates(self, after_ns: int, before_ns: int, width: int,
                       streams: Sequence[str] | None = None
                       ) -> dict[str, list[tuple[int, Aggregate]]]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def rollups(self, width: int, after_ns: int, before_ns: int,
                streams: Sequence[str] | None = None) -> dict[str, list[tuple[int, Aggregate]]]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def coverage(self, streams: Sequence[str] | None = None) -> dict[str, list[CoverageRange]]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def aggregate(self, pieces: Sequence[Piece], stream: str | None) -> Aggregate | None:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def series(self, pieces: Sequence[Piece], interval: int,
               stream: str | None) -> dict[int, Aggregate]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def readings_arrays(self, after_ns: int, before_ns: int,
                        streams: Sequence[str] | None = None) -> dict[str, StreamArrays]:
        """Not supported (raises StoreError)."""
        raise self._no_queries()

    def close(self) -> None:
        """Nothing to release: the link owns the connection."""


@dataclass
class ConsumerStats:
    """Counters of a :class:`ReadingsConsumer` (updated on the loop, read anywhere)."""

    batches: int = 0
    readings: int = 0
    messages: int = 0
    malformed: int = 0
    redelivered: int = 0
    fetch_errors: int = 0
    last_error: str | None = None


@dataclass
class FetchedBatch:
    """Readings fetched from JetStream, not yet acknowledged.

    ``ack`` (after the store accepted the readings) and ``release`` (give them back for
    redelivery now) may be called from any thread, once.
    """

    readings: tuple[Reading, ...]
    _msgs: list[Msg]
    _consumer: ReadingsConsumer
    partition: int = 0
    redelivered: bool = False
    """Some of its messages were delivered before (to this or another writer)."""
    _done: threading.Event = field(default_factory=threading.Event)

    def __len__(self) -> int:
        return len(self.readings)

    def ack(self) -> None:
        """The store accepted the readings: acknowledge every message."""
        self._finish(True)

    def release(self) -> None:
        """Give the messages back (nak) so that any writer gets them again."""
        self._finish(False)

    def _finish(self, ack: bool) -> None:
        if self._done.is_set():
            return
        self._done.set()
        self._consumer.finished(self, ack)


BatchHandler = Callable[[FetchedBatch], None]


class ReadingsConsumer:
    """Fetches one partition's readings for its writer (on the loop).

    ``on_batch`` is called on the loop thread with one batch at a time; it must only
    hand the batch over (tell the writer actor). The next batch is fetched once the
    previous one is acknowledged or released.
    """

    def __init__(self, link: NatsLink, on_batch: BatchHandler, batch_size: int,
                 linger: float, max_messages: int = 1000, partition: int = 0) -> None:
        self.partition = partition
        self._durable = writers_consumer(partition)
        self._link = link
        self._on_batch = on_batch
        self._batch_size = batch_size
        self._linger = linger
        self._max_messages = max_messages
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._in_flight: FetchedBatch | None = None
        self._release_on_stop = True
        self._stopping = False
        self.stats = ConsumerStats()

    def start(self) -> ReadingsConsumer:
        """Start fetching (from any thread)."""
        self._task = self._link.submit_task(self._run)
        return self

    def stop(self, release: bool = True) -> None:
        """Stop fetching; an unacknowledged batch is released for redelivery unless
        ``release`` is False (its owner still settles it)."""
        self._release_on_stop = release
        self._stopping = True
        task = self._task
        if task is not None:
            self._link.loop.call_soon_threadsafe(task.cancel)

    async def stopped(self) -> None:
        """Stop fetching (loop thread) and return once the fetch task has ended; the
        batch handed over last stays its owner's to settle, messages fetched but not
        handed over are given back at once.

        The task is cancelled again every second until it ends: on Python 3.11 a
        cancellation that meets a message arriving inside nats-py's ``next_msg``
        (``asyncio.wait_for``) can be swallowed; the ``_stopping`` flag ends the loop
        then.
        """
        self._release_on_stop = False
        self._stopping = True
        task = self._task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    # --- on the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        await self._link.connected()
        self._idle.set()
        backoff = Backoff(initial=0.2, cap=5.0)
        sub: JetStreamContext.PullSubscription | None = None
        try:
            while not self._stopping:
                await self._idle.wait()
                if self._stopping:
                    break
                try:
                    if sub is None:
                        await ensure_readings_stream(self._link.js)
                        sub = await self._link.js.pull_subscribe_bind(
                            durable=self._durable, stream=READINGS_STREAM)
                    msgs = await self._gather(sub)
                except (nats.js.errors.APIError, *TRANSIENT_ERRORS) as exc:
                    self.stats.fetch_errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    delay = backoff.next_delay()
                    if backoff.attempts == 1 or backoff.attempts % 20 == 0:
                        logger.warning("Cannot fetch readings from JetStream (%r); retrying in "
                                       "%.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                if msgs and self._stopping:
                    await _give_back(msgs)
                elif msgs:
                    await self._hand_over(msgs)
        finally:
            if self._in_flight is not None and self._release_on_stop:
                self._in_flight.release()
            if sub is not None:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await sub.unsubscribe()

    async def _gather(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Messages for one batch: up to ``batch_size`` readings or ``linger`` seconds.

        After the first message the consumer waits out the linger and then takes what
        accumulated in as few fetches as it can: every fetch is a request to JetStream,
        and fetching message by message at the rate they arrive cost the NATS servers
        most of a core at a few hundred messages a second.
        """
        try:
            msgs = await sub.fetch(self._max_messages, timeout=1.0)
        except TimeoutError:  # nats-py raises its own or asyncio's, both TimeoutError
            return []  # idle: come back to the loop (stop can cancel us)
        try:
            count = sum(m.data.count(b"\n") + 1 for m in msgs)
            deadline = time.monotonic() + self._linger
            more = len(msgs) >= self._max_messages
            while count < self._batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if not more:
                    if remaining <= 0:
                        break
                    await asyncio.sleep(remaining)
                try:
                    fetched = await sub.fetch(self._max_messages, timeout=0.1)
                except TimeoutError:
                    break
                msgs.extend(fetched)
                count += sum(m.data.count(b"\n") + 1 for m in fetched)
                more = len(fetched) >= self._max_messages
                if not more and time.monotonic() >= deadline:
                    break
        except asyncio.CancelledError:
            # Stopped while lingering (a hand-over): give back what we hold at once, so
            # the partition's next writer gets it first, not after the ack wait.
            await _give_back(msgs)
            raise
        return msgs

    async def _hand_over(self, msgs: list[Msg]) -> None:
        readings: list[Reading] = []
        good: list[Msg] = []
        redelivered = False
        for msg in msgs:
            try:
                decoded = decode_readings(msg.data)
            except ValueError as exc:
                self.stats.malformed += 1
                logger.error("Dropping a message on %s that is not TPS line protocol (%s); "
                             "it is terminated, not redelivered", msg.subject, exc)
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await msg.term()
                continue
            if msg.metadata.num_delivered > 1:
                self.stats.redelivered += 1
                redelivered = True
            readings.extend(decoded)
            good.append(msg)
        if not good:
            return
        batch = FetchedBatch(tuple(readings), good, self, self.partition, redelivered)
        self._in_flight = batch
        self._idle.clear()
        self.stats.messages += len(good)
        self._link.submit_task(lambda: self._keep_in_progress(batch))
        self._on_batch(batch)

    async def _keep_in_progress(self, batch: FetchedBatch) -> None:
        # While the owner retries the store, tell JetStream we are still at it, so the
        # batch is not redelivered to another writer behind our back.
        while not batch._done.is_set():
            await asyncio.sleep(WRITER_ACK_WAIT / 3)
            if batch._done.is_set():
                return
            for msg in batch._msgs:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await msg.in_progress()

    def finished(self, batch: FetchedBatch, ack: bool) -> None:
        """Called (any thread) when the owner is done with ``batch``."""
        self._link.loop.call_soon_threadsafe(
            lambda: self._link.submit_task(lambda: self._settle(batch, ack)))

    async def _settle(self, batch: FetchedBatch, ack: bool) -> None:
        for msg in batch._msgs:
            try:
                await (msg.ack() if ack else msg.nak())
            except nats.errors.MsgAlreadyAckdError:
                pass
            except TRANSIENT_ERRORS as exc:
                # Not acknowledged: JetStream redelivers after the ack wait, and the
                # store's idempotence absorbs the second write.
                logger.warning("Could not acknowledge a readings message (%r); it will be "
                               "redelivered and written again (idempotent)", exc)
                break
        if ack:
            self.stats.batches += 1
            self.stats.readings += len(batch.readings)
        if self._in_flight is batch:
            self._in_flight = None
            self._idle.set()


async def _give_back(msgs: Sequence[Msg]) -> None:
    """Nak messages fetched but not handed to a writer (they are redelivered first)."""
    for msg in msgs:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await msg.nak()


LiveHandler = Callable[[Sequence[Reading]], None]


class LiveFeed:
    """Every published reading, pushed to ``on_readings`` as it arrives (on the loop).

    A core NATS subscription: at most once, no acknowledgements, nothing replayed.
    Repeats (a batch published again after a retry) are dropped: per stream, only
    readings newer than the newest one handed on pass.
    """

    def __init__(self, link: NatsLink, on_readings: LiveHandler) -> None:
        self._link = link
        self._on_readings = on_readings
        self._newest: dict[str, int] = {}
        self._sub: Subscription | None = None
        self.received = 0
        self.malformed = 0

    def start(self) -> LiveFeed:
        """Subscribe once connected (from any thread)."""
        self._link.submit_task(self._subscribe)
        return self

    async def _subscribe(self) -> None:
        await self._link.connected()
        self._sub = await self._link.nc.subscribe(READINGS_SUBJECTS, cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        try:
            readings = decode_readings(msg.data)
        except ValueError as exc:
            self.malformed += 1
            logger.debug("Live feed ignored a message on %s: %s", msg.subject, exc)
            return
        if not readings:
            return
        newest = self._newest.get(readings[0].stream, -1)
        fresh = [r for r in readings if r.time_ns > newest]
        if not fresh:
            return
        self._newest[readings[0].stream] = fresh[-1].time_ns
        self.received += len(fresh)
        try:
            self._on_readings(fresh)
        except Exception:
            logger.exception("Live feed handler failed; it stays subscribed")

    def stop(self) -> None:
        """Unsubscribe (from any thread)."""
        sub = self._sub
        if sub is not None:
            self._link.submit(lambda: _quiet_unsubscribe(sub))


async def _quiet_unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await sub.unsubscribe()


def pending_summary(stats: ConsumerStats) -> dict[str, Any]:
    """JSON form of the consumer counters for ``/health``."""
    return {"batches": stats.batches, "readings": stats.readings, "messages": stats.messages,
            "malformed": stats.malformed, "redelivered": stats.redelivered,
            "fetch_errors": stats.fetch_errors, "last_error": stats.last_error}
