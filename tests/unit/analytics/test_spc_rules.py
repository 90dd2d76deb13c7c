"""Western Electric and Nelson rules, each on a constructed sequence (centre 0, sigma 1,
limits ±3) that makes it fire, and on the nearest sequence that must not."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from isthmus.analytics.spc.charts import ChartSeries
from isthmus.analytics.spc.rules import NELSON, RULE_SETS, WESTERN_ELECTRIC, Rule, check

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def series(values: Sequence[float], *, no_limits: Sequence[int] = ()) -> ChartSeries:
    v = np.asarray(values, dtype=np.float64)
    center = np.zeros(v.size)
    sigma = np.ones(v.size)
    center[list(no_limits)] = np.nan
    sigma[list(no_limits)] = np.nan
    return ChartSeries(
        "x",
        T0 + np.arange(v.size, dtype=np.int64) * S,
        v,
        center,
        center - 3 * sigma,
        center + 3 * sigma,
        sigma,
        np.where(np.isnan(center), 0, 1).astype(np.int64),
    )


def fired(values: Sequence[float], rule: Rule, **kw: Sequence[int]) -> list[tuple[int, ...]]:
    return [v.indices for v in check(series(values, **kw), [rule])]


@pytest.mark.parametrize("rule", [Rule.WE1, Rule.NELSON1])
def test_one_point_beyond_3_sigma(rule: Rule) -> None:
    assert fired([0, 0, 3.5, 0, -3.2, 3.0, -3.0], rule) == [(2,), (4,)]


@pytest.mark.parametrize("rule", [Rule.WE2, Rule.NELSON5])
def test_2_of_3_beyond_2_sigma_same_side(rule: Rule) -> None:
    assert fired([0, 2.5, 0.5, 2.1], rule) == [(1, 3)]
    assert fired([0, -2.5, -2.1], rule) == [(1, 2)]
    assert fired([2.5, 0, -2.5], rule) == []  # opposite sides
    assert fired([2.5, 0, 0, 2.5], rule) == []  # not within 3
    assert fired([2.5, 2.0, 0.0], rule) == []  # 2.0 is not beyond 2


@pytest.mark.parametrize("rule", [Rule.WE3, Rule.NELSON6])
def test_4_of_5_beyond_1_sigma_same_side(rule: Rule) -> None:
    assert fired([1.5, 1.5, 0.2, 1.5, 1.5], rule) == [(0, 1, 3, 4)]
    assert fired([1.5, 1.5, 0.2, 0.2, 1.5], rule) == []
    assert fired([1.5, 1.5, -1.5, 1.5, 0.2], rule) == []


def test_8_on_one_side_western_electric() -> None:
    assert fired([0.5] * 8, Rule.WE4) == [tuple(range(8))]
    assert fired([0.5] * 7, Rule.WE4) == []
    assert fired([0.5] * 4 + [0.0] + [0.5] * 4, Rule.WE4) == []  # on the line breaks a run
    # a longer run fires at each point that extends it
    assert [v.index for v in check(series([-0.5] * 10), [Rule.WE4])] == [7, 8, 9]


def test_9_on_one_side_nelson() -> None:
    assert fired([-0.5] * 9, Rule.NELSON2) == [tuple(range(9))]
    assert fired([-0.5] * 8, Rule.NELSON2) == []


def test_6_trending() -> None:
    assert fired([0, 0.1, 0.2, 0.3, 0.4, 0.5], Rule.NELSON3) == [tuple(range(6))]
    assert fired([2, 1.5, 1, 0.5, 0, -0.5], Rule.NELSON3) == [tuple(range(6))]
    assert fired([0, 0.1, 0.2, 0.3, 0.4], Rule.NELSON3) == []
    assert fired([0, 0.1, 0.2, 0.2, 0.4, 0.5], Rule.NELSON3) == []  # a tie breaks a trend


def test_14_alternating() -> None:
    assert fired([-0.5, 0.5] * 7, Rule.NELSON4) == [tuple(range(14))]
    assert fired([-0.5, 0.5] * 6 + [-0.5], Rule.NELSON4) == []
    assert fired([-0.5, 0.5] * 6 + [0.5, -0.5], Rule.NELSON4) == []


def test_15_within_1_sigma() -> None:
    calm = [0.1, -0.2, 0.3, 1.0, -1.0, 0.0, 0.4, -0.6, 0.2, 0.9, -0.9, 0.1, 0.0, 0.5, -0.3]
    assert fired(calm, Rule.NELSON7) == [tuple(range(15))]
    assert fired(calm[:14], Rule.NELSON7) == []
    assert fired([*calm[:7], 1.1, *calm[8:]], Rule.NELSON7) == []


def test_8_beyond_1_sigma_either_side() -> None:
    assert fired([1.5, -1.5] * 4, Rule.NELSON8) == [tuple(range(8))]
    assert fired([1.5, -1.5] * 3 + [1.5, 1.0], Rule.NELSON8) == []  # 1.0 is within


def test_points_without_limits_never_fire() -> None:
    # the run of 8 includes a point before any limits were in effect
    assert fired([0.5] * 8, Rule.WE4, no_limits=[0]) == []
    assert fired([5.0, 0.0], Rule.WE1, no_limits=[0]) == []


def test_violation_names_rule_points_and_times() -> None:
    values = [0, 2.5, 0.5, 2.1, 0, 0, 3.4]
    got = check(series(values), WESTERN_ELECTRIC)
    assert [(v.rule, v.index) for v in got] == [(Rule.WE2, 3), (Rule.WE1, 6)]
    assert got[0].indices == (1, 3)
    assert got[0].timestamps_ns == (T0 + 1 * S, T0 + 3 * S)
    assert got[1].timestamps_ns == (T0 + 6 * S,)


def test_rule_sets() -> None:
    assert RULE_SETS["western_electric"] == (Rule.WE1, Rule.WE2, Rule.WE3, Rule.WE4)
    assert len(NELSON) == 8 and RULE_SETS["nelson"] == NELSON
    # a chart selects its rules: WE4 sees 8 on one side, Nelson needs 9
    run = [0.5] * 8
    assert [v.rule for v in check(series(run), WESTERN_ELECTRIC)] == [Rule.WE4]
    assert check(series(run), NELSON) == []
