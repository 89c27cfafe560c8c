"""The disk spool: every received reading is on disk before it counts as received.

Layout under the spool folder::

    0000000001.seg  0000000002.seg ...   append-only segment files
    checkpoint                           "<segment> <offset>": everything before is written

A segment is a sequence of records. A record is one ``submit`` (one stream's batch)::

    header  <HII   magic 0x5350, payload length, CRC32 of the payload
    payload groups of  <HI name length, reading count; name (UTF-8);
                       count int64 times (ns); count float64 values   (little-endian)

A *position* is one integer, ``segment << 40 | offset``: the end of a record. Positions
grow with every append, so the writer can compare them and the checkpoint is "all
records ending at or before this position are in the store".

Durability is group-committed: ``append`` only adds the record to memory; the owner
calls :meth:`Spool.sync` every ``TPS_SPOOL_SYNC_INTERVAL`` (write + fsync), so one
fsync covers every record of that interval. A crash therefore loses at most one sync
interval of readings (plus the write time), never a reading older than that.

Failure policy:
- a torn or corrupt record (crash mid-append, bad disk) is found by its checksum when
  the spool opens; a torn tail is truncated, a corrupt record in the middle is skipped
  (the reader resynchronises on the next valid header); both are counted and logged,
  and neither stops start-up;
- the spool is bounded by ``max_bytes``: beyond it the oldest segment is deleted even if
  unwritten, its readings counted as dropped, with a warning;
- a failed write (disk full, I/O error) puts the spool in the *failed* state: the
  records not yet on disk are kept in memory and retried on every ``sync``; meanwhile
  ``append`` refuses new records (returns None) so the writer keeps them memory-only;
  the first successful retry ends the state.

Threads: ``append`` is called from feed threads (under the writer pipeline's lock),
``sync`` from the syncer thread, ``read``/``checkpoint`` from the writer actor. None of
them waits for the disk behind a lock that ``append`` takes:

- ``_lock`` guards the in-memory state (segments, pending records, positions,
  counters) and is never held during a system call on a file;
- ``_io`` serialises the disk work - writing pending records (and so rolling to the
  next segment's file), fsync, deleting segments, the checkpoint file - in
  :meth:`write_pending`, :meth:`sync`, :meth:`read` and :meth:`checkpoint`.

Lock order: ``_io`` before ``_lock``. ``append`` takes only ``_lock`` and only touches
memory; when too much is pending (:attr:`Spool.needs_write`) its caller is expected to
call :meth:`write_pending` once it holds no lock of its own. The class starts no
threads itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import sys
import threading
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tps.model import Reading
from tps.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

MAGIC = 0x5350
_HEADER = struct.Struct("<HII")
_GROUP = struct.Struct("<HI")
_PAIR = struct.Struct("<qd")
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
MAX_RECORD_BYTES = 256 << 20
_MAX_SEGMENT_BYTES = 64 << 20
_MAX_PENDING_BYTES = 4 << 20
_READ_CHUNK = 4 << 20
_LITTLE = sys.byteorder == "little"
_WARN_EVERY = 10.0


def make_position(segment: int, offset: int) -> int:
    """The position ``offset`` bytes into ``segment``."""
    return segment << _OFFSET_BITS | offset


def split_position(position: int) -> tuple[int, int]:
    """(segment, offset) of a position."""
    return position >> _OFFSET_BITS, position & _OFFSET_MASK


def encode_record(
    readings: Sequence[Reading], prefixes: dict[str, bytes] | None = None
) -> bytes:
    """One spool record (header + payload) holding ``readings`` in order.

    ``prefixes`` caches each stream's one-reading group header between calls, so the
    common one-reading record costs one ``struct.pack`` and one CRC.
    """
    if len(readings) == 1:
        r = readings[0]
        prefix = prefixes.get(r.stream) if prefixes is not None else None
        if prefix is None:
            name = r.stream.encode("utf-8")
            prefix = _GROUP.pack(len(name), 1) + name
            if prefixes is not None and len(prefixes) < 100_000:
                prefixes[r.stream] = prefix
        payload = prefix + _PAIR.pack(r.time_ns, r.value)
        return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
    parts: list[bytes] = []
    start = 0
    n = len(readings)
    while start < n:
        stream = readings[start].stream
        end = start + 1
        while end < n and readings[end].stream == stream:
            end += 1
        name = stream.encode("utf-8")
        count = end - start
        parts.append(_GROUP.pack(len(name), count))
        parts.append(name)
        if count == 1:
            r = readings[start]
            parts.append(_PAIR.pack(r.time_ns, r.value))
        else:
            run = readings[start:end]
            times = array("q", [r.time_ns for r in run])
            values = array("d", [r.value for r in run])
            if not _LITTLE:
                times.byteswap()
                values.byteswap()
            parts.append(times.tobytes())
            parts.append(values.tobytes())
        start = end
    payload = b"".join(parts)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes | memoryview) -> list[Reading]:
    """The readings of one record payload (checksum already verified)."""
    out: list[Reading] = []
    view = memoryview(payload)
    pos = 0
    total = len(view)
    while pos < total:
        name_len, count = _GROUP.unpack_from(view, pos)
        pos += _GROUP.size
        stream = bytes(view[pos : pos + name_len]).decode("utf-8")
        pos += name_len
        if count == 1:
            time_ns, value = _PAIR.unpack_from(view, pos)
            out.append(Reading(stream, time_ns, value))
            pos += _PAIR.size
            continue
        times = array("q")
        times.frombytes(view[pos : pos + 8 * count])
        pos += 8 * count
        values = array("d")
        values.frombytes(view[pos : pos + 8 * count])
        pos += 8 * count
        if not _LITTLE:
            times.byteswap()
            values.byteswap()
        out.extend(Reading(stream, t, v) for t, v in zip(times, values, strict=True))
    return out


def _payload_count(payload: bytes | memoryview) -> int | None:
    """Readings in a payload, or None when its structure is inconsistent."""
    pos = 0
    total = len(payload)
    count_all = 0
    try:
        while pos < total:
            name_len, count = _GROUP.unpack_from(payload, pos)
            pos += _GROUP.size + name_len + (_PAIR.size if count == 1 else 16 * count)
            count_all += count
    except struct.error:
        return None
    return count_all if pos == total else None


@dataclass(frozen=True, slots=True)
class _Scanned:
    start: int
    end: int
    count: int


@dataclass(frozen=True, slots=True)
class _Scan:
    """Result of checking one segment's bytes."""

    records: list[_Scanned]
    corrupt_regions: int  # skipped stretches between valid records
    corrupt_bytes: int
    valid_end: int  # end of the last valid record (the torn tail starts here)


def _valid_record_at(data: bytes | memoryview, off: int) -> int | None:
    """End offset of a valid record starting at ``off``, or None."""
    if off + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, off)
    if magic != MAGIC or length > MAX_RECORD_BYTES:
        return None
    end: int = off + _HEADER.size + int(length)
    if end > len(data):
        return None
    if zlib.crc32(data[off + _HEADER.size : end]) != crc:
        return None
    return end


def scan_segment(data: bytes) -> _Scan:
    """Find the valid records of a segment, resynchronising past corrupt stretches."""
    view = memoryview(data)
    records: list[_Scanned] = []
    regions = 0
    bad_bytes = 0
    off = 0
    valid_end = 0
    magic = struct.pack("<H", MAGIC)
    while off < len(data):
        end = _valid_record_at(view, off)
        count = None
        if end is not None:
            count = _payload_count(view[off + _HEADER.size : end])
        if end is not None and count is not None:
            records.append(_Scanned(off, end, count))
            off = valid_end = end
            continue
        # Corrupt or torn: look for the next offset that starts a valid record.
        probe = off + 1
        found = -1
        while True:
            probe = data.find(magic, probe)
            if probe < 0:
                break
            nxt = _valid_record_at(view, probe)
            if nxt is not None and _payload_count(view[probe + _HEADER.size : nxt]) is not None:
                found = probe
                break
            probe += 1
        if found < 0:
            break  # torn tail: nothing valid follows
        regions += 1
        bad_bytes += found - off
        off = found
    return _Scan(records, regions, bad_bytes, valid_end)


@dataclass(slots=True)
class _Segment:
    index: int
    path: Path
    size: int  # bytes appended to it, on disk or pending
    readings: int
    on_disk: int = 0  # bytes handed to the OS: what a read may see


@dataclass(frozen=True, slots=True)
class SpoolRecovery:
    """What opening the spool found: unwritten data and damage."""

    segments: int
    records: int
    readings: int
    truncated_records: int
    truncated_bytes: int


class Spool:
    """Append-only, checksummed, size-bounded segment files with a checkpoint."""

    def __init__(
        self, directory: Path, max_bytes: int = 1 << 30, segment_bytes: int | None = None
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(_MAX_SEGMENT_BYTES, max_bytes // 8))
        self._lock = threading.Lock()  # the in-memory state; never held for a system call
        self._io = threading.Lock()  # the disk work; taken before _lock
        # --- under _lock
        self._segments: list[_Segment] = []  # never empty after __init__: [-1] is active
        # Records not yet on disk: (segment, its records' bytes); appends extend _tail.
        self._pending: list[tuple[int, bytearray]] = []
        self._tail = bytearray()
        self._tail_segment = -1  # the segment _tail belongs to; -1: start a new entry
        self._pending_bytes = 0
        self.needs_write = False
        """True when so much waits in memory (or to be deleted) that the caller of
        ``append`` should call :meth:`write_pending` rather than wait for ``sync``."""
        self._doomed: list[Path] = []  # segment files to delete
        self._names: dict[str, bytes] = {}
        self._total = 0  # bytes of all segments, pending included
        self.failed = False
        self.errors = 0
        self.dropped_readings = 0
        # --- under _io
        self._fd: int | None = None  # the segment file being written
        self._fd_segment = -1
        self._fd_written = 0  # bytes of that file handed to the OS
        self._logs = RateLimitedLog(_WARN_EVERY)
        directory.mkdir(parents=True, exist_ok=True)
        self._checkpoint = self._read_checkpoint()
        self._stored_checkpoint = self._checkpoint  # under _io: what the file says
        self.recovery = self._recover()
        self._total = sum(seg.size for seg in self._segments)
        self._last_position = max(self._checkpoint, self._recovered_end)
        # A new segment after everything on disk and after the checkpoint (whose own
        # segment's file may never have been written), so new positions are always
        # beyond what the checkpoint says is written.
        newest = self._segments[-1].index if self._segments else 0
        index = max(newest, split_position(self._checkpoint)[0]) + 1
        self._segments.append(_Segment(index, self._segment_path(index), 0, 0))
        with self._io:
            self._write_out()  # opens its file now; e.g. disk full: start failed

    # --- state -------------------------------------------------------------------

    @property
    def checkpoint_position(self) -> int:
        """Everything ending at or before this position is acknowledged by the store."""
        return self._checkpoint

    @property
    def last_position(self) -> int:
        """End of the newest record (or the checkpoint when nothing is newer)."""
        return self._last_position

    @property
    def size_bytes(self) -> int:
        """Bytes held by the spool (on disk plus not yet synced)."""
        return self._total

    @property
    def segments(self) -> int:
        """Number of segment files (the active one counts before it holds data)."""
        return len(self._segments)


    # --- recovery ----------------------------------------------------------------

    def _read_checkpoint(self) -> int:
        path = self.directory / "checkpoint"
        try:
            text = path.read_text(encoding="ascii").split()
            segment, offset = int(text[0]), int(text[1])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            logger.warning(
                "Spool checkpoint %s is unreadable; replaying every segment (writes are "
                "idempotent, so nothing is duplicated)", path,
            )
            return 0
        return make_position(segment, offset)

    def _recover(self) -> SpoolRecovery:
        cp_segment, cp_offset = split_position(self._checkpoint)
        records = readings = truncated = truncated_bytes = 0
        self._recovered_end = 0
        for path in sorted(self.directory.glob("*.seg")):
            try:
                index = int(path.stem)
            except ValueError:
                continue
            if index < cp_segment:
                path.unlink(missing_ok=True)
                continue
            data = path.read_bytes()
            scan = scan_segment(data)
            damaged = scan.corrupt_regions + (1 if scan.valid_end < len(data) else 0)
            lost = scan.corrupt_bytes + len(data) - scan.valid_end
            if scan.corrupt_regions:
                scan = self._rewrite_without_damage(path, index, data, scan)
                cp_segment, cp_offset = split_position(self._checkpoint)
            elif scan.valid_end < len(data):
                # A torn tail: cut it off so later reads see only complete records.
                os.truncate(path, scan.valid_end)
            if damaged:
                truncated += damaged
                truncated_bytes += lost
                logger.warning(
                    "Spool segment %s: %d damaged record(s), %d bytes, removed (torn or "
                    "corrupt, found by checksum); %d complete records kept and will be "
                    "replayed", path.name, damaged, lost, len(scan.records),
                )
            unwritten = [
                r for r in scan.records if index > cp_segment or r.end > cp_offset
            ]
            count = sum(r.count for r in unwritten)
            records += len(unwritten)
            readings += count
            if scan.records:
                self._recovered_end = make_position(index, scan.records[-1].end)
            self._segments.append(_Segment(index, path, scan.valid_end, count, scan.valid_end))
        recovery = SpoolRecovery(len(self._segments), records, readings, truncated,
                                 truncated_bytes)
        if readings:
            logger.info(
                "Spool %s holds %d unwritten readings in %d records (%d segments); "
                "replaying them to the store", self.directory, readings, records,
                len(self._segments),
            )
        return recovery

    def _rewrite_without_damage(self, path: Path, index: int, data: bytes, scan: _Scan) -> _Scan:
        """Copy the valid records of a segment with damage in the middle to a clean
        file (temp + rename), moving the checkpoint offset along if it points into it."""
        kept: list[_Scanned] = []
        parts: list[bytes] = []
        new_offset = 0
        cp_segment, cp_offset = split_position(self._checkpoint)
        new_cp = 0
        for rec in scan.records:
            parts.append(data[rec.start : rec.end])
            start = new_offset
            new_offset += rec.end - rec.start
            kept.append(_Scanned(start, new_offset, rec.count))
            if index == cp_segment and rec.end <= cp_offset:
                new_cp = new_offset
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(parts))
        os.replace(tmp, path)
        if index == cp_segment:
            self._checkpoint = make_position(index, new_cp)
        return _Scan(kept, scan.corrupt_regions, scan.corrupt_bytes, new_offset)

    # --- appending (memory only) --------------------------------------------------

    def _segment_path(self, index: int) -> Path:
        return self.directory / f"{index:010d}.seg"

    def append(self, readings: Sequence[Reading]) -> int | None:
        """Add one record; its end position, or None if the spool cannot take it now.

        Only memory is touched: the record reaches the disk with the next
        :meth:`write_pending` or :meth:`sync`.
        """
        with self._lock:
            if self.failed:
                return None
            record = encode_record(readings, self._names)
            active = self._segments[-1]
            if active.size and active.size + len(record) > self.segment_bytes:
                # The next segment; its file is made when its first record is written.
                active = _Segment(active.index + 1, self._segment_path(active.index + 1), 0, 0)
                self._segments.append(active)
            if self._tail_segment != active.index:
                self._tail = bytearray()
                self._tail_segment = active.index
                self._pending.append((active.index, self._tail))
            self._tail += record
            size = len(record)
            self._pending_bytes += size
            active.size += size
            self._total += size
            active.readings += len(readings)
            position: int = active.index << _OFFSET_BITS | active.size
            self._last_position = position
            if self._pending_bytes > _MAX_PENDING_BYTES:
                self.needs_write = True
            if self._total > self.max_bytes:
                self._enforce_bound()
            return position

    def _enforce_bound(self) -> None:
        """Drop the oldest segments while the spool is over ``max_bytes`` (``_lock``
        held; their files are deleted by the next disk work)."""
        dropped = 0
        while self._total > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            self._total -= oldest.size
            dropped += oldest.readings
            self._doomed.append(oldest.path)
            self.needs_write = True
            self._checkpoint = max(self._checkpoint, make_position(oldest.index, oldest.size))
        if dropped:
            self.dropped_readings += dropped
            self._logs.log(
                logger, logging.WARNING, "full",
                "Spool %s is full (TPS_SPOOL_MAX_BYTES=%d): dropped the oldest %d "
                "unwritten readings (%d in total)",
                self.directory, self.max_bytes, dropped, self.dropped_readings,
            )

    # --- the disk work (under _io) ------------------------------------------------------

    def write_pending(self) -> bool:
        """Hand the records waiting in memory to the OS and delete dropped segments.
        False if the spool is failed (the records stay in memory for the next try)."""
        with self._io:
            return self._write_out()

    def sync(self) -> bool:
        """Write pending records and fsync them (group commit). False if failed."""
        with self._io:
            if not self._write_out():
                return False
            if self._fd is None:
                return True
            try:
                fd = os.dup(self._fd)
            except OSError as exc:
                self._count_error("fsync", exc)
                return True
        try:
            # fsync a duplicate outside _io, so reads and writes are not held up by the
            # disk; the next write may roll and close the original meanwhile.
            os.fsync(fd)
        except OSError as exc:
            self._count_error("fsync", exc)
        finally:
            os.close(fd)
        return True

    def _write_out(self) -> bool:
        """(``_io`` held) Write every pending record in order; False if failed."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._tail_segment = -1
            self._pending_bytes = 0
            self.needs_write = False
            active = self._segments[-1].index
        self._delete_doomed()
        done = 0
        try:
            for segment, data in pending:
                with self._lock:
                    dropped = segment < self._segments[0].index  # by the size bound
                if not dropped:
                    self._write_segment(segment, data)
                done += 1
            if self._fd is None:
                self._switch_to(active)  # e.g. after a failed start: retry the open
        except OSError as exc:
            unwritten = pending[done:]
            with self._lock:
                self._pending[:0] = unwritten
                self._pending_bytes += sum(len(data) for _, data in unwritten)
            self._fail(exc)
            return False
        self._recovered()
        return True

    def _write_segment(self, segment: int, data: bytearray) -> None:
        """(``_io`` held) Append whole records to a segment's file; OSError leaves the
        file ending on a record boundary."""
        self._switch_to(segment)
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        except OSError:
            # Cut a partial record off; everything not written is retried later.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._fd_written)
            raise
        finally:
            view.release()
        self._fd_written += len(data)
        with self._lock:
            for seg in reversed(self._segments):
                if seg.index == segment:
                    seg.on_disk = self._fd_written
                    break

    def _switch_to(self, segment: int) -> None:
        """(``_io`` held) Make ``segment``'s file the one written, finishing the last
        (write, fsync, close) when the segment changes."""
        if self._fd is not None and self._fd_segment == segment:
            return
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._count_error("fsync", exc)
            os.close(self._fd)
            self._fd = None
        fd = os.open(self._segment_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o644)
        self._fd = fd
        self._fd_segment = segment
        self._fd_written = os.fstat(fd).st_size

    def _delete_doomed(self) -> None:
        """(``_io`` held) Delete the files of segments dropped from the spool."""
        with self._lock:
            doomed, self._doomed = self._doomed, []
        for path in doomed:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                self._count_error("delete", exc)

    def _recovered(self) -> None:
        with self._lock:
            was_failed, self.failed = self.failed, False
        if was_failed:
            logger.warning(
                "Spool %s is writable again; new readings are spooled to disk again",
                self.directory,
            )

    def _fail(self, exc: OSError) -> None:
        with self._lock:
            self.errors += 1
            newly, self.failed = not self.failed, True
        if newly:
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            logger.error(
                "Spool write to %s failed (%s): new readings are kept in memory only; "
                "retrying every sync until the spool can be written again",
                self.directory, reason,
            )

    def _count_error(self, what: str, exc: OSError) -> None:
        """Count an I/O error that does not fail the spool (``_lock`` not held)."""
        with self._lock:
            self.errors += 1
            errors = self.errors
        self._logs.log(logger, logging.ERROR, what,
                       "Spool %s in %s failed: %s (%d spool errors so far; retried on the "
                       "next write)", what, self.directory, exc, errors)

    # --- reading and checkpointing ----------------------------------------------

    def read(self, after: int, max_readings: int) -> list[tuple[list[Reading], int]]:
        """Records ending after position ``after``, oldest first, up to about
        ``max_readings`` readings (at least one record when there is one).

        Returns (readings, end position) per record. Only records already handed to
        the OS are read (pending ones are written first unless the spool is failed).
        The files are read holding no lock.
        """
        self.write_pending()
        with self._lock:
            segments = [(seg.index, seg.path, seg.on_disk) for seg in self._segments]
        out: list[tuple[list[Reading], int]] = []
        budget = max_readings
        after_segment, after_offset = split_position(after)
        for index, path, size in segments:
            if index < after_segment:
                continue
            offset = after_offset if index == after_segment else 0
            if offset >= size:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # dropped by the size bound meanwhile
            try:
                budget = self._read_segment(fd, index, offset, size, budget, out)
            finally:
                os.close(fd)
            if budget <= 0:
                break
        return out

    def _read_segment(
        self, fd: int, index: int, offset: int, size: int, budget: int,
        out: list[tuple[list[Reading], int]],
    ) -> int:
        """Append records of one segment from ``offset`` to ``out``; returns the budget
        left. Damage was removed when the spool opened, so an invalid record here means
        the file changed under us: it is reported and the rest of the segment skipped."""
        chunk = _READ_CHUNK
        while offset < size and budget > 0:
            data = os.pread(fd, min(size - offset, chunk), offset)
            if not data:
                return budget
            view = memoryview(data)
            pos = 0
            while pos < len(data) and budget > 0:
                if pos + _HEADER.size > len(data):
                    break
                magic, length, _ = _HEADER.unpack_from(view, pos)
                end = pos + _HEADER.size + length
                if magic == MAGIC and length <= MAX_RECORD_BYTES and end > len(data) \
                        and offset + end <= size:
                    break  # the record continues past this chunk
                valid_end = _valid_record_at(view, pos)
                if valid_end is None:
                    self._count_error(
                        "read", OSError(f"invalid record in {index:010d}.seg at {offset + pos}")
                    )
                    return budget
                readings = decode_payload(view[pos + _HEADER.size : valid_end])
                out.append((readings, make_position(index, offset + valid_end)))
                budget -= len(readings)
                pos = valid_end
            if pos == 0:
                chunk = max(chunk, _HEADER.size + length)  # one record bigger than a chunk
            offset += pos
        return budget

    def checkpoint(self, position: int) -> None:
        """Record that everything up to ``position`` is in the store; delete segments
        wholly behind it. The file is replaced atomically (temp + rename); it is not
        fsynced because a checkpoint that lags only causes an idempotent replay."""
        with self._lock:
            if position <= self._checkpoint:
                return
            self._checkpoint = position
            segment, offset = split_position(position)
            while len(self._segments) > 1 and (
                self._segments[0].index < segment
                or (self._segments[0].index == segment and self._segments[0].size <= offset)
            ):
                gone = self._segments.pop(0)
                self._total -= gone.size
                self._doomed.append(gone.path)
            for seg in self._segments:
                if seg.index == segment and offset >= seg.size:
                    seg.readings = 0
        with self._io:
            self._delete_doomed()
            self._store_checkpoint()

    def _store_checkpoint(self) -> None:
        """(``_io`` held) Write the newest checkpoint to its file."""
        with self._lock:
            position = self._checkpoint
        if position == self._stored_checkpoint:
            return
        segment, offset = split_position(position)
        tmp = self.directory / "checkpoint.tmp"
        try:
            tmp.write_text(f"{segment} {offset}\n", encoding="ascii")
            os.replace(tmp, self.directory / "checkpoint")
        except OSError as exc:
            self._count_error("checkpoint write", exc)
            return
        self._stored_checkpoint = position

    def close(self) -> None:
        """Sync and close the segment file being written. Idempotent."""
        self.sync()
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
