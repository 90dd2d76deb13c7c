from __future__ import annotations

from pathlib import Path

import numpy as np

from isthmus.historian.common import (
    dedupe_first,
    floor_bucket,
    is_strictly_ordered,
    resolve_path,
)
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig


def test_resolve_path() -> None:
    data = Path("/data")
    assert resolve_path(StorageConfig(path="h.duckdb"), data) == Path("/data/h.duckdb")
    assert resolve_path(StorageConfig(path="/abs/h.db"), data) == Path("/abs/h.db")
    assert resolve_path(StorageConfig(path=":memory:"), data) is None


def test_is_strictly_ordered() -> None:
    assert is_strictly_ordered(Batch.empty())
    assert is_strictly_ordered(Batch.of([1], [5], [0.0], 0))
    assert is_strictly_ordered(Batch.of([1, 2, 1, 2], [5, 5, 6, 6], 0.0, 0))  # by (ts, tag)
    assert is_strictly_ordered(Batch.of([1, 1, 2, 2], [5, 6, 5, 6], 0.0, 0))  # by (tag, ts)
    assert not is_strictly_ordered(Batch.of([1, 1], [5, 5], 0.0, 0))
    assert not is_strictly_ordered(Batch.of([2, 1, 1], [5, 6, 5], 0.0, 0))


def test_dedupe_first_keeps_first_occurrence() -> None:
    b = Batch.of([2, 1, 2, 1, 1], [5, 5, 5, 6, 5], [1.0, 2.0, 3.0, 4.0, 5.0], [0, 0, 1, 0, 1])
    d = dedupe_first(b)
    assert list(zip(d.tag_id.tolist(), d.ts.tolist(), d.value.tolist(), strict=True)) == [
        (1, 5, 2.0),
        (1, 6, 4.0),
        (2, 5, 1.0),
    ]
    ordered = Batch.of([1, 2], [5, 5], [1.0, 2.0], 0)
    assert dedupe_first(ordered) is ordered


def test_floor_bucket_is_epoch_aligned() -> None:
    ts = np.array([-61, -60, -1, 0, 59, 60, 61], dtype=np.int64)
    assert floor_bucket(ts, 60).tolist() == [-120, -60, -60, 0, 0, 60, 60]
