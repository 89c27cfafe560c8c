"""Rendezvous hashing with bounded loads: balanced, deterministic, little movement."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tps.cluster.assign import assign, ranking


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def test_every_stream_gets_exactly_one_live_instance() -> None:
    streams, instances = names("sat-", 12), ["a", "b", "c"]
    result = assign(streams, instances)
    assert set(result) == set(streams)
    assert set(result.values()) <= set(instances)


def test_no_instance_or_no_stream_gives_an_empty_assignment() -> None:
    assert assign(["x"], []) == {}
    assert assign([], ["a"]) == {}


@pytest.mark.parametrize(("streams", "instances"), [(12, 3), (12, 5), (200, 3), (7, 7), (3, 5)])
def test_loads_differ_by_at_most_one(streams: int, instances: int) -> None:
    for trial in range(20):
        result = assign(names(f"s{trial}-", streams), names(f"i{trial}-", instances))
        loads = Counter(result.values())
        counts = [loads.get(i, 0) for i in names(f"i{trial}-", instances)]
        assert max(counts) - min(counts) <= 1, counts


def test_the_answer_does_not_depend_on_input_order() -> None:
    streams, instances = names("s", 50), names("i", 4)
    shuffled_s, shuffled_i = streams[:], instances[:]
    random.Random(1).shuffle(shuffled_s)
    random.Random(2).shuffle(shuffled_i)
    assert assign(streams, instances) == assign(shuffled_s, shuffled_i + instances[:1])


@pytest.mark.parametrize(("streams", "instances"), [(12, 3), (200, 3), (200, 4)])
def test_removing_an_instance_moves_its_streams_and_few_others(streams: int,
                                                                instances: int) -> None:
    for trial in range(30):
        s, i = names(f"s{trial}-", streams), names(f"i{trial}-", instances)
        before, after = assign(s, i), assign(s, i[1:])
        moved = {name for name in s if before[name] != after[name]}
        had = {name for name in s if before[name] == i[0]}
        assert had <= moved
        assert len(moved - had) <= streams // 20 + 2, (trial, len(moved - had))


@pytest.mark.parametrize(("streams", "instances"), [(12, 2), (12, 3), (200, 3)])
def test_adding_an_instance_moves_about_its_fair_share(streams: int, instances: int) -> None:
    for trial in range(30):
        s, i = names(f"s{trial}-", streams), names(f"i{trial}-", instances)
        before, after = assign(s, i), assign(s, [*i, "newcomer"])
        moved = [name for name in s if before[name] != after[name]]
        fair = streams / (instances + 1)
        assert len(moved) <= fair + streams // 15 + 3, (trial, len(moved), fair)
        # streams move to the newcomer, not around between the old instances
        assert sum(1 for name in moved if after[name] != "newcomer") <= streams // 15 + 2


def test_ranking_is_the_rendezvous_order() -> None:
    order = ranking("sat-1", ["a", "b", "c"])
    assert sorted(order) == ["a", "b", "c"]
    assert ranking("sat-1", ["c", "a", "b", "a"]) == order
