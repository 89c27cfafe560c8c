"""The writer's memory buffer: bounded, drop-oldest, sliced into batches."""

from __future__ import annotations

import pytest

from tps.ingest.buffer import BatchBuffer
from tps.model import Reading


def readings(n: int, start: int = 0, stream: str = "s") -> list[Reading]:
    return [Reading(stream, start + i, float(start + i)) for i in range(n)]


def test_batches_are_sliced_oldest_first_across_chunks() -> None:
    buf = BatchBuffer(100)
    buf.append(readings(3, 0))
    buf.append(readings(4, 3))
    batch = buf.peek(5)
    assert [r.time_ns for r in batch.readings] == [0, 1, 2, 3, 4]
    assert len(buf) == 7
    buf.ack(batch)
    assert len(buf) == 2
    assert [r.time_ns for r in buf.peek(10).readings] == [5, 6]


def test_peek_does_not_remove_so_a_failed_write_can_be_retried() -> None:
    buf = BatchBuffer(10)
    buf.append(readings(4))
    assert buf.peek(3).readings == buf.peek(3).readings
    assert len(buf) == 4


def test_full_buffer_drops_the_oldest_and_counts_them() -> None:
    buf = BatchBuffer(5)
    assert buf.append(readings(4, 0)) == 0
    assert buf.append(readings(3, 4)) == 2
    assert buf.dropped == 2
    assert [r.time_ns for r in buf.peek(10).readings] == [2, 3, 4, 5, 6]
    assert buf.oldest_time_ns() == 2


def test_ack_after_a_concurrent_drop_removes_nothing_twice() -> None:
    buf = BatchBuffer(5)
    buf.append(readings(5, 0))
    batch = buf.peek(3)  # being written: 0, 1, 2
    buf.append(readings(4, 5))  # drops 0..3 meanwhile
    assert buf.ack(batch) == 0
    assert [r.time_ns for r in buf.peek(10).readings] == [4, 5, 6, 7, 8]


def test_batch_position_is_the_last_wholly_contained_chunk() -> None:
    buf = BatchBuffer(100)
    buf.append(readings(2, 0), position=10)
    buf.append(readings(2, 2), position=20)
    assert buf.peek(3).position == 10  # the second chunk is only half in the batch
    assert buf.peek(4).position == 20
    buf.ack(buf.peek(3))
    assert buf.peek(1).position == 20  # the rest of a partly written chunk completes it


def test_unbounded_append_overshoots_instead_of_dropping() -> None:
    buf = BatchBuffer(3)
    assert buf.append(readings(5), bounded=False) == 0
    assert len(buf) == 5 and buf.room == 0


def test_oldest_time_of_empty_buffer_is_none_and_limit_must_be_positive() -> None:
    assert BatchBuffer(1).oldest_time_ns() is None
    with pytest.raises(ValueError):
        BatchBuffer(0)
