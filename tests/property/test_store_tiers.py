"""The DuckDB downsampling tiers equal the bucketed raw samples they replace.

Random samples (several tags, Bad ones, duplicates, late arrivals) are written in two
parts with a maintenance run in between; the 1-minute and 1-hour rollups must equal a
NumPy reference over the raw samples (avg/min/max/count/first/last), and bucketed
queries must return the same answer before and after the raw samples are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.historian.base import Aggregates
from isthmus.historian.common import dedupe_first, floor_bucket
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.historian.duckdb.tiers import HOUR_NS, MINUTE_NS
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 10**9
DAY = 86_400 * S
BAD_BIT = np.uint32(0x80000000)
QUALITIES = [0, 0x00960000, 0x40000000, 0x40900000, 0x80000000, 0x808C0000]
TAGS = (1, 2, 3)


@st.composite
def history(draw: st.DrawFn) -> tuple[Batch, list[bool]]:
    n = draw(st.integers(min_value=1, max_value=300))
    base = draw(st.integers(min_value=-(10**15), max_value=2 * 10**18))
    span = draw(st.sampled_from([10 * S, 5 * 60 * S, 3 * HOUR_NS, 12 * HOUR_NS]))
    ts = draw(st.lists(st.integers(0, span), min_size=n, max_size=n))
    tags = draw(st.lists(st.sampled_from(TAGS), min_size=n, max_size=n))
    values = draw(
        st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=n, max_size=n)
    )
    quality = draw(st.lists(st.sampled_from(QUALITIES), min_size=n, max_size=n))
    late = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return Batch.of(tags, np.array(ts, dtype=np.int64) + base, values, quality), late


def reference(stored: Batch, tag: int, width: int) -> dict[str, np.ndarray]:
    keep = (stored.tag_id == tag) & ((stored.quality & BAD_BIT) == 0)
    order = np.argsort(stored.ts[keep], kind="stable")
    ts, values = stored.ts[keep][order], stored.value[keep][order]
    bucket = floor_bucket(ts, width)
    keys = np.unique(bucket)
    groups = [values[bucket == k] for k in keys]
    return {
        "bucket": keys,
        "count": np.array([len(g) for g in groups], dtype=np.int64),
        "avg": np.array([g.mean() for g in groups]),
        "min": np.array([g.min() for g in groups]),
        "max": np.array([g.max() for g in groups]),
        "first": np.array([g[0] for g in groups]),
        "last": np.array([g[-1] for g in groups]),
    }


def same(agg: Aggregates, other: Aggregates) -> None:
    assert agg.bucket_ns.tolist() == other.bucket_ns.tolist()
    assert agg.count.tolist() == other.count.tolist()
    np.testing.assert_allclose(agg.avg, other.avg, rtol=1e-9, atol=1e-6)
    np.testing.assert_array_equal(agg.min, other.min)
    np.testing.assert_array_equal(agg.max, other.max)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=history(), widths=st.sampled_from([MINUTE_NS, 5 * MINUTE_NS, HOUR_NS, 2 * HOUR_NS]))
def test_tiers_equal_bucketed_raw(
    tmp_path: Path, data: tuple[Batch, list[bool]], widths: int
) -> None:
    batch, late = data
    config = StorageConfig.model_validate(
        {"path": ":memory:", "retention": {"default": {"raw": "1d", "1m": "30d", "1h": "60d"}}}
    )
    store = DuckDBStore(config, tmp_path)
    store.open()
    try:
        lo, hi = int(batch.ts.min()), int(batch.ts.max())
        second_part = np.array(late, dtype=np.bool_)
        first = batch.select(np.flatnonzero(~second_part))
        second = batch.select(np.flatnonzero(second_part))
        store.write(first)
        # Roll up half the range: the second part's samples before it arrive late.
        store.maintain((lo + hi) // 2 + 2 * MINUTE_NS)
        store.write(second)
        store.write(first)  # replayed: duplicates change nothing
        stored = dedupe_first(Batch.concat([first, second]))
        end = hi + 2 * HOUR_NS
        store.maintain(end)  # everything rolled up, nothing older than 1 day yet
        start, stop = lo - DAY, hi + DAY
        before = {tag: store.buckets(tag, start, stop, widths) for tag in TAGS}
        raw_rows = {tag: len(store.raw(tag, start, stop, 10**6)) for tag in TAGS}
        for tier, width in (("1m", MINUTE_NS), ("1h", HOUR_NS)):
            for tag in TAGS:
                ref = reference(stored, tag, width)
                got = store.rollups(tag, start, stop, tier)
                assert got.bucket_ns.tolist() == ref["bucket"].tolist(), tier
                assert got.count.tolist() == ref["count"].tolist(), tier
                np.testing.assert_allclose(got.avg, ref["avg"], rtol=1e-9, atol=1e-6)
                for key in ("min", "max", "first", "last"):
                    np.testing.assert_array_equal(getattr(got, key), ref[key], err_msg=key)
        for tag in TAGS:  # the query from the tiers equals the reference over raw
            ref = reference(stored, tag, widths)
            assert before[tag].bucket_ns.tolist() == ref["bucket"].tolist()
            assert before[tag].count.tolist() == ref["count"].tolist()
            assert raw_rows[tag] == int((stored.tag_id == tag).sum())

        report = store.maintain(end + 2 * DAY)  # raw samples expire, rollups stay
        assert report.rows_deleted["raw"] == len(stored)
        assert store.count() == 0
        for tag in TAGS:
            same(store.buckets(tag, start, stop, widths), before[tag])
    finally:
        store.close()
