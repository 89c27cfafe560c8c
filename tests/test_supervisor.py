"""The supervisor: restarts crashed children with backoff, gives up on a child that
keeps crashing without disturbing the others, logs every event in one line, persists
runtime stream changes, and never waits inside its mailbox for a reader to stop or the
writer to flush.

Readers, writer and query pool are small in-test fakes here (these tests are about
supervision, not ingest); the pipeline with real readers and a real InfluxDB is
exercised in tests/test_rest.py.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from tests.support.wait import wait_until
from tps.actors.board import StatsBoard, health_summary
from tps.actors.messages import InjectFailure, ReadingSink, RestartChild
from tps.actors.stats import StreamState, StreamStats, WriterStats
from tps.actors.supervisor import RestartPolicy, Supervisor, supervisor_proxy
from tps.config.registry import StreamRegistry
from tps.config.settings import FeedConfig, Settings
from tps.errors import InvalidArgument, StreamError, StreamExists, UnknownStream
from tps.model import Reading

FEEDS = (
    FeedConfig("alpha", "ws://127.0.0.1:1/graphql"),
    FeedConfig("beta", "ws://127.0.0.1:2/graphql"),
)


class Overlap:
    """Counts the readers of each stream alive at once (never more than one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alive: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def enter(self, name: str) -> None:
        with self._lock:
            self._alive[name] = self._alive.get(name, 0) + 1
            self.most[name] = max(self.most.get(name, 0), self._alive[name])

    def leave(self, name: str) -> None:
        with self._lock:
            self._alive[name] -= 1


class FakeReader(pykka.ThreadingActor):
    """Behaves like StreamReader towards its supervisor: subscribes, stops (taking as
    long as ``stop_gate`` stays closed, like a socket slow to close), reports the stop
    through ``on_stopped``, crashes."""

    def __init__(
        self,
        feed: FeedConfig,
        sink: ReadingSink,
        stats: StreamStats,
        on_failure: Callable[[BaseException], None],
        on_stopped: Callable[[], None],
        log: list[tuple[str, str]],
        stop_gate: threading.Event,
        overlap: Overlap,
    ) -> None:
        super().__init__()
        self.feed, self.sink, self.stats, self.failure, self.stopped, self.log = (
            feed, sink, stats, on_failure, on_stopped, log)
        self.stop_gate, self.overlap = stop_gate, overlap

    def on_start(self) -> None:
        self.overlap.enter(self.feed.name)
        self.stats.state = StreamState.SUBSCRIBED
        self.log.append(("start", self.feed.name))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, InjectFailure):
            raise RuntimeError(message.reason)
        return None

    def on_stop(self) -> None:
        self.log.append(("stopping", self.feed.name))
        assert self.stop_gate.wait(30), "test never opened the stop gate"
        self.stats.state = StreamState.STOPPED
        self.log.append(("stop", self.feed.name))
        self.overlap.leave(self.feed.name)
        self.stopped()

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stats.state = StreamState.FAILED
        self.log.append(("crash", self.feed.name))
        self.overlap.leave(self.feed.name)
        self.failure(exc)


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.alive = False
        self.on_failure: Callable[..., None] | None = None
        self.flush_gate = threading.Event()
        self.flush_gate.set()

    def start(self, on_failure: Callable[..., None]) -> None:
        self.calls.append("start")
        self.alive, self.on_failure = True, on_failure

    def flush(self, timeout: float) -> bool:
        self.calls.append("flush")
        return self.flush_gate.wait(timeout)

    def stop(self, timeout: float) -> bool:
        self.calls.append("stop")
        self.alive = False
        return True

    def is_alive(self) -> bool:
        return self.alive

    def crash(self) -> None:
        self.alive = False
        assert self.on_failure is not None
        self.on_failure(RuntimeError("disk on fire"))


class FakePool:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.on_failure: Callable[[int, BaseException], None] | None = None

    def start(self, on_failure: Callable[[int, BaseException], None]) -> None:
        self.calls.append("start")
        self.on_failure = on_failure

    def restart(self, index: int) -> None:
        self.calls.append(("restart", index))

    def stop(self) -> None:
        self.calls.append("stop")


class Harness:
    def __init__(self, tmp_path: Path, **kwargs: Any) -> None:
        self.log: list[tuple[str, str]] = []
        self.sunk: list[Reading] = []
        self.stop_gate = threading.Event()
        self.stop_gate.set()
        self.overlap = Overlap()
        self.refuse: set[str] = set()  # streams whose readers fail to start
        self.writer = FakeWriter()
        self.queries = FakePool()
        self.board = StatsBoard(WriterStats())
        self.registry = StreamRegistry.in_data_dir(tmp_path)
        settings = kwargs.pop("settings", Settings(feeds=FEEDS, feed_allow=("127.0.0.1",)))
        policy = kwargs.pop("policy", RestartPolicy(max_restarts=3, initial_delay=0.02))

        def factory(feed: FeedConfig, sink: ReadingSink, stats: StreamStats, *,
                    max_frame_bytes: int, on_failure: Callable[[BaseException], None],
                    on_stopped: Callable[[], None]) -> pykka.ActorRef[Any]:
            if feed.name in self.refuse:
                raise RuntimeError(f"cannot start a reader for {feed.name}")
            return FakeReader.start(feed, sink, stats, on_failure, on_stopped, self.log,
                                    self.stop_gate, self.overlap)

        defaults: dict[str, Any] = {
            "sink": self.sunk.extend,
            "writer": self.writer,
            "queries": self.queries,
            "registry": self.registry,
            "board": self.board,
            "reader_factory": factory,
            "policy": policy,
        }
        defaults.update(kwargs)
        self.ref = Supervisor.start(settings, **defaults)
        self.proxy = supervisor_proxy(self.ref)

    def starts(self, name: str) -> int:
        return self.log.count(("start", name))

    def stream(self, name: str) -> StreamStats:
        return self.proxy.get_stream(name).get(timeout=5)

    def settled(self, *names: str) -> concurrent.futures.Future[None]:
        """The supervisor's promise that ``names`` (default: all) stopped and flushed."""
        return self.proxy.settled(list(names) if names else None).get(timeout=5)

    def settle(self, *names: str) -> None:
        self.settled(*names).result(timeout=10)

    def close(self) -> None:
        self.stop_gate.set()
        self.writer.flush_gate.set()
        if self.ref.is_alive():
            self.ref.stop(timeout=10)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


def supervision_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tps.actors.supervisor"]


# --- the restart policy (plain class) -------------------------------------------------


def test_restart_delay_doubles_per_failure_and_is_capped() -> None:
    now = [0.0]
    policy = RestartPolicy(max_restarts=10, window=60, initial_delay=0.5, max_delay=3,
                           clock=lambda: now[0])
    assert [policy.on_failure("x") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_policy_gives_up_after_max_restarts_within_the_window() -> None:
    now = [0.0]
    policy = RestartPolicy(max_restarts=2, window=60, initial_delay=1, clock=lambda: now[0])
    assert policy.on_failure("x") == 1
    assert policy.on_failure("x") == 2
    assert policy.on_failure("x") is None
    assert policy.on_failure("other") == 1


def test_policy_forgets_failures_older_than_the_window() -> None:
    now = [0.0]
    policy = RestartPolicy(max_restarts=2, window=60, initial_delay=1, clock=lambda: now[0])
    policy.on_failure("x")
    policy.on_failure("x")
    now[0] = 61.0
    assert policy.on_failure("x") == 1
    assert policy.failures("x") == 1


# --- the actor ------------------------------------------------------------------------


def test_on_start_it_starts_writer_query_pool_and_one_reader_per_stream(harness: Harness) -> None:
    wait_until(lambda: harness.starts("alpha") == 1 and harness.starts("beta") == 1)
    assert harness.writer.calls == ["start"]
    assert harness.queries.calls == ["start"]
    assert [s.name for s in harness.board.streams()] == ["alpha", "beta"]
    names = [s.name for s in harness.proxy.list_streams().get(timeout=5)]
    assert names == ["alpha", "beta"]


def test_a_crashed_reader_is_restarted_after_a_backoff_and_keeps_its_stats(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    stats_before = harness.stream("alpha")
    stats_before.received = 42
    with caplog.at_level(logging.INFO, logger="tps.actors.supervisor"):
        harness.proxy.inject_failure("alpha").get(timeout=5)
        wait_until(lambda: "'alpha' restarted (restart 1)" in caplog.text)
    stats_after = harness.stream("alpha")
    assert stats_after is stats_before
    assert stats_after.received == 42
    assert stats_after.restarts == 1
    assert harness.board.supervisor().restarts == {"reader:alpha": 1}
    wait_until(lambda: stats_after.state == StreamState.SUBSCRIBED)
    messages = [r.getMessage() for r in supervision_records(caplog)]
    assert any("'alpha' crashed (RuntimeError: injected failure); restarting it in" in m
               for m in messages)
    assert any("'alpha' restarted (restart 1)" in m for m in messages)


def test_a_reader_that_keeps_crashing_is_marked_failed_and_the_others_keep_running(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    wait_until(lambda: harness.starts("beta") == 1)
    with caplog.at_level(logging.INFO, logger="tps.actors.supervisor"):
        for attempt in range(1, 5):
            wait_until(lambda a=attempt: harness.starts("alpha") == a)  # type: ignore[misc]
            wait_until(lambda: harness.stream("alpha").state == StreamState.SUBSCRIBED)
            harness.proxy.inject_failure("alpha").get(timeout=5)
        wait_until(lambda: "marked failed" in caplog.text)
    harness.proxy.list_streams().get(timeout=5)  # every earlier message is handled
    assert harness.starts("alpha") == 4  # the first start and 3 restarts, then no more
    assert harness.board.supervisor().failed == {"reader:alpha"}
    beta = harness.stream("beta")
    assert beta.state == StreamState.SUBSCRIBED and harness.starts("beta") == 1
    assert ("stop", "beta") not in harness.log
    health = harness.proxy.health().get(timeout=5)
    assert health["failed"] == ["reader:alpha"]
    assert health["actors"]["reader:beta"]["alive"] is True
    failed_lines = [r for r in supervision_records(caplog) if "marked failed" in r.getMessage()]
    assert len(failed_lines) == 1
    assert "other streams keep running" in failed_lines[0].getMessage()

    # An operator start revives it with a fresh restart budget.
    harness.proxy.start_stream("alpha").get(timeout=5)
    wait_until(lambda: harness.starts("alpha") == 5)
    assert harness.board.supervisor().failed == set()


def test_every_supervision_event_is_a_single_line(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tps.actors.supervisor"):
        harness.proxy.inject_failure("alpha").get(timeout=5)
        wait_until(lambda: "restarted" in caplog.text)
        harness.proxy.stop_stream("beta").get(timeout=5)
        harness.proxy.add_stream(FeedConfig("gamma", "ws://127.0.0.1:3/")).get(timeout=5)
        harness.proxy.remove_stream("gamma").get(timeout=5)
        harness.settle()
        harness.proxy.list_streams().get(timeout=5)  # the removal's last line is logged
    records = supervision_records(caplog)
    assert len(records) >= 6
    for record in records:
        assert "\n" not in record.getMessage() and record.exc_info is None


def test_adding_a_stream_validates_it_and_names_the_bad_field(harness: Harness) -> None:
    cases = [
        (FeedConfig("no spaces", "ws://127.0.0.1/"), "name"),
        (FeedConfig("ok", "http://127.0.0.1/"), "url"),
        (FeedConfig("ok", "ws://169.254.169.254/"), "url"),
    ]
    for feed, field in cases:
        with pytest.raises(InvalidArgument) as info:
            harness.proxy.add_stream(feed).get(timeout=5)
        assert info.value.argument == field
    with pytest.raises(StreamExists):
        harness.proxy.add_stream(FeedConfig("alpha", "ws://127.0.0.1:9/")).get(timeout=5)
    with pytest.raises(UnknownStream):
        harness.proxy.stop_stream("nope").get(timeout=5)
    assert [e.feed.name for e in StreamRegistry(harness.registry.path).load()] == [
        "alpha", "beta"]


def test_stop_start_add_and_remove_are_persisted_in_the_registry(harness: Harness) -> None:
    gamma = FeedConfig("gamma", "ws://127.0.0.1:3/", protocol="json")
    added = harness.proxy.add_stream(gamma, False).get(timeout=5)
    assert added.state == StreamState.STOPPED and harness.starts("gamma") == 0
    harness.proxy.stop_stream("alpha").get(timeout=5)
    harness.settle("alpha")
    assert ("stop", "alpha") in harness.log
    assert harness.stream("alpha").state == StreamState.STOPPED

    def saved() -> dict[str, bool]:
        entries = StreamRegistry(harness.registry.path).load()
        return {e.feed.name: e.running for e in entries}

    assert saved() == {"alpha": False, "beta": True, "gamma": False}
    harness.proxy.start_stream("gamma").get(timeout=5)
    wait_until(lambda: harness.starts("gamma") == 1)
    harness.proxy.remove_stream("beta").get(timeout=5)
    assert saved() == {"alpha": False, "gamma": True}
    harness.settle("beta")
    assert "flush" in harness.writer.calls
    assert [s.name for s in harness.board.streams()] == ["alpha", "gamma"]
    with pytest.raises(UnknownStream):
        harness.proxy.get_stream("beta").get(timeout=5)


def test_a_restarted_supervisor_brings_streams_back_in_their_last_state(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.proxy.add_stream(FeedConfig("gamma", "ws://127.0.0.1:3/")).get(timeout=5)
    first.proxy.stop_stream("alpha").get(timeout=5)
    first.close()

    second = Harness(tmp_path)
    try:
        states = {s.name: s.state for s in second.proxy.list_streams().get(timeout=5)}
        assert set(states) == {"alpha", "beta", "gamma"}
        assert states["alpha"] == StreamState.STOPPED
        wait_until(lambda: second.starts("gamma") == 1 and second.starts("beta") == 1)
        assert second.starts("alpha") == 0
    finally:
        second.close()


def test_set_all_stops_and_starts_every_stream(harness: Harness) -> None:
    stopped = harness.proxy.set_all(False).get(timeout=5)
    harness.settle()
    assert {s.state for s in stopped} == {StreamState.STOPPED}
    harness.proxy.set_all(True).get(timeout=5)
    wait_until(lambda: harness.starts("alpha") == 2 and harness.starts("beta") == 2)


def test_a_restart_scheduled_before_an_operator_stop_is_dropped(harness: Harness) -> None:
    harness.proxy.stop_stream("alpha").get(timeout=5)
    harness.ref.tell(RestartChild("reader:alpha", 1))
    harness.ref.tell(RestartChild("reader:alpha", 99))
    harness.proxy.list_streams().get(timeout=5)  # both restarts are handled by now
    assert harness.starts("alpha") == 1
    assert harness.stream("alpha").state == StreamState.STOPPED


def test_a_crashed_writer_is_restarted(harness: Harness) -> None:
    harness.writer.crash()
    wait_until(lambda: harness.writer.calls.count("start") == 2)
    assert harness.board.supervisor().restarts == {"writer": 1}


def test_a_crashed_query_actor_is_restarted_by_index(harness: Harness) -> None:
    assert harness.queries.on_failure is not None
    harness.queries.on_failure(2, RuntimeError("bad query"))
    wait_until(lambda: ("restart", 2) in harness.queries.calls)
    assert harness.board.supervisor().restarts == {"query:2": 1}


def test_shutdown_stops_readers_then_flushes_the_writer_then_the_query_pool(
    harness: Harness,
) -> None:
    wait_until(lambda: harness.starts("beta") == 1)
    assert harness.proxy.shutdown(5.0).get(timeout=10) is True
    assert ("stop", "alpha") in harness.log and ("stop", "beta") in harness.log
    assert harness.writer.calls[-1] == "stop" and harness.queries.calls[-1] == "stop"
    # A reader crash during shutdown is not restarted.
    assert harness.proxy.health().get(timeout=5)["alive"] is False


def test_api_role_supervisor_runs_only_the_query_pool(tmp_path: Path) -> None:
    pool = FakePool()
    ref = Supervisor.start(Settings(role="api", feeds=FEEDS), queries=pool)
    try:
        proxy = ref.proxy()
        assert proxy.list_streams().get(timeout=5) == []
        assert pool.calls == ["start"]
        with pytest.raises(StreamError, match="role=api"):
            proxy.add_stream(FeedConfig("x", "ws://127.0.0.1/")).get(timeout=5)
        assert proxy.writer_stats().get(timeout=5) is None
    finally:
        ref.stop(timeout=10)
    assert pool.calls[-1] == "stop"


def test_the_supervisor_answers_while_a_reader_restart_is_pending(tmp_path: Path) -> None:
    slow = Harness(tmp_path, policy=RestartPolicy(initial_delay=60.0))
    try:
        slow.proxy.inject_failure("alpha").get(timeout=5)
        wait_until(lambda: slow.stream("alpha").state == StreamState.BACKOFF)
        assert [s.name for s in slow.proxy.list_streams().get(timeout=5)] == ["alpha", "beta"]
        assert slow.starts("alpha") == 1  # the answer came while the restart still waits
    finally:
        slow.close()
    assert threading.active_count() < 100


def test_json_log_format_writes_one_json_object_per_event(
    harness: Harness,
) -> None:
    import io
    import json

    from tps.logging_setup import configure_logging

    out = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("INFO", "json", stream=out)
    try:
        harness.proxy.inject_failure("alpha").get(timeout=5)
        wait_until(lambda: "restarted (restart 1)" in out.getvalue())
        try:
            raise ValueError("multi\nline")
        except ValueError:
            logging.getLogger("tps.test").exception("with a traceback")
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    supervision = [e for e in events if e["logger"] == "tps.actors.supervisor"]
    assert any("restarting it in" in e["message"] and e["level"] == "error" for e in supervision)
    assert any("restarted" in e["message"] for e in supervision)
    traced = [e for e in events if e["logger"] == "tps.test"]
    assert traced[0]["message"] == "with a traceback" and "ValueError" in traced[0]["exc"]
    assert {"time", "level", "logger", "thread", "message"} <= set(traced[0])


def test_text_log_format_names_level_logger_and_message() -> None:
    import io

    from tps.logging_setup import configure_logging

    out = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("warning", "text", stream=out)
    configure_logging("warning", "text", stream=out)  # reconfiguring replaces, not adds
    try:
        logging.getLogger("tps.x").warning("Stream %r stopped", "a")
        logging.getLogger("tps.x").info("not shown")
    finally:
        for handler in list(root.handlers):
            if handler not in before[0]:
                root.removeHandler(handler)
        root.setLevel(before[1])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING" in lines[0] and "tps.x" in lines[0] and "Stream 'a' stopped" in lines[0]


def test_an_unreadable_registry_runs_the_configured_feeds_without_persisting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "streams.json").mkdir()  # reading a directory fails with EISDIR
    with caplog.at_level(logging.ERROR, logger="tps.actors.supervisor"):
        h = Harness(tmp_path)
        try:
            wait_until(lambda: h.starts("alpha") == 1 and h.starts("beta") == 1)
            h.proxy.stop_stream("alpha").get(timeout=5)
        finally:
            h.close()
    assert "Cannot use the stream registry" in caplog.text


# --- the mailbox never waits for a child ---------------------------------------------


def test_a_stop_is_asked_for_and_the_supervisor_answers_while_the_reader_closes(
    harness: Harness,
) -> None:
    wait_until(lambda: harness.starts("alpha") == 1)
    harness.stop_gate.clear()  # readers now take until the test says to close
    harness.proxy.stop_stream("alpha").get(timeout=5)
    wait_until(lambda: ("stopping", "alpha") in harness.log, what="the reader asked to stop")
    settled = harness.settled("alpha")
    assert harness.proxy.health().get(timeout=5)["alive"] is True
    assert not settled.done()
    harness.stop_gate.set()
    settled.result(timeout=10)
    assert ("stop", "alpha") in harness.log
    assert harness.stream("alpha").state == StreamState.STOPPED


def test_a_start_asked_for_while_the_old_reader_stops_waits_for_it(harness: Harness) -> None:
    wait_until(lambda: harness.starts("alpha") == 1)
    harness.stop_gate.clear()
    harness.proxy.stop_stream("alpha").get(timeout=5)
    harness.proxy.start_stream("alpha").get(timeout=5)
    harness.proxy.list_streams().get(timeout=5)  # both requests are handled by now
    assert harness.starts("alpha") == 1, "a new reader started while the old one stopped"
    harness.stop_gate.set()
    wait_until(lambda: harness.starts("alpha") == 2, what="the deferred start")
    stop, start = harness.log.index(("stop", "alpha")), len(harness.log) - 1 - harness.log[
        ::-1].index(("start", "alpha"))
    assert stop < start
    assert harness.overlap.most["alpha"] == 1
    entries = {e.feed.name: e.running for e in StreamRegistry(harness.registry.path).load()}
    assert entries["alpha"] is True


def test_a_stream_removed_and_added_again_gets_its_new_reader_after_the_old_one_stopped(
    harness: Harness,
) -> None:
    wait_until(lambda: harness.starts("beta") == 1)
    harness.stop_gate.clear()
    harness.proxy.remove_stream("beta").get(timeout=5)
    again = harness.proxy.add_stream(FeedConfig("beta", "ws://127.0.0.1:7/")).get(timeout=5)
    harness.proxy.list_streams().get(timeout=5)
    assert harness.starts("beta") == 1
    assert "flush" not in harness.writer.calls, "flushed before the old reader stopped"
    harness.stop_gate.set()
    wait_until(lambda: harness.starts("beta") == 2, what="the new reader of beta")
    harness.settle("beta")
    assert harness.writer.calls.count("flush") == 1
    assert harness.overlap.most["beta"] == 1
    assert harness.stream("beta") is again


def test_the_flush_after_a_removal_is_asked_for_and_its_end_comes_back_as_a_message(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    wait_until(lambda: harness.starts("beta") == 1)
    harness.writer.flush_gate.clear()  # the writer's flush now blocks its caller
    with caplog.at_level(logging.INFO, logger="tps.actors.supervisor"):
        harness.proxy.remove_stream("beta").get(timeout=5)
        settled = harness.settled("beta")
        wait_until(lambda: "flush" in harness.writer.calls, what="the flush asked for")
        # The flush is blocked, yet the supervisor answers.
        assert [s.name for s in harness.proxy.list_streams().get(timeout=5)] == ["alpha"]
        assert not settled.done()
        harness.writer.flush_gate.set()
        settled.result(timeout=10)
        harness.proxy.list_streams().get(timeout=5)
    removed = [r.getMessage() for r in supervision_records(caplog)
               if "'beta' removed by operator" in r.getMessage()]
    assert removed == ["Stream 'beta' removed by operator after 0 readings; its readings "
                       "are flushed"]


def test_a_reader_slow_to_stop_is_reported_and_still_never_overlapped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path, stop_timeout=0.05)
    try:
        wait_until(lambda: h.starts("alpha") == 1)
        h.stop_gate.clear()
        with caplog.at_level(logging.WARNING, logger="tps.actors.supervisor"):
            h.proxy.stop_stream("alpha").get(timeout=5)
            h.proxy.start_stream("alpha").get(timeout=5)
            wait_until(lambda: "has not stopped" in caplog.text, what="the overdue warning")
        assert h.starts("alpha") == 1
        h.stop_gate.set()
        wait_until(lambda: h.starts("alpha") == 2, what="the start after the slow stop")
        assert h.overlap.most["alpha"] == 1
        warnings = [r for r in supervision_records(caplog) if "has not stopped" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        h.close()


def test_a_reader_that_crashes_while_stopping_counts_as_stopped(harness: Harness) -> None:
    wait_until(lambda: harness.starts("alpha") == 1)
    harness.stop_gate.clear()
    harness.proxy.inject_failure("alpha").get(timeout=5)
    harness.proxy.stop_stream("alpha").get(timeout=5)  # queued behind the crash
    harness.settle("alpha")
    assert harness.stream("alpha").state == StreamState.STOPPED
    harness.proxy.start_stream("alpha").get(timeout=5)
    wait_until(lambda: harness.starts("alpha") == 2)
    assert harness.board.supervisor().restarts == {}


def test_shutdown_waits_for_readers_only_a_bounded_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, stop_timeout=0.2)
    try:
        wait_until(lambda: h.starts("alpha") == 1 and h.starts("beta") == 1)
        h.stop_gate.clear()  # readers that never finish closing
        assert h.proxy.shutdown(5.0).get(timeout=3) is True
        assert h.writer.calls[-1] == "stop"
    finally:
        h.close()


def test_health_is_published_on_the_board_without_asking_the_supervisor(
    harness: Harness,
) -> None:
    wait_until(lambda: harness.starts("alpha") == 1 and harness.starts("beta") == 1)
    harness.proxy.stop_stream("beta").get(timeout=5)
    harness.settle()
    published = health_summary(harness.board)
    assert published == harness.proxy.health().get(timeout=5)
    assert published["alive"] is True
    assert published["actors"]["reader:alpha"] == {
        "alive": True, "running": True, "failed": False, "restarts": 0}
    assert published["actors"]["reader:beta"]["running"] is False
    assert published["streams"] == {"alpha": "subscribed", "beta": "stopped"}
    harness.proxy.shutdown(5.0).get(timeout=10)
    assert health_summary(harness.board)["alive"] is False


def test_a_restart_that_cannot_start_a_reader_marks_the_stream_failed_not_the_supervisor(
    harness: Harness,
) -> None:
    wait_until(lambda: harness.starts("alpha") == 1)
    harness.refuse.add("alpha")
    harness.proxy.inject_failure("alpha").get(timeout=5)
    # (The fake reader itself says FAILED as it crashes, before the supervisor's restart
    # was tried: wait for the supervisor's verdict, not the state alone.)
    wait_until(lambda: harness.board.supervisor().failed == {"reader:alpha"},
               what="the failed restart")
    assert harness.stream("alpha").state == StreamState.FAILED
    assert "cannot start a reader" in (harness.stream("alpha").last_error or "")
    assert harness.board.supervisor().failed == {"reader:alpha"}
    assert harness.proxy.health().get(timeout=5)["alive"] is True
    harness.refuse.clear()
    harness.proxy.start_stream("alpha").get(timeout=5)
    wait_until(lambda: harness.starts("alpha") == 2)
