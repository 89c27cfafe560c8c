"""GraphQL results and errors as the JSON TPS sends, over HTTP and over WebSocket.

A resolver's :class:`~tps.errors.TPSError` keeps its message (it names the argument or
the store problem); any other exception is logged and answered as an internal error,
so internals never leak to a client.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import ExecutionResult, GraphQLError

from tps.errors import StoreUnavailable, TPSError

logger = logging.getLogger(__name__)


def format_result(result: ExecutionResult) -> dict[str, Any]:
    """An ExecutionResult as the JSON-ready response mapping."""
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [format_error(error) for error in result.errors]
    out["data"] = result.data
    return out


def format_error(error: GraphQLError) -> dict[str, Any]:
    """A GraphQLError as JSON; unexpected exceptions are logged, not leaked."""
    original = error.original_error
    if isinstance(original, StoreUnavailable):
        error = GraphQLError(
            f"store unavailable: {original}", error.nodes, path=error.path
        )
    elif original is not None and not isinstance(original, TPSError | GraphQLError):
        logger.error("Resolver failed at %s", error.path, exc_info=original)
        error = GraphQLError(
            f"internal error: {type(original).__name__}", error.nodes, path=error.path
        )
    return dict(error.formatted)
