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

from tps.cluster.names import READINGS_STREAM, READINGS_SUBJECTS, WRITERS_CONSUMER

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


def _step_down(exc: nats.js.errors.APIError) -> bool:
    return exc.err_code in (ERR_REPLICAS_NOT_SUPPORTED, ERR_INSUFFICIENT_RESOURCES)


async def ensure_readings_stream(js: JetStreamContext) -> api.StreamInfo:
    """The readings stream and the writers' durable consumer, created if missing.

    Retention is *interest*: a reading stays until every durable consumer (the TPS
    writers', plus any an operator adds, e.g. Telegraf's) has acknowledged it. The
    writers' consumer is created together with the stream, so readings published
    before the first writer starts are kept for it.
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
    await ensure_writers_consumer(js)
    return info


async def ensure_writers_consumer(js: JetStreamContext) -> api.ConsumerInfo:
    """The durable pull consumer every writer shares (created if missing)."""
    try:
        found: api.ConsumerInfo = await js.consumer_info(READINGS_STREAM, WRITERS_CONSUMER)
        return found
    except nats.js.errors.NotFoundError:
        pass
    info: api.ConsumerInfo = await js.add_consumer(READINGS_STREAM, api.ConsumerConfig(
        durable_name=WRITERS_CONSUMER,
        description="TPS writers: readings into the time-series store",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=WRITER_ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=20_000,
        deliver_policy=api.DeliverPolicy.ALL,
        filter_subject=READINGS_SUBJECTS,
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
