"""GraphQL results and errors as the JSON TPS sends, over HTTP and over WebSocket.

Every error carries ``extensions.code``, so clients (Apollo, urql, gql) branch on a
stable token instead of on the message. The code follows the error's TYPE, never its
text:

- an error raised on purpose is a :class:`~tps.errors.TPSError`, whose class attribute
  ``code`` is the answer (``InvalidArgument`` -> ``BAD_USER_INPUT``, ``UnknownStream``
  -> ``NOT_FOUND``, ``StreamExists`` -> ``CONFLICT``, ``StoreUnavailable`` ->
  ``SERVICE_UNAVAILABLE``, ``Unauthenticated`` -> ``UNAUTHENTICATED``, ...). A new
  error class gets its code by declaring one; ``argument`` and ``limit`` attributes
  appear as ``extensions.argumentName`` and ``extensions.limit``;
- a document that does not parse is ``GRAPHQL_PARSE_FAILED``; one that does not
  validate is ``GRAPHQL_VALIDATION_FAILED``, except a literal argument value of the
  wrong type, which is ``BAD_USER_INPUT`` naming the argument (one error per mistake);
- a variable that cannot be coerced is ``BAD_USER_INPUT`` with ``variableName``;
- anything unexpected is logged and answered as ``INTERNAL_SERVER_ERROR`` without
  internals.

The codes are Apollo Server's where it has one (``BAD_REQUEST``,
``OPERATION_RESOLUTION_FAILURE`` included).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import pykka
from graphql import (
    ExecutionContext,
    ExecutionResult,
    GraphQLError,
    GraphQLSyntaxError,
    VariableDefinitionNode,
)

from tps.errors import ConfigError, InvalidArgument, StoreUnavailable, TPSError

logger = logging.getLogger(__name__)

BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_REQUEST = "BAD_REQUEST"
"""The request is not a GraphQL request (not JSON, no query, a mutation over GET)."""
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
"""``operationName`` names no operation of the document (or none was named)."""

_FOREIGN_CODES: tuple[tuple[type[BaseException], str], ...] = (
    # The supervisor is shutting down or did not answer in time: try again later.
    (pykka.ActorDeadError, SERVICE_UNAVAILABLE),
    (pykka.Timeout, SERVICE_UNAVAILABLE),
)
_FOREIGN_MESSAGES = {
    pykka.ActorDeadError: "the supervisor is not running (TPS is shutting down)",
    pykka.Timeout: "the supervisor did not answer in time",
}


def error_code(exc: BaseException) -> str | None:
    """The ``extensions.code`` of an exception raised while resolving; None: unexpected."""
    if isinstance(exc, TPSError):
        return exc.code
    for kind, code in _FOREIGN_CODES:
        if isinstance(exc, kind):
            return code
    return None


def error_extensions(exc: BaseException) -> dict[str, Any]:
    """``extensions`` for an expected exception: its code plus what names the fault."""
    extensions: dict[str, Any] = {"code": error_code(exc) or INTERNAL_SERVER_ERROR}
    if isinstance(exc, InvalidArgument):
        extensions["argumentName"] = exc.argument
    elif isinstance(exc, ConfigError):
        extensions["argumentName"] = exc.setting
    limit = getattr(exc, "limit", None)
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        extensions["limit"] = limit
    return extensions


def coded(error: GraphQLError, code: str, **extensions: Any) -> GraphQLError:
    """``error`` with ``extensions.code`` (and more extensions) set; unchanged when it
    already has a code."""
    if error.extensions and "code" in error.extensions:
        return error
    return GraphQLError(
        error.message, error.nodes, error.source, error.positions, error.path,
        error.original_error, {**(error.extensions or {}), "code": code, **extensions},
    )


def request_error(message: str, code: str) -> dict[str, Any]:
    """A JSON error made by the transport layer itself (no document location)."""
    return {"message": message, "extensions": {"code": code}}


def tps_error(exc: TPSError) -> dict[str, Any]:
    """A JSON error for a TPSError raised outside of a resolver (e.g. the auth gate)."""
    return {"message": str(exc), "extensions": error_extensions(exc)}


def document_errors(errors: Collection[GraphQLError]) -> tuple[GraphQLError, ...]:
    """Parse and validation errors with their codes (validation rules that know better,
    like the argument-value rule, have set theirs already)."""
    return tuple(
        coded(error, GRAPHQL_PARSE_FAILED if isinstance(error, GraphQLSyntaxError)
              else GRAPHQL_VALIDATION_FAILED)
        for error in errors
    )


def variable_error(error: GraphQLError) -> GraphQLError:
    """A variable that could not be coerced: BAD_USER_INPUT naming the variable."""
    node = next((n for n in error.nodes or () if isinstance(n, VariableDefinitionNode)), None)
    if node is None:
        return coded(error, BAD_USER_INPUT)
    return coded(error, BAD_USER_INPUT, variableName=node.variable.name.value)


class CodedExecutionContext(ExecutionContext):
    """graphql-core's execution context, with codes on the variable errors it finds
    before execution starts (``execute(..., execution_context_class=...)``)."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> list[GraphQLError] | ExecutionContext:
        """As graphql-core builds it; its errors (variables) get BAD_USER_INPUT."""
        built = super().build(*args, **kwargs)
        if isinstance(built, list):
            return [variable_error(error) for error in built]
        return built


def format_result(result: ExecutionResult) -> dict[str, Any]:
    """An ExecutionResult as the JSON-ready response mapping."""
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = format_errors(result.errors)
    out["data"] = result.data
    return out


def format_errors(errors: Sequence[GraphQLError]) -> list[dict[str, Any]]:
    """Every error as JSON (see :func:`format_error`)."""
    return [format_error(error) for error in errors]


def format_error(error: GraphQLError) -> dict[str, Any]:
    """A GraphQLError as JSON with ``extensions.code``; unexpected exceptions are
    logged, not leaked."""
    original = error.original_error
    if original is not None and not isinstance(original, GraphQLError):
        code = error_code(original)
        if code is None:
            logger.error("Resolver failed at %s", error.path, exc_info=original)
            message = f"internal error: {type(original).__name__}"
            extensions: dict[str, Any] = {"code": INTERNAL_SERVER_ERROR}
        else:
            message = _message(original)
            extensions = error_extensions(original)
        error = GraphQLError(message, error.nodes, path=error.path, extensions=extensions)
    elif not (error.extensions and "code" in error.extensions):
        # A GraphQLError raised by graphql-core during execution (e.g. null for a
        # non-null field) or by a resolver that did not say what went wrong.
        parse_failed = isinstance(error, GraphQLSyntaxError)
        error = coded(error, GRAPHQL_PARSE_FAILED if parse_failed else INTERNAL_SERVER_ERROR)
    return dict(error.formatted)


def _message(exc: BaseException) -> str:
    if isinstance(exc, StoreUnavailable):
        return f"store unavailable: {exc}"
    for kind, text in _FOREIGN_MESSAGES.items():
        if isinstance(exc, kind):
            return text
    return str(exc)
