"""The shared feed poller: readable sockets call their owner back, ticks reach everyone,
and giving a socket back is final."""

from __future__ import annotations

import socket
import threading
import time

from tps.feeds.poller import FeedPoller, Registration


def test_a_readable_socket_calls_its_callback_and_unregistered_ones_do_not() -> None:
    poller = FeedPoller(tick_interval=0.05).start()
    left, right = socket.socketpair()
    other_left, other_right = socket.socketpair()
    readable, ticked, other = threading.Event(), threading.Event(), threading.Event()
    calls: list[str] = []

    def on_readable() -> None:
        left.recv(100)
        calls.append("left")
        readable.set()

    def on_other() -> None:
        other_left.recv(100)
        other.set()

    try:
        registration = poller.register(Registration(left.fileno(), on_readable, ticked.set))
        poller.register(Registration(other_left.fileno(), on_other, lambda: None))
        assert poller.watching() == 2
        right.send(b"frame")
        assert readable.wait(2)
        assert ticked.wait(2)
        poller.unregister(registration)
        poller.unregister(registration)  # twice is harmless
        assert poller.watching() == 1
        calls.clear()
        right.send(b"more")
        # Both sockets are readable now; once the poller has served the other one, it
        # has looked at the set after the send, so a registered left would be served.
        other_right.send(b"x")
        assert other.wait(2)
        assert calls == []
    finally:
        poller.stop()
        for sock in (left, right, other_left, other_right):
            sock.close()


def test_unregister_returns_only_after_a_running_callback_has_finished() -> None:
    poller = FeedPoller().start()
    left, right = socket.socketpair()
    entered = threading.Event()
    order: list[str] = []

    def slow_read() -> None:
        left.recv(100)
        entered.set()
        time.sleep(0.3)  # a read that takes a while (a frame arriving in pieces)
        order.append("callback returned")

    try:
        registration = poller.register(Registration(left.fileno(), slow_read, lambda: None))
        right.send(b"frame")
        assert entered.wait(2)
        poller.unregister(registration)
        order.append("unregister returned")
        assert order == ["callback returned", "unregister returned"]
    finally:
        poller.stop()
        left.close()
        right.close()


def test_a_callback_can_give_its_socket_back_at_once() -> None:
    poller = FeedPoller().start()
    left, right = socket.socketpair()
    given_back = threading.Event()

    def on_readable() -> None:
        left.recv(100)
        poller.unregister(registration)  # on the poller thread: no waiting on itself
        given_back.set()

    registration = Registration(left.fileno(), on_readable, lambda: None)
    try:
        poller.register(registration)
        right.send(b"bye")
        assert given_back.wait(2), "unregister from a callback waited for itself"
        assert poller.watching() == 0
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
        poller.register(Registration(bad_left.fileno(), explode, lambda: None))
        poller.register(Registration(good_left.fileno(), on_good, lambda: None))
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
