"""What request handlers need, injected through ``initialize(ctx=...)``.

Handlers never reach for globals: the service builds one :class:`ApiContext` and the
route table passes it to every handler.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pykka

from tps.config import Settings
from tps.live import LiveHub

T = TypeVar("T")


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def token(self) -> str:
        """The expected token (for the CLI and the dashboard's own tests)."""
        return self._token.decode()

    def check_header(self, header: str | None) -> bool:
        """True when ``header`` is ``Bearer <the token>``."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        return self.check_token(value.strip()) if scheme.lower() == "bearer" else False

    def check_token(self, token: str | None) -> bool:
        """True when ``token`` equals the configured token (constant time)."""
        if not token:
            return False
        return hmac.compare_digest(token.encode(), self._token)


class FutureWaiter:
    """Awaits pykka futures without blocking the IO loop.

    ``pykka.Future.get()`` blocks its thread, so the wait happens on a small private
    thread pool and the result comes back to the loop through asyncio's thread-safe
    hand-off. Used for control-plane calls (rare); hot query paths use the query pool's
    callbacks instead.
    """

    def __init__(self, workers: int = 4) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tps-wait")

    async def wait(self, future: pykka.Future[T], timeout: float = 10.0) -> T:
        """The future's value (re-raising its exception) once it is set."""
        loop = asyncio.get_running_loop()
        # pykka's get() takes timeout as a keyword only.
        return await loop.run_in_executor(self._executor, partial(future.get, timeout=timeout))

    def close(self) -> None:
        """Stop the pool's threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class ApiContext:
    """Collaborators of the HTTP layer.

    ``supervisor`` is a pykka proxy of :class:`tps.actors.supervisor.Supervisor`, or None
    in the ``api`` role (no readers in this process). ``hub`` is None in that role too.
    ``queries`` is the query actor pool; ``metrics`` the Prometheus metrics object.
    """

    settings: Settings
    auth: TokenAuth
    queries: Any
    metrics: Any
    supervisor: Any | None = None
    hub: LiveHub | None = None
    waiter: FutureWaiter = field(default_factory=FutureWaiter)
    token_path: str | None = None
    on_close: list[Callable[[], None]] = field(default_factory=list)
