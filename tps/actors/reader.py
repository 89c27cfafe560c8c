"""The StreamReader actor: one websocket feed in, batches of readings out to the sink.

The actor never blocks its mailbox for long. A ``_Connect`` opens the socket (connect
timeout 1 s); after a lost connection it waits in the BACKOFF state for a delayed
``_Connect`` (``tell_later``) - it never sleeps.

One open connection is one :class:`_Link`: the socket, its codec, the stream's stamper,
when the server was last heard from. The actor owns it, and only the actor changes the
connection's life: connecting, closing, backoff, timers, state. While connected,
frames are read in one of two ways:

- with a shared :class:`~tps.feeds.poller.FeedPoller` (how the service runs readers):
  the actor *lends* the link to the poller's single epoll thread, which then reads
  frames, hands accepted readings to the sink, counts them and probes a quiet server.
  Whatever ends the connection there - the server closing it, silence, a read that
  crashed - makes the poller thread give the link back (``unregister``) and tell the
  actor (``_Lost``, ``_Crashed``); the actor closes it and decides what happens next.
  To stop, the actor takes the link back itself: ``unregister`` returns once the
  poller thread is out of the link's callbacks, so the socket can be closed safely.
  One thread for all feeds is what keeps hundreds of slow feeds cheap (bench/scale.py);
- without one: the actor drives itself with ``_Poll`` messages, each reading for up to
  ``POLL_HOLD`` while its mailbox stays empty.

Either way, everything accepted in one read goes to the sink as one batch, and a link
is used by one thread at a time, so nothing here needs a lock.

Framing and parsing live in :mod:`tps.feeds.protocol`; this module only decides when to
read, what to count and when to reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import select
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
from tps.compat.websocket_client import buffered, enable_read_ahead
from tps.config.settings import FeedConfig
from tps.errors import FeedRefused, FrameError
from tps.feeds.destinations import FeedDestinations
from tps.feeds.poller import FeedPoller, Registration
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
from tps.ratelimit import RateLimitedLog
from tps.redact import redact_url

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
CLOSE_TIMEOUT = 0.2
"""Seconds a close waits for the server's close frame."""
REFUSED_RETRY = 60.0
"""Seconds between destination checks of a refused feed (DNS answers may change)."""
REFUSED_LOG_INTERVAL = 600.0
"""At most one log line per refusal reason per this many seconds."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

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
class _Lost:
    """The shared poller gave the link back: the connection is over (poller -> actor)."""

    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Crashed:
    """Reading on the shared poller thread failed unexpectedly; the poller gave the link
    back, and the actor crashes like any actor would (poller -> actor)."""

    generation: int
    reason: str


GiveBack = Callable[[_Lost | _Crashed], None]
"""How a lent link tells its actor that the poller thread is done with it."""


class _Link:
    """One open connection and what reading it needs.

    Owned by the reader actor; between :meth:`lend` and the poller thread giving it
    back (or the actor's :meth:`take_back`) only the poller thread touches it. It
    writes the stream's reading counters (``received``, ``rejected``, ``last_*``) and
    marks the stream subscribed; the connection's life stays with the actor.
    """

    def __init__(self, name: str, ws: websocket.WebSocket, codec: Codec, stamper: Stamper,
                 sink: ReadingSink, stats: StreamStats, rejects: RateLimitedLog,
                 silence_timeout: float) -> None:
        sock = ws.sock
        if sock is None:
            raise websocket.WebSocketConnectionClosedException("connection closed on open")
        self.name = name
        self.ws = ws
        self.codec = codec
        self.fd: int = sock.fileno()
        self.subscribed_at: float | None = None
        self.last_heard = time.monotonic()
        self._stamper = stamper
        self._sink = sink
        self._stats = stats
        self._rejects = rejects
        self._silence_timeout = silence_timeout
        self._probe_sent = False
        # Wait for the first frame with poll(), not the socket timeout: an idle feed then
        # costs no exception per wait (hundreds of idle readers add up).
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        enable_read_ahead(ws)
        self._buffered = buffered(ws)
        self._poller: FeedPoller | None = None
        self._registration: Registration | None = None
        self._give_back: GiveBack | None = None
        self._generation = 0

    # --- ownership ---------------------------------------------------------------------

    def lend(self, poller: FeedPoller, give_back: GiveBack, generation: int) -> None:
        """Let ``poller``'s thread read this link until it gives it back (telling the
        actor through ``give_back``) or the actor calls :meth:`take_back`."""
        # A short timeout: a frame that arrives in pieces is finished on a later wake
        # (websocket-client keeps the partial frame) instead of holding the thread
        # every feed shares.
        self.ws.settimeout(SHARED_READ_TIMEOUT)
        self._poller = poller
        self._give_back = give_back
        self._generation = generation
        # Everything is in place first: the callbacks may run before register returns.
        self._registration = Registration(self.fd, self._on_readable, self._on_tick)
        poller.register(self._registration)

    def take_back(self) -> None:
        """End a loan (actor thread); on return the poller thread is done with the link."""
        if self._poller is not None and self._registration is not None:
            self._poller.unregister(self._registration)

    def close(self) -> None:
        """Close the socket (the owner, never while lent)."""
        _close_socket(self.ws, self.name)

    # --- on the poller thread, while lent -------------------------------------------------

    def _on_readable(self) -> None:
        try:
            lost = self.read(0)
        except Exception as exc:  # noqa: BLE001 - reported to the actor, which crashes
            self._hand_back(_Crashed(self._generation, f"reading failed: {exc!r}"))
            return
        if lost is not None:
            self._hand_back(_Lost(self._generation, lost))

    def _on_tick(self) -> None:
        """Periodic check without data: notice a server gone silent."""
        try:
            lost = self.check_silence(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported to the actor, which crashes
            self._hand_back(_Crashed(self._generation, f"silence check failed: {exc!r}"))
            return
        if lost is not None:
            self._hand_back(_Lost(self._generation, lost))

    def _hand_back(self, message: _Lost | _Crashed) -> None:
        assert self._poller is not None and self._registration is not None
        assert self._give_back is not None
        self._poller.unregister(self._registration)  # at once: this is the poller thread
        self._give_back(message)

    # --- reading (whichever thread holds the link) -------------------------------------

    def read(self, wait_ms: int) -> str | None:
        """Read what arrives within ``wait_ms``; why the connection is over, or None."""
        ws = self.ws
        handle = self.codec.handle
        stamp = self._stamper.stamp
        name = self.name
        poll = self._poll.poll
        pending = self._buffered
        batch: list[Reading] = []
        lost: str | None = None
        heard = False
        deadline = time.monotonic() + POLL_BUDGET
        ready = pending() or poll(wait_ms)
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
                            self._control(outcome)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    lost = f"server closed the connection{_close_detail(data)}"
                    break
                if time.monotonic() >= deadline:
                    break
                if not pending() and not poll(0):
                    break
        except websocket.WebSocketTimeoutException:
            pass
        except (websocket.WebSocketException, OSError) as exc:
            lost = _describe(exc)
        if batch:
            self._deliver(batch)
        now = time.monotonic()
        if heard:
            self.last_heard = now
            self._probe_sent = False
        return lost if lost is not None else self.check_silence(now)

    def check_silence(self, now: float) -> str | None:
        """Probe a quiet server; why the connection is over when it stayed silent."""
        silent = now - self.last_heard
        if silent >= self._silence_timeout:
            return f"no frames for {silent:.1f} s (server silent)"
        if silent >= self._silence_timeout / 3 and not self._probe_sent:
            self._probe()
        return None

    def mark_subscribed(self) -> None:
        """The subscription is live (first data, an ack, or plain JSON's open)."""
        if self._stats.state is not StreamState.SUBSCRIBED:
            self._stats.state = StreamState.SUBSCRIBED
            self.subscribed_at = time.monotonic()
            logger.info("Stream %s subscribed", self.name)

    def _deliver(self, batch: list[Reading]) -> None:
        self._sink(batch)
        # Counted only after the sink accepted them: "received" means handed on.
        stats = self._stats
        stats.received += len(batch)
        last = batch[-1]
        stats.last_value = last.value
        stats.last_time_ns = last.time_ns
        if stats.state is not StreamState.SUBSCRIBED:
            self.mark_subscribed()

    def _control(self, outcome: Control) -> None:
        if outcome.reply is not None:
            self.ws.send(outcome.reply)
        if outcome.kind == "ack" and not isinstance(self.codec, TransportCodec):
            # Legacy: the start went out with the init, so the ack means subscribed.
            self.mark_subscribed()

    def _probe(self) -> None:
        """Ask a quiet server for a sign of life (its answer counts as a frame)."""
        self._probe_sent = True
        try:
            if isinstance(self.codec, TransportCodec):
                self.ws.send(TransportCodec.PING)
            else:
                self.ws.ping()
        except (websocket.WebSocketException, OSError) as exc:
            logger.debug("Stream %s: probe failed: %s", self.name, exc)

    def _reject(self, exc: FrameError) -> None:
        self._stats.reject(exc.reason)
        self._rejects.log(logger, logging.WARNING, exc.reason,
                          "Stream %s rejected a frame (%s): %s", self.name,
                          exc.reason, exc)


class StreamReader(pykka.ThreadingActor):
    """Reads one feed and hands its readings to ``sink``; updates ``stats``.

    States (``stats.state``): connecting -> subscribed; backoff after a loss; stopped
    on stop; failed if an unexpected exception kills the actor (``on_failure`` is then
    called so a supervisor can restart it); refused while ``destinations`` (the
    feed-destination policy, checked before every connect) does not allow the feed's
    address. ``on_stopped`` is called once at the end of a stop, after the socket is
    closed and no poller thread holds it any more.

    The handshake follows no redirect: a 3xx is a failed connect, so a server cannot
    lead the reader past the destination check.
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
        on_stopped: Callable[[], None] | None = None,
        destinations: FeedDestinations | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.sink = sink
        self.stats = stats
        self.max_frame_bytes = max_frame_bytes
        self.failure_callback = on_failure
        self.stopped_callback = on_stopped
        self.backoff = backoff or Backoff()
        self.silence_timeout = silence_timeout
        # Continue after the stream's previous timestamp when a supervisor restarts us,
        # so times stay strictly increasing across restarts too.
        self._stamper = Stamper(stats.last_time_ns or 0)
        self._rejects = RateLimitedLog(REJECT_LOG_INTERVAL)
        self._generation = 0
        self._link: _Link | None = None
        self._cancel_timer: Callable[[], None] | None = None
        self._shared = poller
        self._destinations = destinations
        self._refusals = RateLimitedLog(REFUSED_LOG_INTERVAL)
        self._shown_url = redact_url(feed.url)

    # --- pykka hooks ---------------------------------------------------------------

    def on_start(self) -> None:
        """Begin connecting (asynchronously, so start() returns at once)."""
        self.stats.state = StreamState.CONNECTING
        self.actor_ref.tell(_Connect(self._generation))

    def on_receive(self, message: Any) -> Any:
        """Handle the reader's own messages and fault injection."""
        current = getattr(message, "generation", None) == self._generation
        if isinstance(message, _Poll):
            if current and self._link is not None:
                self._poll()
        elif isinstance(message, _Lost):
            if current and self._link is not None:
                self._lose(message.reason)
        elif isinstance(message, _Connect):
            if current and self._link is None:
                self._connect()
        elif isinstance(message, _Crashed):
            if current:
                raise RuntimeError(message.reason)
        elif isinstance(message, InjectFailure):
            raise RuntimeError(message.reason)
        return None

    def on_stop(self) -> None:
        """Close the socket and cancel any pending reconnect; then ``on_stopped``."""
        try:
            self._close()
            self.stats.state = StreamState.STOPPED
            logger.info("Stream %s stopped", self.feed.name)
        finally:
            if self.stopped_callback is not None:
                try:
                    self.stopped_callback()
                except Exception:
                    logger.exception("Stream %s: the on_stopped callback failed",
                                     self.feed.name)

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
        self._cancel_timer = None
        self.stats.state = StreamState.CONNECTING
        offer = offered_subprotocols(self.feed.protocol)
        # The offer goes in as a plain header, not ``subprotocols=``: websocket-client
        # would refuse a server that picks none, but that server speaks plain JSON.
        header = [f"Sec-WebSocket-Protocol: {', '.join(offer)}"] if offer else None
        try:
            # Checked after DNS, on every connect; the handshake runs on this very
            # socket (with the URL's Host header and TLS server name), so what was
            # checked is what is connected to.
            sock = (self._destinations.connect(self.feed.url, CONNECT_TIMEOUT)
                    if self._destinations is not None else None)
        except FeedRefused as exc:
            self._refuse(exc.reason)
            return
        except (OSError, ValueError) as exc:
            # ValueError: e.g. a host name the IDNA codec refuses - a config problem the
            # operator must see, but no reason to crash and restart the actor forever.
            self._retry(_describe(exc), connected=False)
            return
        ws = websocket.WebSocket(
            skip_utf8_validation=True,  # json.loads validates; the pure-Python check is slow
            enable_multithread=False,
        )
        ws.settimeout(CONNECT_TIMEOUT)
        try:
            ws.connect(  # type: ignore[no-untyped-call]
                self.feed.url, timeout=CONNECT_TIMEOUT, header=header, socket=sock,
                redirect_limit=0)
        except websocket.WebSocketBadStatusException as exc:
            _release(sock)
            self._retry(f"server answered HTTP {exc.status_code} instead of a websocket",
                        connected=False)
            return
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            _release(sock)
            status = ws.getstatus()
            if status in _REDIRECTS:
                location = (ws.getheaders() or {}).get("location") or "nowhere"
                self._retry(f"server answered HTTP {status}, a redirect to "
                            f"{redact_url(location)}; redirects are not followed (point "
                            "the feed at the final URL)", connected=False)
                return
            self._retry(_describe(exc), connected=False)
            return
        try:
            chosen = (ws.getheaders() or {}).get("sec-websocket-protocol")
            codec = codec_for(chosen, self.feed.query, self.max_frame_bytes, offer)
            ws.settimeout(POLL_WAIT)
            for frame in codec.opening_frames():
                ws.send(frame)
            link = _Link(self.feed.name, ws, codec, self._stamper, self.sink, self.stats,
                         self._rejects, self.silence_timeout)
        except FrameError as exc:
            _close_socket(ws, self.feed.name)
            self.stats.reject(exc.reason)
            self._lose(str(exc))
            return
        except (websocket.WebSocketException, OSError) as exc:
            _close_socket(ws, self.feed.name)
            self._lose(_describe(exc))
            return
        self._link = link
        self.stats.negotiated_protocol = codec.protocol
        logger.info("Stream %s connected to %s with protocol %s",
                    self.feed.name, self._shown_url, codec.protocol)
        if codec.protocol == PLAIN:
            # Plain JSON has no handshake: the data simply starts flowing.
            link.mark_subscribed()
        if self._shared is not None:
            link.lend(self._shared, self._given_back, self._generation)
        else:
            self.actor_ref.tell(_Poll(self._generation))

    def _given_back(self, message: _Lost | _Crashed) -> None:
        """The poller thread is done with our link (runs on the poller thread)."""
        with contextlib.suppress(pykka.ActorDeadError):  # stopped meanwhile: nothing to do
            self.actor_ref.tell(message)

    def _lose(self, reason: str) -> None:
        """The connection is gone (or useless): close it and reconnect after backoff."""
        self._retry(reason, connected=True)

    def _retry(self, reason: str, *, connected: bool) -> None:
        link = self._link
        if (link is not None and link.subscribed_at is not None
                and time.monotonic() - link.subscribed_at >= HEALTHY_AFTER):
            self.backoff.reset()
        self._close()
        delay = self.backoff.next_delay()
        self.stats.state = StreamState.BACKOFF
        self.stats.last_error = reason
        self.stats.reconnects += 1
        what = "lost connection to" if connected else "could not connect to"
        logger.warning("Stream %s %s %s: %s - reconnecting in %.1f s",
                       self.feed.name, what, self._shown_url, reason, delay)
        self._cancel_timer = tell_later(delay, self.actor_ref, _Connect(self._generation))

    def _refuse(self, reason: str) -> None:
        """The destination check said no: nothing was sent anywhere. Stay refused (the
        operator sees why) and check again after ``REFUSED_RETRY``."""
        self._close()
        self.stats.state = StreamState.REFUSED
        self.stats.last_error = f"refused: {reason}"
        self._refusals.log(logger, logging.WARNING, reason,
                           "Stream %s refused to connect to %s: %s - checking again every "
                           "%.0f s (see TPS_FEED_ALLOW)", self.feed.name, self._shown_url,
                           reason, REFUSED_RETRY)
        self._cancel_timer = tell_later(REFUSED_RETRY, self.actor_ref,
                                        _Connect(self._generation))

    def _close(self) -> None:
        # A new generation makes every message still in flight for the old link a no-op.
        self._generation += 1
        if self._cancel_timer is not None:
            self._cancel_timer()
            self._cancel_timer = None
        link, self._link = self._link, None
        if link is not None:
            link.take_back()  # before the close frees the socket's number
            link.close()

    # --- reading on our own thread ---------------------------------------------------------

    def _poll(self) -> None:
        # Stay in this message while the connection lives and nothing else waits in the
        # mailbox: one mailbox round trip per POLL_HOLD instead of one per frame, which
        # is most of a slow feed's cost when hundreds of them run. A waiting message is
        # seen after at most one wait (POLL_WAIT + POLL_BUDGET).
        link = self._link
        assert link is not None
        until = time.monotonic() + POLL_HOLD
        inbox = self.actor_inbox
        while True:
            lost = link.read(POLL_WAIT_MS)
            if lost is not None:
                self._lose(lost)
                return
            if not inbox.empty() or time.monotonic() >= until:
                self.actor_ref.tell(_Poll(self._generation))
                return


def _close_socket(ws: websocket.WebSocket, name: str) -> None:
    """Say goodbye (waiting briefly for the server's close frame) and close the socket."""
    try:
        ws.settimeout(CLOSE_TIMEOUT)
        ws.close(timeout=CLOSE_TIMEOUT)
    except (websocket.WebSocketException, OSError) as exc:
        logger.debug("Stream %s: unclean close: %s", name, exc)
    finally:
        # close() leaves the socket open when it thinks the connection already ended.
        with contextlib.suppress(OSError):
            ws.shutdown()  # type: ignore[no-untyped-call]


def _release(sock: Any) -> None:
    """Close a socket websocket-client did not take over (it closes those it did)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


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
