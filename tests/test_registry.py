"""The persisted stream registry: atomic writes, merging with configured feeds, and
a corrupt file kept aside instead of stopping start-up."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tps.config.registry import StreamRegistry
from tps.config.settings import FeedConfig, check_feed
from tps.errors import InvalidArgument

A = FeedConfig("a", "ws://127.0.0.1:1/graphql")
B = FeedConfig("b", "ws://127.0.0.1:2/graphql", protocol="graphql-ws")
C = FeedConfig("c", "wss://example.org/feed", protocol="json", query="subscription { t }")


def test_a_fresh_registry_starts_from_the_configured_feeds_and_saves_them(tmp_path: Path) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    entries = registry.load([A, B])
    assert [(e.feed, e.running) for e in entries] == [(A, True), (B, True)]
    data = json.loads((tmp_path / "streams.json").read_text())
    assert [s["name"] for s in data["streams"]] == ["a", "b"]


def test_runtime_changes_survive_a_restart(tmp_path: Path) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    registry.load([A, B])
    registry.put(C, running=False)
    registry.set_running("a", False)
    registry.remove("b")

    again = StreamRegistry.in_data_dir(tmp_path).load([A, B])
    assert [(e.feed, e.running) for e in again] == [(A, False), (C, False)]


def test_configuration_says_where_a_feed_is_and_the_registry_keeps_its_state(
    tmp_path: Path,
) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    registry.load([A])
    registry.set_running("a", False)

    moved_a = FeedConfig("a", "ws://127.0.0.1:1/other-config")
    entries = StreamRegistry.in_data_dir(tmp_path).load([moved_a, B])
    assert [(e.feed.url, e.running) for e in entries] == [(moved_a.url, False), (B.url, True)]


def test_a_removed_configured_feed_stays_removed_until_added_again(tmp_path: Path) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    registry.load([A, B])
    registry.remove("a")
    reloaded = StreamRegistry.in_data_dir(tmp_path)
    assert [e.feed.name for e in reloaded.load([A, B])] == ["b"]
    assert reloaded.removed() == {"a"}

    reloaded.put(A)
    assert [e.feed.name for e in StreamRegistry.in_data_dir(tmp_path).load([A, B])] == ["b", "a"]


def test_a_corrupt_file_is_kept_aside_logged_once_and_configured_feeds_are_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "streams.json"
    path.write_text('{"version": 1, "streams": [ {"name": "x"')
    with caplog.at_level(logging.ERROR, logger="tps.config.registry"):
        entries = StreamRegistry(path).load([A])
    assert [e.feed for e in entries] == [A]
    aside = list(tmp_path.glob("streams.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_text() == '{"version": 1, "streams": [ {"name": "x"'
    records = [r for r in caplog.records if r.name == "tps.config.registry"]
    assert len(records) == 1
    assert "corrupt" in records[0].getMessage() and str(aside[0]) in records[0].getMessage()


@pytest.mark.parametrize("content", ["[]", '{"version": 2, "streams": []}',
                                     '{"version": 1, "streams": {}}'])
def test_a_file_of_the_wrong_shape_counts_as_corrupt(tmp_path: Path, content: str) -> None:
    path = tmp_path / "streams.json"
    path.write_text(content)
    assert [e.feed for e in StreamRegistry(path).load([B])] == [B]
    assert len(list(tmp_path.glob("streams.json.corrupt-*"))) == 1


@pytest.mark.parametrize(
    "bad",
    [
        '{"name": "a b", "url": "ws://h/", "query": "q"}',
        '{"name": "x", "url": "http://h/", "query": "q"}',
        '{"name": "x", "url": "ws://h/\\r\\nFAKE", "query": "q"}',
        '{"name": "x", "url": "ws://h/", "query": "q", "running": "yes"}',
        '{"name": "a", "url": "ws://h/", "query": "q"}',
        '"not an object"',
    ],
)
def test_one_bad_entry_is_set_aside_alone_and_the_others_load(
    tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14, row 14: one bad registry entry used to set the whole registry aside."""
    path = tmp_path / "streams.json"
    good = ('{"name": "a", "url": "ws://127.0.0.1:4000/graphql", '
            '"query": "subscription { temperature }"}')
    path.write_text('{"version": 1, "streams": [' + good + ", " + bad + "]}")
    loaded = StreamRegistry(path).load()
    assert [e.feed.name for e in loaded] == ["a"]
    assert not list(tmp_path.glob("streams.json.corrupt-*"))
    aside = list(tmp_path.glob("streams.json.rejected-*"))
    assert len(aside) == 1
    rejected = json.loads(aside[0].read_text())
    assert [r["entry"] for r in rejected] == [json.loads(bad)]
    assert json.loads(path.read_text())["streams"][0]["name"] == "a"
    assert len(json.loads(path.read_text())["streams"]) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "tps.config.registry"]
    assert len(lines) == 1 and "invalid" in lines[0] and "\n" not in lines[0]


def test_a_failed_write_leaves_the_previous_registry_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    registry.load([A])
    before = (tmp_path / "streams.json").read_text()

    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        registry.put(B)
    monkeypatch.undo()
    assert (tmp_path / "streams.json").read_text() == before
    assert [e.feed for e in StreamRegistry.in_data_dir(tmp_path).load()] == [A]


def test_saving_leaves_no_temporary_files(tmp_path: Path) -> None:
    registry = StreamRegistry.in_data_dir(tmp_path)
    registry.load([A])
    for _ in range(3):
        registry.put(B)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streams.json"]


@pytest.mark.parametrize(
    ("feed", "field"),
    [
        (FeedConfig("bad name", "ws://127.0.0.1/"), "name"),
        (FeedConfig("x" * 65, "ws://127.0.0.1/"), "name"),
        (FeedConfig("ok", "http://127.0.0.1/"), "url"),
        (FeedConfig("ok", "ws:///nohost"), "url"),
        (FeedConfig("ok", "ws://127.0.0.1:99999/"), "url"),
        (FeedConfig("ok", "ws://10.0.0.1/"), "url"),
        (FeedConfig("ok", "ws://127.0.0.1/", protocol="smtp"), "protocol"),
        (FeedConfig("ok", "ws://127.0.0.1/", query="  "), "query"),
    ],
)
def test_check_feed_names_the_invalid_field(feed: FeedConfig, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_feed(feed, ("127.0.0.1", "*.example.org"))
    assert info.value.argument == field


def test_check_feed_accepts_hosts_matching_an_allow_pattern() -> None:
    allow = ("127.0.0.1", "*.example.org")
    assert check_feed(FeedConfig("ok", "wss://feeds.EXAMPLE.org/x"), allow).name == "ok"
    assert check_feed(FeedConfig("ok", "ws://127.0.0.1:4000/graphql"), allow).name == "ok"
