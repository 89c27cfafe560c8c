"""Creating (or finding) TPS's JetStream stream, consumer and key-value buckets.

Every instance runs these at start-up; whoever comes first creates, the others find
what exists and use it as it is. Replicas are ``min(3, cluster size)``: TPS asks for 3
and steps down when the server says there are not enough JetStream servers (a single
server answers "replicas > 1 not supported in non-clustered mode"). A bucket or stream
that already exists is never changed: its settings win, and a difference from what
this instance would have created (e.g. another ``TPS_LEASE_TTL``) is logged once.

Failures are recognised by JetStream's numeric error codes, never by message text.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from tps.cluster.names import (
    ALARM_WRITERS_CONSUMER,
    ALARMS_STREAM,
    ALARMS_SUBJECTS,
    PARTITIONS,
    READINGS_STREAM,
    READINGS_SUBJECTS,
    partition_subjects,
    writers_consumer,
)

logger = logging.getLogger(__name__)

# JetStream API error codes (nats-server's errors.json).
ERR_REPLICAS_NOT_SUPPORTED = 10074  # replicas > 1 not supported in non-clustered mode
ERR_INSUFFICIENT_RESOURCES = 10023
ERR_STREAM_NAME_IN_USE = 10058  # exists with a different configuration
ERR_STREAM_NOT_FOUND = 10059
ERR_WRONG_LAST_SEQUENCE = 10071

TRANSIENT_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
"""What a NATS call raises when the server or JetStream is not there right now.

(``nats.js.errors.APIError`` is a ``nats.errors.Error`` too: test for the specific
API errors first.)"""

READINGS_MAX_AGE = 7 * 24 * 3600.0
"""Readings no writer has acknowledged after a week are dropped (bounds the disk)."""
WRITER_ACK_WAIT = 10.0
"""Seconds before an unacknowledged batch is redelivered to another writer."""
ALARMS_MAX_AGE = 30 * 24 * 3600.0
"""Alarm events stay in JetStream for 30 days (the store keeps them for good): the
cluster's view of open alarms and a new owner's restore read them from there."""
ALARMS_MAX_BYTES = 512 * 1024 * 1024
LEGACY_WRITERS_CONSUMER = "tps-writers"
"""The one shared consumer of the first cluster release (before partitions)."""


def _step_down(exc: nats.js.errors.APIError) -> bool:
    return exc.err_code in (ERR_REPLICAS_NOT_SUPPORTED, ERR_INSUFFICIENT_RESOURCES)


async def ensure_readings_stream(js: JetStreamContext) -> api.StreamInfo:
    """The readings stream and the writers' durable consumer, created if missing.

    Retention is *interest*: a reading stays until every durable consumer (the TPS
    writers', plus any an operator adds, e.g. Telegraf's) has acknowledged it. The
    writers' consumers (one per partition) are created together with the stream, so
    readings published before the first writer starts are kept for them.
    """
    try:
        info = await js.stream_info(READINGS_STREAM)
    except nats.js.errors.NotFoundError:
        info = await _create_stream(js, api.StreamConfig(
            name=READINGS_STREAM,
            description="TPS readings, InfluxDB line protocol, one subject per stream",
            subjects=[READINGS_SUBJECTS],
            retention=api.RetentionPolicy.INTEREST,
            storage=api.StorageType.FILE,
            max_age=READINGS_MAX_AGE,
            duplicate_window=120.0,
            discard=api.DiscardPolicy.OLD,
        ))
    for partition in range(PARTITIONS):
        await ensure_writers_consumer(js, partition)
    return info


async def ensure_writers_consumer(js: JetStreamContext, partition: int) -> api.ConsumerInfo:
    """The durable pull consumer of one readings partition (created if missing)."""
    name = writers_consumer(partition)
    try:
        found: api.ConsumerInfo = await js.consumer_info(READINGS_STREAM, name)
        return found
    except nats.js.errors.NotFoundError:
        pass
    info: api.ConsumerInfo = await js.add_consumer(READINGS_STREAM, api.ConsumerConfig(
        durable_name=name,
        description=f"TPS writers, partition {partition}: readings into the store",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=WRITER_ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=20_000,
        deliver_policy=api.DeliverPolicy.ALL,
        filter_subject=partition_subjects(partition),
    ))
    return info


async def warn_legacy_consumer(js: JetStreamContext) -> None:
    """The shared consumer of the first cluster release keeps every reading (interest
    retention) once nobody reads it: say so, with what to do (writers call this once)."""
    try:
        info = await js.consumer_info(READINGS_STREAM, LEGACY_WRITERS_CONSUMER)
    except nats.js.errors.NotFoundError:
        return
    logger.warning("JetStream consumer %s of an earlier TPS release exists (%d readings "
                   "pending): TPS writers now read per-partition consumers; once it has "
                   "no pending readings, delete it ('nats consumer rm %s %s') or it keeps "
                   "every new reading for up to 7 days", LEGACY_WRITERS_CONSUMER,
                   info.num_pending or 0, READINGS_STREAM, LEGACY_WRITERS_CONSUMER)


async def ensure_alarms_stream(js: JetStreamContext) -> api.StreamInfo:
    """The alarm-event stream (``tps.alarms.<stream>``) and the writers' consumer.

    Limits retention (30 days, 512 MiB): the events are read again - by every
    instance's view at start and by a stream's new owner - not only consumed.
    """
    try:
        info = await js.stream_info(ALARMS_STREAM)
    except nats.js.errors.NotFoundError:
        info = await _create_stream(js, api.StreamConfig(
            name=ALARMS_STREAM,
            description="TPS alarm events (JSON), one subject per stream",
            subjects=[ALARMS_SUBJECTS],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=ALARMS_MAX_AGE,
            max_bytes=ALARMS_MAX_BYTES,
            duplicate_window=120.0,
            discard=api.DiscardPolicy.OLD,
        ))
    try:
        await js.consumer_info(ALARMS_STREAM, ALARM_WRITERS_CONSUMER)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(ALARMS_STREAM, api.ConsumerConfig(
            durable_name=ALARM_WRITERS_CONSUMER,
            description="TPS writers: alarm events into the store's alarm log",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=WRITER_ACK_WAIT,
            max_deliver=-1,
            max_ack_pending=10_000,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=ALARMS_SUBJECTS,
        ))
    return info


async def _create_stream(js: JetStreamContext, config: api.StreamConfig) -> api.StreamInfo:
    for replicas in (3, 2, 1):
        try:
            info = await js.add_stream(config, num_replicas=replicas)
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_STREAM_NAME_IN_USE:  # another instance was faster
                return await js.stream_info(str(config.name))
            if replicas > 1 and _step_down(exc):
                continue
            raise
        logger.info("Created JetStream stream %s with %d replica(s)", config.name, replicas)
        return info
    raise AssertionError("unreachable: replicas 1 either works or raises")


async def ensure_bucket(js: JetStreamContext, bucket: str, *, ttl: float | None = None,
                        description: str = "") -> tuple[KeyValue, float | None]:
    """The key-value bucket ``bucket`` (history 1), created if missing.

    Returns the bucket and its actual TTL in seconds (``max_age``; None for none),
    which may differ from ``ttl`` when another instance created it first.
    """
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        kv = await _create_bucket(js, bucket, ttl, description)
    status = await kv.status()
    actual = status.ttl or None
    if (actual or None) != (ttl or None):
        logger.warning("Bucket %s exists with a TTL of %s s; this instance asked for %s s "
                       "and follows the bucket", bucket, actual, ttl)
    return kv, actual


async def _create_bucket(js: JetStreamContext, bucket: str, ttl: float | None,
                         description: str) -> KeyValue:
    for replicas in (3, 2, 1):
        try:
            kv = await js.create_key_value(bucket=bucket, history=1, ttl=ttl,
                                           replicas=replicas, description=description)
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_STREAM_NAME_IN_USE:
                return await js.key_value(bucket)
            if replicas > 1 and _step_down(exc):
                continue
            raise
        logger.info("Created key-value bucket %s with %d replica(s)%s", bucket, replicas,
                    f", TTL {ttl:g} s" if ttl else "")
        return kv
    raise AssertionError("unreachable: replicas 1 either works or raises")
