"""The one definition of a stream as the API shows it and takes it.

``STREAM_FIELDS`` describes a stream's state and counters: the REST JSON
(:func:`stream_json`), the GraphQL ``Stream`` type, the OpenAPI ``Stream`` schema and
the table of ``tps streams list`` are all derived from it. ``NEW_STREAM_FIELDS`` does
the same for what a caller sends to add a stream (REST body, OpenAPI ``NewStream``,
GraphQL ``AddStreamInput``). A field added here appears everywhere at once.

Plain data and functions only (the operator CLI imports it too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tps.actors.stats import StreamState, StreamStats
from tps.config.settings import DEFAULT_SUBSCRIPTION, PROTOCOLS
from tps.model import ns_to_datetime
from tps.redact import redact_url

NAME_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$"
"""Stream names (checked by ``tps.config.settings.validate_feed_name``)."""


@dataclass(frozen=True, slots=True)
class StreamField:
    """One field of the stream as every API shows it.

    ``name`` is the JSON (and Python) name; GraphQL shows it in camelCase.
    ``json_type`` is its JSON Schema type; ``graphql`` its GraphQL scalar (None: not in
    the GraphQL type); ``column`` its header in ``tps streams list`` (None: not shown);
    ``schema`` adds JSON Schema keywords (format, enum, minimum, ...).
    """

    name: str
    json_type: str
    read: Callable[[StreamStats], Any]
    graphql: str | None
    nullable: bool = False
    required: bool = False
    description: str = ""
    column: str | None = None
    schema: dict[str, Any] = field(default_factory=dict)


def _last_time(stats: StreamStats) -> datetime | None:
    return None if stats.last_time_ns is None else ns_to_datetime(stats.last_time_ns)


# Ordered as the CLI's table shows them; JSON and GraphQL keep the same order.
STREAM_FIELDS: tuple[StreamField, ...] = (
    StreamField("name", "string", lambda s: s.name, "String", required=True, column="NAME"),
    StreamField("state", "string", lambda s: str(s.state), "StreamState", required=True,
                column="STATE", description="What its reader is doing.",
                schema={"enum": [str(state) for state in StreamState]}),
    StreamField("received", "integer", lambda s: s.received, "Counter", required=True,
                column="RECEIVED", schema={"minimum": 0},
                description="Readings accepted (a Counter in GraphQL: may exceed 2^31)."),
    StreamField("rejected", "integer", lambda s: s.rejected, "Counter", required=True,
                column="REJECTED", schema={"minimum": 0},
                description="Frames rejected (a Counter in GraphQL: may exceed 2^31)."),
    StreamField("last_value", "number", lambda s: s.last_value, "Float", nullable=True,
                column="LAST", description="Newest value read."),
    StreamField("reconnects", "integer", lambda s: s.reconnects, "Int", column="RECONNECTS",
                schema={"minimum": 0}),
    StreamField("url", "string", lambda s: redact_url(s.url), "String", required=True,
                column="URL", description="Without credentials or query values (redacted)."),
    StreamField("protocol", "string", lambda s: s.protocol, "FeedProtocol", required=True,
                description="As configured: " + ", ".join(PROTOCOLS) + "."),
    StreamField("negotiated_protocol", "string", lambda s: s.negotiated_protocol,
                "FeedProtocol",
                nullable=True, description="What the feed's server chose."),
    StreamField("query", "string", lambda s: s.query, "String", required=True),
    StreamField("rejected_by_reason", "object", lambda s: dict(s.rejected_by_reason), None,
                schema={"additionalProperties": {"type": "integer"}}),
    StreamField("last_time", "string", _last_time, "DateTime", nullable=True,
                schema={"format": "date-time"}, description="When the newest value was read."),
    StreamField("last_time_ns", "integer", lambda s: s.last_time_ns, None, nullable=True),
    StreamField("restarts", "integer", lambda s: s.restarts, "Int", schema={"minimum": 0}),
    StreamField("last_error", "string", lambda s: s.last_error, "String", nullable=True),
    StreamField("owner", "string", lambda s: s.owner, "String", nullable=True,
                description="Cluster mode: the instance (TPS_INSTANCE) reading the stream; "
                "null when none does, and always in single-node mode."),
)


def stream_json(stats: StreamStats) -> dict[str, Any]:
    """The JSON representation of one stream (REST; ``tps streams list --json``)."""
    out: dict[str, Any] = {}
    for spec in STREAM_FIELDS:
        value = spec.read(stats)
        out[spec.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


@dataclass(frozen=True, slots=True)
class NewStreamField:
    """One field a caller sends to add a stream (``python_type`` is its JSON type)."""

    name: str
    python_type: type
    required: bool
    default: Any
    description: str
    schema: dict[str, Any]
    graphql: bool = True
    """Also a field of GraphQL's ``AddStreamInput`` (``started`` is REST only)."""


NEW_STREAM_FIELDS: tuple[NewStreamField, ...] = (
    NewStreamField("name", str, True, None, "Stream name.",
                   {"pattern": NAME_PATTERN, "example": "sat-1"}),
    NewStreamField("url", str, True, None,
                   "ws:// or wss:// URL; where it may connect is set by TPS_FEED_ALLOW.",
                   {"example": "ws://127.0.0.1:4000/graphql"}),
    NewStreamField("protocol", str, False, "auto", "auto, or the wire protocol to speak.",
                   {"enum": list(PROTOCOLS)}),
    NewStreamField("query", str, False, DEFAULT_SUBSCRIPTION, "The subscription document.",
                   {"minLength": 1}),
    NewStreamField("started", bool, False, True, "Start its reader at once.", {},
                   graphql=False),
)


def json_schema_type(python_type: type) -> str:
    """The JSON Schema type of a new-stream field's Python type."""
    return {bool: "boolean", str: "string", int: "integer", float: "number"}[python_type]
