"""buckets() of every backend equals a NumPy reference on random data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.historian.common import dedupe_first, floor_bucket
from isthmus.historian.registry import default_stores
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

BAD_BIT = np.uint32(0x80000000)
QUALITIES = [0, 0x00960000, 0x40000000, 0x40900000, 0x80000000, 0x808C0000, 0xC0000000]


@st.composite
def samples(draw: st.DrawFn) -> Batch:
    n = draw(st.integers(min_value=0, max_value=200))
    base = draw(st.integers(min_value=-(10**12), max_value=2 * 10**18))
    span = draw(st.sampled_from([10, 1_000, 10**9, 10**12]))
    ts = draw(st.lists(st.integers(0, span), min_size=n, max_size=n))
    tags = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    values = draw(
        st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=n, max_size=n)
    )
    quality = draw(st.lists(st.sampled_from(QUALITIES), min_size=n, max_size=n))
    return Batch.of(tags, np.array(ts, dtype=np.int64) + base, values, quality)


def reference(
    batch: Batch, tag: int, start: int, end: int, width: int
) -> tuple[list[int], list[int], np.ndarray, np.ndarray, np.ndarray]:
    b = dedupe_first(batch)
    keep = (b.tag_id == tag) & (b.ts >= start) & (b.ts < end) & ((b.quality & BAD_BIT) == 0)
    ts, values = b.ts[keep], b.value[keep]
    bucket = floor_bucket(ts, width)
    keys = np.unique(bucket)
    avg = np.array([values[bucket == k].mean() for k in keys])
    lo = np.array([values[bucket == k].min() for k in keys])
    hi = np.array([values[bucket == k].max() for k in keys])
    count = [int((bucket == k).sum()) for k in keys]
    return keys.tolist(), count, avg, lo, hi


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=samples(),
    width=st.sampled_from([1, 7, 1_000, 10**9, 60 * 10**9, 3_600 * 10**9]),
    window=st.tuples(st.integers(-(10**15), 10**15), st.integers(0, 10**16)),
    split=st.integers(0, 200),
)
def test_buckets_match_numpy_reference(
    tmp_path: Path, batch: Batch, width: int, window: tuple[int, int], split: int
) -> None:
    lo_ts = int(batch.ts.min()) if len(batch) else 0
    start, end = lo_ts + window[0], lo_ts + window[0] + window[1]
    for name, make in default_stores().items():
        if name == "postgres":
            continue  # needs a server: tests/integration/historian runs it on a throw-away one
        store = make(StorageConfig(type=name, path=":memory:"), tmp_path)
        store.open()
        try:
            # two writes (the second overlapping the first) must equal one
            store.write(batch.select(np.arange(min(split, len(batch)))))
            store.write(batch)
            for tag in (1, 2):
                keys, count, avg, lo, hi = reference(batch, tag, start, end, width)
                agg = store.buckets(tag, start, end, width)
                assert agg.bucket_ns.tolist() == keys, name
                assert agg.count.tolist() == count, name
                np.testing.assert_allclose(agg.avg, avg, rtol=1e-9, atol=1e-6, err_msg=name)
                np.testing.assert_array_equal(agg.min, lo, err_msg=name)
                np.testing.assert_array_equal(agg.max, hi, err_msg=name)
        finally:
            store.close()
