from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from isthmus.model.batch import Batch
from isthmus.transport.spool import Spool
from isthmus.transport.spool.format import HEADER_SIZE, SAMPLE_BYTES


def make(seq: int) -> Batch:
    n = seq % 4 + 1
    return Batch.of(np.arange(n) + seq, np.arange(n, dtype=np.int64) + seq * 1000, seq * 0.5, 0)


def size(seq: int) -> int:
    return HEADER_SIZE + (seq % 4 + 1) * SAMPLE_BYTES


def offset(seq: int) -> int:
    """Where record ``seq`` starts in a single-segment spool holding 1, 2, ..."""
    return sum(size(i) for i in range(1, seq))


def fill(path: Path, n: int) -> Path:
    with Spool(path) as s:
        for i in range(1, n + 1):
            s.append(make(i))
    (seg,) = path.glob("*.seg")
    return seg


def delivered(s: Spool) -> list[int]:
    got = s.read(0, 10_000)
    for q, b in got:
        assert np.array_equal(b.ts, make(q).ts) and np.array_equal(b.value, make(q).value)
    return [q for q, _ in got]


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


LAST = 6
CUTS = [0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, size(LAST) - 1]


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_tail_is_cut_back_to_the_last_good_record(tmp_path: Path, cut: int) -> None:
    seg = fill(tmp_path, LAST)
    start = offset(LAST)
    with seg.open("r+b") as f:
        f.truncate(start + cut)
    with Spool(tmp_path) as s:
        st = s.stats()
        assert delivered(s) == list(range(1, LAST))
        assert st.truncated_bytes == cut and st.quarantined_regions == 0
        assert seg.stat().st_size == start
        assert not (tmp_path / "quarantine").exists()
        assert s.append(make(LAST)) == LAST  # the torn record was never durable
        assert delivered(s) == list(range(1, LAST + 1))


def test_zero_filled_tail_is_a_torn_write_not_damage(tmp_path: Path) -> None:
    seg = fill(tmp_path, 3)
    with seg.open("ab") as f:
        f.write(b"\0" * 100)
    with Spool(tmp_path) as s:
        assert delivered(s) == [1, 2, 3]
        assert s.stats().truncated_bytes == 100 and s.stats().quarantined_regions == 0


@pytest.mark.parametrize(
    "where",
    [0, 5, 17, 37, HEADER_SIZE, HEADER_SIZE + 3, -1],
    ids=["magic", "flags", "seq", "hcrc", "payload0", "payload3", "payload_last"],
)
def test_bit_flip_in_a_middle_record_is_quarantined(
    tmp_path: Path, where: int, caplog: pytest.LogCaptureFixture
) -> None:
    seg = fill(tmp_path, 8)
    victim = 4
    at = offset(victim) + (where if where >= 0 else size(victim) - 1)
    original = seg.read_bytes()[offset(victim) : offset(victim + 1)]
    flip(seg, at)
    with caplog.at_level(logging.WARNING, logger="isthmus.transport.spool"):
        s = Spool(tmp_path)
    st = s.stats()
    assert delivered(s) == [1, 2, 3, 5, 6, 7, 8]
    assert st.quarantined_regions == 1 and st.quarantined_bytes == size(victim)
    assert s.metrics.counters["spool.quarantined_regions"] == 1
    (q,) = (tmp_path / "quarantine").iterdir()
    damaged = q.read_bytes()
    assert len(damaged) == len(original) and damaged != original  # kept for forensics
    assert len([r for r in caplog.records if "damaged" in r.message]) == 1
    assert s.append(make(9)) == 9
    s.close()
    with Spool(tmp_path) as s:  # repaired for good: nothing more to quarantine
        assert delivered(s) == [1, 2, 3, 5, 6, 7, 8, 9]
        assert s.stats().quarantined_regions == 0


def test_garbage_in_the_middle_is_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    seg = fill(tmp_path, 6)
    data = seg.read_bytes()
    cut = offset(3)
    junk = b"ISPL" + bytes(range(256)) * 3  # even a fake magic inside
    seg.write_bytes(data[:cut] + junk + data[cut:])
    with Spool(tmp_path) as s:
        assert delivered(s) == [1, 2, 3, 4, 5, 6]
        assert s.stats().quarantined_bytes == len(junk)


def test_two_damaged_records_and_a_torn_tail(tmp_path: Path) -> None:
    seg = fill(tmp_path, 10)
    flip(seg, offset(2) + HEADER_SIZE + 1)
    flip(seg, offset(7) + 20)
    with seg.open("r+b") as f:
        f.truncate(offset(10) + 7)
    with Spool(tmp_path) as s:
        st = s.stats()
        assert delivered(s) == [1, 3, 4, 5, 6, 8, 9]
        assert (st.quarantined_regions, st.truncated_bytes) == (2, 7)


def test_damage_found_on_read_is_quarantined(tmp_path: Path) -> None:
    s = Spool(tmp_path, segment_bytes=offset(5), fsync="never")
    for i in range(1, 13):
        s.append(make(i))
    first = sorted(tmp_path.glob("*.seg"))[0]
    flip(first, offset(2) + HEADER_SIZE)  # bit rot after open
    assert delivered(s) == [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert s.stats().quarantined_regions == 1
    # the active segment too
    active = sorted(tmp_path.glob("*.seg"))[-1]
    victim = int(active.stem.split("-")[1])
    flip(active, HEADER_SIZE + 2)  # the payload of the active segment's first record
    expected = [i for i in range(1, 13) if i not in (2, victim)]
    assert delivered(s) == expected and s.stats().quarantined_regions == 2
    assert s.append(make(13)) == 13  # appends continue on the repaired active segment
    assert delivered(s) == [*expected, 13]
    s.close()


def test_damaged_ack_file_replays_from_the_start(tmp_path: Path) -> None:
    with Spool(tmp_path) as s:
        for i in range(1, 4):
            s.append(make(i))
        s.ack(2)
    (tmp_path / "ack").write_bytes(b"\x01\x02garbage")
    with Spool(tmp_path) as s:
        assert s.acked_seq == 0 and delivered(s) == [1, 2, 3]  # at-least-once, no loss
