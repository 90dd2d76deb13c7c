"""History computations that need the shape of the signal, not just its samples.

Pure NumPy over one tag's raw samples (oldest first), plus the last sample before the
range (``prior``) so that the value in force at the start is known.  A sample's value
holds until the next sample (step, as recorded with a deadband); Bad samples hold no
value: their span is excluded.

* :func:`resample` — values at fixed instants, ``previous`` (the value in force) or
  ``linear`` (between the samples around each instant);
* :func:`time_weighted` — per bucket, the time-weighted average and the covered time;
* :func:`spread` — per bucket, the standard deviation of the non-Bad samples.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.quality import Quality

Method = Literal["previous", "linear"]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]

_BAD = np.uint32(0x80000000)


def _with_prior(samples: Batch, prior: Batch | None) -> Batch:
    if prior is None or len(prior) == 0:
        return samples
    return Batch.concat([prior.select(np.array([len(prior) - 1])), samples])


def grid(start_ns: int, end_ns: int, interval_ns: int) -> I64:
    """Instants ``start, start + interval, ... < end``."""
    if interval_ns <= 0:
        raise ValueError("the interval must be positive")
    return np.arange(start_ns, end_ns, interval_ns, dtype=np.int64)


def resample(samples: Batch, prior: Batch | None, at: I64, method: Method) -> tuple[F64, U32]:
    """The tag's value at each instant of ``at``, with the quality it has there.

    ``previous``: the last sample at or before the instant.  ``linear``: the straight
    line between that sample and the next one; after the last sample the value holds and
    is ``Uncertain_LastUsableValue``.  Before any sample: NaN, ``Bad_NoData``.  A Bad
    neighbour makes the result Bad (NaN).
    """
    s = _with_prior(samples, prior)
    n = len(at)
    values = np.full(n, np.nan)
    quality = np.full(n, Quality.BAD_NO_DATA, dtype=np.uint32)
    if len(s) == 0 or n == 0:
        return values, quality
    prev = np.searchsorted(s.ts, at, side="right") - 1
    has = prev >= 0
    p = prev[has]
    values[has] = s.value[p]
    quality[has] = s.quality[p]
    if method == "linear":
        nxt = p + 1
        inside = nxt < len(s)
        exact = s.ts[p] == at[has]
        idx = np.flatnonzero(has)
        interp = inside & ~exact
        pi, ni = p[interp], nxt[interp]
        t0, t1 = s.ts[pi], s.ts[ni]
        frac = (at[idx[interp]] - t0) / (t1 - t0)
        values[idx[interp]] = s.value[pi] + (s.value[ni] - s.value[pi]) * frac
        q_next = s.quality[ni]
        worse = (q_next & _BAD) != 0
        quality[idx[interp][worse]] = q_next[worse]
        after_last = ~inside & ~exact
        good_tail = idx[after_last][(quality[idx[after_last]] & _BAD) == 0]
        quality[good_tail] = Quality.UNCERTAIN_LAST_USABLE_VALUE
    values[(quality & _BAD) != 0] = np.nan
    return values, quality


def time_weighted(
    samples: Batch, prior: Batch | None, start_ns: int, end_ns: int, bucket_ns: int
) -> tuple[I64, F64, I64]:
    """Per bucket (aligned on multiples of ``bucket_ns``): bucket start, time-weighted
    average of the value in force, and the nanoseconds it covers (Bad spans and the time
    before the first sample are not covered).  Buckets with no coverage are omitted."""
    if bucket_ns <= 0:
        raise ValueError("the bucket must be positive")
    s = _with_prior(samples, prior)
    first = (start_ns // bucket_ns) * bucket_ns
    edges = np.arange(first, end_ns + bucket_ns, bucket_ns, dtype=np.int64)
    edges = np.clip(edges, start_ns, end_ns)
    inside = s.ts[(s.ts > start_ns) & (s.ts < end_ns)]
    points = np.unique(np.concatenate([edges, inside]))
    if len(s) == 0 or len(points) < 2:
        return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
    seg_start, seg_end = points[:-1], points[1:]
    held = np.searchsorted(s.ts, seg_start, side="right") - 1
    valid = held >= 0
    valid[valid] = (s.quality[held[valid]] & _BAD) == 0
    duration = (seg_end - seg_start).astype(np.int64)
    bucket = (seg_start - first) // bucket_ns
    n_buckets = len(edges) - 1
    weight = np.where(valid, duration, 0)
    value = np.where(valid, s.value[np.maximum(held, 0)], 0.0)
    covered = np.bincount(bucket, weights=weight, minlength=n_buckets)[:n_buckets]
    integral = np.bincount(bucket, weights=value * weight, minlength=n_buckets)[:n_buckets]
    keep = covered > 0
    starts = first + np.arange(n_buckets, dtype=np.int64) * bucket_ns
    return starts[keep], integral[keep] / covered[keep], covered[keep].astype(np.int64)


def spread(samples: Batch, bucket_ns: int) -> tuple[I64, F64]:
    """Per non-empty bucket: its start and the population standard deviation of the
    non-Bad samples in it."""
    good = (samples.quality & _BAD) == 0
    ts, v = samples.ts[good], samples.value[good]
    if len(ts) == 0:
        return np.empty(0, np.int64), np.empty(0)
    b = (ts // bucket_ns) * bucket_ns
    starts, inverse, counts = np.unique(b, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=v) / counts
    var = np.bincount(inverse, weights=(v - mean[inverse]) ** 2) / counts
    return starts.astype(np.int64), np.sqrt(var)
