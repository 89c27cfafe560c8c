"""The one JSON error shape of the REST API: ``{"error": {"code", "message"}}``.

Every REST error - a bad body, a missing token, an unknown stream - answers with this
shape and a stable ``code`` token, so clients branch on ``code`` and show ``message``
to people. A 422 also names the offending ``field``.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from tps.errors import (
    ConfigError,
    InvalidArgument,
    LimitExceeded,
    StoreUnavailable,
    StreamError,
    StreamExists,
    TPSError,
    UnknownStream,
)

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    421: "misdirected",
    422: "invalid_field",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON error document."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


class ApiError(tornado.web.HTTPError):
    """An HTTP error with a JSON body; raise it from a handler."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(status, reason=None)
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.field = field


def from_tps_error(exc: TPSError) -> ApiError:
    """Map an error raised by the supervisor to its HTTP answer."""
    if isinstance(exc, UnknownStream):
        return ApiError(404, str(exc))
    if isinstance(exc, StreamExists):
        return ApiError(409, str(exc))
    if isinstance(exc, InvalidArgument):
        return ApiError(422, exc.problem, field=exc.argument)
    if isinstance(exc, ConfigError):
        return ApiError(422, exc.problem, field=exc.setting)
    if isinstance(exc, LimitExceeded):
        return ApiError(409, str(exc), code="limit_exceeded")
    if isinstance(exc, StreamError | StoreUnavailable):
        return ApiError(503, str(exc))
    return ApiError(500, str(exc))


class JsonErrorsMixin(tornado.web.RequestHandler):
    """Makes ``send_error`` (and every uncaught exception) answer in the JSON shape."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Write ``{"error": {...}}``; internal details never leak into a 500."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            body = error_body(exc.code, exc.message, exc.field)
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            body = error_body(CODES.get(status_code, "error"), exc.log_message % exc.args)
        else:
            body = error_body(CODES.get(status_code, "error"), self._reason)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if status_code == 401:
            # Set here: send_error() clears the headers a handler set before raising.
            self.set_header("WWW-Authenticate", 'Bearer realm="tps"')
        self.finish(json.dumps(body))
