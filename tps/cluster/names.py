"""Names TPS uses on NATS: buckets, the readings stream, subjects and key encoding.

Stream names may contain ``.`` and ``:`` (``[A-Za-z0-9_.:-]``), but a NATS subject
uses ``.`` to separate tokens and a key-value key may not contain ``:``. Both are
mapped to characters a stream name can never contain (``.`` -> ``/``, ``:`` -> ``=``),
so the mapping is a bijection: ``sat.1:a`` is key ``sat/1=a`` and subject
``tps.readings.sat/1=a``, and decoding gives the name back. The line-protocol payload
carries the real name, so Telegraf and other consumers need no decoding.
"""

from __future__ import annotations

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
WRITERS_CONSUMER = "tps-writers"

_ENCODE = str.maketrans({".": "/", ":": "="})
_DECODE = str.maketrans({"/": ".", "=": ":"})


def encode_token(name: str) -> str:
    """A stream or instance name as one subject token / key-value key."""
    return name.translate(_ENCODE)


def decode_token(token: str) -> str:
    """The name a token or key stands for (inverse of :func:`encode_token`)."""
    return token.translate(_DECODE)


def readings_subject(stream: str) -> str:
    """``tps.readings.<stream>``: where one stream's readings are published."""
    return READINGS_PREFIX + encode_token(stream)


def stream_of_subject(subject: str) -> str | None:
    """The stream a readings subject belongs to, or None for any other subject."""
    if not subject.startswith(READINGS_PREFIX):
        return None
    token = subject[len(READINGS_PREFIX):]
    return decode_token(token) if token and "." not in token else None


def default_instance_name() -> str:
    """Host name plus a short random suffix (``TPS_INSTANCE`` when unset).

    The suffix keeps two processes on one host (or a restarted container that kept its
    host name while its predecessor's leases are still alive) apart.
    """
    host = socket.gethostname().split(".")[0] or "tps"
    cleaned = "".join(c if c.isalnum() or c in "_-" else "-" for c in host)[:55]
    return f"{cleaned}-{secrets.token_hex(3)}"
