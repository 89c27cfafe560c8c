"""graphql-core internals TPS relies on: coercing variables and reading a field's
arguments outside of an execution.

A subscription's field and arguments must be known before any event arrives (to pick
its feed and window), so they are read from the validated document with the helpers
graphql-core's executor uses internally (``graphql.execution.values``). They are not
part of graphql-core's documented API; ``tests/test_compat_graphql_core.py`` fails when
their behaviour changes. Written for graphql-core 3.2 (pinned in ``setup.cfg``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from graphql import FieldNode, GraphQLField, GraphQLSchema, VariableDefinitionNode
from graphql.execution.values import get_argument_values, get_variable_values


def coerce_variables(
    schema: GraphQLSchema,
    definitions: Collection[VariableDefinitionNode],
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """The operation's variables coerced to their declared types; raises the first
    GraphQLError (a missing, extra-typed or invalid variable)."""
    coerced = get_variable_values(schema, definitions, dict(inputs))
    if isinstance(coerced, list):
        raise coerced[0]
    return coerced


def field_arguments(
    definition: GraphQLField, node: FieldNode, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The arguments of ``node`` (a use of field ``definition``) with defaults applied and
    variables substituted, keyed by each argument's ``out_name`` when it has one
    (Graphene sets Python names there: ``window_size`` for ``windowSize``)."""
    return get_argument_values(definition, node, dict(variables))

