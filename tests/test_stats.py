"""Stats objects are read from any thread without a lock: their containers are
replaced by their single writer, never changed under a reader's feet."""

from __future__ import annotations

from tps.actors.stats import StreamStats, SupervisorStats


def test_a_rejection_replaces_the_reasons_dict_instead_of_changing_it() -> None:
    stats = StreamStats("s", "ws://h/", "auto", "q")
    seen_by_a_reader = stats.rejected_by_reason
    stats.reject("not_json")
    stats.reject("not_json")
    stats.reject("bad_value")
    assert seen_by_a_reader == {}
    assert stats.rejected_by_reason == {"not_json": 2, "bad_value": 1}
    assert stats.rejected == 3


def test_supervisor_counters_are_replaced_not_changed() -> None:
    stats = SupervisorStats()
    restarts, failed = stats.restarts, stats.failed
    assert stats.count_restart("reader:a") == 1
    assert stats.count_restart("reader:a") == 2
    stats.mark_failed("reader:a")
    stats.mark_failed("reader:a")
    assert (restarts, failed) == ({}, set())
    assert stats.restarts == {"reader:a": 2} and stats.failed == {"reader:a"}
    before = stats.failed
    stats.clear_failed("reader:a")
    stats.clear_failed("reader:a")
    assert before == {"reader:a"} and stats.failed == set()
