"""Western Electric (1956) rules 1-4 and Nelson (1984) rules 1-8 over a ``ChartSeries``.

Each point is judged against the limits in effect at its own time: z = (value - CL) / sigma,
with sigma the zone width of the plotted statistic.  "Beyond k sigma" is strict (|z| > k),
"within 1 sigma" is |z| <= 1, a point exactly on the centre line is on neither side (it
breaks a run), and a window holding a point without limits (or the first MR point) never
fires.  A violation is reported at the point that completes the pattern (the last point of
its window); for the "k of m" rules that point must itself be one of the k, so one episode
is not reported twice for the same points.  A long run fires at every point that extends
it (the 9th, 10th, ... point on one side), as Minitab marks them.

Western Electric Statistical Quality Control Handbook (1956):
  WE1 one point beyond 3 sigma (outside the control limits)
  WE2 2 of 3 consecutive points beyond 2 sigma, same side
  WE3 4 of 5 consecutive points beyond 1 sigma, same side
  WE4 8 consecutive points on one side of the centre line
Nelson, "The Shewhart Control Chart - Tests for Special Causes", JQT 16(4), 1984:
  N1 one point beyond 3 sigma            N5 2 of 3 beyond 2 sigma, same side
  N2 9 in a row on one side              N6 4 of 5 beyond 1 sigma, same side
  N3 6 in a row increasing or decreasing N7 15 in a row within 1 sigma (either side)
  N4 14 in a row alternating up and down N8 8 in a row beyond 1 sigma (either side)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from isthmus.analytics.spc.charts import ChartSeries


class Rule(StrEnum):
    WE1 = "we1"
    WE2 = "we2"
    WE3 = "we3"
    WE4 = "we4"
    NELSON1 = "nelson1"
    NELSON2 = "nelson2"
    NELSON3 = "nelson3"
    NELSON4 = "nelson4"
    NELSON5 = "nelson5"
    NELSON6 = "nelson6"
    NELSON7 = "nelson7"
    NELSON8 = "nelson8"


WESTERN_ELECTRIC: tuple[Rule, ...] = (Rule.WE1, Rule.WE2, Rule.WE3, Rule.WE4)
NELSON: tuple[Rule, ...] = tuple(Rule(f"nelson{i}") for i in range(1, 9))
RULE_SETS: dict[str, tuple[Rule, ...]] = {"western_electric": WESTERN_ELECTRIC, "nelson": NELSON}

DESCRIPTIONS: dict[Rule, str] = {
    Rule.WE1: "one point beyond 3 sigma",
    Rule.WE2: "2 of 3 consecutive points beyond 2 sigma on one side",
    Rule.WE3: "4 of 5 consecutive points beyond 1 sigma on one side",
    Rule.WE4: "8 consecutive points on one side of the centre line",
    Rule.NELSON1: "one point beyond 3 sigma",
    Rule.NELSON2: "9 points in a row on one side of the centre line",
    Rule.NELSON3: "6 points in a row steadily increasing or decreasing",
    Rule.NELSON4: "14 points in a row alternating up and down",
    Rule.NELSON5: "2 of 3 points in a row beyond 2 sigma on one side",
    Rule.NELSON6: "4 of 5 points in a row beyond 1 sigma on one side",
    Rule.NELSON7: "15 points in a row within 1 sigma",
    Rule.NELSON8: "8 points in a row beyond 1 sigma, either side",
}


@dataclass(frozen=True)
class Violation:
    rule: Rule
    index: int  # the point that completes the pattern
    indices: tuple[int, ...]  # the points that make it, ascending
    timestamps_ns: tuple[int, ...]  # their times


Hits = list[tuple[int, tuple[int, ...]]]


def _windows(a: NDArray[np.float64] | NDArray[np.bool_], m: int) -> NDArray[np.generic]:
    return sliding_window_view(a, m) if a.size >= m else np.empty((0, m), dtype=a.dtype)


def _k_of_m(z: NDArray[np.float64], valid: NDArray[np.bool_], k: int, m: int, t: float) -> Hits:
    hits: Hits = []
    ok = _windows(valid, m).all(axis=1)
    for side in (z > t, z < -t):
        win = _windows(side, m)
        fire = ok & (win.sum(axis=1) >= k) & win[:, -1]
        for s in np.flatnonzero(fire):
            hits.append((int(s + m - 1), tuple(int(s + j) for j in np.flatnonzero(win[s]))))
    return hits


def _all_of(mask: NDArray[np.bool_], valid: NDArray[np.bool_], m: int) -> Hits:
    fire = _windows(mask & valid, m).all(axis=1)
    return [(int(s + m - 1), tuple(range(int(s), int(s) + m))) for s in np.flatnonzero(fire)]


def _trend(v: NDArray[np.float64], valid: NDArray[np.bool_], m: int) -> Hits:
    if v.size < m:
        return []
    d = np.diff(v)
    ok = _windows(valid, m).all(axis=1)
    up = _windows(d > 0, m - 1).all(axis=1)
    down = _windows(d < 0, m - 1).all(axis=1)
    fire = ok & (up | down)
    return [(int(s + m - 1), tuple(range(int(s), int(s) + m))) for s in np.flatnonzero(fire)]


def _alternating(v: NDArray[np.float64], valid: NDArray[np.bool_], m: int) -> Hits:
    if v.size < m:
        return []
    d = np.diff(v)
    flips = (d[:-1] * d[1:]) < 0  # m - 2 sign changes in a window of m points
    ok = _windows(valid, m).all(axis=1)
    fire = ok & _windows(flips, m - 2).all(axis=1)
    return [(int(s + m - 1), tuple(range(int(s), int(s) + m))) for s in np.flatnonzero(fire)]


def _hits(
    rule: Rule, series: ChartSeries, z: NDArray[np.float64], valid: NDArray[np.bool_]
) -> Hits:
    v = series.value
    if rule in (Rule.WE1, Rule.NELSON1):
        with np.errstate(invalid="ignore"):
            out = valid & ((v > series.ucl) | (v < series.lcl))
        return [(int(i), (int(i),)) for i in np.flatnonzero(out)]
    if rule in (Rule.WE2, Rule.NELSON5):
        return _k_of_m(z, valid, 2, 3, 2.0)
    if rule in (Rule.WE3, Rule.NELSON6):
        return _k_of_m(z, valid, 4, 5, 1.0)
    if rule in (Rule.WE4, Rule.NELSON2):
        m = 8 if rule is Rule.WE4 else 9
        return _all_of(z > 0, valid, m) + _all_of(z < 0, valid, m)
    if rule is Rule.NELSON3:
        return _trend(v, valid, 6)
    if rule is Rule.NELSON4:
        return _alternating(v, valid, 14)
    if rule is Rule.NELSON7:
        return _all_of(np.abs(z) <= 1.0, valid, 15)
    return _all_of(np.abs(z) > 1.0, valid, 8)  # NELSON8


def check(series: ChartSeries, rules: Iterable[Rule]) -> list[Violation]:
    """Every violation of the selected rules, ordered by point, then by rule order given."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (series.value - series.center) / series.sigma
    valid = np.isfinite(z) & np.isfinite(series.value)
    z = np.where(valid, z, 0.0)
    out: list[tuple[int, int, Violation]] = []
    for order, rule in enumerate(dict.fromkeys(rules)):
        for index, points in _hits(rule, series, z, valid):
            stamps = tuple(int(series.timestamps_ns[i]) for i in points)
            out.append((index, order, Violation(rule, index, points, stamps)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [v for _, _, v in out]
