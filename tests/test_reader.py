"""StreamReader: reads real feed servers, survives every kind of bad server, loses no
good reading. Also the plain policy class it uses (backoff)."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pykka
import pytest

from tests.support import peers
from tests.support.peers import RawFeedServer, free_port, node_peer, simulator_process
from tests.support.wait import wait_until
from tps.actors.messages import InjectFailure
from tps.actors.reader import StreamReader
from tps.actors.stats import StreamState, StreamStats
from tps.config.settings import FeedConfig
from tps.feeds.poller import FeedPoller
from tps.feeds.simulator import Simulator, SimulatorConfig, read_emit_log
from tps.ingest.backoff import Backoff
from tps.model import Reading


def fast_backoff() -> Backoff:
    """Retries every 0.05-0.2 s, so tests see several reconnects quickly."""
    return Backoff(initial=0.05, cap=0.2, jitter=0.0)


class Collector:
    """A list-collecting sink (thread-safe), as the service's sink would be."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self._lock = threading.Lock()

    def __call__(self, batch: Sequence[Reading]) -> None:
        with self._lock:
            self.readings.extend(batch)
            self.batches += 1

    @property
    def values(self) -> list[float]:
        with self._lock:
            return [r.value for r in self.readings]


class Running:
    """A started reader with its sink and stats."""

    def __init__(self, ref: pykka.ActorRef[StreamReader], sink: Collector,
                 stats: StreamStats, poller: FeedPoller | None) -> None:
        self.ref = ref
        self.sink = sink
        self.stats = stats
        self.poller = poller


@pytest.fixture(params=["own-thread", "shared-poller"])
def start_reader(request: pytest.FixtureRequest) -> Iterator[Callable[..., Running]]:
    """Starts readers that read on their own thread, or on one shared FeedPoller (as
    the service runs them): every reader behaviour must hold in both modes."""
    refs: list[pykka.ActorRef[StreamReader]] = []
    poller = FeedPoller().start() if request.param == "shared-poller" else None

    def start(url: str, protocol: str = "auto", query: str | None = None,
              **kwargs: object) -> Running:
        feed = FeedConfig(name=f"s{len(refs)}", url=url, protocol=protocol,
                          **({"query": query} if query else {}))
        stats = StreamStats(feed.name, feed.url, feed.protocol, feed.query)
        sink = Collector()
        kwargs.setdefault("backoff", fast_backoff())
        if poller is not None:
            kwargs.setdefault("poller", poller)
        ref = StreamReader.start(feed, sink, stats, **kwargs)
        refs.append(ref)
        return Running(ref, sink, stats, poller)

    yield start
    for ref in refs:
        ref.stop(block=True, timeout=5)
    if poller is not None:
        assert poller.watching() == 0, "a stopped reader left its socket with the poller"
        poller.stop()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(SimulatorConfig(port=0, interval=0.01, seed=7,
                                    emit_log=tmp_path / "emitted.log")).start()
    yield sim
    sim.stop()


def strictly_increasing(readings: Sequence[Reading]) -> bool:
    return all(a.time_ns < b.time_ns for a, b in itertools.pairwise(readings))


# --- against the simulator -------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "negotiated"), [
    ("auto", "graphql-ws"),
    ("graphql-ws", "graphql-ws"),
    ("graphql-transport-ws", "graphql-transport-ws"),
    ("json", "json"),
])
def test_reader_receives_every_reading_the_simulator_sends(
    start_reader: Callable[..., Running], tmp_path: Path, protocol: str, negotiated: str
) -> None:
    log = tmp_path / "emitted.log"
    sim = Simulator(SimulatorConfig(port=0, interval=0.005, seed=3, count=40,
                                    emit_log=log)).start()
    try:
        reader = start_reader(sim.url(), protocol, backoff=Backoff(initial=5, cap=5))
        # After 40 readings the server completes (or closes, for plain JSON): the reader
        # must have handed on all 40 first.
        wait_until(lambda: reader.stats.state is StreamState.BACKOFF, what="end of stream")
    finally:
        sim.stop()
    emitted = [value for _, value in read_emit_log(log)["temperature"]]
    assert len(emitted) == 40
    assert reader.sink.values == emitted
    assert reader.stats.received == 40
    assert reader.stats.last_value == emitted[-1]
    assert reader.stats.negotiated_protocol == negotiated
    assert strictly_increasing(reader.sink.readings)


def test_reader_reports_subscribed_and_hands_over_batches(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    reader = start_reader(simulator.url())
    wait_until(lambda: reader.stats.received >= 20, what="20 readings")
    assert reader.stats.state is StreamState.SUBSCRIBED
    assert reader.sink.readings[0].stream == "s0"
    assert reader.stats.last_time_ns == reader.sink.readings[reader.stats.received - 1].time_ns


def test_custom_subscription_document_with_alias(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    reader = start_reader(simulator.url(), "graphql-transport-ws",
                          query="subscription Feed { t: temperature }")
    wait_until(lambda: reader.stats.received >= 5, what="5 readings")
    assert reader.stats.rejected == 0


def test_server_complete_is_counted_and_the_reader_reconnects_and_resumes(
    start_reader: Callable[..., Running]
) -> None:
    sim = Simulator(SimulatorConfig(port=0, interval=0.005, count=10)).start()
    try:
        reader = start_reader(sim.url(), "graphql-transport-ws")
        wait_until(lambda: reader.stats.received >= 30, what="three subscriptions' worth")
    finally:
        sim.stop()
    assert reader.stats.rejected_by_reason.get("server_complete", 0) >= 2
    assert reader.stats.reconnects >= 2


@pytest.mark.parametrize("protocol", ["graphql-ws", "graphql-transport-ws"])
def test_server_error_is_counted_logged_and_retried(
    start_reader: Callable[..., Running], simulator: Simulator,
    caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.INFO, logger="tps.actors.reader")
    reader = start_reader(simulator.url(), protocol, query="subscription { pressure }")
    wait_until(lambda: reader.stats.reconnects >= 3, what="retries")
    assert reader.stats.rejected_by_reason["server_error"] >= 3
    assert "pressure" in (reader.stats.last_error or "")
    assert reader.ref.is_alive()
    assert "server sent error" in caplog.text and "reconnecting in" in caplog.text


# --- independent peers (npm subscriptions-transport-ws and graphql-ws) ---------------------


@pytest.mark.parametrize(("kind", "protocol", "negotiated"), [
    ("legacy", "auto", "graphql-ws"),
    ("modern", "auto", "graphql-transport-ws"),
    ("modern", "graphql-transport-ws", "graphql-transport-ws"),
])
def test_reader_reads_independent_node_peers_without_gaps(
    start_reader: Callable[..., Running], kind: str, protocol: str, negotiated: str
) -> None:
    peer = node_peer(kind, interval=0.01).start()
    try:
        reader = start_reader(peer.url(), protocol)
        wait_until(lambda: reader.stats.received >= 30, timeout=10, what="30 readings")
    finally:
        peer.stop()
    values = reader.sink.values[:30]
    assert values == [float(n) for n in range(1, 31)], "the peers send 1, 2, 3, ..."
    assert reader.stats.negotiated_protocol == negotiated
    assert reader.stats.rejected == 0


def test_missing_node_peers_fail_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda _: None)
    with pytest.raises(RuntimeError, match=r"npm ci --prefix tests/peers"):
        node_peer("legacy")
    monkeypatch.setattr(peers, "PEERS_DIR", Path("/nonexistent"))
    monkeypatch.setattr("shutil.which", lambda _: "/usr/bin/node")
    with pytest.raises(RuntimeError, match=r"npm ci --prefix tests/peers"):
        node_peer("modern")


def test_legacy_peer_closes_a_pinned_transport_ws_client_and_the_reader_retries(
    start_reader: Callable[..., Running]
) -> None:
    peer = node_peer("legacy", interval=0.01).start()
    try:
        reader = start_reader(peer.url(), "graphql-transport-ws")
        wait_until(lambda: reader.stats.reconnects >= 2, timeout=10, what="retries")
    finally:
        peer.stop()
    assert reader.stats.received == 0
    assert reader.ref.is_alive()


# --- bad servers -----------------------------------------------------------------------------


def test_bad_frames_are_rejected_counted_and_good_ones_kept(
    start_reader: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    frames = ['{"value": 1}', "not json", '{"value": "2"}', '{"value": true}',
              '{"value": null}', '{"value": NaN}', '{"value": Infinity}', "[3]",
              '{"value": 4}', '{"value": 5, "pad": "' + "x" * (1 << 20) + '"}',
              '{"value": 6}']
    server = RawFeedServer("silent", frames).start()
    caplog.set_level(logging.WARNING, logger="tps.actors.reader")
    try:
        reader = start_reader(server.url())
        wait_until(lambda: reader.stats.received >= 3 and reader.stats.rejected >= 8,
                   what="all frames handled")
    finally:
        server.close()
    assert reader.sink.values[:3] == [1.0, 4.0, 6.0]
    assert reader.stats.rejected_by_reason == {
        "not_json": 1, "bad_value": 5, "bad_shape": 1, "too_large": 1}
    assert reader.stats.reconnects == 0, "bad frames do not cost the connection"
    bad_value_lines = [r for r in caplog.records if "(bad_value)" in r.getMessage()]
    assert len(bad_value_lines) == 1, "rejections are logged at most once per reason per 10 s"


def test_a_server_that_accepts_then_goes_silent_is_dropped_and_retried(
    start_reader: Callable[..., Running]
) -> None:
    server = RawFeedServer("silent", ['{"value": 1}', '{"value": 2}']).start()
    try:
        reader = start_reader(server.url(), silence_timeout=0.6)
        wait_until(lambda: reader.stats.reconnects >= 1, timeout=5, what="silence detected")
        wait_until(lambda: server.connections >= 2, timeout=5, what="a new connection")
    finally:
        server.close()
    assert reader.sink.values[:2] == [1.0, 2.0]
    assert "silent" in (reader.stats.last_error or "")


def test_a_server_closing_mid_frame_loses_no_complete_reading(
    start_reader: Callable[..., Running]
) -> None:
    server = RawFeedServer("midframe", ['{"value": 1}', '{"value": 2}', '{"value": 3}']).start()
    try:
        reader = start_reader(server.url())
        wait_until(lambda: reader.stats.received >= 6, what="two connections' readings")
    finally:
        server.close()
    assert reader.sink.values[:6] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert reader.stats.reconnects >= 1
    assert reader.ref.is_alive()


def test_an_unreachable_host_keeps_the_reader_retrying_and_responsive(
    start_reader: Callable[..., Running]
) -> None:
    # Delays 0.05, 0.5, then 5 s: after the third retry the reader waits 5 s for its
    # next attempt, and a reader that slept through it could not stop within 1 s.
    backoff = Backoff(initial=0.05, factor=10, cap=30, jitter=0.0)
    reader = start_reader(f"ws://127.0.0.1:{free_port()}/graphql", backoff=backoff)
    wait_until(lambda: reader.stats.reconnects >= 3, what="retries")
    assert reader.stats.state is not StreamState.SUBSCRIBED
    assert reader.stats.last_error == "connection refused"
    started = time.monotonic()
    reader.ref.stop(timeout=2)
    assert time.monotonic() - started < 1.0
    assert reader.stats.state is StreamState.STOPPED


def test_a_url_answering_http_404_is_reported_and_retried(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    url = simulator.url().replace("/graphql", "/no-such-feed")
    reader = start_reader(url)
    wait_until(lambda: reader.stats.reconnects >= 2, what="retries")
    assert "HTTP 404" in (reader.stats.last_error or "")
    assert reader.stats.received == 0


def test_one_bad_feed_does_not_affect_another(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    bad = start_reader(f"ws://127.0.0.1:{free_port()}/graphql")
    good = start_reader(simulator.url())
    wait_until(lambda: good.stats.received >= 50 and bad.stats.reconnects >= 3,
               what="good readings while the bad feed retries")
    assert good.stats.reconnects == 0


def test_feed_server_killed_and_restarted_ingest_resumes_within_3_s(
    start_reader: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tps.actors.reader")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    def args(seed: int, log: Path) -> list[str]:
        return ["--interval", "0.02", "--seed", str(seed), "--emit-log", str(log)]

    peer = simulator_process(*args(1, first_log)).start()
    try:
        reader = start_reader(peer.url(), backoff=Backoff())  # the production backoff
        wait_until(lambda: reader.stats.received >= 25, what="readings before the kill")
        killed_at = time.time_ns()
        peer.kill()
        wait_until(lambda: reader.stats.state is StreamState.BACKOFF, what="loss noticed")
        peer.restart(simulator_process(*args(2, second_log)).argv)
        received_at_return = reader.stats.received
        resumed = wait_until(lambda: reader.stats.received > received_at_return,
                             timeout=5, what="ingest to resume")
        wait_until(lambda: reader.stats.received >= received_at_return + 10, what="more")
    finally:
        peer.stop()
    assert resumed < 3.0, f"ingest resumed {resumed:.2f} s after the server returned"
    assert "lost connection" in caplog.text
    first = read_emit_log(first_log)["temperature"]
    second = [value for _, value in read_emit_log(second_log)["temperature"]]
    values = reader.sink.values
    # Everything the first server sent well before it was killed arrived, in order...
    settled = [value for sent_ns, value in first if sent_ns < killed_at - 100_000_000]
    assert len(settled) >= 10
    assert values[:len(settled)] == settled
    # ...then perhaps the last few it sent, then the second server's readings from its
    # first one on: nothing lost, nothing twice, nothing invented.
    unsettled = [value for _, value in first][len(settled):]
    tail = values[len(settled):]
    assert any(tail[:a] == unsettled[:a] and tail[a:] == second[:len(tail) - a]
               for a in range(min(len(unsettled), len(tail)) + 1))
    assert strictly_increasing(reader.sink.readings)


# --- actor behaviour -----------------------------------------------------------------------


def test_stop_is_prompt_even_at_max_rate(start_reader: Callable[..., Running]) -> None:
    sim = Simulator(SimulatorConfig(port=0, max_rate=True)).start()
    try:
        reader = start_reader(sim.url())
        wait_until(lambda: reader.stats.received >= 5000, what="a flood")
        started = time.monotonic()
        reader.ref.ask("status?", timeout=2)  # answered between polls
        asked = time.monotonic() - started
        reader.ref.stop(timeout=2)
        stopped = time.monotonic() - started
    finally:
        sim.stop()
    assert asked < 1.0 and stopped < 1.5
    assert reader.stats.state is StreamState.STOPPED
    assert reader.stats.received == len(reader.sink.readings)
    assert reader.sink.batches < reader.stats.received / 10, "readings go out in batches"


def test_injected_failure_marks_the_reader_failed_and_calls_back(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    failures: list[BaseException] = []
    reader = start_reader(simulator.url(), on_failure=failures.append)
    wait_until(lambda: reader.stats.received >= 3, what="readings")
    reader.ref.tell(InjectFailure("chaos test"))
    wait_until(lambda: bool(failures), what="the failure callback")
    wait_until(lambda: not reader.ref.is_alive(), what="the actor to die")
    assert [str(f) for f in failures] == ["chaos test"]
    assert isinstance(failures[0], RuntimeError)
    assert reader.stats.state is StreamState.FAILED
    assert "chaos test" in (reader.stats.last_error or "")


def test_a_restarted_reader_continues_the_streams_timestamps(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    first = start_reader(simulator.url())
    wait_until(lambda: first.stats.received >= 3, what="readings")
    first.ref.stop(timeout=5)
    future = first.stats.last_time_ns + 10**12  # type: ignore[operator]
    first.stats.last_time_ns = future
    sink = Collector()
    feed = FeedConfig(name="s0", url=simulator.url())
    again = StreamReader.start(feed, sink, first.stats)
    try:
        wait_until(lambda: len(sink.readings) >= 1, what="readings")
    finally:
        again.stop(timeout=5)
    assert sink.readings[0].time_ns == future + 1


def test_on_stopped_is_called_once_after_the_socket_is_released(
    start_reader: Callable[..., Running], simulator: Simulator
) -> None:
    seen: list[tuple[StreamState, int]] = []

    def on_stopped() -> None:
        held = reader.poller.watching() if reader.poller is not None else 0
        seen.append((reader.stats.state, held))

    reader = start_reader(simulator.url(), on_stopped=on_stopped)
    wait_until(lambda: reader.stats.received >= 3, what="readings")
    assert seen == []
    reader.ref.stop(timeout=5)
    assert seen == [(StreamState.STOPPED, 0)], "once, stopped, socket back from the poller"
    wait_until(lambda: not simulator.connections, what="the server to see the close")


def test_losing_the_connection_is_handled_on_the_actors_own_thread(
    start_reader: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """In shared-poller mode the poller thread only reads: reconnecting (state, backoff,
    timers, the socket's close) is the actor's job, whichever mode reads."""
    caplog.set_level(logging.INFO, logger="tps.actors.reader")
    sim = Simulator(SimulatorConfig(port=0, interval=0.005, count=5)).start()
    try:
        reader = start_reader(sim.url(), "graphql-transport-ws",
                              backoff=Backoff(initial=5, cap=5))
        wait_until(lambda: reader.stats.state is StreamState.BACKOFF, what="the loss")
    finally:
        sim.stop()
    lost = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert lost
    assert all((r.threadName or "").startswith("StreamReader-") for r in lost), [
        r.threadName for r in lost]


# --- plain policy classes -------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_up_to_the_cap() -> None:
    backoff = Backoff(jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial=1, cap=1, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.8 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
