from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.observe.metrics import Metrics
from isthmus.transport.spool import AsyncSpool, Spool, SpoolError
from isthmus.transport.spool.format import HEADER_SIZE, SAMPLE_BYTES, decode, encode, parse_header


def make(seq: int, n: int = 3) -> Batch:
    """A batch whose content is a function of ``seq``, so the reader can check it."""
    return Batch.of(
        np.arange(n) + seq, np.arange(n, dtype=np.int64) + seq * 1000, seq * 0.5, seq % 7
    )


def same(a: Batch, b: Batch) -> bool:
    return (
        np.array_equal(a.tag_id, b.tag_id)
        and np.array_equal(a.ts, b.ts)
        and np.array_equal(a.value, b.value)
        and np.array_equal(a.quality, b.quality)
    )


def record_size(n: int) -> int:
    return HEADER_SIZE + n * SAMPLE_BYTES


def test_format_round_trip_and_compression() -> None:
    b = make(5, 100)
    for compress in (False, True):
        bufs, total = encode(b, 9, 123, compress)
        raw = bytearray(b"".join(bufs))
        assert len(raw) == total
        head = parse_header(raw)
        assert head is not None and head.seq == 9 and head.written_ns == 123
        back = decode(head, raw[HEADER_SIZE:])
        assert same(back, b) and back.historical
        assert back.tag_id.dtype == np.int32 and back.quality.dtype == np.uint32
    raw = bytearray(b"".join(encode(b, 1, 0)[0]))
    raw[10] ^= 1
    assert parse_header(raw) is None


def test_round_trip_in_order_marked_historical(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync="never") as s:
        seqs = [s.append(make(i, i % 5)) for i in range(1, 51)]
        assert seqs == list(range(1, 51))
        got = s.read(0, max_records=1000)
        assert [q for q, _ in got] == seqs
        assert all(b.historical and same(b, make(q, q % 5)) for q, b in got)
        # paging
        assert [q for q, _ in s.read(10, max_records=5)] == [11, 12, 13, 14, 15]
        assert s.read(50) == []


def test_ack_and_restart_resume_after_last_ack(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    for i in range(1, 21):
        s.append(make(i))
    s.ack(7)
    s.close()
    s = Spool(tmp_path)
    assert s.acked_seq == 7
    got = s.read(s.acked_seq)
    assert [q for q, _ in got] == list(range(8, 21))
    assert s.append(make(21)) == 21  # seqs continue, never reused
    s.ack(21)
    s.close()
    s = Spool(tmp_path)
    assert s.read(s.acked_seq) == [] and s.next_seq == 22
    s.close()


def test_ack_beyond_end_is_clamped_and_seq_survives_empty_spool(tmp_path: Path) -> None:
    with Spool(tmp_path, segment_bytes=200) as s:
        for i in range(1, 6):
            s.append(make(i))
        s.ack(1000)
        assert s.acked_seq == 5
    with Spool(tmp_path) as s:
        assert s.append(make(6)) == 6


def test_rotation_and_deletion_of_acked_segments(tmp_path: Path) -> None:
    size = record_size(3)
    with Spool(tmp_path, segment_bytes=size * 4, fsync="never") as s:
        for i in range(1, 21):
            s.append(make(i))
        segs = sorted(p.name for p in tmp_path.glob("*.seg"))
        assert segs[:2] == ["spool-000000000001.seg", "spool-000000000005.seg"]
        assert len(segs) == 5 and s.stats().segments == 5
        s.ack(9)  # segments 1-4 and 5-8 fully acked, 9-12 partly
        assert sorted(p.name for p in tmp_path.glob("*.seg"))[0] == "spool-000000000009.seg"
        assert s.stats().unacked_records == 11
        assert [q for q, _ in s.read(9)] == list(range(10, 21))


def test_byte_cap_drops_oldest_exactly_and_raises_one_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[int] = []
    metrics = Metrics()
    size = record_size(3)
    s = Spool(
        tmp_path,
        max_bytes=size * 10,
        segment_bytes=size * 2,
        fsync="never",
        metrics=metrics,
        on_overflow=events.append,
    )
    with caplog.at_level(logging.WARNING, logger="isthmus.transport.spool"):
        for i in range(1, 31):
            s.append(make(i))
    st = s.stats()
    assert st.bytes <= size * 10
    got = [q for q, _ in s.read(0)]
    assert got == list(range(got[0], 31))  # the newest survive, contiguous
    dropped = got[0] - 1
    assert st.dropped_records == dropped == metrics.counters["spool.dropped_records"]
    assert st.dropped_samples == dropped * 3 == metrics.counters["spool.dropped_samples"]
    assert events == [6] and st.overflow_events == 1 and st.overflowing
    assert len([r for r in caplog.records if "byte cap" in r.message]) == 1
    # The episode ends when the backlog is drained; a new overflow is a new event.
    s.ack(30)
    assert not s.stats().overflowing
    for i in range(31, 61):
        s.append(make(i))
    assert s.stats().overflow_events == 2 and len(events) == 2
    s.close()


def test_drop_counts_only_unacked_records_of_a_partly_acked_segment(tmp_path: Path) -> None:
    size = record_size(3)
    s = Spool(tmp_path, max_bytes=size * 8, segment_bytes=size * 4, fsync="never")
    for i in range(1, 9):
        s.append(make(i))
    s.ack(2)  # segment 1-4 partly acked: 3 and 4 are unacked
    s.append(make(9))  # over the cap: segment 1-4 goes
    st = s.stats()
    assert st.dropped_records == 2 and st.dropped_samples == 6
    assert [q for q, _ in s.read(2)] == list(range(5, 10))
    s.close()


def test_age_cap_drops_old_segments_with_exact_counts(tmp_path: Path) -> None:
    clock = ManualClock()
    events: list[int] = []
    s = Spool(
        tmp_path,
        max_age_s=100,
        segment_span_s=10,
        clock=clock,
        fsync="never",
        on_overflow=events.append,
    )
    for i in range(1, 13):  # 4 records per 10 s segment
        s.append(make(i, 2))
        clock.advance(2.5)
    clock.advance(100 - 30 + 7.6)  # segment 1 (t=0..7.5) is now older than 100 s
    s.expire()
    st = s.stats()
    assert (st.dropped_records, st.dropped_samples) == (4, 8)
    assert events == [8]
    assert [q for q, _ in s.read(0)] == list(range(5, 13))
    clock.advance(1000)  # everything expires, including the active segment
    s.expire()
    st = s.stats()
    assert (st.dropped_records, st.dropped_samples, st.overflow_events) == (12, 24, 1)
    assert s.read(0) == [] and s.append(make(13)) == 13
    s.close()
    with Spool(tmp_path, clock=clock) as s:
        assert [q for q, _ in s.read(0)] == [13]


def test_age_cap_applies_on_open(tmp_path: Path) -> None:
    clock = ManualClock()
    with Spool(tmp_path, max_age_s=60, clock=clock) as s:
        s.append(make(1))
    clock.advance(61)
    with Spool(tmp_path, max_age_s=60, clock=clock) as s:
        assert s.read(0) == [] and s.stats().dropped_records == 1


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_fsync_modes(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    clock = ManualClock()
    s = Spool(tmp_path, fsync=mode, clock=clock, fsync_interval_s=1.0)  # type: ignore[arg-type]
    for i in range(1, 11):
        s.append(make(i))
        clock.advance(0.25)
    expected = {"always": 10, "batch": 2, "never": 0}[mode]
    assert len(calls) == expected
    s.sync()
    assert len(calls) == expected + (mode == "never" or mode == "batch")
    s.close()
    with Spool(tmp_path, clock=clock) as s2:
        assert len(s2.read(0)) == 10


def test_second_process_lock_and_closed_errors(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    with pytest.raises(SpoolError):
        Spool(tmp_path)
    s.close()
    with pytest.raises(SpoolError):
        s.append(make(1))
    with pytest.raises(ValueError):
        Spool(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


def test_compressed_spool(tmp_path: Path) -> None:
    with Spool(tmp_path, compress=True) as s:
        for i in range(1, 6):
            s.append(make(i, 500))
        assert s.stats().bytes < 5 * record_size(500)
    with Spool(tmp_path) as s:
        assert all(same(b, make(q, 500)) for q, b in s.read(0))


def test_async_wrapper(tmp_path: Path) -> None:
    async def main() -> list[int]:
        a = AsyncSpool(Spool(tmp_path))
        for i in range(1, 4):
            await a.append(make(i))
        got = await a.read(1)
        await a.ack(3)
        st = await a.stats()
        await a.close()
        assert st.acked_seq == 3
        return [q for q, _ in got]

    assert asyncio.run(main()) == [2, 3]
