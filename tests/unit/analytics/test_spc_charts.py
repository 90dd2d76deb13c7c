"""X̄-R, X̄-S and I-MR charts against worked examples with published answers, subgrouping,
and frozen, versioned limits.

Montgomery, Introduction to Statistical Quality Control (6th ed.), piston rings, Table 6.3:
Example 6.1 (X̄-R) publishes x̄̄ = 74.001, R̄ = 0.023 (ΣR_i = 0.581), X̄ limits 73.988 / 74.014,
R chart UCL = 0.049, LCL = 0; Example 6.3 (X̄-S) publishes s̄ = 0.0094, X̄ limits
73.988 / 74.014, S chart UCL = 0.0196, LCL = 0.  The book computes its limits from the
rounded x̄̄ and R̄ (74.001 + 0.577 x 0.023 = 74.0143); from the unrounded data the UCL is
74.0146, so published limits are compared within one unit of their last printed digit,
and the exact formula is checked separately.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from isthmus.analytics.spc.charts import (
    ChartKind,
    LimitHistory,
    LimitsError,
    Subgroups,
    compute_limits,
    evaluate,
    subgroups_by_count,
    subgroups_by_time,
)
from isthmus.model.clock import ManualClock

from .spc_data import NIST_FLOWRATE, PISTON_MEANS_1_16, PISTON_RINGS, PISTON_STDEVS_1_16

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def piston_subgroups() -> Subgroups:
    flat = np.array(PISTON_RINGS).ravel()
    return subgroups_by_count(T0 + np.arange(flat.size) * S, flat, 5)


def test_piston_rings_subgroup_statistics_match_table_6_3() -> None:
    sg = piston_subgroups()
    assert len(sg) == 25 and sg.pending == 0
    assert np.round(sg.means[:16], 3).tolist() == PISTON_MEANS_1_16
    assert np.round(sg.stdevs[:16], 4).tolist() == PISTON_STDEVS_1_16
    # R_i = max - min of each row of Table 6.3, written out by hand; they add up to the
    # published ΣR_i = 0.581.
    ranges = [
        0.038, 0.019, 0.036, 0.022, 0.026, 0.024, 0.012, 0.030, 0.014, 0.017, 0.008, 0.011,
        0.029, 0.039, 0.016, 0.021, 0.026, 0.018, 0.021, 0.020, 0.033, 0.019, 0.025, 0.022,
        0.035,
    ]  # fmt: skip
    assert np.round(sg.ranges, 3).tolist() == ranges
    assert round(sum(ranges), 3) == 0.581
    assert round(float(sg.ranges.sum()), 3) == 0.581
    assert round(float(sg.ranges.mean()), 3) == 0.023
    assert round(float(sg.means.mean()), 3) == 74.001
    # subgroup time = time of its last sample
    assert sg.timestamps_ns[0] == T0 + 4 * S and sg.timestamps_ns[-1] == T0 + 124 * S


def test_piston_rings_xbar_r_limits_example_6_1() -> None:
    sg = piston_subgroups()
    lim = compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=T0)
    assert lim.subgroups_used == 25
    lcl, cl, ucl = lim.location(5)
    assert (lcl, cl, ucl) == pytest.approx((73.988, 74.001, 74.014), abs=1e-3)
    r_lcl, r_cl, r_ucl = lim.dispersion(5)
    assert (r_lcl, round(r_cl, 3), round(r_ucl, 3)) == (0.0, 0.023, 0.049)
    # exactly the textbook formulas with the table constants
    assert ucl == pytest.approx(74.001176 + 0.577 * 0.02324, abs=1e-9)
    assert r_ucl == pytest.approx(2.114 * 0.02324, abs=1e-9)
    x, r = evaluate(sg, lim)
    assert x.name == "xbar" and r.name == "r"
    assert np.all((x.value > x.lcl) & (x.value < x.ucl))  # in control, as the example finds
    assert np.all(r.value < r.ucl)
    assert np.all(x.version == 0)


def test_piston_rings_xbar_s_limits_example_6_3() -> None:
    sg = piston_subgroups()
    lim = compute_limits(ChartKind.XBAR_S, sg, effective_from_ns=T0)
    lcl, cl, ucl = lim.location(5)
    assert (lcl, cl, ucl) == pytest.approx((73.988, 74.001, 74.014), abs=1e-3)
    assert ucl == pytest.approx(74.001176 + 1.427 * 0.0093995, abs=1e-5)  # A3 exact: 1.4273
    s_lcl, s_cl, s_ucl = lim.dispersion(5)
    assert (s_lcl, round(s_cl, 4), round(s_ucl, 4)) == (0.0, 0.0094, 0.0196)
    x, s = evaluate(sg, lim)
    assert s.name == "s"
    assert np.all((x.value > x.lcl) & (x.value < x.ucl))
    assert np.all(s.value < s.ucl)


def test_nist_individuals_example() -> None:
    # NIST e-Handbook 6.3.2.2: x̄ = 50.81, MR̄ = 16.9 / 9 = 1.8778, limits x̄ ± 3 MR̄ / 1.128,
    # MR chart UCL = 3.267 MR̄.
    ts = T0 + np.arange(10) * S
    sg = subgroups_by_count(ts, NIST_FLOWRATE, 1)
    lim = compute_limits(ChartKind.I_MR, sg, effective_from_ns=T0)
    assert lim.center == pytest.approx(50.81)
    assert lim.sigma * 1.128 == pytest.approx(1.8778, abs=5e-5)
    lcl, _, ucl = lim.location(1)
    assert (round(ucl, 3), round(lcl, 3)) == (55.804, 45.816)
    mr_lcl, mr_cl, mr_ucl = lim.dispersion(1)
    assert (mr_lcl, round(mr_cl, 4), round(mr_ucl, 3)) == (0.0, 1.8778, 6.135)
    x, mr = evaluate(sg, lim)
    assert np.isnan(mr.value[0])
    assert mr.value[1:] == pytest.approx([2.0, 2.3, 1.4, 3.5, 3.4, 1.4, 0.2, 1.2, 1.5])
    assert np.all((x.value > x.lcl) & (x.value < x.ucl))


def test_subgroups_by_count_keeps_the_incomplete_tail_pending() -> None:
    sg = subgroups_by_count(T0 + np.arange(13) * S, np.arange(13.0), 5)
    assert len(sg) == 2 and sg.pending == 3
    assert sg.means.tolist() == [2.0, 7.0]


def test_subgroups_by_time_windows() -> None:
    # 1-minute windows: 3 samples, 1 sample (dropped: an X̄ subgroup needs n >= 2), 4 samples
    ts = T0 + np.array([0, 10, 20, 70, 125, 130, 140, 150]) * S
    values = [1.0, 2.0, 3.0, 100.0, 4.0, 6.0, 8.0, 10.0]
    sg = subgroups_by_time(ts, values, 60 * S, origin_ns=T0)
    assert sg.sizes.tolist() == [3, 4] and sg.dropped == 1
    assert sg.means.tolist() == [2.0, 7.0]
    assert sg.ranges.tolist() == [2.0, 6.0]
    assert sg.timestamps_ns.tolist() == [T0 + 20 * S, T0 + 150 * S]
    # unequal sizes get their own limits from the one sigma
    lim = compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=T0)
    assert lim.sigma == pytest.approx((2.0 / 1.693 + 6.0 / 2.059) / 2)
    x, r = evaluate(sg, lim)
    assert x.ucl[0] - x.center[0] == pytest.approx(1.023 * 1.693 * lim.sigma)
    assert x.ucl[1] - x.center[1] == pytest.approx(0.729 * 2.059 * lim.sigma)
    assert r.ucl.tolist() == pytest.approx([2.574 * 1.693 * lim.sigma, 2.282 * 2.059 * lim.sigma])


def test_points_use_the_limits_in_effect_at_their_time() -> None:
    clock = ManualClock(start_ns=T0)
    sg = piston_subgroups()  # subgroup times T0 + 4 s, T0 + 9 s, ...
    history = LimitHistory(ChartKind.XBAR_R)
    v1 = history.publish(
        compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=T0 + 1), clock.now_ns()
    )
    assert v1.version == 1
    clock.advance(60)  # the first 12 subgroups (up to T0 + 59 s) have been seen
    before, _ = evaluate(sg, history)
    shifted = compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=T0 + 60 * S + 1)
    v2 = history.publish(replace(shifted, center=80.0), clock.now_ns())
    after, _ = evaluate(sg, history)
    seen = sg.timestamps_ns <= clock.now_ns()
    assert seen.sum() == 12
    assert after.version[seen].tolist() == [1] * 12
    assert after.center[seen].tolist() == before.center[seen].tolist()
    assert after.version[~seen].tolist() == [v2.version] * 13
    assert np.all(after.center[~seen] == 80.0)
    assert history.at(T0) is None and history.at(T0 + 1) == v1


def test_limits_never_rewrite_the_past() -> None:
    sg = piston_subgroups()
    history = LimitHistory(ChartKind.XBAR_R)
    now = T0 + 100 * S
    with pytest.raises(LimitsError, match="rewrite the past"):
        history.publish(compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=now), now)
    history.publish(compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=now + 10), now)
    with pytest.raises(LimitsError, match="latest version"):
        history.publish(compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=now + 5), now)
    with pytest.raises(LimitsError, match="on a xbar_r chart"):
        history.publish(compute_limits(ChartKind.XBAR_S, sg, effective_from_ns=now + 20), now)
    assert len(history.versions) == 1


def test_baseline_period_selects_the_subgroups_used() -> None:
    sg = piston_subgroups()
    lim = compute_limits(
        ChartKind.XBAR_R,
        sg,
        effective_from_ns=T0,
        baseline_from_ns=T0,
        baseline_to_ns=T0 + 50 * S,  # subgroups 1-10 end at T0 + 4 s .. T0 + 49 s
    )
    assert lim.subgroups_used == 10
    assert lim.sigma == pytest.approx(float(np.mean(sg.ranges[:10])) / 2.326)
    with pytest.raises(LimitsError):
        compute_limits(ChartKind.XBAR_R, sg, effective_from_ns=T0, baseline_to_ns=T0)


def test_wrong_subgroup_sizes_are_refused() -> None:
    sg = piston_subgroups()
    with pytest.raises(LimitsError, match="size 1"):
        compute_limits(ChartKind.I_MR, sg, effective_from_ns=T0)
    with pytest.raises(ValueError, match="finite"):
        subgroups_by_count([T0, T0 + 1], [1.0, float("nan")], 1)
