"""The GraphQL API: Graphene schema, /graphql handler, document cache, subscriptions.

``routes(ctx)`` gives the application its /graphql route (HTTP and WebSocket).
"""

from __future__ import annotations

from tps.api.graphql.handler import GraphQLHandler, GraphQLService, routes
from tps.api.graphql.schema import build_schema

__all__ = ["GraphQLHandler", "GraphQLService", "build_schema", "routes"]
