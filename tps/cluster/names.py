"""Names TPS uses on NATS: buckets, streams, subjects, partitions and key encoding.

Stream names may contain ``.`` and ``:`` (``[A-Za-z0-9_.:-]``), but a NATS subject
uses ``.`` to separate tokens and a key-value key may not contain ``:``. Both are
mapped to characters a stream name can never contain (``.`` -> ``/``, ``:`` -> ``=``),
so the mapping is a bijection: ``sat.1:a`` is key ``sat/1=a`` and subject
``tps.readings.sat/1=a``, and decoding gives the name back. The line-protocol payload
carries the real name, so Telegraf and other consumers need no decoding.

Readings are split into :data:`PARTITIONS` fixed partitions by a stable hash of the
stream name: stream ``sat.1`` in partition 5 is published on ``tps.readings.5.sat/1``
(still one subject per stream, under ``tps.readings.>``). Each partition has its own
durable consumer (``tps-writers-5``) and, through a lease, one writer at a time: so a
stream's readings reach one writer, in the order they were published - which is what
lets the writer fold rollups as the single-node writer does. The count is fixed for
the life of the cluster's data (changing it would send a stream's readings to another
consumer mid-stream); it is the most writers that can share the work.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket

logger = logging.getLogger(__name__)

REGISTRY_BUCKET = "tps-streams"
LEASE_BUCKET = "tps-leases"
INSTANCE_BUCKET = "tps-instances"
READINGS_STREAM = "TPS_READINGS"
READINGS_PREFIX = "tps.readings."
READINGS_SUBJECTS = READINGS_PREFIX + ">"
WORK_BUCKET = "tps-work"
"""Leases on work other than feeds: ``partition.<n>``, ``backfill``, ``alert-sender``."""
PARTITIONS = 8
"""Fixed number of readings partitions (see the module docstring)."""
PARTITION_KEY = "partition."
BACKFILL_KEY = "backfill"
ALERT_SENDER_KEY = "alert-sender"
ALARMS_STREAM = "TPS_ALARMS"
ALARMS_PREFIX = "tps.alarms."
ALARMS_SUBJECTS = ALARMS_PREFIX + "*"
ALARM_WRITERS_CONSUMER = "tps-alarm-writers"
ALARM_CONTROL_PREFIX = "tps.control.alarms."

_ENCODE = str.maketrans({".": "/", ":": "="})
_DECODE = str.maketrans({"/": ".", "=": ":"})


def encode_token(name: str) -> str:
    """A stream or instance name as one subject token / key-value key."""
    return name.translate(_ENCODE)


def decode_token(token: str) -> str:
    """The name a token or key stands for (inverse of :func:`encode_token`)."""
    return token.translate(_DECODE)


def partition_of(stream: str) -> int:
    """The readings partition of ``stream`` (stable across processes and versions)."""
    digest = hashlib.blake2b(stream.encode(), digest_size=8, person=b"tps-part").digest()
    return int.from_bytes(digest, "big") % PARTITIONS


def readings_subject(stream: str) -> str:
    """``tps.readings.<partition>.<stream>``: where one stream's readings are published."""
    return f"{READINGS_PREFIX}{partition_of(stream)}.{encode_token(stream)}"


def partition_subjects(partition: int) -> str:
    """Every readings subject of one partition (a consumer's filter)."""
    return f"{READINGS_PREFIX}{partition}.>"


def writers_consumer(partition: int) -> str:
    """The durable consumer of one partition (``tps-writers-<n>``)."""
    return f"tps-writers-{partition}"


def partition_lease(partition: int) -> str:
    """The work-bucket key of one partition's lease."""
    return f"{PARTITION_KEY}{partition}"


def lease_partition(key: str) -> int | None:
    """The partition a work-bucket key leases, or None for another key."""
    if not key.startswith(PARTITION_KEY):
        return None
    try:
        partition = int(key[len(PARTITION_KEY):])
    except ValueError:
        return None
    return partition if 0 <= partition < PARTITIONS else None


def stream_of_subject(subject: str) -> str | None:
    """The stream a readings subject belongs to, or None for any other subject."""
    if not subject.startswith(READINGS_PREFIX):
        return None
    parts = subject[len(READINGS_PREFIX):].split(".")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1]:
        return None
    return decode_token(parts[1])


def alarm_subject(stream: str) -> str:
    """``tps.alarms.<stream>``: one stream's alarm events, in order."""
    return ALARMS_PREFIX + encode_token(stream)


def stream_of_alarm_subject(subject: str) -> str | None:
    """The stream an alarm-event subject belongs to, or None."""
    if not subject.startswith(ALARMS_PREFIX):
        return None
    token = subject[len(ALARMS_PREFIX):]
    return decode_token(token) if token and "." not in token else None


def alarm_control_subject(instance: str) -> str:
    """Where ``instance`` answers acknowledge and shelve requests for its streams."""
    return ALARM_CONTROL_PREFIX + encode_token(instance)


def default_instance_name() -> str:
    """Host name plus a short random suffix (``TPS_INSTANCE`` when unset).

    The suffix keeps two processes on one host (or a restarted container that kept its
    host name while its predecessor's leases are still alive) apart.
    """
    host = socket.gethostname().split(".")[0] or "tps"
    cleaned = "".join(c if c.isalnum() or c in "_-" else "-" for c in host)[:55]
    return f"{cleaned}-{secrets.token_hex(3)}"
