"""Helpers shared by the historian backends (pure: no I/O)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import StoreError

MEMORY = ":memory:"
"""The special storage path for an in-memory store (nothing is written to disk)."""

BAD_THRESHOLD = 0x80000000
"""Qualities at or above this have the Bad severity bit set (OPC UA status codes)."""


def resolve_path(config: StorageConfig, data_dir: Path) -> Path | None:
    """The database file (relative paths are under ``data_dir``), or None for in-memory."""
    if config.path == MEMORY:
        return None
    path = Path(config.path)
    if not path.is_absolute():
        path = data_dir / path
    return path


def is_strictly_ordered(batch: Batch) -> bool:
    """True if rows are strictly increasing by (tag_id, ts) or by (ts, tag_id).

    Either order proves the batch holds no duplicate ``(tag_id, ts)``; checking it is
    O(n) and far cheaper than sorting, and connectors usually emit one of the two.
    """
    if len(batch) < 2:
        return True
    d_ts = np.diff(batch.ts)
    d_tag = np.diff(batch.tag_id)
    if bool(np.all((d_ts > 0) | ((d_ts == 0) & (d_tag > 0)))):
        return True
    return bool(np.all((d_tag > 0) | ((d_tag == 0) & (d_ts > 0))))


def dedupe_first(batch: Batch) -> Batch:
    """The batch without repeated ``(tag_id, ts)``: the first occurrence wins.

    Rows of an already duplicate-free batch keep their order (the batch is returned as is);
    otherwise rows come back ordered by (tag_id, ts).
    """
    if is_strictly_ordered(batch):
        return batch
    order = np.lexsort((batch.ts, batch.tag_id))  # stable: equal keys keep input order
    tag = batch.tag_id[order]
    ts = batch.ts[order]
    keep = np.ones(len(order), dtype=np.bool_)
    keep[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
    return batch.select(order[keep])


def floor_bucket(ts: npt.NDArray[np.int64], bucket_ns: int) -> npt.NDArray[np.int64]:
    """Start of the epoch-aligned bucket of each timestamp (floor, also before 1970)."""
    return ts - np.mod(ts, np.int64(bucket_ns))


def check_bucket(bucket_ns: int) -> None:
    if bucket_ns <= 0:
        raise ValueError(f"bucket_ns must be positive, got {bucket_ns}")


class StoreBusyError(StoreError):
    """The database file is held by another process (embedded engines allow one writer).

    The CLI catches it and queries the running server through its API instead.
    """


EMBEDDED_ENGINES = ("duckdb", "sqlite")


def is_embedded(storage: StorageConfig) -> bool:
    """A store whose data lives in a file of the data directory (one process at a time)."""
    return storage.type in EMBEDDED_ENGINES and storage.path != ":memory:"
