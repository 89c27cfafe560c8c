"""What a client brings to /graphql: the subprotocols a subscription socket offers
and the credentials of a request or socket (the control token, which lets it send
mutations, in an ``Authorization`` header or in ``connection_init``'s payload).

One rule for HTTP and WebSocket: reads need no token; a missing or wrong token is
refused only for control operations (mutations), with an ``UNAUTHENTICATED`` error
the client shows - never by closing the socket, which clients report as a bare
disconnect (GraphiQL then waits forever).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
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


class Access(enum.Enum):
    """What a caller's credentials allow."""

    ANONYMOUS = "anonymous"
    """No token: queries and subscriptions."""
    WRONG_TOKEN = "wrong token"  # noqa: S105 - a state, not a secret
    """A token that is not the control token: the same as none, and said so."""
    CONTROL = "control"
    """The control token: mutations too."""

    @classmethod
    def of_token(cls, token: str | None, check: Callable[[str | None], bool]) -> Access:
        """The access a token gives (``check`` compares it with the control token)."""
        if not token:
            return cls.ANONYMOUS
        return cls.CONTROL if check(token) else cls.WRONG_TOKEN

    @classmethod
    def of_header(cls, header: str | None, check: Callable[[str | None], bool]) -> Access:
        """The access an ``Authorization`` header gives (``Bearer <token>``)."""
        if not header:
            return cls.ANONYMOUS
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return cls.WRONG_TOKEN
        return cls.of_token(token.strip(), check) if token.strip() else cls.WRONG_TOKEN

    def refusal(self) -> str:
        """Why a mutation is refused with this access."""
        if self is Access.WRONG_TOKEN:
            return ("unauthorized: the token sent is not the control token (mutations need "
                    "'Authorization: Bearer <control token>'; reads need no token)")
        return ("unauthorized: mutations need 'Authorization: Bearer <control token>' (over "
                "a WebSocket: in connection_init's payload); reads need no token")
