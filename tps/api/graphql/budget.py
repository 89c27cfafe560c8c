"""What one GraphQL request may cost, worked out before any of its work starts.

One small document can ask for a lot: twenty aliases of
``temperatureMeasurements(limit: 100000)`` are 1.7 KB of text and two million rows.
So before a query or mutation executes, :func:`request_cost` reads the operation
(fragments expanded, variables substituted) and adds up, over every root field and
alias, the most readings each field can touch (``limit``/``last`` of
``temperatureMeasurements``, ``windowSize`` of ``averageTemperature``, the stored alarm
events ``alarms`` and ``alarmHistory`` may read), and counts the
aliased fields. :func:`check_budget` refuses the request with
:class:`~tps.errors.RequestTooLarge` naming the limit (``TPS_MAX_REQUEST_ROWS``,
``TPS_MAX_ALIASES``) when it asks for too much: nothing was fetched, nothing was
serialized.

A new root field that reads many rows adds its rule to :data:`ROW_RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)

from tps.alarms.query import MAX_ALARMS
from tps.api.graphql.schema import DEFAULT_LIMIT, DEFAULT_PAGE
from tps.compat.graphql_core import ArgumentPlans, field_arguments
from tps.errors import RequestTooLarge
from tps.store.alarm_log import MAX_EVENTS

RowRule = Callable[[Mapping[str, Any]], int]


def _measurements(args: Mapping[str, Any]) -> int:
    limit = _int(args.get("limit")) or DEFAULT_LIMIT
    last = _int(args.get("last"))
    return min(limit, last) if last else limit


def _average(args: Mapping[str, Any]) -> int:
    return _int(args.get("window_size"))


def _page(args: Mapping[str, Any]) -> int:
    return _int(args.get("first")) or DEFAULT_PAGE


def _series(args: Mapping[str, Any]) -> int:
    return _int(args.get("points"))


def _alarms(args: Mapping[str, Any]) -> int:
    # The open alarms come from memory; history reads up to MAX_EVENTS stored events.
    return MAX_ALARMS if args.get("active") is True else MAX_EVENTS


def _alarm_history(_args: Mapping[str, Any]) -> int:
    return MAX_EVENTS


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


ROW_RULES: dict[str, RowRule] = {
    "temperatureMeasurements": _measurements,
    "averageTemperature": _average,
    "temperatureSeries": _series,
    "temperatureMeasurementsPage": _page,
    "alarms": _alarms,
    "alarmHistory": _alarm_history,
}
"""Root query field -> the most readings it can read, from its arguments (Python names)."""


@dataclass(frozen=True, slots=True)
class RequestCost:
    """The worst case of one operation: ``rows`` read, ``aliases`` used."""

    rows: int
    aliases: int


@dataclass(frozen=True, slots=True)
class Budget:
    """The limits of one request (``TPS_MAX_REQUEST_ROWS``, ``TPS_MAX_ALIASES``)."""

    max_rows: int
    max_aliases: int


def request_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any],
    arguments: ArgumentPlans | None = None,
) -> RequestCost:
    """The worst-case cost of ``operation`` with (coerced) ``variables``; ``arguments``
    keeps the fields' argument plans between requests (the server passes its own).

    Fragments are expanded with their counts memoised, so a document that spreads a
    fragment many times is counted as what it asks for, without walking it that often.
    """
    root = (schema.query_type if operation.operation == OperationType.QUERY
            else schema.mutation_type)
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    walker = _Walker(root, fragments, variables, arguments)
    rows, aliases = walker.selections(operation.selection_set, root=True)
    return RequestCost(rows, aliases)


def check_budget(cost: RequestCost, budget: Budget) -> None:
    """Raise RequestTooLarge when ``cost`` goes past ``budget``."""
    if cost.aliases > budget.max_aliases:
        raise RequestTooLarge("TPS_MAX_ALIASES", budget.max_aliases, cost.aliases,
                              "the document uses aliased fields:")
    if cost.rows > budget.max_rows:
        raise RequestTooLarge("TPS_MAX_REQUEST_ROWS", budget.max_rows, cost.rows,
                              "the request may read rows (limit, last and windowSize over "
                              "every field and alias):")


class _Walker:
    """Adds up rows (root fields only: nothing nested reads readings) and aliases."""

    def __init__(self, root: GraphQLObjectType | None,
                 fragments: dict[str, FragmentDefinitionNode],
                 variables: Mapping[str, Any], arguments: ArgumentPlans | None = None
                 ) -> None:
        self._root = root
        self._arguments = arguments
        self._fragments = fragments
        self._variables = variables
        self._memo: dict[tuple[str, bool], tuple[int, int]] = {}

    def selections(self, selection_set: SelectionSetNode | None, root: bool,
                   seen: tuple[str, ...] = ()) -> tuple[int, int]:
        if selection_set is None:
            return 0, 0
        rows = aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                if root:
                    rows += self._field_rows(selection)
                _, inner = self.selections(selection.selection_set, False, seen)
                aliases += inner
            elif isinstance(selection, InlineFragmentNode):
                more_rows, more_aliases = self.selections(selection.selection_set, root, seen)
                rows, aliases = rows + more_rows, aliases + more_aliases
            elif isinstance(selection, FragmentSpreadNode):
                more_rows, more_aliases = self._fragment(selection.name.value, root, seen)
                rows, aliases = rows + more_rows, aliases + more_aliases
        return rows, aliases

    def _fragment(self, name: str, root: bool, seen: tuple[str, ...]) -> tuple[int, int]:
        known = self._memo.get((name, root))
        if known is not None:
            return known
        fragment = self._fragments.get(name)
        if fragment is None or name in seen:  # validation reports these
            return 0, 0
        cost = self.selections(fragment.selection_set, root, (*seen, name))
        self._memo[(name, root)] = cost
        return cost

    def _field_rows(self, node: FieldNode) -> int:
        rule = ROW_RULES.get(node.name.value)
        if rule is None or self._root is None:
            return 0
        definition = self._root.fields.get(node.name.value)
        if definition is None:
            return 0
        try:
            args = (field_arguments(definition, node, self._variables)
                    if self._arguments is None
                    else self._arguments.read(definition, node, self._variables))
        except Exception:  # noqa: BLE001 - bad arguments fail in execution, with their message
            return 0
        return rule(args)
