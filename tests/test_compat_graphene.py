"""tps/compat/graphene.py still applies to the installed Graphene and graphql-core.

The lenient enums swap the class of Graphene's built enum types; if Graphene renames
``GrapheneEnumType`` or graphql-core changes how enum literals are parsed, these tests
fail and name what to look at, instead of ``toggleFeed(input: {status: "off"})``
silently breaking for clients.
"""

from __future__ import annotations

import inspect

import graphene
from graphene.types.definitions import GrapheneEnumType
from graphql import GraphQLEnumType, parse, validate

from tps.api.graphql.scalars import LENIENT_ENUMS
from tps.api.graphql.schema import build_schema
from tps.compat.graphene import LenientEnumType, accept_strings


class Switch(graphene.Enum):  # type: ignore[misc]
    on = "on"
    off = "off"


class Query(graphene.ObjectType):  # type: ignore[misc]
    flip = graphene.String(to=Switch(required=True))

    @staticmethod
    def resolve_flip(_root: None, _info: graphene.ResolveInfo, to: Switch) -> str:
        return str(to.value)


def test_graphene_builds_enum_types_of_the_class_the_patch_subclasses() -> None:
    schema = graphene.Schema(query=Query)
    assert type(schema.graphql_schema.type_map["Switch"]) is GrapheneEnumType, (
        "Graphene no longer builds GrapheneEnumType: check tps/compat/graphene.py")
    assert issubclass(LenientEnumType, GraphQLEnumType)
    params = list(inspect.signature(GraphQLEnumType.parse_literal).parameters)
    assert params[:4] == ["self", "value_node", "_variables", "hide_suggestions"], (
        "graphql-core changed GraphQLEnumType.parse_literal: check tps/compat/graphene.py")


def test_a_string_for_an_enum_is_refused_without_the_patch_and_accepted_with_it() -> None:
    schema = graphene.Schema(query=Query)
    document = parse('{ flip(to: "OFF") }')
    assert validate(schema.graphql_schema, document), "graphql-core accepts strings now"
    accept_strings(schema.graphql_schema, ["Switch"])
    assert validate(schema.graphql_schema, document) == []
    result = schema.execute('{ a: flip(to: "OFF") b: flip(to: on) }')
    assert result.errors is None and result.data == {"a": "off", "b": "on"}
    result = schema.execute("query($t: Switch!) { flip(to: $t) }", variables={"t": " On "})
    assert result.errors is None and result.data == {"flip": "on"}


def test_the_tps_schema_has_its_lenient_enums() -> None:
    type_map = build_schema().graphql_schema.type_map
    assert all(type(type_map[name]) is LenientEnumType for name in LENIENT_ENUMS)
