"""The HTTP side of TPS: Tornado app, GraphQL API, REST control plane, dashboard."""
