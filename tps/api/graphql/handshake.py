"""What a client brings when it opens a subscription socket on /graphql: the
subprotocols it offers and, in its ``connection_init`` payload, perhaps the control
token (which lets it send mutations over the socket)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tps.feeds.protocol import LEGACY, MODERN

SUBPROTOCOLS = (MODERN, LEGACY)
"""The subscription protocols TPS speaks: ``graphql-transport-ws`` (the graphql-ws
library) and the legacy ``graphql-ws`` (subscriptions-transport-ws)."""
DEFAULT_SUBPROTOCOL = MODERN
"""Spoken with a client that offers no subprotocol."""


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The first of the client's offered subprotocols that TPS speaks, or None."""
    for name in offered:
        if name.strip() in SUBPROTOCOLS:
            return name.strip()
    return None


def token_from_payload(payload: Any) -> str | None:
    """The control token carried by a ``connection_init`` payload, if any.

    Accepted shapes: ``{"token": t}``, ``{"authToken": t}``,
    ``{"Authorization": "Bearer t"}`` and ``{"headers": {"Authorization": "Bearer t"}}``.
    """
    if not isinstance(payload, dict):
        return None
    for key in ("token", "authToken"):
        if isinstance(payload.get(key), str):
            return str(payload[key])
    headers = payload.get("headers")
    sources = [payload, headers] if isinstance(headers, dict) else [payload]
    for source in sources:
        for key in ("Authorization", "authorization"):
            value = source.get(key)
            if isinstance(value, str):
                scheme, _, token = value.partition(" ")
                return token.strip() if scheme.lower() == "bearer" else None
    return None
