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
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from graphql import (
    ExecutionContext,
    FieldNode,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    Undefined,
    VariableDefinitionNode,
    VariableNode,
    type_from_ast,
    value_from_ast,
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


# --- the same two, planned once per operation (the request hot path) ----------------

MAX_PLANS = 512
"""Operations (or fields) whose plan is remembered; the document cache holds 256."""


N = TypeVar("N")
T = TypeVar("T")


class NodeMemo(Generic[N, T]):
    """Values derived from AST nodes, kept per node object (the document cache keeps the
    nodes). An entry holds its node, so no other object has that id while it is kept;
    at most ``limit`` entries, all forgotten when full. One owner's thread only."""

    def __init__(self, limit: int = MAX_PLANS) -> None:
        self._limit = limit
        self._kept: dict[int, tuple[N, T]] = {}

    def get(self, node: N, make: Callable[[N], T]) -> T:
        """The value kept for ``node``, made by ``make(node)`` the first time."""
        known = self._kept.get(id(node))
        if known is not None:
            return known[1]
        value = make(node)
        if len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[id(node)] = (node, value)
        return value


@dataclass(frozen=True, slots=True)
class _ScalarVariable:
    name: str
    scalar: GraphQLScalarType
    non_null: bool
    has_default: bool


class VariableCoercion:
    """:func:`coerce_variables` for the operations a server sees again and again.

    graphql-core resolves every variable's type from the schema and coerces it through
    its general input machinery on every request (~50 us for two ``DateTime``
    variables, more than the answer costs). For an operation whose variables are all
    scalars, the types are resolved once and a value is parsed by its scalar's own
    ``parse_value``, which is what graphql-core ends up calling for a scalar. Anything
    else - a list or input-object variable, a missing variable (defaults, required
    ones), a null for a non-null type, a value the scalar refuses - goes through
    :func:`coerce_variables`, so every error is graphql-core's own.
    ``tests/test_compat_graphql_core.py`` holds both to the same answers.

    One instance per server, used on its IO loop; plans are kept per operation node
    (the document cache keeps the nodes), at most :data:`MAX_PLANS`.
    """

    def __init__(self, schema: GraphQLSchema) -> None:
        self._schema = schema
        self._plans: NodeMemo[OperationDefinitionNode,
                              tuple[_ScalarVariable, ...] | None] = NodeMemo()

    def coerce(self, operation: OperationDefinitionNode, inputs: Mapping[str, Any]
               ) -> dict[str, Any]:
        """The operation's variables coerced; raises graphql-core's first GraphQLError."""
        definitions = operation.variable_definitions or ()
        plan = self._plan(operation)
        if plan is not None:
            out: dict[str, Any] = {}
            for variable in plan:
                name = variable.name
                if name not in inputs:
                    if variable.has_default or variable.non_null:
                        break
                    continue
                value = inputs[name]
                if value is None:
                    if variable.non_null:
                        break
                    out[name] = None
                    continue
                try:
                    parsed = variable.scalar.parse_value(value)
                except Exception:  # noqa: BLE001 - graphql-core reports it, its way
                    break
                if parsed is Undefined:
                    break
                out[name] = parsed
            else:
                return out
        return coerce_variables(self._schema, definitions, inputs)

    def _plan(self, operation: OperationDefinitionNode
              ) -> tuple[_ScalarVariable, ...] | None:
        return self._plans.get(operation, self._make_plan)

    def _make_plan(self, operation: OperationDefinitionNode
                   ) -> tuple[_ScalarVariable, ...] | None:
        definitions = operation.variable_definitions or ()
        plan = tuple(v for v in (_scalar_variable(self._schema, d) for d in definitions)
                     if v is not None)
        return plan if len(plan) == len(definitions) else None


def _scalar_variable(schema: GraphQLSchema, definition: VariableDefinitionNode
                     ) -> _ScalarVariable | None:
    declared = type_from_ast(schema, definition.type)
    non_null = isinstance(declared, GraphQLNonNull)
    named = declared.of_type if isinstance(declared, GraphQLNonNull) else declared
    if not isinstance(named, GraphQLScalarType):
        return None
    return _ScalarVariable(definition.variable.name.value, named, non_null,
                           definition.default_value is not None)


class ArgumentPlans:
    """:class:`FieldArguments` kept per field node (at most :data:`MAX_PLANS`), for code
    that meets the same documents' fields again and again (the request budget). One
    owner's thread only, like :class:`VariableCoercion`."""

    def __init__(self) -> None:
        self._plans: NodeMemo[FieldNode, FieldArguments] = NodeMemo()

    def read(self, definition: GraphQLField, node: FieldNode, variables: Mapping[str, Any]
             ) -> dict[str, Any]:
        """``field_arguments(definition, node, variables)``, planned once per node."""
        return self._plans.get(node, lambda n: FieldArguments(definition, n)).read(variables)


class FieldArguments:
    """:func:`field_arguments` for one field node, planned once.

    graphql-core walks the argument definitions and converts every literal on every
    call. Here an argument given by a variable takes the (already coerced) variable's
    value, a literal is converted once, and an absent argument takes its default - what
    ``get_argument_values`` does - whenever that is simple: a variable that is absent or
    null, a literal that does not convert, or a required argument left out goes through
    :func:`field_arguments`, with its own error.
    """

    def __init__(self, definition: GraphQLField, node: FieldNode) -> None:
        self._definition = definition
        self._node = node
        given = {arg.name.value: arg.value for arg in node.arguments or ()}
        plan: list[tuple[str, str | None, Any]] = []
        simple = True
        for name, arg in definition.args.items():
            key = arg.out_name or name
            value_node = given.get(name)
            if value_node is None:
                if arg.default_value is Undefined:
                    simple = simple and not isinstance(arg.type, GraphQLNonNull)
                    continue
                plan.append((key, None, arg.default_value))
            elif isinstance(value_node, VariableNode):
                plan.append((key, value_node.name.value, None))
            else:
                value = value_from_ast(value_node, arg.type, None)
                if value is Undefined or (value is None
                                          and isinstance(arg.type, GraphQLNonNull)):
                    simple = False
                plan.append((key, None, value))
        self._plan: tuple[tuple[str, str | None, Any], ...] | None = (
            tuple(plan) if simple else None)

    def read(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The field's arguments (as :func:`field_arguments` gives them)."""
        plan = self._plan
        if plan is not None:
            out: dict[str, Any] = {}
            for key, variable, constant in plan:
                if variable is None:
                    out[key] = constant
                    continue
                value = variables.get(variable, Undefined)
                if value is Undefined or value is None:
                    break
                out[key] = value
            else:
                return out
        return field_arguments(self._definition, self._node, variables)



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
