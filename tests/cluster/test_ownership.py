"""Feed ownership: every running stream read by exactly one live ingest instance.

The policy parts (liveness, the plan) are tested as plain functions; the coordinator
runs against real NATS servers with a fake reader control that records, in one
ledger shared by every instance, when each instance started and stopped reading each
stream - so "never read twice at once" is checked over the whole history, not at a
few sample points.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.nats import NatsCluster
from tests.support.wait import wait_until
from tps.cluster.link import NatsLink
from tps.cluster.ownership import Coordinator, InstanceInfo, Lease, Liveness, plan
from tps.cluster.registry import ClusterRegistry
from tps.config.settings import FeedConfig

# --- pure policy ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def info(name: str, role: str = "ingest") -> InstanceInfo:
    return InstanceInfo(name, role, "x")


def hearing(clock: Clock) -> Liveness:
    live = Liveness("me", ttl=10, clock=clock)
    live.own_heartbeat(True)
    for _ in range(6):  # hearing our own heartbeats, long past the start-up grace
        live.echo()
        clock.now += 2
    live.echo()
    return live


def test_an_instance_is_dead_after_ttl_of_silence_and_at_once_when_it_leaves() -> None:
    clock = Clock()
    live = hearing(clock)
    live.heard(info("a"))
    live.heard(info("b"), age=4)
    clock.now += 4
    live.echo()
    clock.now += 3
    live.echo()
    assert live.is_alive("a") and not live.is_alive("b")
    live.gone("a")
    assert not live.is_alive("a") and live.is_alive("me")


def test_judgement_freezes_while_our_own_heartbeat_fails_and_restarts_after() -> None:
    clock = Clock()
    live = hearing(clock)
    live.heard(info("a"))
    clock.now += 2
    live.echo()
    live.own_heartbeat(False)  # NATS is electing a new leader: nobody can write
    clock.now += 20
    assert live.is_alive("a") and not live.judging
    live.own_heartbeat(True)
    live.echo()
    for _ in range(4):
        clock.now += 2.25
        live.echo()
    assert live.is_alive("a")  # a fresh TTL after our recovery
    clock.now += 2
    live.echo()
    assert not live.is_alive("a")


def test_judgement_freezes_while_our_watch_does_not_echo_our_heartbeat() -> None:
    clock = Clock()
    live = hearing(clock)
    live.heard(info("a"))
    live.echo()
    clock.now += 30  # our writes work, but the watch (on a dead NATS node) is stalled
    live.own_heartbeat(True)
    assert not live.judging and live.is_alive("a")
    live.echo()
    assert live.judging and live.is_alive("a")


def test_plan_takes_only_assigned_streams_nobody_live_holds() -> None:
    running = {f"s{i}" for i in range(6)}
    alive = {"me", "other"}
    first = plan("me", True, running, alive, {}, set(), set(), alive.__contains__)
    assert 2 <= len(first.take) <= 4 and not first.release
    held_by_other = {s: Lease("other", "x", 1) for s in first.take}
    blocked = plan("me", True, running, alive, held_by_other, set(), set(), alive.__contains__)
    assert blocked.take == ()
    dead = plan("me", True, running, {"me", "other"}, held_by_other, set(), set(),
                lambda name: name == "me")
    assert dead.take == first.take


def test_plan_hands_back_streams_assigned_elsewhere_or_no_longer_running() -> None:
    running = {f"s{i}" for i in range(6)}
    mine = set(running)  # we held everything while alone
    decided = plan("me", True, running - {"s0"}, {"me", "other"}, {}, mine | {"gone"},
                   set(), lambda _: True)
    assert "gone" in decided.release
    assert 2 <= len(set(decided.release) - {"gone"}) <= 4


def test_an_instance_that_does_not_ingest_takes_nothing() -> None:
    decided = plan("api", False, {"s0", "s1"}, {"ing"}, {}, set(), set(), lambda _: True)
    assert decided.take == ()


# --- coordinators on real NATS ----------------------------------------------------------


@dataclass
class Span:
    instance: str
    start: float
    stop: float | None = None


@dataclass
class Ledger:
    """Who read which stream when, across every instance of a test."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    spans: dict[str, list[Span]] = field(default_factory=dict)

    def start(self, instance: str, stream: str) -> None:
        with self.lock:
            self.spans.setdefault(stream, []).append(Span(instance, time.monotonic()))

    def stop(self, instance: str, stream: str) -> None:
        with self.lock:
            for span in self.spans.get(stream, []):
                if span.instance == instance and span.stop is None:
                    span.stop = time.monotonic()

    def readers(self, stream: str) -> list[str]:
        with self.lock:
            return [s.instance for s in self.spans.get(stream, []) if s.stop is None]

    def owners(self) -> dict[str, list[str]]:
        with self.lock:
            names = list(self.spans)
        return {name: self.readers(name) for name in names}

    def stops(self) -> int:
        with self.lock:
            return sum(1 for spans in self.spans.values() for s in spans if s.stop is not None)

    def assert_never_read_twice(self) -> None:
        with self.lock:
            for stream, spans in self.spans.items():
                ordered = sorted(spans, key=lambda s: s.start)
                for before, after in itertools.pairwise(ordered):
                    assert before.stop is not None and before.stop <= after.start, (
                        stream, ordered)


class FakeReaders:
    """A ReaderControl that records into the ledger; a stop takes ``stop_delay``."""

    def __init__(self, name: str, ledger: Ledger, stop_delay: float = 0.02) -> None:
        self.name = name
        self.ledger = ledger
        self.stop_delay = stop_delay
        self.reading: set[str] = set()

    def start_reading(self, feed: FeedConfig) -> None:
        assert feed.name not in self.reading
        self.reading.add(feed.name)
        self.ledger.start(self.name, feed.name)

    def stop_reading(self, name: str, on_stopped: Callable[[], None],
                     removed: bool = False) -> None:
        def stopped() -> None:
            if name in self.reading:
                self.reading.discard(name)
                self.ledger.stop(self.name, name)
            on_stopped()
        threading.Timer(self.stop_delay, stopped).start()

    def run(self, job: Callable[[], None]) -> None:
        job()

    def crash(self) -> None:
        for name in list(self.reading):
            self.ledger.stop(self.name, name)
        self.reading.clear()


@dataclass
class Member:
    name: str
    link: NatsLink
    registry: ClusterRegistry
    coordinator: Coordinator
    readers: FakeReaders | None

    def stop(self) -> None:
        self.coordinator.stop(5)
        self.link.stop()

    def crash(self) -> None:
        self.link.stop()  # tasks cancelled, connection closed, nothing handed back
        if self.readers is not None:
            self.readers.crash()


def feeds(*names: str) -> tuple[FeedConfig, ...]:
    return tuple(FeedConfig(name, f"ws://127.0.0.1:9/{name}") for name in names)


@pytest.fixture
def members() -> Iterator[Callable[..., Member]]:
    started: list[Member] = []

    def make(cluster: NatsCluster, name: str, ledger: Ledger, *, role: str = "ingest",
             configured: tuple[FeedConfig, ...] = (), ttl: float = 3.0) -> Member:
        link = NatsLink(cluster.urls, name).start()
        registry = ClusterRegistry(link, name)
        readers = FakeReaders(name, ledger) if role in ("all", "ingest") else None
        coordinator = Coordinator(link, registry, instance=name, role=role, ttl=ttl,
                                  configured=configured, control=readers).start()
        member = Member(name, link, registry, coordinator, readers)
        started.append(member)
        assert coordinator.wait_ready(15), f"{name} did not get ready"
        return member

    yield make
    for member in started:
        member.link.stop()


def settled(ledger: Ledger, streams: list[str], members: list[Member]) -> bool:
    """Every stream read by exactly one of ``members``, loads within one of each other."""
    owners = ledger.owners()
    names = {m.name for m in members}
    if any(len(owners.get(s, [])) != 1 or owners[s][0] not in names for s in streams):
        return False
    loads = [sum(1 for s in streams if owners[s] == [m.name]) for m in members]
    return max(loads) - min(loads) <= 1


STREAMS = [f"s{i}" for i in range(12)]


def test_instances_with_different_feed_lists_merge_and_share_the_streams(
        nats_server: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    a = members(nats_server, "a", ledger, configured=feeds(*STREAMS[:8]))
    b = members(nats_server, "b", ledger, configured=feeds(*STREAMS[4:]))
    c = members(nats_server, "c", ledger)
    wait_until(lambda: settled(ledger, STREAMS, [a, b, c]), 10, "12 streams over 3 instances")
    assert sorted(a.registry.streams()) == sorted(STREAMS)
    owners = a.coordinator.snapshot().owners
    wait_until(lambda: all(c.coordinator.snapshot().owners.get(s) == ledger.readers(s)[0]
                           for s in STREAMS), 5, "every instance to know every owner")
    assert set(owners) == set(STREAMS)
    ledger.assert_never_read_twice()


def test_a_stopped_instance_hands_its_streams_over_at_once(
        nats_server: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    a = members(nats_server, "a", ledger, configured=feeds(*STREAMS), ttl=30)
    b = members(nats_server, "b", ledger, ttl=30)
    c = members(nats_server, "c", ledger, ttl=30)
    wait_until(lambda: settled(ledger, STREAMS, [a, b, c]), 10, "the streams to settle")
    b.stop()
    took = wait_until(lambda: settled(ledger, STREAMS, [a, c]), 5, "a and c to take b's share")
    assert took < 3, took  # not the 30 s lease TTL: b deleted its leases
    ledger.assert_never_read_twice()


def test_a_killed_instance_loses_its_streams_when_its_leases_expire(
        nats_server: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    ttl = 2.0
    a = members(nats_server, "a", ledger, configured=feeds(*STREAMS), ttl=ttl)
    b = members(nats_server, "b", ledger, ttl=ttl)
    wait_until(lambda: settled(ledger, STREAMS, [a, b]), 10, "the streams to settle")
    b.crash()
    took = wait_until(lambda: settled(ledger, STREAMS, [a]), ttl + 5, "a to take b's share")
    assert took >= ttl * 0.5, took  # b's leases had to expire first
    ledger.assert_never_read_twice()


def test_a_new_instance_gets_its_share_without_restarting_anyone(
        nats_server: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    a = members(nats_server, "a", ledger, configured=feeds(*STREAMS))
    wait_until(lambda: settled(ledger, STREAMS, [a]), 10, "a to read everything")
    b = members(nats_server, "b", ledger)
    wait_until(lambda: settled(ledger, STREAMS, [a, b]), 10, "b to get its share")
    assert ledger.stops() == 6  # a handed over exactly b's half; nothing else moved
    ledger.assert_never_read_twice()


def test_a_change_on_an_api_instance_is_seen_everywhere_and_acted_on(
        nats_server: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    a = members(nats_server, "a", ledger, configured=feeds("s0"))
    api = members(nats_server, "api", ledger, role="api")
    wait_until(lambda: ledger.readers("s0") == ["a"], 5, "s0 to be read")
    api.link.call(lambda: api.registry.add(feeds("new")[0]), 5)
    seen = wait_until(lambda: "new" in a.registry.streams(), 1, "a to see the new stream")
    assert seen < 1
    wait_until(lambda: ledger.readers("new") == ["a"], 2, "the new stream to be read")
    api.link.call(lambda: api.registry.set_running("new", False), 5)
    wait_until(lambda: ledger.readers("new") == [], 2, "the stopped stream's reader to stop")
    wait_until(lambda: "new" not in a.coordinator.snapshot().held, 2, "its lease to go")
    api.link.call(lambda: api.registry.remove("s0"), 5)
    wait_until(lambda: ledger.readers("s0") == [], 2, "the removed stream's reader to stop")
    assert api.coordinator.snapshot().held == ()


def test_the_loss_of_a_nats_node_moves_and_stops_no_stream(
        nats_cluster: NatsCluster, members: Callable[..., Member]) -> None:
    ledger = Ledger()
    ttl = 3.0  # shorter than a JetStream leader election on 2.9 (4 to 8 s)
    group = [members(nats_cluster, "a", ledger, configured=feeds(*STREAMS), ttl=ttl),
             members(nats_cluster, "b", ledger, ttl=ttl),
             members(nats_cluster, "c", ledger, ttl=ttl)]
    wait_until(lambda: settled(ledger, STREAMS, group), 10, "the streams to settle")
    stops = ledger.stops()
    # The worst node to lose: the one leading the leases bucket (a new leader must be
    # elected before anybody can renew - or take - a lease).
    leader = nats_cluster.stream_leader("KV_tps-leases")
    assert leader is not None
    nats_cluster.kill(leader)
    wait_until(lambda: any(m.coordinator.snapshot().renew_failures for m in group), 10,
               "renewals to fail while JetStream elects a new leader")
    wait_until(lambda: nats_cluster.stream_leader("KV_tps-leases") not in (None, leader), 20,
               "a new leader of the leases bucket")
    time.sleep(2 * ttl)  # every decision an expired lease could cause has been taken
    assert ledger.stops() == stops, ledger.spans
    assert settled(ledger, STREAMS, group)
    assert all(m.coordinator.snapshot().lost == 0 for m in group)
    # And the survivors' watches work again: a crash is still noticed and taken over.
    group[2].crash()
    wait_until(lambda: settled(ledger, STREAMS, group[:2]), ttl + 5, "a and b to take over")
    ledger.assert_never_read_twice()
