"""tps/compat/graphql_core.py still applies to the installed graphql-core.

Subscriptions read their field's arguments with graphql-core's internal helpers
(``graphql.execution.values``). If an upgrade moves or changes them, these tests fail
and name what to look at, instead of subscriptions silently losing their arguments.
"""

from __future__ import annotations

import graphql
import pytest
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, parse

from tps.api.graphql.schema import build_schema
from tps.compat.graphql_core import coerce_variables, field_arguments

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
