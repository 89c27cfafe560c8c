"""Graphene's enum type, made to accept a string where the enum's value is meant.

TPS's ``toggleFeed(input: {status: "off"})`` and ``protocol: "graphql-ws"`` were
strings before they became enums; GraphQL rejects a string literal (and a variable
spelled other than the enum name) for an enum. Graphene builds its own
``GrapheneEnumType`` objects and offers no hook for their parsing, so
:func:`accept_strings` swaps the class of the built enum types for a subclass whose
``parse_value``/``parse_literal`` also take the value as a string (case and
surrounding spaces ignored, ``-`` read as ``_``). Introspection still shows an enum.
``tests/test_compat_graphene.py`` fails when Graphene or graphql-core change what
this relies on: the class ``graphene.types.definitions.GrapheneEnumType``, and
``parse_literal(node, variables, hide_suggestions)`` on graphql-core 3.2's enum type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphene.types.definitions import GrapheneEnumType
from graphql import GraphQLSchema, StringValueNode, ValueNode


class LenientEnumType(GrapheneEnumType):  # type: ignore[misc]
    """A Graphene enum type that also accepts ``"value"`` strings (literal or variable)."""

    def _name_of(self, text: str) -> str | None:
        wanted = text.strip().lower().replace("-", "_")
        for name in self.values:
            if name.lower() == wanted:
                return str(name)
        return None

    def parse_value(self, input_value: Any, hide_suggestions: bool = False) -> Any:
        """An enum name, or a string naming one loosely (``"OFF"``, ``"graphql-ws"``)."""
        if isinstance(input_value, str) and input_value not in self.values:
            input_value = self._name_of(input_value) or input_value
        return super().parse_value(input_value, hide_suggestions)

    def parse_literal(
        self, value_node: ValueNode, _variables: Any = None, hide_suggestions: bool = False
    ) -> Any:
        """An enum literal, or a string literal naming one loosely."""
        if isinstance(value_node, StringValueNode):
            return self.parse_value(value_node.value, hide_suggestions)
        return super().parse_literal(value_node, _variables, hide_suggestions)


def accept_strings(schema: GraphQLSchema, names: Iterable[str]) -> None:
    """Make the enum types ``names`` of a built Graphene schema accept strings too."""
    for name in names:
        enum_type = schema.type_map[name]
        if not isinstance(enum_type, GrapheneEnumType):
            raise TypeError(f"{name} is a {type(enum_type).__name__}, not a Graphene enum")
        enum_type.__class__ = LenientEnumType
