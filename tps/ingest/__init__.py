"""Plain ingest policy: the batch buffer, reconnect/retry backoff and the disk spool.

Nothing here starts a thread or talks to a network: the actors in ``tps.actors`` decide
*when* to call these classes, which keeps the policies fast to test and easy to explain.
"""

from __future__ import annotations
