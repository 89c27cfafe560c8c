"""``tps simulate``: a satellite-temperature-compatible feed server (Tornado).

It serves ``ws://HOST:PORT/graphql`` and speaks what the original satellite-temperature
server and its modern successors speak, so readers, tests, the demo and the benchmarks
need no other server:

- legacy ``graphql-ws`` (subscriptions-transport-ws): ``connection_init`` ->
  ``connection_ack`` and periodic ``ka``; ``start`` (accepted with or without a prior
  init, like satellite-temperature) -> ``data`` frames; ``stop``;
- ``graphql-transport-ws``: ``connection_init`` -> ``connection_ack``; ``subscribe`` ->
  ``next`` frames (a subscribe before the ack closes with 4401, like graphql-ws);
  ``ping`` -> ``pong``; ``complete``;
- no subprotocol: plain JSON ``{"value": 21.3}`` frames from the moment it opens.

Like a legacy server it takes the first offered subprotocol it knows, and closes with
1002 when a client offers only unknown ones.

Every subscription runs its own random walk, seeded from ``--seed`` and the stream name,
so runs are repeatable. Extra streams are separate paths: ``/graphql/<name>`` serves the
stream ``<name>`` (plain ``/graphql`` is the stream ``temperature``). ``--max-rate``
sends as fast as the client takes frames (bursts, with back-pressure from the socket,
yielding to the loop between bursts); ``--emit-log FILE`` records every reading sent
(``<emission time ns> <stream> <value> <connection>`` per line, the connection being a
serial number per websocket) for fault tests to compare against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse

from tps.compat.tornado import write_text_frames

logger = logging.getLogger(__name__)

LEGACY = "graphql-ws"
MODERN = "graphql-transport-ws"
KNOWN_SUBPROTOCOLS = (LEGACY, MODERN)
DEFAULT_STREAM = "temperature"
FIELDS = ("temperature",)
BURST = 500


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How a :class:`Simulator` behaves (see the module docstring)."""

    host: str = "127.0.0.1"
    port: int = 4000
    interval: float = 0.5
    seed: int | None = None
    max_rate: bool = False
    keepalive: float = 3.0
    count: int | None = None
    emit_log: Path | None = None


class RandomWalk:
    """Temperatures that drift by small random steps, kept within a plausible range."""

    def __init__(self, rng: random.Random, start: float = 21.0) -> None:
        self._rng = rng
        self.value = start

    def step(self) -> float:
        """The next value (rounded to millidegrees, as a sensor would report it)."""
        value = self.value + (self._rng.random() - 0.5) * 0.2
        if not -40.0 <= value <= 60.0:
            value = self.value - (value - self.value)
        self.value = value
        return round(value, 3)


class EmitLog:
    """Append-only record of every reading sent: ``<time ns> <stream> <value> <conn>``."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1 << 16)
        self._lock = threading.Lock()

    def record(self, stream: str, values: list[float], times: list[int],
               connection: int = 0) -> None:
        """Record a burst (flushed at once, so a killed server loses at most the burst
        it was writing - which the client cannot have received either)."""
        lines = "".join(f"{t} {stream} {v!r} {connection}\n"
                        for t, v in zip(times, values, strict=True))
        with self._lock:
            self._file.write(lines)
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._file.close()


def read_emit_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Read an emission log back: stream -> [(emission time ns, value), ...]."""
    result: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) in (3, 4):
            result.setdefault(parts[1], []).append((int(parts[0]), float(parts[2])))
    return result


def read_emit_log_by_connection(path: Path) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """stream -> connection serial -> [(emission time ns, value), ...] (each in order).

    Tells apart two subscriptions to one stream, which the simulator serves with
    separate random walks (cluster tests use it to prove one reader at a time).
    """
    result: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4:
            by_connection = result.setdefault(parts[1], {})
            by_connection.setdefault(int(parts[3]), []).append(
                (int(parts[0]), float(parts[2])))
    return result


def subscription_field(query: str) -> str:
    """The response key (alias or field name) of a ``subscription { temperature }``
    document; raises ValueError with a GraphQL-style message when it is not one."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise ValueError(f"Syntax Error: {exc.message}") from None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if definition.operation != OperationType.SUBSCRIPTION:
                raise ValueError("Only subscription operations are served here")
            selection = definition.selection_set.selections[0]
            if not isinstance(selection, FieldNode) or selection.name.value not in FIELDS:
                name = getattr(getattr(selection, "name", None), "value", "?")
                raise ValueError(
                    f'Cannot query field "{name}" on type "Subscription".'
                )
            return (selection.alias or selection.name).value
    raise ValueError("No operation in the document")


class FeedSocket(tornado.websocket.WebSocketHandler):
    """One client connection; speaks whichever protocol was negotiated."""

    def initialize(self, simulator: Simulator) -> None:
        """Injected by the route table."""
        self.sim = simulator
        self.config = simulator.config
        self.protocol = ""
        self.stream = DEFAULT_STREAM
        self.serial = 0
        self.acked = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ka_task: asyncio.Task[None] | None = None

    def check_origin(self, origin: str) -> bool:
        """Feeds are read by services, not browsers: any origin may connect."""
        return True

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        """Like a legacy server: the first offered subprotocol that is known."""
        for offered in subprotocols:
            if offered in KNOWN_SUBPROTOCOLS:
                return offered
        return None

    def open(self, *args: str, **kwargs: str) -> None:
        """Start the plain JSON stream, or wait for the GraphQL handshake."""
        self.stream = args[0] if args and args[0] else DEFAULT_STREAM
        self.protocol = self.selected_subprotocol or ""
        self.sim.connections.add(self)
        self.serial = self.sim.next_serial()
        offered = self.request.headers.get("Sec-WebSocket-Protocol", "")
        if offered and not self.protocol:
            # subscriptions-transport-ws rejects clients that offer only other protocols.
            self.close(1002, "unsupported subprotocol")
            return
        logger.info("Client connected to stream %s with protocol %s",
                    self.stream, self.protocol or "plain JSON")
        if not self.protocol:
            self._start("plain", "value")

    def on_message(self, message: str | bytes) -> None:
        """Dispatch one client message of the negotiated protocol."""
        try:
            msg = json.loads(message)
        except ValueError:
            self._send({"type": "connection_error" if self.protocol == LEGACY else "error",
                        "payload": {"message": "Message must be JSON"}})
            return
        if not isinstance(msg, dict):
            return
        if self.protocol == LEGACY:
            self._legacy(msg)
        elif self.protocol == MODERN:
            self._modern(msg)

    def _legacy(self, msg: dict[str, Any]) -> None:
        kind, op_id = msg.get("type"), str(msg.get("id", ""))
        if kind == "connection_init":
            self._send({"type": "connection_ack"})
            self._send({"type": "ka"})
            if self.ka_task is None and self.config.keepalive > 0:
                self.ka_task = asyncio.ensure_future(self._keepalive())
        elif kind == "start":
            self._subscribe(op_id, msg.get("payload"))
        elif kind == "stop":
            self._stop(op_id)
        elif kind == "connection_terminate":
            self.close()

    def _modern(self, msg: dict[str, Any]) -> None:
        kind, op_id = msg.get("type"), str(msg.get("id", ""))
        if kind == "connection_init":
            if self.acked:
                self.close(4429, "Too many initialisation requests")
                return
            self.acked = True
            self._send({"type": "connection_ack"})
        elif kind == "subscribe":
            if not self.acked:
                self.close(4401, "Unauthorized")
                return
            self._subscribe(op_id, msg.get("payload"))
        elif kind == "complete":
            self._stop(op_id)
        elif kind == "ping":
            self._send({"type": "pong"})

    def _subscribe(self, op_id: str, payload: Any) -> None:
        query = payload.get("query") if isinstance(payload, dict) else None
        try:
            field = subscription_field(query if isinstance(query, str) else "")
        except ValueError as exc:
            errors = [{"message": str(exc)}]
            self._send({"type": "error", "id": op_id,
                        "payload": errors if self.protocol == MODERN else errors[0]})
            return
        self._start(op_id, field)

    def _start(self, op_id: str, field: str) -> None:
        self._stop(op_id)
        self.tasks[op_id] = asyncio.ensure_future(self._emit(op_id, field))

    def _stop(self, op_id: str) -> None:
        task = self.tasks.pop(op_id, None)
        if task is not None:
            task.cancel()

    def _frame_template(self, op_id: str, field: str) -> str:
        # Frames are formatted from a template: json.dumps per reading would make the
        # simulator, not the reader under test, the bottleneck of a benchmark.
        if self.protocol == LEGACY:
            kind = "data"
        elif self.protocol == MODERN:
            kind = "next"
        else:
            return '{"value": %s}'
        head = json.dumps({"id": op_id, "type": kind})[:-1]
        return head + ', "payload": {"data": {' + json.dumps(field) + ": %s}}}"

    async def _emit(self, op_id: str, field: str) -> None:
        seed = None if self.config.seed is None else self.config.seed ^ zlib.crc32(
            self.stream.encode())
        walk = RandomWalk(random.Random(seed))
        template = self._frame_template(op_id, field)
        remaining = self.config.count
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while remaining is None or remaining > 0:
                burst = BURST if self.config.max_rate else 1
                if remaining is not None:
                    burst = min(burst, remaining)
                if not self.config.max_rate:
                    next_at += self.config.interval
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                values = [walk.step() for _ in range(burst)]
                done = self._send_values(template, values)
                if remaining is not None:
                    remaining -= burst
                if done is not None:
                    # Back-pressure: wait until the burst is handed to the kernel.
                    await done
            await self._finish(op_id)
        except tornado.websocket.WebSocketClosedError:
            pass
        except asyncio.CancelledError:
            pass

    def _send_values(self, template: str, values: list[float]) -> Awaitable[None] | None:
        if self.sim.emit_log is not None:
            now = time.time_ns()
            self.sim.emit_log.record(self.stream, values, [now] * len(values), self.serial)
        if len(values) > 1:
            # A burst goes out as one write of pre-built frames: tornado's per-message
            # write_message would cap the simulator below what the readers can take.
            return write_text_frames(self, ((template % repr(value)).encode()
                                            for value in values))
        future: Awaitable[None] | None = None
        for value in values:
            future = self.write_message(template % repr(value))
        return future

    async def _finish(self, op_id: str) -> None:
        self.tasks.pop(op_id, None)
        if self.protocol in (LEGACY, MODERN):
            self._send({"type": "complete", "id": op_id})
        else:
            self.close(1000, "stream complete")

    async def _keepalive(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.config.keepalive)
                self._send({"type": "ka"})
        except (tornado.websocket.WebSocketClosedError, asyncio.CancelledError):
            pass

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(json.dumps(message))

    def on_close(self) -> None:
        """Stop every emitter of this connection."""
        self.sim.connections.discard(self)
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        if self.ka_task is not None:
            self.ka_task.cancel()
        logger.info("Client disconnected from stream %s", self.stream)


class Simulator:
    """The feed server, startable in a background thread (tests, benchmarks) or in the
    foreground (``tps simulate``)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.port = config.port
        self.connections: set[FeedSocket] = set()
        self._serials = itertools.count(1)
        self.emit_log = EmitLog(config.emit_log) if config.emit_log else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def next_serial(self) -> int:
        """A new connection's serial number (IO loop thread only)."""
        return next(self._serials)

    def url(self, stream: str | None = None) -> str:
        """The websocket URL of ``stream`` (default: the ``temperature`` stream)."""
        path = "/graphql" if stream is None else f"/graphql/{stream}"
        return f"ws://{self.config.host}:{self.port}{path}"

    def start(self, timeout: float = 5.0) -> Simulator:
        """Serve from a daemon thread; returns once the port is bound."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()),
                                        name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listening socket; waits for the thread."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # already stopped: the loop is closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    async def serve(self) -> None:
        """Serve until :meth:`stop` (or a signal, in the foreground)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = tornado.web.Application([
            (r"/graphql(?:/([A-Za-z0-9_.:-]{1,64}))?", FeedSocket, {"simulator": self}),
        ])
        sockets = tornado.netutil.bind_sockets(self.config.port, self.config.host)
        self.port = sockets[0].getsockname()[1]
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._ready.set()
        await self._stopping.wait()
        server.stop()
        for connection in list(self.connections):
            connection.close(1001, "server shutting down")
        await asyncio.sleep(0.05)
        await server.close_all_connections()
        if self.emit_log is not None:
            self.emit_log.close()

    def request_stop(self) -> None:
        """Ask a foreground :meth:`serve` to stop (signal-handler safe on its loop)."""
        if self._stopping is not None:
            self._stopping.set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tps simulate`` options."""
    env_interval = os.environ.get("INTERVAL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4000, help="port (0: any free port)")
    parser.add_argument("--interval", type=float,
                        default=float(env_interval) if env_interval else 0.5,
                        help="seconds between readings (env INTERVAL; default 0.5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random walks")
    parser.add_argument("--max-rate", action="store_true",
                        help="send as fast as each client takes readings (benchmarks)")
    parser.add_argument("--keepalive", type=float, default=3.0,
                        help="seconds between legacy 'ka' keep-alives (0: none)")
    parser.add_argument("--count", type=int, default=None,
                        help="readings per subscription, then 'complete' (default: endless)")
    parser.add_argument("--emit-log", type=Path, default=None,
                        help="append '<time ns> <stream> <value> <connection>' per reading sent")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """A SimulatorConfig from parsed ``tps simulate`` options."""
    if args.interval < 0 or (args.count is not None and args.count < 0):
        raise ValueError("--interval and --count must not be negative")
    return SimulatorConfig(host=args.host, port=args.port, interval=args.interval,
                           seed=args.seed, max_rate=args.max_rate, keepalive=args.keepalive,
                           count=args.count, emit_log=args.emit_log)


def run(args: argparse.Namespace) -> int:
    """Run ``tps simulate`` in the foreground until SIGINT/SIGTERM; returns the exit code."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"tps simulate: {exc}", file=sys.stderr)
        return 2
    simulator = Simulator(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, simulator.request_stop)
        serving = asyncio.ensure_future(simulator.serve())
        while not simulator._ready.is_set():
            await asyncio.sleep(0.01)
        mode = "max rate" if config.max_rate else f"every {config.interval} s"
        # Test helpers wait for this line (and read the port from it).
        print(f"Simulator listening on {simulator.url()} ({mode})", flush=True)
        await serving

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"tps simulate: cannot listen on {config.host}:{config.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tps.feeds.simulator`` (same options as ``tps simulate``)."""
    parser = argparse.ArgumentParser(prog="tps simulate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
