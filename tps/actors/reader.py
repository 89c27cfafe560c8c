"""The StreamReader actor: one websocket feed in, batches of readings out to the sink.

The actor never blocks its mailbox for long. A ``_Connect`` opens the socket (connect
timeout 1 s); after a lost connection it waits in the BACKOFF state for a delayed
``_Connect`` (``tell_later``) - it never sleeps.

While connected, frames are read in one of two ways:

- with a shared :class:`~tps.feeds.poller.FeedPoller` (how the service runs readers):
  the poller's single epoll thread calls ``_on_readable`` when the socket has data and
  ``_on_tick`` twice a second; a lock keeps that thread and the actor's own apart. One
  thread for all feeds is what keeps hundreds of slow feeds cheap (bench/scale.py);
- without one: the actor drives itself with ``_Poll`` messages, each reading for up to
  ``POLL_HOLD`` while its mailbox stays empty.

Either way, everything accepted in one read goes to the sink as one batch.

Framing and parsing live in :mod:`tps.feeds.protocol`; this module only decides when to
read, what to count and when to reconnect.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka
import websocket

from tps.actors.messages import InjectFailure, ReadingSink
from tps.actors.stats import StreamState, StreamStats
from tps.actors.timer import tell_later
from tps.config.settings import FeedConfig
from tps.errors import FrameError
from tps.feeds.poller import FeedPoller
from tps.feeds.protocol import (
    PLAIN,
    Codec,
    Control,
    Sample,
    ServerEndedError,
    Stamper,
    TransportCodec,
    codec_for,
    offered_subprotocols,
)
from tps.ingest.backoff import Backoff
from tps.model import Reading

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0
"""Seconds for TCP connect and the HTTP upgrade (each blocking step)."""
POLL_BUDGET = 0.1
"""Seconds one poll may spend reading frames before it yields the mailbox."""
POLL_WAIT = 0.25
"""Seconds a poll waits for the first frame (an idle feed wakes the actor ~4 times a
second; a stop request waits at most this long). Also the socket timeout that bounds
the wait for the rest of a frame that has started to arrive."""
POLL_WAIT_MS = int(POLL_WAIT * 1000)
POLL_HOLD = 0.5
"""Seconds one poll message may keep the actor while its mailbox stays empty."""
SHARED_READ_TIMEOUT = 0.02
"""Socket timeout while a shared poller reads: the longest one feed's half-arrived frame
can hold the thread every feed shares."""
SILENCE_TIMEOUT = 10.0
"""Seconds without any frame or pong before the connection is treated as dead."""
HEALTHY_AFTER = 10.0
"""A connection that stayed subscribed this long resets the reconnect backoff."""
REJECT_LOG_INTERVAL = 10.0
"""At most one log line per rejection reason per this many seconds."""

_DATA_OPCODES = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)


@dataclass(frozen=True, slots=True)
class _Connect:
    """Open the socket now (on start, and when a backoff delay has passed)."""

    generation: int


@dataclass(frozen=True, slots=True)
class _Poll:
    """Read what the socket has (the reader tells itself this while connected)."""

    generation: int


@dataclass(frozen=True, slots=True)
class _Crashed:
    """Reading on the shared poller thread failed unexpectedly: crash like any actor."""

    reason: str


class RateLimitedLog:
    """Decides whether a repeated event may be logged: at most once per ``interval``
    seconds per key, reporting how many were suppressed in between."""

    def __init__(self, interval: float = REJECT_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float | None = None) -> int | None:
        """None if this event should be suppressed; else the count suppressed since the
        last logged one (0 for the first)."""
        now = time.monotonic() if now is None else now
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class StreamReader(pykka.ThreadingActor):
    """Reads one feed and hands its readings to ``sink``; updates ``stats``.

    States (``stats.state``): connecting -> subscribed; backoff after a loss; stopped
    on stop; failed if an unexpected exception kills the actor (``on_failure`` is then
    called so a supervisor can restart it).
    """

    def __init__(
        self,
        feed: FeedConfig,
        sink: ReadingSink,
        stats: StreamStats,
        *,
        max_frame_bytes: int = 1 << 20,
        on_failure: Callable[[BaseException], None] | None = None,
        backoff: Backoff | None = None,
        silence_timeout: float = SILENCE_TIMEOUT,
        poller: FeedPoller | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.sink = sink
        self.stats = stats
        self.max_frame_bytes = max_frame_bytes
        self.failure_callback = on_failure
        self.backoff = backoff or Backoff()
        self.silence_timeout = silence_timeout
        # Continue after the stream's previous timestamp when a supervisor restarts us,
        # so times stay strictly increasing across restarts too.
        self._stamper = Stamper(stats.last_time_ns or 0)
        self._rejects = RateLimitedLog()
        self._generation = 0
        self._ws: websocket.WebSocket | None = None
        self._codec: Codec | None = None
        self._poller: Any = None
        self._cancel_timer: Callable[[], None] | None = None
        self._subscribed_at: float | None = None
        self._last_heard = 0.0
        self._probe_sent = False
        # With a shared poller, frames are read on its thread while the socket is
        # connected; this lock keeps that thread and the actor's own off each other.
        self._shared = poller
        self._io = threading.RLock()
        self._fd: int | None = None

    # --- pykka hooks ---------------------------------------------------------------

    def on_start(self) -> None:
        """Begin connecting (asynchronously, so start() returns at once)."""
        self.stats.state = StreamState.CONNECTING
        self.actor_ref.tell(_Connect(self._generation))

    def on_receive(self, message: Any) -> Any:
        """Handle the reader's own connect/poll messages and fault injection."""
        if isinstance(message, _Poll):
            if message.generation == self._generation and self._ws is not None:
                self._poll()
        elif isinstance(message, _Connect):
            if message.generation == self._generation and self._ws is None:
                self._connect()
        elif isinstance(message, InjectFailure | _Crashed):
            raise RuntimeError(message.reason)
        return None

    def on_stop(self) -> None:
        """Close the socket and cancel any pending reconnect."""
        self._close()
        self.stats.state = StreamState.STOPPED
        logger.info("Stream %s stopped", self.feed.name)

    def on_failure(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the crash, release the socket and tell whoever supervises us."""
        self._close()
        self.stats.state = StreamState.FAILED
        self.stats.last_error = f"{exc_type.__name__ if exc_type else 'error'}: {exc}"
        logger.error("Stream %s reader crashed: %s", self.feed.name, self.stats.last_error)
        if self.failure_callback is not None and exc is not None:
            self.failure_callback(exc)

    # --- connection lifecycle -------------------------------------------------------

    def _connect(self) -> None:
        with self._io:
            self._connect_locked()

    def _connect_locked(self) -> None:
        self._cancel_timer = None
        self.stats.state = StreamState.CONNECTING
        offer = offered_subprotocols(self.feed.protocol)
        # The offer goes in as a plain header, not ``subprotocols=``: websocket-client
        # would refuse a server that picks none, but that server speaks plain JSON.
        header = [f"Sec-WebSocket-Protocol: {', '.join(offer)}"] if offer else None
        try:
            ws = websocket.create_connection(
                self.feed.url,
                timeout=CONNECT_TIMEOUT,
                header=header,
                skip_utf8_validation=True,  # json.loads validates; the pure-Python check is slow
                enable_multithread=False,
            )
        except websocket.WebSocketBadStatusException as exc:
            self._retry(f"server answered HTTP {exc.status_code} instead of a websocket",
                        connected=False)
            return
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            # ValueError: e.g. a host name the IDNA codec refuses - a config problem the
            # operator must see, but no reason to crash and restart the actor forever.
            self._retry(_describe(exc), connected=False)
            return
        self._ws = ws
        try:
            chosen = (ws.getheaders() or {}).get("sec-websocket-protocol")
            self._codec = codec_for(chosen, self.feed.query, self.max_frame_bytes, offer)
            ws.settimeout(POLL_WAIT)
            for frame in self._codec.opening_frames():
                ws.send(frame)
        except FrameError as exc:
            self.stats.reject(exc.reason)
            self._lose(str(exc))
            return
        except (websocket.WebSocketException, OSError) as exc:
            self._lose(_describe(exc))
            return
        self._poller = select.poll()
        if ws.sock is not None:
            self._poller.register(ws.sock.fileno(), select.POLLIN)
        _read_ahead(ws)
        self._last_heard = time.monotonic()
        self._probe_sent = False
        self.stats.negotiated_protocol = self._codec.protocol
        logger.info("Stream %s connected to %s with protocol %s",
                    self.feed.name, self.feed.url, self._codec.protocol)
        if self._codec.protocol == PLAIN:
            # Plain JSON has no handshake: the data simply starts flowing.
            self._mark_subscribed()
        if self._shared is not None and ws.sock is not None:
            # A short timeout: a frame that arrives in pieces is finished on a later
            # wake (websocket-client keeps the partial frame) instead of holding the
            # thread every feed shares.
            ws.settimeout(SHARED_READ_TIMEOUT)
            self._fd = ws.sock.fileno()
            self._shared.register(self._fd, self._on_readable, self._on_tick)
        else:
            self.actor_ref.tell(_Poll(self._generation))

    def _mark_subscribed(self) -> None:
        if self.stats.state is not StreamState.SUBSCRIBED:
            self.stats.state = StreamState.SUBSCRIBED
            self._subscribed_at = time.monotonic()
            logger.info("Stream %s subscribed", self.feed.name)

    def _lose(self, reason: str) -> None:
        """The connection is gone (or useless): close it and reconnect after backoff."""
        self._retry(reason, connected=True)

    def _retry(self, reason: str, *, connected: bool) -> None:
        if (self._subscribed_at is not None
                and time.monotonic() - self._subscribed_at >= HEALTHY_AFTER):
            self.backoff.reset()
        self._close()
        delay = self.backoff.next_delay()
        self.stats.state = StreamState.BACKOFF
        self.stats.last_error = reason
        self.stats.reconnects += 1
        what = "lost connection to" if connected else "could not connect to"
        logger.warning("Stream %s %s %s: %s - reconnecting in %.1f s",
                       self.feed.name, what, self.feed.url, reason, delay)
        self._cancel_timer = tell_later(delay, self.actor_ref, _Connect(self._generation))

    def _close(self) -> None:
        with self._io:
            self._close_locked()

    def _close_locked(self) -> None:
        # A new generation makes every poll or connect message still in flight a no-op.
        self._generation += 1
        if self._shared is not None and self._fd is not None:
            self._shared.unregister(self._fd)  # before the close frees the number
            self._fd = None
        self._subscribed_at = None
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None
        if self._ws is not None:
            ws, self._ws = self._ws, None
            self._poller = None
            try:
                ws.settimeout(0.2)
                ws.close(timeout=0.2)
            except (websocket.WebSocketException, OSError) as exc:
                logger.debug("Stream %s: unclean close: %s", self.feed.name, exc)

    # --- reading ---------------------------------------------------------------------

    def _poll(self) -> None:
        # Stay in this message while the connection lives and nothing else waits in the
        # mailbox: one mailbox round trip per POLL_HOLD instead of one per frame, which
        # is most of a slow feed's cost when hundreds of them run. A waiting message is
        # seen after at most one wait (POLL_WAIT + POLL_BUDGET).
        until = time.monotonic() + POLL_HOLD
        inbox = self.actor_inbox
        while self._read(POLL_WAIT_MS):
            if not inbox.empty() or time.monotonic() >= until:
                self.actor_ref.tell(_Poll(self._generation))
                return

    def _on_readable(self) -> None:
        """The shared poller saw data on our socket (runs on the poller's thread)."""
        with self._io:
            if self._ws is None:
                return
            try:
                self._read(0)
            except Exception as exc:  # noqa: BLE001 - reported to the actor, which crashes
                self._close_locked()
                self.actor_ref.tell(_Crashed(f"reading failed: {exc!r}"))

    def _on_tick(self) -> None:
        """Periodic check from the shared poller: notice a server gone silent."""
        with self._io:
            ws, codec = self._ws, self._codec
            if ws is not None and codec is not None:
                self._check_silence(ws, codec, time.monotonic())

    def _read(self, wait_ms: int) -> bool:
        """Read what arrives within ``wait_ms``; False once the connection is given up."""
        ws = self._ws
        codec = self._codec
        assert ws is not None and codec is not None
        handle = codec.handle
        stamp = self._stamper.stamp
        name = self.feed.name
        poller = self._poller
        tls_pending = getattr(ws.sock, "pending", None)  # TLS may hold decrypted bytes
        frames = ws.frame_buffer

        def pending() -> bool:
            return bool(frames.recv_buffer) or (tls_pending is not None and tls_pending() > 0)

        batch: list[Reading] = []
        lost: str | None = None
        heard = False
        deadline = time.monotonic() + POLL_BUDGET
        # Wait for the first frame with poll(), not the socket timeout: an idle feed then
        # costs no exception per wait (hundreds of idle readers add up).
        ready = pending() or poller.poll(wait_ms)
        try:
            while ready:
                opcode, data = ws.recv_data(control_frame=True)
                heard = True
                if opcode in _DATA_OPCODES:
                    try:
                        outcome = handle(data)
                    except ServerEndedError as exc:
                        self._reject(exc)
                        lost = str(exc)
                        break
                    except FrameError as exc:
                        self._reject(exc)
                    else:
                        if isinstance(outcome, Sample):
                            batch.append(Reading(name, stamp(outcome.time_ns, time.time_ns()),
                                                 outcome.value))
                        else:
                            self._control(ws, outcome)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    lost = f"server closed the connection{_close_detail(data)}"
                    break
                if time.monotonic() >= deadline:
                    break
                if not pending() and not poller.poll(0):
                    break
        except websocket.WebSocketTimeoutException:
            pass
        except (websocket.WebSocketException, OSError) as exc:
            lost = _describe(exc)
        if batch:
            self._deliver(batch)
        now = time.monotonic()
        if heard:
            self._last_heard = now
            self._probe_sent = False
        if lost is not None:
            self._lose(lost)
            return False
        return self._check_silence(ws, codec, now)

    def _check_silence(self, ws: websocket.WebSocket, codec: Codec, now: float) -> bool:
        """Probe a quiet server, give up on a silent one; False once given up."""
        silent = now - self._last_heard
        if silent >= self.silence_timeout:
            self._lose(f"no frames for {silent:.1f} s (server silent)")
            return False
        if silent >= self.silence_timeout / 3 and not self._probe_sent:
            self._probe(ws, codec)
        return self._ws is ws

    def _deliver(self, batch: list[Reading]) -> None:
        self.sink(batch)
        # Counted only after the sink accepted them: "received" means handed on.
        self.stats.received += len(batch)
        last = batch[-1]
        self.stats.last_value = last.value
        self.stats.last_time_ns = last.time_ns
        if self.stats.state is not StreamState.SUBSCRIBED:
            self._mark_subscribed()

    def _control(self, ws: websocket.WebSocket, outcome: Control) -> None:
        if outcome.reply is not None:
            ws.send(outcome.reply)
        if outcome.kind == "ack" and not isinstance(self._codec, TransportCodec):
            # Legacy: the start went out with the init, so the ack means subscribed.
            self._mark_subscribed()

    def _probe(self, ws: websocket.WebSocket, codec: Codec) -> None:
        """Ask a quiet server for a sign of life (its answer counts as a frame)."""
        self._probe_sent = True
        try:
            if isinstance(codec, TransportCodec):
                ws.send(TransportCodec.PING)
            else:
                ws.ping()
        except (websocket.WebSocketException, OSError) as exc:
            logger.debug("Stream %s: probe failed: %s", self.feed.name, exc)

    def _reject(self, exc: FrameError) -> None:
        self.stats.reject(exc.reason)
        suppressed = self._rejects.allow(exc.reason)
        if suppressed is None:
            return
        more = f" ({suppressed} more like it suppressed)" if suppressed else ""
        logger.warning("Stream %s rejected a frame (%s): %s%s",
                       self.feed.name, exc.reason, exc, more)


READ_AHEAD = 4096
"""Bytes asked of the socket per read; what is left over after a frame waits for the next."""


def _read_ahead(ws: websocket.WebSocket) -> None:
    """Make ``ws`` read the socket in chunks instead of twice per frame.

    websocket-client asks the socket for exactly the bytes of a frame's header, then of
    its payload (two system calls, each with a poll under a timeout). Its frame buffer
    keeps any surplus for the next frame, so asking for a chunk serves many small
    frames with one read - most of a feed's cost at high rates and with many feeds.
    """
    frames = ws.frame_buffer
    receive: Callable[[int], bytes] = ws._recv  # its closed-socket handling is needed here

    def recv(_wanted: int) -> bytes:
        return receive(READ_AHEAD)

    frames.recv = recv


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "connection closed by the server"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _close_detail(data: Any) -> str:
    payload = data if isinstance(data, bytes) else b""
    if len(payload) < 2:
        return ""
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode("utf-8", "replace")
    return f" (code {code}{': ' + reason if reason else ''})"
