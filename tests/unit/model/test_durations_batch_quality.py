from __future__ import annotations

import numpy as np
import pytest

from isthmus.model.batch import Batch
from isthmus.model.durations import format_ns, parse_duration_ns, parse_time_ns
from isthmus.model.quality import Quality, is_bad, is_good, quality_name, severity

NOW = 1_700_000_000_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("500ms", 500_000_000),
        ("10s", 10**10),
        ("5m", 300 * 10**9),
        ("1h", 3600 * 10**9),
        ("30d", 30 * 86400 * 10**9),
        (2, 2 * 10**9),
        (0.25, 250_000_000),
        ("1.5s", 1_500_000_000),
    ],
)
def test_durations(text: str | float, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("bad", ["", "ten", "5 parsecs", "-1s", -3, True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ns(bad)  # type: ignore[arg-type]


def test_times() -> None:
    assert parse_time_ns("now", NOW) == NOW
    assert parse_time_ns("-10m", NOW) == NOW - 600 * 10**9
    assert parse_time_ns("2023-11-14T22:13:20Z", NOW) == NOW
    assert parse_time_ns("2023-11-14T22:13:20", NOW) == NOW
    assert format_ns(NOW) == "2023-11-14T22:13:20.000Z"
    with pytest.raises(ValueError, match="neither"):
        parse_time_ns("yesterday", NOW)


def test_batch_shapes_and_ops() -> None:
    b = Batch.of([2, 1, 2], [30, 10, 20], [3.0, 1.0, 2.0], 0)
    assert b.quality.dtype == np.uint32 and list(b.quality) == [0, 0, 0]
    s = b.sorted()
    assert list(s.tag_id) == [1, 2, 2] and list(s.ts) == [10, 20, 30]
    c = Batch.concat([b, Batch.empty(), b])
    assert len(c) == 6
    with pytest.raises(ValueError, match="differ in length"):
        Batch(np.zeros(2, np.int32), np.zeros(1, np.int64), np.zeros(2), np.zeros(2, np.uint32))


def test_quality_names_and_severity() -> None:
    assert quality_name(Quality.GOOD) == "Good"
    assert quality_name(Quality.BAD_COMMUNICATION_ERROR) == "Bad_CommunicationError"
    assert quality_name(Quality.BAD_COMMUNICATION_ERROR | 0x3) == "Bad_CommunicationError"
    assert quality_name(0x80AB0000) == "Bad (0x80AB0000)"
    assert severity(Quality.UNCERTAIN_LAST_USABLE_VALUE) == "Uncertain"
    codes = np.array([0, 0x40940000, 0x80050000], dtype=np.uint32)
    assert list(is_good(codes)) == [True, False, False]
    assert list(is_bad(codes)) == [False, False, True]
