"""TPS, the Temperature Processor Service.

Subscribes to websocket temperature feeds, stores every reading in InfluxDB (or the
embedded SQLite store), and serves them over GraphQL, REST and a live dashboard.
"""

from __future__ import annotations

__version__ = "0.1.0"
