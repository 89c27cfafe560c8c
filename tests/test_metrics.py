"""Prometheus metrics are read from the stats objects at scrape time and parse with
prometheus_client's own parser. (Counters matching InfluxDB: tests/test_rest.py.)"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tps.actors.board import StatsBoard
from tps.actors.stats import StreamState, StreamStats, SupervisorStats, WriterStats
from tps.api.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def board_with_two_streams() -> StatsBoard:
    board = StatsBoard(WriterStats(), SupervisorStats())
    a = StreamStats("a", "ws://h/", "auto", "q", state=StreamState.SUBSCRIBED)
    b = StreamStats("b", "ws://h/", "auto", "q", state=StreamState.BACKOFF)
    a.received, a.reconnects, a.last_value = 10, 2, 21.5
    b.reject("not_json")
    b.reject("not_json")
    b.reject("bad_value")
    board.add_stream(a)
    board.add_stream(b)
    return board


def test_stream_counters_are_exported_per_stream_and_reason() -> None:
    samples = scrape(Metrics.from_board(board_with_two_streams()))
    assert samples[("tps_readings_received_total", (("stream", "a"),))] == 10
    assert samples[("tps_readings_received_total", (("stream", "b"),))] == 0
    assert samples[("tps_readings_rejected_total", (("reason", "not_json"), ("stream", "b")))] == 2
    assert samples[("tps_readings_rejected_total", (("reason", "bad_value"), ("stream", "b")))] == 1
    assert samples[("tps_stream_reconnects_total", (("stream", "a"),))] == 2
    assert samples[("tps_stream_state", (("state", "backoff"), ("stream", "b")))] == 1
    assert samples[("tps_stream_state", (("state", "subscribed"), ("stream", "b")))] == 0
    assert samples[("tps_stream_last_value", (("stream", "a"),))] == 21.5


def test_values_are_read_at_scrape_time_not_copied_at_start() -> None:
    board = board_with_two_streams()
    metrics = Metrics.from_board(board)
    board.streams()[0].received = 99
    writer = board.writer()
    assert writer is not None
    writer.points_written, writer.write_failures, writer.write_retries = 500, 3, 4
    writer.buffered, writer.dropped = 7, 1
    writer.oldest_unwritten_ns = time.time_ns() - 2_000_000_000
    writer.spool_enabled, writer.spool_bytes, writer.spool_segments = True, 4096, 2
    writer.spool_replayed, writer.spool_truncated = 11, 1
    for _ in range(3):
        board.supervisor().count_restart("reader:a")
    board.supervisor().mark_failed("reader:b")
    samples = scrape(metrics)
    assert samples[("tps_readings_received_total", (("stream", "a"),))] == 99
    assert samples[("tps_points_written_total", ())] == 500
    assert samples[("tps_write_failures_total", ())] == 3
    assert samples[("tps_write_retries_total", ())] == 4
    assert samples[("tps_writer_buffered_readings", ())] == 7
    assert samples[("tps_readings_dropped_total", ())] == 1
    assert 1.9 < samples[("tps_writer_oldest_unwritten_age_seconds", ())] < 10
    assert 1.9 < samples[("tps_spool_oldest_age_seconds", ())] < 10
    assert samples[("tps_spool_bytes", ())] == 4096
    assert samples[("tps_spool_segments", ())] == 2
    assert samples[("tps_spool_replayed_total", ())] == 11
    assert samples[("tps_spool_truncated_total", ())] == 1
    assert samples[("tps_actor_restarts_total", (("actor", "reader:a"),))] == 3
    assert samples[("tps_actor_failed", (("actor", "reader:b"),))] == 1


def test_query_latency_is_a_histogram_per_operation() -> None:
    metrics = Metrics()
    metrics.observe_query("currentTemperature", 0.002)
    metrics.observe_query("currentTemperature", 0.2)
    metrics.observe_query("temperatureStatistics", 3.0)
    samples = scrape(metrics)
    current = (("operation", "currentTemperature"),)
    assert samples[("tps_query_duration_seconds_count", current)] == 2
    assert abs(samples[("tps_query_duration_seconds_sum", current)] - 0.202) < 1e-9
    assert samples[("tps_query_duration_seconds_bucket", (("le", "0.005"), *current))] == 1
    stats = (("operation", "temperatureStatistics"),)
    assert samples[("tps_query_duration_seconds_count", stats)] == 1


def test_api_role_metrics_have_no_stream_or_writer_figures() -> None:
    samples = scrape(Metrics())
    assert not any(name.startswith(("tps_points", "tps_spool")) for name, _ in samples)
    assert not any(labels for name, labels in samples if name == "tps_readings_received_total")


def test_two_metrics_objects_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_query("x", 0.1)
    assert ("tps_query_duration_seconds_count", (("operation", "x"),)) in scrape(first)
    assert ("tps_query_duration_seconds_count", (("operation", "x"),)) not in scrape(second)
