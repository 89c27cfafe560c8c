"""Watching a key-value bucket, with a watch that notices when it has stalled.

nats-py's ``KeyValue.watch`` is an ordered push consumer with a 5 s idle heartbeat,
checked every 10 s: when the NATS node holding the consumer dies, the watch is silent
for 10 to 20 s before nats-py rebuilds it - and every change made meanwhile (a stream
added, a lease let go) is seen that much later. This watch is the same ordered
consumer (through nats-py's public ``subscribe``), with a 1 s heartbeat, so a stall is
noticed and repaired within 2 to 4 s, once JetStream can create a consumer again.

Updates are handed to ``on_update`` on the link's loop, in bucket order; the first
call of ``on_synced`` says the bucket's content as of the subscription was delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

logger = logging.getLogger(__name__)

HEARTBEAT = 1.0


@dataclass(frozen=True, slots=True)
class KvUpdate:
    """One change of one key: its new value, or None when it was deleted or purged."""

    key: str
    value: bytes | None
    revision: int
    created: datetime | None


async def watch_bucket(js: JetStreamContext, bucket: str,
                       on_update: Callable[[KvUpdate], None],
                       on_synced: Callable[[], None]) -> Subscription:
    """Watch every key of ``bucket`` (newest value per key first, then every change)."""
    prefix = f"$KV.{bucket}."
    synced = False

    def sync() -> None:
        nonlocal synced
        if not synced:
            synced = True
            on_synced()

    async def deliver(msg: Msg) -> None:
        meta = msg.metadata
        operation = msg.headers.get(KV_OP) if msg.headers else None
        value = None if operation in (KV_DEL, KV_PURGE) else msg.data
        try:
            on_update(KvUpdate(msg.subject[len(prefix):], value, meta.sequence.stream,
                               meta.timestamp))
        except Exception:
            logger.exception("Handling a change of bucket %s failed", bucket)
        if meta.num_pending == 0:
            sync()

    sub = await js.subscribe(prefix + ">", stream=f"KV_{bucket}", cb=deliver,
                             ordered_consumer=True, idle_heartbeat=HEARTBEAT,
                             deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                             inactive_threshold=300.0)
    info = await sub.consumer_info()
    if info.num_pending == 0 and (info.delivered is None or not info.delivered.stream_seq):
        sync()  # an empty bucket: nothing will arrive to say so
    return sub
