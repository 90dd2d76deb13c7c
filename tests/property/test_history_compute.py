"""The vectorised history computations equal the obvious per-sample definitions."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.historian.compute import grid, resample, spread, time_weighted
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality

G, B = int(Quality.GOOD), int(Quality.BAD_COMMUNICATION_ERROR)

series = st.lists(
    st.tuples(
        st.integers(0, 1000),
        st.floats(-1e3, 1e3, allow_nan=False),
        st.sampled_from([G, G, G, B]),
    ),
    max_size=30,
    unique_by=lambda r: r[0],
).map(lambda rows: sorted(rows))


def batch(rows: list[tuple[int, float, int]]) -> Batch:
    return Batch.of(
        [0] * len(rows), [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    )


def in_force(rows: list[tuple[int, float, int]], t: int) -> tuple[int, float, int] | None:
    before = [r for r in rows if r[0] <= t]
    return before[-1] if before else None


@settings(max_examples=300, deadline=None)
@given(series, st.integers(1, 100))
def test_previous_is_the_value_in_force(rows: list[tuple[int, float, int]], step: int) -> None:
    at = grid(0, 1100, step)
    values, quality = resample(batch(rows), None, at, "previous")
    for t, v, q in zip(at.tolist(), values.tolist(), quality.tolist(), strict=True):
        r = in_force(rows, t)
        if r is None:
            assert q == Quality.BAD_NO_DATA and math.isnan(v)
        elif r[2] == B:
            assert q == B and math.isnan(v)
        else:
            assert q == G and v == r[1]


@settings(max_examples=300, deadline=None)
@given(series, st.integers(1, 100))
def test_linear_lies_between_its_neighbours(rows: list[tuple[int, float, int]], step: int) -> None:
    at = grid(0, 1100, step)
    values, quality = resample(batch(rows), None, at, "linear")
    for t, v, q in zip(at.tolist(), values.tolist(), quality.tolist(), strict=True):
        prev = in_force(rows, t)
        after = [r for r in rows if r[0] > t]
        if prev is None:
            assert q == Quality.BAD_NO_DATA
            continue
        if prev[0] == t or not after:
            expected = prev[1]
        else:
            nxt = after[0]
            expected = prev[1] + (nxt[1] - prev[1]) * (t - prev[0]) / (nxt[0] - prev[0])
        bad = prev[2] == B or (prev[0] != t and after and after[0][2] == B)
        if bad:
            assert math.isnan(v) and (q & 0x80000000)
        else:
            assert math.isclose(v, expected, rel_tol=1e-9, abs_tol=1e-9)
            if prev[0] != t and not after:
                assert q == Quality.UNCERTAIN_LAST_USABLE_VALUE


@settings(max_examples=300, deadline=None)
@given(series, st.integers(1, 400), st.integers(0, 300), st.integers(301, 1100))
def test_time_weighted_average_equals_integration(
    rows: list[tuple[int, float, int]], bucket: int, start: int, end: int
) -> None:
    starts, avg, covered = time_weighted(batch(rows), None, start, end, bucket)
    # Reference: walk every nanosecond-unit of time (units are small integers here).
    sums: dict[int, float] = {}
    cover: dict[int, int] = {}
    for t in range(start, end):
        r = in_force(rows, t)
        if r is None or r[2] == B:
            continue
        b = (t // bucket) * bucket
        sums[b] = sums.get(b, 0.0) + r[1]
        cover[b] = cover.get(b, 0) + 1
    assert starts.tolist() == sorted(cover)
    for b, a, c in zip(starts.tolist(), avg.tolist(), covered.tolist(), strict=True):
        assert c == cover[b]
        assert math.isclose(a, sums[b] / cover[b], rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=200, deadline=None)
@given(series, st.integers(1, 400))
def test_spread_is_the_population_std_of_good_samples(
    rows: list[tuple[int, float, int]], bucket: int
) -> None:
    starts, std = spread(batch(rows), bucket)
    groups: dict[int, list[float]] = {}
    for t, v, q in rows:
        if q == G:
            groups.setdefault((t // bucket) * bucket, []).append(v)
    assert starts.tolist() == sorted(groups)
    for b, s in zip(starts.tolist(), std.tolist(), strict=True):
        assert math.isclose(s, float(np.std(groups[b])), rel_tol=1e-9, abs_tol=1e-6)


def test_prior_sample_holds_into_the_range() -> None:
    prior = Batch.of([0], [-50], [7.0], G)
    values, quality = resample(Batch.empty(), prior, np.array([0, 10]), "previous")
    assert values.tolist() == [7.0, 7.0] and quality.tolist() == [G, G]
    starts, avg, covered = time_weighted(batch([(5, 9.0, G)]), prior, 0, 10, 10)
    assert starts.tolist() == [0] and covered.tolist() == [10]
    assert avg.tolist() == [(7.0 * 5 + 9.0 * 5) / 10]
