"""The OpenAPI 3 document of the REST control plane, served at ``/api/openapi.json``.

Kept true by ``tests/test_openapi_fuzz.py``, which fuzzes a running server from this
document with schemathesis: no 5xx, every answer matches.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from tps import __version__ as tps_version
from tps.api.context import ApiContext
from tps.api.stream_shape import (
    NAME_PATTERN,
    NEW_STREAM_FIELDS,
    STREAM_FIELDS,
    NewStreamField,
    StreamField,
    json_schema_type,
)

Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]

_NAME = {"type": "string", "pattern": NAME_PATTERN, "example": "sat-1"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _stream(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Stream")}}}


def _limits(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Limits")}}}


def _alarm(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Alarm")}}}


def _stream_property(spec: StreamField) -> dict[str, Any]:
    kind: str | list[str] = [spec.json_type, "null"] if spec.nullable else spec.json_type
    out: dict[str, Any] = {"type": kind, **spec.schema}
    if spec.description:
        out["description"] = spec.description
    return out


def _new_stream_property(spec: NewStreamField) -> dict[str, Any]:
    out: dict[str, Any] = {"type": json_schema_type(spec.python_type), **spec.schema,
                           "description": spec.description}
    if not spec.required:
        out["default"] = spec.default
    return out


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "example": "not_found"},
                        "message": {"type": "string"},
                        "field": {"type": "string", "description": "The invalid field (422)."},
                    },
                }
            },
        },
        "NewStream": {
            "type": "object",
            "required": [spec.name for spec in NEW_STREAM_FIELDS if spec.required],
            "additionalProperties": False,
            "properties": {spec.name: _new_stream_property(spec) for spec in NEW_STREAM_FIELDS},
        },
        "Stream": {
            "type": "object",
            "required": [spec.name for spec in STREAM_FIELDS if spec.required],
            "properties": {spec.name: _stream_property(spec) for spec in STREAM_FIELDS},
        },
        "StreamList": {
            "type": "object",
            "required": ["streams"],
            "properties": {"streams": {"type": "array", "items": _ref("Stream")}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "role", "store"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "role": {"type": "string"},
                "supervisor": {"type": ["object", "null"]},
                "streams": {"type": "object", "additionalProperties": {"type": "string"}},
                "writer": {"type": ["object", "null"]},
                "store": {
                    "type": "object",
                    "properties": {"reachable": {"type": "boolean"}, "error": nullable_str},
                },
                "alarms": {"type": ["object", "null"],
                           "description": "History loaded, open alarms, events not yet "
                           "in the store, Alertmanager and webhook delivery."},
            },
        },
        "Limits": {
            "type": "object",
            "additionalProperties": False,
            "description": "Every field optional; null means not set. Red must lie outside "
            "yellow, every low limit below every high one by more than two deadbands.",
            "properties": {
                **{name: {"type": ["number", "null"], "example": example}
                   for name, example in (("yellowLow", 10.0), ("yellowHigh", 30.0),
                                         ("redLow", 0.0), ("redHigh", 40.0))},
                "staleAfter": {"type": ["number", "null"], "exclusiveMinimum": 0,
                               "maximum": 31_622_400,
                               "description": "Seconds without a reading before STALE."},
                "deadband": {"type": ["number", "null"], "minimum": 0,
                             "description": "How far back inside a limit counts as returned."},
                "persistence": {"type": ["integer", "null"], "minimum": 1,
                                "maximum": 1_000_000,
                                "description": "Consecutive readings out before raising."},
            },
        },
        "Alarm": {
            "type": "object",
            "required": ["id", "stream", "severity", "state", "value", "triggeredAt",
                         "mostSevereValue", "acknowledged"],
            "properties": {
                "id": {"type": "string"},
                "stream": {"type": "string"},
                "severity": {"type": "string", "enum": ["WARNING", "CRITICAL", "STALE"]},
                "state": {"type": "string", "enum": ["ACTIVE", "ACKNOWLEDGED", "RETURNED",
                                                     "SHELVED", "CLEARED"]},
                "value": {"type": "number"},
                "limit": {"type": ["number", "null"]},
                "limitName": nullable_str,
                "triggeredAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
                "mostSevereValue": {"type": "number"},
                "outOfLimits": {"type": "boolean"},
                "acknowledged": {"type": "boolean"},
                "acknowledgedAt": {**nullable_str, "format": "date-time"},
                "acknowledgeComment": nullable_str,
                "shelvedUntil": {**nullable_str, "format": "date-time"},
                "shelveComment": nullable_str,
                "returnedAt": {**nullable_str, "format": "date-time"},
                "clearedAt": {**nullable_str, "format": "date-time"},
            },
        },
        "AlarmList": {
            "type": "object",
            "required": ["alarms"],
            "properties": {"alarms": {"type": "array", "items": _ref("Alarm")}},
        },
        "Acknowledge": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"comment": {"type": ["string", "null"], "maxLength": 1000}},
        },
        "Shelve": {
            "type": "object",
            "required": ["seconds"],
            "additionalProperties": False,
            "properties": {
                "seconds": {"type": "integer", "minimum": 1, "maximum": 2_592_000},
                "comment": {"type": ["string", "null"], "maxLength": 1000},
            },
        },
        "Ready": {
            "type": "object",
            "required": ["ready", "reasons"],
            "properties": {
                "ready": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI 3.1 document."""
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "Stream name.",
        "schema": _NAME,
    }
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    unauthorized = _error("Missing or wrong bearer token.")
    unavailable = _error("This process has no supervisor (role=api) or it is shutting down.")
    mutating_errors = {"401": unauthorized, "403": _error("Origin not allowed."),
                       "404": _error("Unknown stream."), "503": unavailable}
    alarm_param = {"name": "id", "in": "path", "required": True,
                   "description": "Alarm id.", "schema": {"type": "string", "maxLength": 64}}
    alarm_errors = {
        "400": _error("Malformed body or an invalid field (`error.field`)."),
        "401": unauthorized,
        "403": _error("Origin not allowed."),
        "404": _error("Unknown alarm."),
        "409": _error("The alarm is already CLEARED."),
        "413": _error("Body too large."),
        "415": _error("Content-Type is not application/json."),
        "503": _error("The alarm history is not loaded yet, or alarms do not run here."),
    }
    action = {
        "parameters": [name_param],
        "security": auth,
        "responses": {"200": _stream("The stream's new state."), **mutating_errors},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TPS control plane",
            "version": tps_version,
            "description": "Manage the feeds TPS ingests and watch its health. Mutating "
            "calls need `Authorization: Bearer <token>` (TPS_CONTROL_TOKEN, or the "
            "control-token file in the data dir).",
        },
        "paths": {
            "/api/streams": {
                "get": {
                    "operationId": "listStreams",
                    "summary": "Every stream with its state and counters.",
                    "responses": {
                        "200": {
                            "description": "The streams.",
                            "content": {"application/json": {"schema": _ref("StreamList")}},
                        },
                        "503": unavailable,
                    },
                },
                "post": {
                    "operationId": "addStream",
                    "summary": "Add a stream; its reader starts at once unless started=false.",
                    "security": auth,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewStream")}},
                    },
                    "responses": {
                        "201": {
                            **_stream("Added."),
                            "headers": {
                                "Location": {
                                    "description": "URL of the new stream.",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        "400": _error("Malformed JSON."),
                        "401": unauthorized,
                        "403": _error("Origin not allowed."),
                        "409": _error("A stream of that name exists, or TPS_MAX_STREAMS streams do "
                                       "(`error.code` limit_exceeded)."),
                        "413": _error("Body too large."),
                        "415": _error("Content-Type is not application/json."),
                        "422": _error("A field is invalid; `error.field` names it."),
                        "503": unavailable,
                    },
                },
            },
            "/api/streams/{name}": {
                "get": {
                    "operationId": "getStream",
                    "parameters": [name_param],
                    "responses": {
                        "200": _stream("The stream."),
                        "404": _error("Unknown stream."),
                        "503": unavailable,
                    },
                },
                "delete": {
                    "operationId": "removeStream",
                    "summary": "Stop the reader, flush what it read, forget the stream.",
                    "parameters": [name_param],
                    "security": auth,
                    "responses": {"204": {"description": "Removed."}, **mutating_errors},
                },
            },
            "/api/streams/{name}/stop": {
                "post": {"operationId": "stopStream", "summary": "Pause.", **action}
            },
            "/api/streams/{name}/start": {
                "post": {"operationId": "startStream", "summary": "Resume.", **action}
            },
            "/api/streams/{name}/limits": {
                "get": {
                    "operationId": "getLimits",
                    "summary": "The stream's limits (every field null when none are set).",
                    "parameters": [name_param],
                    "responses": {"200": _limits("The limits."), "404": _error("Unknown stream."),
                                  "503": unavailable},
                },
                "put": {
                    "operationId": "setLimits",
                    "summary": "Replace the stream's limits (persisted with the registry).",
                    "parameters": [name_param],
                    "security": auth,
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("Limits")}}},
                    "responses": {
                        "200": _limits("The limits now in force."),
                        "400": _error("Invalid limits; `error.field` names the field."),
                        "413": _error("Body too large."),
                        "415": _error("Content-Type is not application/json."),
                        **mutating_errors,
                    },
                },
                "delete": {
                    "operationId": "clearLimits",
                    "summary": "Remove the stream's limits; its open alarms return.",
                    "parameters": [name_param],
                    "security": auth,
                    "responses": {"204": {"description": "Removed."}, **mutating_errors},
                },
            },
            "/api/alarms": {
                "get": {
                    "operationId": "listAlarms",
                    "summary": "Alarms: active=true lists every alarm not yet CLEARED; "
                    "otherwise the history (alarms triggered in the window).",
                    "parameters": [
                        {"name": "active", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "stream", "in": "query", "schema": _NAME},
                        {"name": "after", "in": "query",
                         "schema": {"type": "string", "format": "date-time"}},
                        {"name": "before", "in": "query",
                         "schema": {"type": "string", "format": "date-time"}},
                    ],
                    "responses": {
                        "200": {"description": "The alarms, oldest trigger first.",
                                "content": {"application/json": {
                                    "schema": _ref("AlarmList")}}},
                        "400": _error("A query parameter is invalid."),
                        "503": _error("The alarm history is not loaded yet, or the store "
                                      "does not answer."),
                    },
                },
            },
            "/api/alarms/{id}": {
                "get": {
                    "operationId": "getAlarm",
                    "parameters": [alarm_param],
                    "responses": {"200": _alarm("The alarm."), "404": _error("Unknown alarm."),
                                  "503": unavailable},
                },
            },
            "/api/alarms/{id}/acknowledge": {
                "post": {
                    "operationId": "acknowledgeAlarm",
                    "summary": "ACTIVE -> ACKNOWLEDGED, RETURNED -> CLEARED.",
                    "parameters": [alarm_param],
                    "security": auth,
                    "requestBody": {"required": False, "content": {
                        "application/json": {"schema": _ref("Acknowledge")}}},
                    "responses": {"200": _alarm("The alarm after it."), **alarm_errors},
                },
            },
            "/api/alarms/{id}/shelve": {
                "post": {
                    "operationId": "shelveAlarm",
                    "summary": "Silence the alarm for `seconds`.",
                    "parameters": [alarm_param],
                    "security": auth,
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("Shelve")}}},
                    "responses": {"200": _alarm("The alarm after it."), **alarm_errors},
                },
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness and a summary of every actor, stream and the store.",
                    "responses": {
                        "200": {
                            "description": "The process serves.",
                            "content": {"application/json": {"schema": _ref("Health")}},
                        }
                    },
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "200 when the store answers and the supervisor runs.",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {"application/json": {"schema": _ref("Ready")}},
                        },
                        "503": {
                            "description": "Not ready; `reasons` says why.",
                            "content": {"application/json": {"schema": _ref("Ready")}},
                        },
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class OpenApiHandler(tornado.web.RequestHandler):
    """``GET /api/openapi.json``."""

    def get(self) -> None:
        """The document."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(openapi_document(), indent=1))


def routes(ctx: ApiContext) -> list[Route]:
    """The /api/openapi.json route."""
    return [(r"/api/openapi\.json", OpenApiHandler, {})]
