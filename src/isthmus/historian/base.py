"""The Store interface every historian backend implements.

Stores are synchronous (embedded engines are); the pipeline calls them from a worker
thread.  Writes are idempotent on ``(tag_id, ts)``: writing the same sample twice keeps
one row (the first one written wins).  Timestamps are int64 UTC nanoseconds.
Aggregates ignore Bad samples (their value is meaningless) and count the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig


@dataclass(frozen=True, slots=True)
class TagMeta:
    path: str
    data_type: str
    unit: str


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Time-bucketed aggregates of one tag: one row per non-empty bucket."""

    bucket_ns: npt.NDArray[np.int64]
    avg: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.bucket_ns)


class Store(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...

    def register_tags(self, tags: Sequence[TagMeta]) -> dict[str, int]:
        """Stable ids for tag paths: known paths keep their id across restarts."""
        ...

    def tags(self) -> dict[str, int]:
        """Every registered tag path with its id (read-only)."""
        ...

    def write(self, batch: Batch) -> int:
        """Store a batch; returns the number of new rows (duplicates are skipped)."""
        ...

    def raw(self, tag_id: int, start_ns: int, end_ns: int, limit: int = 100_000) -> Batch:
        """Samples with ``start_ns <= ts < end_ns``, oldest first."""
        ...

    def before(self, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
        """The newest sample with ``ts_ns - lookback_ns <= ts < ts_ns`` (0 or 1 row): the
        value in force when a range starts."""
        ...

    def last(self, tag_ids: Sequence[int]) -> Batch:
        """The newest sample of each tag that has one."""
        ...

    def buckets(self, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int) -> Aggregates:
        """avg/min/max/count per bucket aligned on multiples of ``bucket_ns``."""
        ...

    def count(self) -> int: ...

    def purge_before(self, ts_ns: int) -> int:
        """Delete samples older than ``ts_ns`` (retention); returns rows deleted."""
        ...


StoreFactory = Callable[[StorageConfig, Path], Store]
