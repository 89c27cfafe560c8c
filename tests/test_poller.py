"""The shared feed poller: readable sockets call their owner back, ticks reach everyone."""

from __future__ import annotations

import socket
import threading

from tps.feeds.poller import FeedPoller


def test_a_readable_socket_calls_its_callback_and_unregistered_ones_do_not() -> None:
    poller = FeedPoller(tick_interval=0.05).start()
    left, right = socket.socketpair()
    readable, ticked = threading.Event(), threading.Event()

    def on_readable() -> None:
        left.recv(100)
        readable.set()

    try:
        poller.register(left.fileno(), on_readable, ticked.set)
        assert poller.watching() == 1
        right.send(b"frame")
        assert readable.wait(2)
        assert ticked.wait(2)
        poller.unregister(left.fileno())
        poller.unregister(left.fileno())  # twice is harmless
        assert poller.watching() == 0
        readable.clear()
        right.send(b"more")
        assert not readable.wait(0.3)
    finally:
        poller.stop()
        left.close()
        right.close()


def test_a_failing_callback_does_not_stop_the_other_feeds() -> None:
    poller = FeedPoller().start()
    bad_left, bad_right = socket.socketpair()
    good_left, good_right = socket.socketpair()
    good = threading.Event()

    def explode() -> None:
        bad_left.recv(100)
        raise RuntimeError("broken reader")

    def on_good() -> None:
        good_left.recv(100)
        good.set()

    try:
        poller.register(bad_left.fileno(), explode, lambda: None)
        poller.register(good_left.fileno(), on_good, lambda: None)
        bad_right.send(b"x")
        good_right.send(b"y")
        assert good.wait(2)
        good.clear()
        bad_right.send(b"x")
        good_right.send(b"y")
        assert good.wait(2), "the poller stopped after a failing callback"
    finally:
        poller.stop()
        for sock in (bad_left, bad_right, good_left, good_right):
            sock.close()
