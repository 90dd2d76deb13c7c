"""History queries built on any :class:`~isthmus.historian.base.Store`: the raw samples
of a range plus the sample in force at its start, fed to :mod:`historian.compute`.

Synchronous (call from a worker thread in async code).  A range holding more than
``MAX_SAMPLES`` raw samples is refused with a ``ValueError`` rather than truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from isthmus.historian.base import Store
from isthmus.historian.compute import Method, grid, resample, spread, time_weighted
from isthmus.model.batch import Batch

MAX_SAMPLES = 5_000_000
PRIOR_LOOKBACK_NS = 86_400 * 10**9
"""How far before a range the value in force at its start is looked for (one day)."""


def load_range(store: Store, tag_id: int, start_ns: int, end_ns: int) -> tuple[Batch, Batch]:
    """The raw samples of ``[start, end)`` and the last one before ``start``."""
    samples = store.raw(tag_id, start_ns, end_ns, MAX_SAMPLES + 1)
    if len(samples) > MAX_SAMPLES:
        raise ValueError(
            f"the range holds more than {MAX_SAMPLES:,} samples: narrow it or use plain buckets"
        )
    return samples, store.before(tag_id, start_ns, PRIOR_LOOKBACK_NS)


@dataclass(frozen=True)
class ExtendedBuckets:
    """One row per bucket that has samples or a value in force."""

    bucket_ns: npt.NDArray[np.int64]
    avg: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    twa: npt.NDArray[np.float64]
    """Time-weighted average of the value in force (step: a value holds until the next)."""
    stddev: npt.NDArray[np.float64]
    """Population standard deviation of the bucket's non-Bad samples."""

    def __len__(self) -> int:
        return len(self.bucket_ns)


def extended_buckets(
    store: Store, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int
) -> ExtendedBuckets:
    samples, prior = load_range(store, tag_id, start_ns, end_ns)
    agg = store.buckets(tag_id, start_ns, end_ns, bucket_ns)
    tw_start, tw_avg, _ = time_weighted(samples, prior, start_ns, end_ns, bucket_ns)
    sd_start, sd = spread(samples, bucket_ns)
    keys = np.union1d(agg.bucket_ns, tw_start).astype(np.int64)

    def place(
        at: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        out = np.full(len(keys), np.nan)
        out[np.searchsorted(keys, at)] = values
        return out

    count = np.zeros(len(keys), dtype=np.int64)
    count[np.searchsorted(keys, agg.bucket_ns)] = agg.count
    return ExtendedBuckets(
        bucket_ns=keys,
        avg=place(agg.bucket_ns, np.asarray(agg.avg, dtype=np.float64)),
        min=place(agg.bucket_ns, np.asarray(agg.min, dtype=np.float64)),
        max=place(agg.bucket_ns, np.asarray(agg.max, dtype=np.float64)),
        count=count,
        twa=place(tw_start, tw_avg),
        stddev=place(sd_start, sd),
    )


def interpolated(
    store: Store, tag_id: int, start_ns: int, end_ns: int, interval_ns: int, method: Method
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint32]]:
    """Values at ``start, start + interval, ... < end``, ``previous`` or ``linear``."""
    at = grid(start_ns, end_ns, interval_ns)
    # Linear needs the first sample after the range end too, for the last instants.
    samples, prior = load_range(store, tag_id, start_ns, end_ns)
    if method == "linear":
        after = store.raw(tag_id, end_ns, end_ns + PRIOR_LOOKBACK_NS, 1)
        samples = Batch.concat([samples, after]) if len(after) else samples
    values, quality = resample(samples, prior, at, method)
    return at, values, quality
