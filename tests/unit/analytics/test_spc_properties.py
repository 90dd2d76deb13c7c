"""Properties of the SPC core (hypothesis).

- The rules depend only on where points lie relative to their limits: adding a constant to
  the data and to the limits changes no violation.  Values are multiples of 1/4 so the
  shifted arithmetic is exact and the property is tested, not floating-point rounding.
- Publishing new limits never changes the evaluation of a point already seen, nor any
  violation among those points.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from isthmus.analytics.spc.charts import (
    ChartKind,
    ChartSeries,
    LimitHistory,
    compute_limits,
    evaluate,
    subgroups_by_count,
)
from isthmus.analytics.spc.rules import NELSON, WESTERN_ELECTRIC, check

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
ALL_RULES = WESTERN_ELECTRIC + NELSON

quarters = st.integers(-60, 60).map(lambda i: i / 4)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(quarters, min_size=1, max_size=60),
    center=quarters,
    sigma=st.integers(1, 16).map(lambda i: i / 4),
    shift=st.integers(-10_000, 10_000),
)
def test_rules_are_invariant_to_a_constant_shift(
    values: list[float], center: float, sigma: float, shift: int
) -> None:
    v = np.array(values)
    n = v.size
    ts = T0 + np.arange(n, dtype=np.int64) * S

    def make(offset: float) -> ChartSeries:
        c = np.full(n, center + offset)
        return ChartSeries(
            "x",
            ts,
            v + offset,
            c,
            c - 3 * sigma,
            c + 3 * sigma,
            np.full(n, sigma),
            np.ones(n, dtype=np.int64),
        )

    assert check(make(0.0), ALL_RULES) == check(make(float(shift)), ALL_RULES)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(-50, 50), min_size=10, max_size=80),
    publishes=st.lists(
        st.tuples(st.integers(1, 20), st.integers(1, 10), st.floats(-20, 20)),
        min_size=1,
        max_size=5,
    ),
)
def test_new_limits_never_change_past_evaluations(
    values: list[float], publishes: list[tuple[int, int, float]]
) -> None:
    ts = T0 + np.arange(len(values), dtype=np.int64) * S
    sg = subgroups_by_count(ts, values, 1)
    base = compute_limits(ChartKind.I_MR, sg, effective_from_ns=0)
    history = LimitHistory(ChartKind.I_MR)
    now = last = T0 - S
    for advance, delay, center_shift in publishes:
        now += advance * S  # time passes; points up to `now` have been seen
        seen = sg.timestamps_ns <= now
        x0, mr0 = evaluate(sg, history)
        v0 = check(_prefix(x0, seen), ALL_RULES) + check(_prefix(mr0, seen), ALL_RULES)
        last = max(now, last) + delay * S
        history.publish(
            replace(base, effective_from_ns=last, center=base.center + center_shift), now
        )
        x1, mr1 = evaluate(sg, history)
        for a, b in ((x0, x1), (mr0, mr1)):
            for field in ("center", "lcl", "ucl", "sigma", "version"):
                np.testing.assert_array_equal(getattr(a, field)[seen], getattr(b, field)[seen])
        v1 = check(_prefix(x1, seen), ALL_RULES) + check(_prefix(mr1, seen), ALL_RULES)
        assert v0 == v1


def _prefix(s: ChartSeries, seen: NDArray[np.bool_]) -> ChartSeries:
    k = int(seen.sum())
    return ChartSeries(
        s.name,
        s.timestamps_ns[:k],
        s.value[:k],
        s.center[:k],
        s.lcl[:k],
        s.ucl[:k],
        s.sigma[:k],
        s.version[:k],
    )
