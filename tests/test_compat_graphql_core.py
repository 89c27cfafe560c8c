"""tps/compat/graphql_core.py still applies to the installed graphql-core.

Subscriptions read their field's arguments with graphql-core's internal helpers
(``graphql.execution.values``). If an upgrade moves or changes them, these tests fail
and name what to look at, instead of subscriptions silently losing their arguments.
"""

from __future__ import annotations

from functools import partial

import graphql
import pytest
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, parse

from tps.api.graphql.schema import build_schema
from tps.compat.graphql_core import (
    ArgumentPlans,
    FieldArguments,
    VariableCoercion,
    coerce_variables,
    field_arguments,
)

SCHEMA = build_schema().graphql_schema
DOCUMENT = ("subscription($n: Int!, $s: String) "
            "{ averageTemperature(windowSize: $n, stream: $s) { value } }")


def _operation(text: str) -> OperationDefinitionNode:
    node = parse(text).definitions[0]
    assert isinstance(node, OperationDefinitionNode)
    return node


def test_written_for_graphql_core_3() -> None:
    assert graphql.version_info.major == 3, (
        f"graphql-core {graphql.__version__}: check tps/compat/graphql_core.py and the "
        "pin in setup.cfg")


def test_variables_are_coerced_to_their_declared_types() -> None:
    op = _operation(DOCUMENT)
    assert coerce_variables(SCHEMA, op.variable_definitions, {"n": 20}) == {"n": 20}
    with pytest.raises(GraphQLError, match=r"\$n"):
        coerce_variables(SCHEMA, op.variable_definitions, {"n": "twenty"})
    with pytest.raises(GraphQLError, match=r"\$n"):
        coerce_variables(SCHEMA, op.variable_definitions, {})


def test_field_arguments_substitute_variables_under_graphenes_python_names() -> None:
    op = _operation(DOCUMENT)
    node = op.selection_set.selections[0]
    assert isinstance(node, FieldNode)
    assert SCHEMA.subscription_type is not None
    definition = SCHEMA.subscription_type.fields["averageTemperature"]
    args = field_arguments(definition, node, {"n": 7, "s": "sat-1"})
    # subscription_spec reads window_size: Graphene's out_name for windowSize.
    assert args == {"window_size": 7, "stream": "sat-1"}
    assert field_arguments(definition, node, {"n": 7}) == {"window_size": 7}


# --- flat lists (temperatureSeries buckets) ------------------------------------------


def _series_root() -> object:
    from tps.history.answers import Series, SeriesBucket
    return Series(7_200_000_000_000, [
        SeriesBucket(1_690_549_200_000_000_000 + i * 7_200_000_000_000, -1.5 + i, 2.25 * i,
                     0.1 * i, i + 1) for i in range(5)])


@pytest.mark.parametrize("selection", [
    "time min max mean count",
    "count t: time __typename mean",
    "time ... on TemperatureSeriesBucket { min }",  # not flat: graphql-core's own path
    "time min @include(if: false) max",  # not flat either
])
def test_flat_list_completion_answers_like_graphql_core(selection: str) -> None:
    import graphene
    from graphql import ExecutionContext, ExecutionResult, execute

    from tps.api.graphql.schema import FLAT_LISTS, TemperatureSeries
    from tps.compat.graphql_core import flat_list_context

    root = _series_root()

    class OnlySeries(graphene.ObjectType):  # type: ignore[misc]
        series = graphene.Field(TemperatureSeries)

        @staticmethod
        def resolve_series(_root: None, _info: object) -> object:
            return root

    schema = graphene.Schema(query=OnlySeries).graphql_schema
    document = parse(f"{{ series {{ interval buckets {{ {selection} }} }} }}")
    answers = []
    for context_class in (ExecutionContext, flat_list_context(FLAT_LISTS)):
        result = execute(schema, document, execution_context_class=context_class)
        assert isinstance(result, ExecutionResult) and result.errors is None, result
        assert result.data is not None
        answers.append(result.data["series"])
    assert answers[0] == answers[1]
    assert list(answers[0]["buckets"][0]) == list(answers[1]["buckets"][0])  # key order


@pytest.mark.parametrize("selection", [
    "time value stream",
    "timestamp v: value __typename time",
    "time ... on Temperature { value }",  # not flat: graphql-core's own path
])
def test_flat_temperature_lists_answer_like_graphql_core(selection: str) -> None:
    """Issue 14: big temperatureMeasurements answers take the flat path."""
    import graphene
    from graphql import ExecutionContext, ExecutionResult, execute

    from tps.api.graphql.schema import FLAT_LISTS, Temperature
    from tps.compat.graphql_core import flat_list_context
    from tps.model import Reading

    rows = [Reading("s", 1_690_549_200_123_456_789 + i * 1_000_000_007, 20.5 + i)
            for i in range(5)]

    class OnlyRows(graphene.ObjectType):  # type: ignore[misc]
        rows = graphene.List(graphene.NonNull(Temperature))

        @staticmethod
        def resolve_rows(_root: None, _info: object) -> object:
            return rows

    schema = graphene.Schema(query=OnlyRows).graphql_schema
    document = parse(f"{{ rows {{ {selection} }} }}")
    answers = []
    for context_class in (ExecutionContext, flat_list_context(FLAT_LISTS)):
        result = execute(schema, document, execution_context_class=context_class)
        assert isinstance(result, ExecutionResult) and result.errors is None, result
        assert result.data is not None
        answers.append(result.data["rows"])
    assert answers[0] == answers[1]
    assert list(answers[0][0]) == list(answers[1][0])


# --- the planned paths answer as graphql-core does ------------------------------------

PLANNED = ("query($a: DateTime, $b: DateTime!, $s: String = \"x\", $p: Int) "
           "{ temperatureSeries(after: $a, before: $b, points: $p, stream: $s) { interval } }")
LITERALS = ('{ temperatureSeries(after: "2023-07-28T13:00:00Z", before: 1690549300000000000, '
            'stream: "sat-1") { interval } }')


def _outcome(call: object) -> object:
    """The value, or the error's message (both paths must agree on either)."""
    try:
        return call()  # type: ignore[operator]
    except GraphQLError as exc:
        return ("error", exc.message)


VARIABLE_INPUTS: list[dict[str, object]] = [
    {"a": "2023-07-28T13:00:00Z", "b": "2023-07-28T14:00:00.5Z", "s": "sat-1", "p": 7},
    {"a": None, "b": "1690549200000000000", "p": None},  # nulls; $s from its default
    {"b": 1690549200000000000},  # $a left out: absent, not null
    {"a": "2023-07-28T13:00:00Z"},  # required $b missing
    {"b": None},  # null for a non-null type
    {"b": "yesterday"}, {"b": True}, {"b": [1]}, {"b": "x", "p": "7"}, {"b": "x", "p": 2**40},
    {"b": "2023-07-28T13:00:00Z", "s": 5},
    {"b": "2023-07-28T13:00:00Z", "unknown": 1},
]


@pytest.mark.parametrize("inputs", VARIABLE_INPUTS)
def test_planned_variable_coercion_equals_graphql_cores(inputs: dict[str, object]) -> None:
    op = _operation(PLANNED)
    planned = VariableCoercion(SCHEMA)
    for _ in range(2):  # the second call uses the kept plan
        assert _outcome(lambda: planned.coerce(op, inputs)) == _outcome(
            lambda: coerce_variables(SCHEMA, op.variable_definitions, inputs))


def test_planned_variable_coercion_is_used_for_scalar_variables_only() -> None:
    planned = VariableCoercion(SCHEMA)
    scalars = _operation(PLANNED)
    assert planned._plan(scalars) is not None
    lists = _operation('query($i: [Int]) { temperatureMeasurements(limit: 1) { value } }')
    assert planned._plan(lists) is None


@pytest.mark.parametrize("document", [PLANNED, LITERALS])
@pytest.mark.parametrize("inputs", VARIABLE_INPUTS[:3])
def test_planned_field_arguments_equal_graphql_cores(document: str,
                                                     inputs: dict[str, object]) -> None:
    op = _operation(document)
    node = op.selection_set.selections[0]
    assert isinstance(node, FieldNode) and SCHEMA.query_type is not None
    definition = SCHEMA.query_type.fields["temperatureSeries"]
    try:
        variables = coerce_variables(SCHEMA, op.variable_definitions, inputs)
    except GraphQLError:
        variables = {}
    planned = FieldArguments(definition, node)
    for _ in range(2):
        assert _outcome(lambda: planned.read(variables)) == _outcome(
            lambda: field_arguments(definition, node, variables))


def test_argument_plans_keep_one_plan_per_field_node() -> None:
    plans = ArgumentPlans()
    assert SCHEMA.query_type is not None
    definition = SCHEMA.query_type.fields["temperatureSeries"]
    for document in (PLANNED, LITERALS, PLANNED):  # a new node each time: never confused
        node = _operation(document).selection_set.selections[0]
        assert isinstance(node, FieldNode)
        variables: dict[str, object] = {} if document is LITERALS else {"p": 3}
        for _ in range(2):
            assert _outcome(partial(plans.read, definition, node, variables)) == _outcome(
                partial(field_arguments, definition, node, variables))
