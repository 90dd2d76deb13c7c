"""The Store interface every historian backend implements.

Stores are synchronous (embedded engines are); the pipeline calls them from a worker
thread.  Writes are idempotent on ``(tag_id, ts)``: writing the same sample twice keeps
one row (the first one written wins).  Timestamps are int64 UTC nanoseconds.
Aggregates ignore Bad samples (their value is meaningless) and count the rest.

String samples (rows of a batch with ``Batch.text``) are stored too, in a table of
their own (see :mod:`isthmus.historian.text`): ``raw``, ``before`` and ``last`` return
them with their text, ``count`` and ``purge_before`` include them, and ``buckets`` over
a range holding strings raises :class:`~isthmus.historian.text.NotNumericError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

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
        """avg/min/max/count per bucket aligned on multiples of ``bucket_ns``;
        ``NotNumericError`` if the tag has string samples in the range."""
        ...

    def count(self) -> int: ...

    def purge_before(self, ts_ns: int) -> int:
        """Delete samples older than ``ts_ns`` (retention); returns rows deleted."""
        ...


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one :meth:`Maintainable.maintain` run did."""

    samples_rolled_up: int = 0
    """Raw samples aggregated into newly closed 1-minute buckets (late ones: below)."""
    rows_rolled_up: dict[str, int] = field(default_factory=dict)
    """Rollup rows written per tier (``1m``, ``1h``), late buckets recomputed included."""
    rows_deleted: dict[str, int] = field(default_factory=dict)
    """Rows deleted by retention per tier (``raw``, ``1m``, ``1h``)."""
    late_buckets: int = 0
    """1-minute buckets recomputed because samples arrived after they were rolled up."""
    seconds: float = 0.0

    def summary(self) -> str:
        up = " ".join(f"{k}={v}" for k, v in sorted(self.rows_rolled_up.items())) or "-"
        gone = " ".join(f"{k}={v}" for k, v in sorted(self.rows_deleted.items())) or "-"
        return (
            f"rolled up {self.samples_rolled_up} samples (rows {up}, late buckets "
            f"{self.late_buckets}); deleted {gone}; {self.seconds * 1e3:.0f} ms"
        )


@runtime_checkable
class Maintainable(Protocol):
    """Optional store capability: retention per tag class and, where the store has them,
    downsampling tiers.  The running system calls :meth:`maintain` periodically
    (:mod:`isthmus.historian.maintenance`)."""

    def assign_retention_classes(self, classes: Mapping[int, str]) -> None:
        """Tag id → retention class name (tags not given keep theirs; unknown: default)."""
        ...

    def maintain(self, now_ns: int) -> MaintenanceReport:
        """Roll up closed buckets, then delete what each class no longer keeps.
        Idempotent; safe to interrupt (each step commits with its watermark)."""
        ...


StoreFactory = Callable[[StorageConfig, Path], Store]
