"""graphql-core internals TPS relies on: coercing variables and reading a field's
arguments outside of an execution.

A subscription's field and arguments must be known before any event arrives (to pick
its feed and window), so they are read from the validated document with the helpers
graphql-core's executor uses internally (``graphql.execution.values``). They are not
part of graphql-core's documented API; ``tests/test_compat_graphql_core.py`` fails when
their behaviour changes. Written for graphql-core 3.2 (pinned in ``setup.cfg``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from graphql import (
    ExecutionContext,
    FieldNode,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLSchema,
    VariableDefinitionNode,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.pyutils import Path


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



Getter = Callable[[Any], Any]
"""Reads one field of a record, already serialized (what the scalar's serialize gives)."""


def flat_list_context(flat_types: Mapping[str, Mapping[str, Getter]],
                      base: type[ExecutionContext] = ExecutionContext) -> type[ExecutionContext]:
    """An execution context that completes lists of the named object types in one pass.

    graphql-core completes every field of every list item through its general machinery
    (about 7 us a field here): a ``temperatureSeries`` answer of 500 buckets x 5 fields
    took 25 ms. For the types named in ``flat_types`` (type name -> field name -> getter),
    a list whose item selection is only plain fields of those names (aliases allowed,
    no arguments, directives, fragments or sub-selections) is built directly as
    ``{response key: getter(item)}``; anything else takes graphql-core's own path.
    Overrides ``ExecutionContext.complete_list_value``, which graphql-core documents as
    private: ``tests/test_compat_graphql_core.py`` checks that both paths answer alike.
    """
    types = {name: dict(fields) for name, fields in flat_types.items()}

    class FlatListExecutionContext(base):  # type: ignore[valid-type,misc]
        def complete_list_value(
            self, return_type: GraphQLList[Any], field_nodes: list[FieldNode],
            info: GraphQLResolveInfo, path: Path, result: Any,
        ) -> Any:
            item_type = return_type.of_type
            if isinstance(item_type, GraphQLNonNull):
                item_type = item_type.of_type
            name = getattr(item_type, "name", "")
            getters = types.get(name)
            if getters is not None and isinstance(result, list):
                plan = _flat_plan(field_nodes, getters, name)
                if plan is not None:
                    return [{key: get(item) for key, get in plan} for item in result]
            return super().complete_list_value(return_type, field_nodes, info, path, result)

    return FlatListExecutionContext


def _flat_plan(field_nodes: list[FieldNode], getters: Mapping[str, Getter], type_name: str
               ) -> list[tuple[str, Getter]] | None:
    """(response key, getter) per selected field, or None when the selection is not flat."""
    plan: list[tuple[str, Getter]] = []
    for node in field_nodes:
        if node.selection_set is None:
            return None
        for selection in node.selection_set.selections:
            if (not isinstance(selection, FieldNode) or selection.directives
                    or selection.arguments or selection.selection_set is not None):
                return None
            field = selection.name.value
            get = getters.get(field)
            if field == "__typename":
                get = _constant(type_name)
            if get is None:
                return None
            plan.append(((selection.alias or selection.name).value, get))
    return plan


def _constant(value: str) -> Getter:
    return lambda _item: value
