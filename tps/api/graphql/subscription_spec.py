"""What one subscription document asks for: its field, its checked arguments, and the
key that groups subscribers whose every message is identical.

The field and its arguments are read from the validated document before any event
arrives (with graphql-core's own helpers, :mod:`tps.compat.graphql_core`); each event
is then the root value of one execution of that document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from graphql import FieldNode, GraphQLError, GraphQLSchema, OperationType

from tps.api.graphql.cache import ParsedDocument
from tps.api.graphql.results import (
    GRAPHQL_VALIDATION_FAILED,
    OPERATION_RESOLUTION_FAILURE,
    variable_error,
)
from tps.api.graphql.schema import MAX_WINDOW, check_range, check_stream
from tps.compat.graphql_core import coerce_variables, field_arguments
from tps.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """The validated meaning of one subscription document.

    ``kind`` is ``temperature``, ``average`` or ``alarm`` (``alarmEvents``);
    ``window_size`` is set for averages;
    ``group_key`` identifies subscribers whose every message is identical (same text,
    operation and variables).
    """

    kind: str
    stream: str | None
    window_size: int | None
    parsed: ParsedDocument
    operation_name: str | None
    variables: dict[str, Any]
    group_key: tuple[str, str | None, str]


def subscription_spec(
    schema: GraphQLSchema,
    text: str,
    parsed: ParsedDocument,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> SubscriptionSpec:
    """Read the subscription field and its checked arguments from a valid document.

    Raises GraphQLError (bad variables, an unsupported document; with
    ``extensions.code``) or InvalidArgument (out-of-range arguments).
    """
    op = parsed.operation(operation_name)
    subscription_type = schema.subscription_type
    if op is None or op.operation != OperationType.SUBSCRIPTION or subscription_type is None:
        raise GraphQLError("operationName: no subscription operation selected",
                           extensions={"code": OPERATION_RESOLUTION_FAILURE})
    try:
        coerced = coerce_variables(schema, op.variable_definitions or (), variables or {})
    except GraphQLError as error:
        raise variable_error(error) from None
    fields = [s for s in op.selection_set.selections if isinstance(s, FieldNode)]
    if len(fields) != 1:
        raise GraphQLError("subscription: select exactly one root field (fragments unsupported)",
                           extensions={"code": GRAPHQL_VALIDATION_FAILED})
    node = fields[0]
    name = node.name.value
    definition = subscription_type.fields.get(name)
    if definition is None:
        raise GraphQLError(f"subscription: unknown field {name!r}",
                           extensions={"code": GRAPHQL_VALIDATION_FAILED})
    args = field_arguments(definition, node, coerced)
    stream = check_stream(args.get("stream"))
    window: int | None = None
    kind = "temperature"
    if name == "alarmEvents":
        kind = "alarm"
    elif name == "averageTemperature":
        kind = "average"
        # Graphene gives arguments Python names (``window_size``) as out_name.
        window = check_range("windowSize", args.get("window_size"), 1, MAX_WINDOW)
        if window is None:
            raise InvalidArgument("windowSize", "is required")
    key = (text, operation_name, json.dumps(coerced, sort_keys=True, default=str))
    return SubscriptionSpec(kind, stream, window, parsed, operation_name, coerced, key)
