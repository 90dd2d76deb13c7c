"""The durable spool: segment files on disk, an atomically persisted ack position.

All file I/O of the spool lives in this class; the record format is pure
(:mod:`isthmus.transport.spool.format`).  The class is synchronous and thread-safe (one
lock): call it from a worker thread, or through :class:`~isthmus.transport.spool.AsyncSpool`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from isthmus.model.batch import Batch
from isthmus.model.clock import Clock, SystemClock
from isthmus.model.errors import IsthmusError
from isthmus.observe.metrics import Metrics
from isthmus.transport.spool.format import (
    HEADER_SIZE,
    MAGIC,
    SEGMENT_RE,
    Check,
    Header,
    check_payload,
    decode,
    encode,
    parse_header,
    segment_name,
)

log = logging.getLogger("isthmus.transport.spool")

FsyncMode = Literal["always", "batch", "never"]
ACK_FILE = "ack"
LOCK_FILE = "LOCK"
QUARANTINE_DIR = "quarantine"
_ACK = struct.Struct("<QI")
_CHUNK = 1 << 20


class SpoolError(IsthmusError):
    """The spool cannot be opened or written (locked by another process, disk error)."""


@dataclass(slots=True)
class Segment:
    """What the spool keeps in memory per segment file: a few integers, no record index."""

    path: Path
    first_seq: int  # the first record's seq, or the seq the next record will get if empty
    last_seq: int = 0  # 0 while empty
    records: int = 0
    samples: int = 0
    bytes: int = 0
    first_ns: int = 0  # written_ns of the first record
    last_ns: int = 0  # written_ns of the last record


@dataclass(frozen=True, slots=True)
class SpoolStats:
    bytes: int
    segments: int
    records: int
    """Records on disk, acked or not."""
    unacked_records: int
    acked_seq: int
    next_seq: int
    oldest_age_s: float
    """Age of the oldest record on disk (0 when empty)."""
    dropped_records: int
    dropped_samples: int
    overflow_events: int
    overflowing: bool
    quarantined_regions: int
    quarantined_bytes: int
    truncated_bytes: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_at(fd: int, off: int, size: int) -> tuple[Check, Header | None, bytearray | None]:
    """Read and verify the record at ``off`` of a file of ``size`` bytes."""
    if size - off < HEADER_SIZE:
        return Check.TRUNCATED, None, None
    head = parse_header(os.pread(fd, HEADER_SIZE, off))
    if head is None:
        return Check.BAD, None, None
    if off + head.record_len > size:
        return Check.TRUNCATED, head, None
    payload = bytearray(head.payload_len)
    got = os.preadv(fd, [payload], off + HEADER_SIZE)
    if got != head.payload_len or not check_payload(head, payload):
        return Check.BAD, head, None
    return Check.OK, head, payload


def _resync(fd: int, start: int, size: int, after_seq: int) -> tuple[int, Check]:
    """The offset of the next valid record after ``start`` (scan for the magic + a valid
    header + payload, with a seq above ``after_seq``), or ``size`` if none."""
    pos = start
    while pos < size:
        chunk = os.pread(fd, _CHUNK + len(MAGIC) - 1, pos)
        i = chunk.find(MAGIC)
        while i >= 0:
            cand = pos + i
            check, head, _ = _record_at(fd, cand, size)
            if head is not None and head.seq > after_seq and check is not Check.BAD:
                return cand, check
            i = chunk.find(MAGIC, i + 1)
        pos += _CHUNK
    return size, Check.TRUNCATED


class Spool:
    """An append-only, segmented, checksummed on-disk queue of batches.

    ``append`` returns the record's sequence number (1, 2, ...); with ``fsync="always"``
    the record is on stable storage when it returns.  ``read(after_seq)`` returns the
    following records in append order, marked ``historical``.  ``ack(seq)`` persists the
    consumer's position: a restart replays everything after it (at-least-once; the
    historian de-duplicates by (tag, ts)).  The spool is bounded by ``max_bytes`` and
    ``max_age_s``; at a cap it drops whole oldest segments, counts exactly what it dropped
    and raises one overflow event per episode.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 1 << 30,
        max_age_s: float = 7 * 86400.0,
        fsync: FsyncMode = "always",
        clock: Clock | None = None,
        *,
        segment_bytes: int | None = None,
        segment_span_s: float | None = None,
        fsync_interval_s: float = 0.2,
        compress: bool = False,
        metrics: Metrics | None = None,
        on_overflow: Callable[[int], None] | None = None,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be always, batch or never, not {fsync!r}")
        if max_bytes <= 0 or max_age_s <= 0:
            raise ValueError("max_bytes and max_age_s must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync: FsyncMode = fsync
        self.clock: Clock = clock or SystemClock()
        # At most 1/8 of the byte cap per segment, so a cap drop loses at most ~1/8.
        self.segment_bytes = segment_bytes or max(4096, min(64 << 20, max_bytes // 8))
        self.segment_span_ns = int((segment_span_s or max_age_s / 16) * 1e9)
        self.fsync_interval_s = fsync_interval_s
        self.compress = compress
        self.metrics = metrics or Metrics()
        self.on_overflow = on_overflow
        self._lock = threading.RLock()
        self._segments: list[Segment] = []
        self._fd = -1
        self._ack = 0
        self._next_seq = 1
        self._last_sync = 0.0
        self._dirty = False
        self._overflowing = False
        self._cursor: tuple[Path, int, int] | None = None  # (segment, last seq read, offset)
        self._closed = False
        self.dropped_records = 0
        self.dropped_samples = 0
        self.overflow_events = 0
        self.quarantined_regions = 0
        self.quarantined_bytes = 0
        self.truncated_bytes = 0
        self._open()

    # ------------------------------------------------------------------ open / recover

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.directory} is in use by another process") from exc
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()
        self._ack = self._read_ack()
        names = sorted(
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := SEGMENT_RE.match(p.name)) is not None
        )
        damaged = 0
        last_seq = 0
        for first, path in names:
            seg, regions = self._scan(path, first, last_seq)
            damaged += regions
            if seg.records:
                last_seq = seg.last_seq
            self._segments.append(seg)
        if damaged:
            log.warning(
                "spool %s: %d damaged region(s) moved to %s/ (%d bytes); the rest is delivered",
                self.directory,
                damaged,
                QUARANTINE_DIR,
                self.quarantined_bytes,
            )
        if self._segments:
            tail = self._segments[-1]
            self._next_seq = max(self._ack + 1, tail.first_seq, last_seq + 1)
        else:
            self._next_seq = self._ack + 1
        # Remove fully acked and empty older segments; keep the newest as the active one.
        keep = []
        for seg in self._segments[:-1]:
            if seg.records == 0 or seg.last_seq <= self._ack:
                seg.path.unlink()
            else:
                keep.append(seg)
        if self._segments:
            keep.append(self._segments[-1])
        self._segments = keep
        if not self._segments or (
            self._segments[-1].records == 0 and self._segments[-1].first_seq != self._next_seq
        ):
            if self._segments:
                self._segments.pop().path.unlink()
            self._new_segment()
        self._open_active()
        self._last_sync = self.clock.monotonic()
        self._enforce_caps()
        self._publish_gauges()

    def _open_active(self) -> None:
        seg = self._segments[-1]
        existed = seg.path.exists()
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not existed and self.fsync != "never":
            _fsync_dir(self.directory)

    def _read_ack(self) -> int:
        path = self.directory / ACK_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(raw) == _ACK.size:
            seq, crc = _ACK.unpack(raw)
            if zlib.crc32(raw[:8]) == crc:
                return int(seq)
        # Replaying from the start is safe (at-least-once); losing data is not.
        log.warning("spool %s: ack file is damaged; replaying from the start", self.directory)
        self.metrics.inc("spool.ack_file_damaged")
        return 0

    def _write_ack(self, seq: int) -> None:
        raw = struct.pack("<Q", seq)
        raw += struct.pack("<I", zlib.crc32(raw))
        tmp = self.directory / (ACK_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, raw)
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / ACK_FILE)
        if self.fsync != "never":
            _fsync_dir(self.directory)

    def _scan(self, path: Path, name_seq: int, after_seq: int) -> tuple[Segment, int]:
        """Verify every record of a segment file; truncate a torn tail, quarantine damaged
        regions (rewriting the file without them).  Returns the metadata and the number of
        quarantined regions."""
        seg = Segment(path, name_seq)
        bad: list[tuple[int, int]] = []
        truncate_at = -1
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            off = 0
            prev = after_seq
            while off < size:
                check, head, _ = _record_at(fd, off, size)
                if check is Check.OK and head is not None and head.seq > prev:
                    self._count(seg, head)
                    prev = head.seq
                    off += head.record_len
                    continue
                if check is Check.TRUNCATED:
                    truncate_at = off
                    break
                nxt, nxt_check = _resync(fd, off + 1, size, prev)
                if nxt == size and self._all_zero(fd, off, size):
                    truncate_at = off  # a zero-filled tail: a torn write, not damage
                    break
                bad.append((off, nxt))
                if nxt_check is Check.TRUNCATED and nxt < size:
                    truncate_at = nxt
                    break
                off = nxt
            if bad:
                self._quarantine(fd, path, bad)
        finally:
            os.close(fd)
        end = truncate_at if truncate_at >= 0 else size
        if truncate_at >= 0:
            self.truncated_bytes += size - truncate_at
            self.metrics.inc("spool.truncated_bytes", size - truncate_at)
        if bad:
            self._rewrite(path, bad, end)
        elif truncate_at >= 0:
            os.truncate(path, truncate_at)
            if self.fsync != "never":
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        seg.bytes = end - sum(b - a for a, b in bad)
        return seg, len(bad)

    @staticmethod
    def _count(seg: Segment, head: Header) -> None:
        if seg.records == 0:
            seg.first_seq = head.seq
            seg.first_ns = head.written_ns
        seg.last_seq = head.seq
        seg.last_ns = head.written_ns
        seg.records += 1
        seg.samples += head.n_samples

    @staticmethod
    def _all_zero(fd: int, start: int, end: int) -> bool:
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
            if chunk.count(0) != len(chunk):
                return False
            pos += len(chunk)
        return True

    def _quarantine(self, fd: int, path: Path, bad: list[tuple[int, int]]) -> None:
        qdir = self.directory / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        stamp = self.clock.now_ns()
        for start, end in bad:
            target = qdir / f"{path.name}.{start:012d}.{stamp}.bad"
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                pos = start
                while pos < end:
                    chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
                    os.write(out, chunk)
                    pos += len(chunk)
                os.fsync(out)
            finally:
                os.close(out)
            self.quarantined_regions += 1
            self.quarantined_bytes += end - start
            self.metrics.inc("spool.quarantined_regions")
            self.metrics.inc("spool.quarantined_bytes", end - start)
        _fsync_dir(qdir)

    def _rewrite(self, path: Path, bad: list[tuple[int, int]], end: int) -> None:
        """Copy the good ranges of ``path`` (up to ``end``) to a new file, atomically."""
        tmp = path.with_name(path.name + ".tmp")
        src = os.open(path, os.O_RDONLY)
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pos = 0
            for start, stop in [*bad, (end, end)]:
                while pos < min(start, end):
                    chunk = os.pread(src, min(_CHUNK, min(start, end) - pos), pos)
                    os.write(dst, chunk)
                    pos += len(chunk)
                pos = max(pos, stop)
            os.fsync(dst)
        finally:
            os.close(src)
            os.close(dst)
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    # ------------------------------------------------------------------ write

    def append(self, batch: Batch) -> int:
        """Append one batch; returns its sequence number.  Durable on return when
        ``fsync="always"``; within ``fsync_interval_s`` (or at :meth:`sync`) for "batch"."""
        with self._lock:
            self._check_open()
            now = self.clock.now_ns()
            seq = self._next_seq
            bufs, total = encode(batch, seq, now, self.compress)
            if total > self.max_bytes:
                raise ValueError(f"a record of {total} bytes exceeds the spool cap")
            seg = self._segments[-1]
            if seg.records and (
                seg.bytes + total > self.segment_bytes or now - seg.first_ns >= self.segment_span_ns
            ):
                self._rotate()
                seg = self._segments[-1]
            self._write(bufs, total, seg.bytes)
            self._next_seq = seq + 1
            if seg.records == 0:
                seg.first_seq = seq
                seg.first_ns = now
            seg.last_seq = seq
            seg.last_ns = now
            seg.records += 1
            seg.samples += len(batch)
            seg.bytes += total
            self._dirty = True
            if self.fsync == "always" or (
                self.fsync == "batch"
                and self.clock.monotonic() - self._last_sync >= self.fsync_interval_s
            ):
                self._sync_fd()
            self.metrics.inc("spool.appended_records")
            self.metrics.inc("spool.appended_samples", len(batch))
            self._enforce_caps()
            self._publish_gauges()
            return seq

    def _write(self, bufs: list[bytes | memoryview], total: int, old_size: int) -> None:
        try:
            written = os.writev(self._fd, bufs)
            if written < total:
                rest = b"".join(bufs)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        except BaseException:
            # Never leave a torn record in front of the next append.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, old_size)
            raise

    def _sync_fd(self) -> None:
        if self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        self._last_sync = self.clock.monotonic()

    def sync(self) -> None:
        """Make every appended record durable now (for ``fsync="batch"``/``"never"``)."""
        with self._lock:
            self._check_open()
            self._sync_fd()

    def _rotate(self) -> None:
        if self.fsync != "never":
            self._sync_fd()
        os.close(self._fd)
        self._new_segment()
        self._open_active()

    def _new_segment(self) -> None:
        seq = self._next_seq
        self._segments.append(Segment(self.directory / segment_name(seq), seq))

    # ------------------------------------------------------------------ caps

    def expire(self) -> None:
        """Apply the age cap now (it is also applied on every append and on open)."""
        with self._lock:
            self._check_open()
            self._enforce_caps()
            self._publish_gauges()

    def _enforce_caps(self) -> None:
        cutoff = self.clock.now_ns() - int(self.max_age_s * 1e9)
        while True:
            total = sum(s.bytes for s in self._segments)
            oldest = self._segments[0]
            over_bytes = total > self.max_bytes
            over_age = oldest.records > 0 and oldest.last_ns < cutoff
            if not (over_bytes or over_age):
                return
            if len(self._segments) == 1:
                if oldest.records == 0:
                    return
                self._rotate()
            self._drop(self._segments.pop(0), "byte cap" if over_bytes else "age cap")

    def _drop(self, seg: Segment, reason: str) -> None:
        if seg.last_seq <= self._ack:
            records, samples = 0, 0
        elif seg.first_seq > self._ack:
            records, samples = seg.records, seg.samples
        else:
            records, samples = self._count_after(seg, self._ack)
        seg.path.unlink()
        if self.fsync != "never":
            _fsync_dir(self.directory)
        self._cursor = None
        if records == 0:
            return
        self.dropped_records += records
        self.dropped_samples += samples
        self.metrics.inc("spool.dropped_records", records)
        self.metrics.inc("spool.dropped_samples", samples)
        if not self._overflowing:
            self._overflowing = True
            self.overflow_events += 1
            self.metrics.inc("spool.overflow_events")
            log.warning(
                "spool %s reached its %s: dropping the oldest data (%d samples so far); "
                "further drops in this episode are counted in spool.dropped_samples",
                self.directory,
                reason,
                samples,
            )
            if self.on_overflow is not None:
                self.on_overflow(samples)

    def _count_after(self, seg: Segment, after: int) -> tuple[int, int]:
        records = samples = 0
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            off = 0
            while off < seg.bytes:
                head = parse_header(os.pread(fd, HEADER_SIZE, off))
                if head is None:
                    break
                if head.seq > after:
                    records += 1
                    samples += head.n_samples
                off += head.record_len
        finally:
            os.close(fd)
        return records, samples

    # ------------------------------------------------------------------ read / ack

    def read(self, after_seq: int, max_records: int = 1000) -> list[tuple[int, Batch]]:
        """Up to ``max_records`` records with seq > ``after_seq``, in append order, as
        ``historical`` batches.  Records dropped by a cap or quarantined are skipped."""
        with self._lock:
            self._check_open()
            out: list[tuple[int, Batch]] = []
            for _attempt in range(16):
                got, damaged = self._read_once(after_seq, max_records - len(out))
                out += got
                if got:
                    after_seq = got[-1][0]
                if damaged is None:
                    break
                self._repair(damaged)
            return out

    def _read_once(
        self, after_seq: int, max_records: int
    ) -> tuple[list[tuple[int, Batch]], Segment | None]:
        out: list[tuple[int, Batch]] = []
        for seg in self._segments:
            if len(out) >= max_records:
                break
            if seg.records == 0 or seg.last_seq <= after_seq:
                continue
            off = 0
            cur = self._cursor
            if cur is not None and cur[0] == seg.path and cur[1] <= after_seq:
                off = cur[2]
            fd = os.open(seg.path, os.O_RDONLY)
            try:
                while off < seg.bytes and len(out) < max_records:
                    head = parse_header(os.pread(fd, HEADER_SIZE, off))
                    if head is None or off + head.record_len > seg.bytes:
                        return out, seg
                    if head.seq <= after_seq:
                        off += head.record_len
                        continue
                    payload = bytearray(head.payload_len)
                    os.preadv(fd, [payload], off + HEADER_SIZE)
                    if not check_payload(head, payload):
                        return out, seg
                    out.append((head.seq, decode(head, payload)))
                    off += head.record_len
                    after_seq = head.seq
                    self._cursor = (seg.path, head.seq, off)
            finally:
                os.close(fd)
        self.metrics.inc("spool.replayed_records", len(out))
        return out, None

    def _repair(self, seg: Segment) -> None:
        """Damage found while reading (bit rot after open): rescan the segment."""
        active = seg is self._segments[-1]
        if active:
            os.close(self._fd)
        idx = self._segments.index(seg)
        prev = self._segments[idx - 1].last_seq if idx else 0
        fixed, regions = self._scan(seg.path, seg.first_seq, prev)
        if fixed.records == 0:
            fixed.first_seq = seg.first_seq if not active else self._next_seq
        self._segments[idx] = fixed
        self._cursor = None
        if regions:
            log.warning(
                "spool %s: %d damaged region(s) found on read moved to %s/",
                seg.path,
                regions,
                QUARANTINE_DIR,
            )
        if active:
            self._open_active()

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is delivered: persist the position atomically and
        delete fully acknowledged segments."""
        with self._lock:
            self._check_open()
            seq = min(seq, self._next_seq - 1)
            if seq <= self._ack:
                return
            self._ack = seq
            self._write_ack(seq)
            while len(self._segments) > 1 and self._segments[0].last_seq <= seq:
                self._segments.pop(0).path.unlink()
            cursor = self._cursor
            if cursor is not None and all(s.path != cursor[0] for s in self._segments):
                self._cursor = None
            if self._overflowing:
                total = sum(s.bytes for s in self._segments)
                age = self._oldest_age_s()
                if total <= self.max_bytes // 2 and age <= self.max_age_s / 2:
                    self._overflowing = False
                    log.info("spool %s: overflow episode over", self.directory)
            self._publish_gauges()

    # ------------------------------------------------------------------ stats / close

    @property
    def acked_seq(self) -> int:
        return self._ack

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def _oldest_age_s(self) -> float:
        for seg in self._segments:
            if seg.records:
                return max(0.0, (self.clock.now_ns() - seg.first_ns) / 1e9)
        return 0.0

    def _unacked(self) -> int:
        n = 0
        for seg in self._segments:
            if seg.records == 0 or seg.last_seq <= self._ack:
                continue
            n += seg.records if seg.first_seq > self._ack else seg.last_seq - self._ack
        return n

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                bytes=sum(s.bytes for s in self._segments),
                segments=len(self._segments),
                records=sum(s.records for s in self._segments),
                unacked_records=self._unacked(),
                acked_seq=self._ack,
                next_seq=self._next_seq,
                oldest_age_s=self._oldest_age_s(),
                dropped_records=self.dropped_records,
                dropped_samples=self.dropped_samples,
                overflow_events=self.overflow_events,
                overflowing=self._overflowing,
                quarantined_regions=self.quarantined_regions,
                quarantined_bytes=self.quarantined_bytes,
                truncated_bytes=self.truncated_bytes,
            )

    def _publish_gauges(self) -> None:
        self.metrics.set("spool.bytes", float(sum(s.bytes for s in self._segments)))
        self.metrics.set("spool.unacked_records", float(self._unacked()))

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.directory} is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.fsync != "never":
                    self._sync_fd()
            finally:
                os.close(self._fd)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
