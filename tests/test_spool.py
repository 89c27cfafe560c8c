"""The disk spool: checksummed segments, checkpoint, replay, size bound, damage, disk full."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import pytest

from tps.ingest.spool import Spool, decode_payload, encode_record, split_position
from tps.model import Reading


def batch(n: int, start: int = 0, stream: str = "s1") -> list[Reading]:
    return [Reading(stream, 1_700_000_000_000_000_000 + start + i, start + i + 0.25)
            for i in range(n)]


def replay(spool: Spool) -> list[Reading]:
    out: list[Reading] = []
    for readings, _ in spool.read(spool.checkpoint_position, 10**9):
        out.extend(readings)
    return out


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_record_encoding_round_trips_mixed_streams_and_names() -> None:
    readings = [*batch(1, 0, "a"), *batch(3, 1, "strömung:1"), *batch(2, 4, "a")]
    record = encode_record(readings)
    assert decode_payload(record[10:]) == readings


def test_everything_appended_is_replayed_after_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    expected = []
    for i in range(50):
        chunk = batch(1 + i % 7, i * 10, f"s{i % 3}")
        expected.extend(chunk)
        spool.append(chunk)
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.recovery.readings == len(expected)
    assert replay(reopened) == expected
    reopened.close()


def test_positions_grow_and_read_after_a_position_returns_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    p1 = spool.append(batch(2, 0))
    p2 = spool.append(batch(2, 2))
    assert p1 is not None and p2 is not None and p2 > p1
    records = spool.read(p1, 100)
    assert [pos for _, pos in records] == [p2]
    assert records[0][0] == batch(2, 2)
    spool.close()


def test_read_stops_near_the_reading_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(batch(10, i * 10))
    assert sum(len(r) for r, _ in spool.read(0, 25)) == 30  # whole records, >= budget
    spool.close()


def test_only_records_after_the_checkpoint_are_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(5, 0))
    written = spool.append(batch(5, 5))
    spool.append(batch(5, 10))
    assert written is not None
    spool.checkpoint(written)
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.checkpoint_position == written
    assert replay(reopened) == batch(5, 10)
    reopened.close()


def test_segments_wholly_behind_the_checkpoint_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096)
    last = None
    for i in range(100):
        last = spool.append(batch(10, i * 10))
    assert last is not None
    spool.sync()  # appends only touch memory; the files exist once written
    assert len(segment_files(tmp_path)) > 3
    spool.checkpoint(last)
    assert len(segment_files(tmp_path)) == 1
    assert spool.segments == 1
    spool.close()
    assert replay(Spool(tmp_path)) == []


def test_torn_tail_is_truncated_reported_and_complete_records_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(3, 0))
    spool.append(batch(3, 3))
    spool.close()
    seg = segment_files(tmp_path)[-1]
    whole = seg.stat().st_size
    with seg.open("ab") as fh:  # a crash in the middle of the next append
        fh.write(encode_record(batch(4, 6))[:-7])
    with caplog.at_level(logging.WARNING):
        reopened = Spool(tmp_path)
    assert reopened.recovery.truncated_records == 1
    assert reopened.recovery.truncated_bytes > 0
    assert seg.stat().st_size == whole
    assert replay(reopened) == batch(6, 0)
    assert "damaged record" in caplog.text
    reopened.close()


def test_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(3, 0))
    bad = spool.append(batch(3, 3))
    spool.append(batch(3, 6))
    spool.close()
    assert bad is not None
    seg = segment_files(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[split_position(bad)[1] - 5] ^= 0xFF  # flip a byte inside the second record
    seg.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert reopened.recovery.truncated_records == 1
    assert replay(reopened) == [*batch(3, 0), *batch(3, 6)]
    reopened.close()


def test_garbage_checkpoint_means_replay_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(2))
    spool.close()
    (tmp_path / "checkpoint").write_text("not a checkpoint")
    assert replay(Spool(tmp_path)) == batch(2)


def test_size_bound_drops_the_oldest_segments_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 16)
    with caplog.at_level(logging.WARNING):
        for i in range(400):
            spool.append(batch(20, i * 20))
    spool.sync()
    assert spool.dropped_readings > 0
    assert spool.size_bytes <= 1 << 16
    kept = replay(spool)
    assert len(kept) + spool.dropped_readings == 400 * 20
    assert kept[-1] == batch(20, 399 * 20)[-1]  # the newest survive
    assert "dropped the oldest" in caplog.text
    spool.close()


def test_disk_full_refuses_new_records_keeps_pending_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(3, 0))
    real_write = os.write
    full = True

    def write(fd: int, data: bytes | memoryview) -> int:
        if full and fd == spool._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert spool.sync() is False
    assert spool.failed and spool.errors == 1
    assert spool.append(batch(1, 3)) is None  # memory-only while the disk is full
    full = False
    assert spool.sync() is True
    assert not spool.failed
    assert spool.append(batch(1, 4)) is not None
    spool.close()
    assert replay(Spool(tmp_path)) == [*batch(3, 0), *batch(1, 4)]


def test_disk_full_on_a_real_size_limited_folder_is_survived(tmp_path: Path) -> None:
    """A 64 KiB tmpfs (needs root, as in CI) fills up; the spool fails, then recovers."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {mount} 2>/dev/null") != 0:
        pytest.fail("cannot mount a tmpfs (needs root); the fault suite requires it")
    try:
        filler = mount / "filler"
        spool = Spool(mount / "spool", max_bytes=1 << 30)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # take all the space
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        for i in range(100):
            spool.append(batch(10, i * 10))
            spool.sync()
        assert spool.failed and spool.errors >= 1
        filler.unlink()
        assert spool.sync() is True and not spool.failed
        assert spool.append(batch(1, 10_000)) is not None
        spool.close()
        again = Spool(mount / "spool")
        got = replay(again)
        again.close()
        assert got[-1] == batch(1, 10_000)[0]
        assert len(got) > 1
    finally:
        os.system(f"umount -l {mount}")


def test_disk_full_at_start_opens_the_spool_failed_and_recovers_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Spool(tmp_path)
    first.append(batch(4))
    first.close()
    real_open = os.open
    full = True

    def open_(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if full and str(path).endswith(".seg") and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_)
    spool = Spool(tmp_path)
    assert spool.failed and spool.append(batch(1, 100)) is None
    assert [r for rs, _ in spool.read(0, 100) for r in rs] == batch(4)  # replay still works
    full = False
    assert spool.sync() is True and not spool.failed
    assert spool.append(batch(1, 100)) is not None
    spool.close()


def test_append_touches_no_file_and_does_not_wait_for_a_slow_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feed threads append under the writer's lock: a disk that takes seconds to write
    must not hold them up (the record waits in memory for the syncer)."""
    spool = Spool(tmp_path, segment_bytes=4096)
    real_write = os.write
    writing, release = threading.Event(), threading.Event()

    def slow_write(fd: int, data: bytes | memoryview) -> int:
        writing.set()
        release.wait(10)
        return real_write(fd, data)

    spool.append(batch(3, 0))
    monkeypatch.setattr(os, "write", slow_write)
    syncer = threading.Thread(target=spool.sync)
    syncer.start()
    try:
        assert writing.wait(5)
        appended = threading.Event()

        def append_more() -> None:
            for i in range(1, 50):  # rolls to new segments too
                assert spool.append(batch(10, i * 10)) is not None
            appended.set()

        threading.Thread(target=append_more).start()
        assert appended.wait(5), "append waited for the disk"
    finally:
        release.set()
        syncer.join(10)
    monkeypatch.undo()
    spool.close()
    expected = batch(3, 0) + [r for i in range(1, 50) for r in batch(10, i * 10)]
    assert replay(Spool(tmp_path)) == expected


def test_a_checkpoint_ahead_of_the_disk_never_hides_new_records(tmp_path: Path) -> None:
    """The store may acknowledge records that were still in memory (a crash then loses
    them from the disk, but they are stored); whatever the next process appends must
    still count as unwritten."""
    spool = Spool(tmp_path, segment_bytes=4096)
    last = None
    for i in range(40):  # several segments, none of them written to disk yet
        last = spool.append(batch(10, i * 10))
    assert last is not None
    spool.checkpoint(last)
    del spool  # a crash: the pending records never reach the disk
    reopened = Spool(tmp_path)
    position = reopened.append(batch(2, 1000))
    assert position is not None and position > last
    reopened.close()
    assert replay(Spool(tmp_path)) == batch(2, 1000)
