"""Shewhart variables charts: I-MR, X̄-R and X̄-S, with frozen, versioned limits.

The pure core of SPC (issue 10): no I/O, no wall clock.  Samples become subgroups (by count
or by time window); control limits are computed from a baseline period and frozen in a
``LimitSet``; a ``LimitHistory`` holds the versions, each in effect from its
``effective_from_ns`` on.  A point is always judged by the limits in effect at its own
time, and a new version may only start after the moment it is published, so it never
changes the evaluation of a point already seen.

Formulas (NIST/SEMATECH e-Handbook 6.3.2; Montgomery, Introduction to Statistical Quality
Control, ch. 6).  sigma is the within-subgroup process standard deviation estimated from
the baseline:

- I-MR:  sigma = MR̄ / d2(2); I chart CL ± 3 sigma; MR chart CL = MR̄, UCL = D4(2) MR̄.
- X̄-R:   sigma = mean(R_i / d2(n_i)) (= R̄ / d2 for equal n); X̄ chart CL ± A2 R̄;
         R chart D3 R̄ .. D4 R̄ (R̄ = d2(n) sigma, so unequal subgroup sizes get their own limits).
- X̄-S:   sigma = mean(s_i / c4(n_i)) (= s̄ / c4 for equal n); X̄ chart CL ± A3 s̄;
         S chart B3 s̄ .. B4 s̄ (s̄ = c4(n) sigma).

CL of the location chart is the mean of all baseline values (the grand mean of the subgroup
means for equal subgroup sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from isthmus.analytics.spc import constants as k

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class ChartKind(StrEnum):
    I_MR = "i_mr"
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"


class LimitsError(ValueError):
    """Limits that cannot be computed or published (too little data, rewriting the past)."""


def _factor_table(fn: Callable[[int], float]) -> F64:
    out = np.full(k.N_MAX + 1, np.nan)
    for n in range(k.N_MIN, k.N_MAX + 1):
        out[n] = fn(n)
    return out


_D2 = _factor_table(k.d2)
_A2 = _factor_table(k.a2)
_D3 = _factor_table(k.d3_factor)
_D4 = _factor_table(k.d4_factor)
_C4 = _factor_table(k.c4)
_A3 = _factor_table(k.a3)
_B3 = _factor_table(k.b3)
_B4 = _factor_table(k.b4)


# --- subgroups ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Subgroups:
    """Ragged subgroups: ``values`` flat, subgroup i is values[starts[i]:starts[i] + sizes[i]].

    A subgroup's time is the time of its last sample.  ``pending`` counts samples not yet in
    a subgroup (an incomplete trailing group); ``dropped`` counts samples in time windows
    whose size is outside the allowed range.
    """

    timestamps_ns: I64
    starts: NDArray[np.intp]
    sizes: NDArray[np.intp]
    values: F64
    pending: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return int(self.sizes.size)

    @property
    def means(self) -> F64:
        if not len(self):
            return np.empty(0)
        return np.add.reduceat(self.values, self.starts) / self.sizes

    @property
    def ranges(self) -> F64:
        if not len(self):
            return np.empty(0)
        hi = np.maximum.reduceat(self.values, self.starts)
        lo = np.minimum.reduceat(self.values, self.starts)
        return np.asarray(hi - lo, dtype=np.float64)

    @property
    def stdevs(self) -> F64:
        """Sample standard deviation (n - 1 divisor) of each subgroup; NaN for size 1."""
        if not len(self):
            return np.empty(0)
        dev = self.values - np.repeat(self.means, self.sizes)
        ss = np.add.reduceat(dev * dev, self.starts)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(np.sqrt(ss / (self.sizes - 1)), dtype=np.float64)

    def select(self, mask: NDArray[np.bool_]) -> Subgroups:
        idx = np.flatnonzero(mask)
        sizes = self.sizes[idx]
        parts = [self.values[s : s + n] for s, n in zip(self.starts[idx], sizes, strict=True)]
        values = np.concatenate(parts) if parts else np.empty(0)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        return Subgroups(self.timestamps_ns[idx], starts[: idx.size], sizes, values)


def _sorted(timestamps_ns: ArrayLike, values: ArrayLike) -> tuple[I64, F64]:
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    vs = np.asarray(values, dtype=np.float64)
    if ts.shape != vs.shape or ts.ndim != 1:
        raise ValueError("timestamps and values must be 1-D arrays of the same length")
    if not np.all(np.isfinite(vs)):
        raise ValueError("values must be finite (filter Bad quality samples first)")
    order = np.argsort(ts, kind="stable")
    return ts[order], vs[order]


def subgroups_by_count(timestamps_ns: ArrayLike, values: ArrayLike, size: int) -> Subgroups:
    """Consecutive samples in groups of ``size`` (1 for an I-MR chart); the tail waits."""
    if not 1 <= size <= k.N_MAX:
        raise ValueError(f"subgroup size {size} is outside 1..{k.N_MAX}")
    ts, vs = _sorted(timestamps_ns, values)
    count = ts.size // size
    used = count * size
    sizes = np.full(count, size, dtype=np.intp)
    starts = np.arange(count, dtype=np.intp) * size
    stamps = ts[size - 1 : used : size] if count else np.empty(0, dtype=np.int64)
    return Subgroups(stamps, starts, sizes, vs[:used], pending=int(ts.size - used))


def subgroups_by_time(
    timestamps_ns: ArrayLike,
    values: ArrayLike,
    window_ns: int,
    *,
    origin_ns: int = 0,
    min_size: int = k.N_MIN,
    max_size: int = k.N_MAX,
) -> Subgroups:
    """Samples grouped by time window [origin + j w, origin + (j + 1) w).

    Windows with fewer than ``min_size`` or more than ``max_size`` samples are dropped and
    counted (the constants exist for n = 2..25).
    """
    if window_ns <= 0:
        raise ValueError("window_ns must be positive")
    if not 1 <= min_size <= max_size <= k.N_MAX:
        raise ValueError(f"need 1 <= min_size <= max_size <= {k.N_MAX}")
    ts, vs = _sorted(timestamps_ns, values)
    if not ts.size:
        return Subgroups(np.empty(0, np.int64), np.empty(0, np.intp), np.empty(0, np.intp), vs)
    bucket = (ts - origin_ns) // window_ns
    starts_all = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    sizes_all = np.diff(np.concatenate((starts_all, [ts.size])))
    keep = (sizes_all >= min_size) & (sizes_all <= max_size)
    member = np.repeat(keep, sizes_all)
    sizes = sizes_all[keep].astype(np.intp)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)[: sizes.size]
    last = (starts_all + sizes_all - 1)[keep]
    return Subgroups(ts[last], starts, sizes, vs[member], dropped=int(sizes_all[~keep].sum()))


# --- limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitSet:
    """Frozen limits of one chart: the centre and the within sigma, from a baseline period.

    ``version`` is 0 until published in a ``LimitHistory``.
    """

    kind: ChartKind
    center: float
    sigma: float
    effective_from_ns: int
    subgroups_used: int
    baseline_from_ns: int
    baseline_to_ns: int
    version: int = 0

    def location(self, n: int) -> tuple[float, float, float]:
        """(LCL, CL, UCL) of the I or X̄ chart for a subgroup of size n."""
        half = 3.0 * _location_zone(self.kind, self.sigma, np.array([n]))[0]
        return self.center - half, self.center, self.center + half

    def dispersion(self, n: int) -> tuple[float, float, float]:
        """(LCL, CL, UCL) of the MR, R or S chart for a subgroup of size n."""
        lcl, cl, ucl = _dispersion_limits(self.kind, self.sigma, np.array([n]))
        return float(lcl[0]), float(cl[0]), float(ucl[0])


def moving_ranges(values: F64) -> F64:
    """|x_i - x_(i-1)|, NaN for the first point."""
    out = np.full(values.size, np.nan)
    out[1:] = np.abs(np.diff(values))
    return out


def sigma_within(kind: ChartKind, subgroups: Subgroups) -> float:
    """The within-subgroup sigma estimate the chart's limits use (see module docstring)."""
    if kind is ChartKind.I_MR:
        if np.any(subgroups.sizes != 1):
            raise LimitsError("an I-MR chart takes subgroups of size 1")
        if len(subgroups) < 2:
            raise LimitsError("an I-MR baseline needs at least 2 values")
        return float(np.mean(np.abs(np.diff(subgroups.values)))) / k.d2(2)
    if not len(subgroups):
        raise LimitsError("the baseline holds no subgroups")
    if np.any((subgroups.sizes < k.N_MIN) | (subgroups.sizes > k.N_MAX)):
        raise LimitsError(f"X̄ charts take subgroups of size {k.N_MIN}..{k.N_MAX}")
    if kind is ChartKind.XBAR_R:
        return float(np.mean(subgroups.ranges / _D2[subgroups.sizes]))
    return float(np.mean(subgroups.stdevs / _C4[subgroups.sizes]))


def compute_limits(
    kind: ChartKind,
    subgroups: Subgroups,
    *,
    effective_from_ns: int,
    baseline_from_ns: int | None = None,
    baseline_to_ns: int | None = None,
) -> LimitSet:
    """Limits from the subgroups whose time lies in [baseline_from_ns, baseline_to_ns)."""
    ts = subgroups.timestamps_ns
    if not ts.size:
        raise LimitsError("the baseline holds no subgroups")
    lo = int(ts.min()) if baseline_from_ns is None else baseline_from_ns
    hi = int(ts.max()) + 1 if baseline_to_ns is None else baseline_to_ns
    base = subgroups.select((ts >= lo) & (ts < hi))
    sigma = sigma_within(kind, base)
    return LimitSet(
        kind=kind,
        center=float(np.mean(base.values)),
        sigma=sigma,
        effective_from_ns=effective_from_ns,
        subgroups_used=len(base),
        baseline_from_ns=lo,
        baseline_to_ns=hi,
    )


class LimitHistory:
    """Append-only versions of a chart's limits.

    ``publish`` refuses limits that would start at or before ``now_ns`` (the caller's
    injected clock) or before the latest version: a point already evaluated keeps the
    limits it was judged by.
    """

    def __init__(self, kind: ChartKind) -> None:
        self.kind = kind
        self._versions: list[LimitSet] = []

    @property
    def versions(self) -> tuple[LimitSet, ...]:
        return tuple(self._versions)

    def publish(self, limits: LimitSet, now_ns: int) -> LimitSet:
        if limits.kind is not self.kind:
            raise LimitsError(f"limits for {limits.kind} on a {self.kind} chart")
        if limits.effective_from_ns <= now_ns:
            raise LimitsError("new limits must take effect after now: they never rewrite the past")
        if self._versions and limits.effective_from_ns <= self._versions[-1].effective_from_ns:
            raise LimitsError("new limits must take effect after the latest version")
        published = replace(limits, version=len(self._versions) + 1)
        self._versions.append(published)
        return published

    def at(self, t_ns: int) -> LimitSet | None:
        i = int(self.version_index(np.array([t_ns]))[0])
        return self._versions[i] if i >= 0 else None

    def version_index(self, timestamps_ns: I64) -> NDArray[np.intp]:
        """Index into ``versions`` of the limits in effect at each time; -1 before the first."""
        starts = np.array([v.effective_from_ns for v in self._versions], dtype=np.int64)
        return np.searchsorted(starts, timestamps_ns, side="right").astype(np.intp) - 1


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChartSeries:
    """The plotted statistic and, per point, the limits in effect at its time.

    ``sigma`` is the zone width (the standard error of the plotted statistic) the run rules
    use; ``version`` is the limit version applied (0: no limits in effect, all limits NaN).
    """

    name: Literal["x", "mr", "xbar", "r", "s"]
    timestamps_ns: I64
    value: F64
    center: F64
    lcl: F64
    ucl: F64
    sigma: F64
    version: I64

    def __len__(self) -> int:
        return int(self.value.size)


def _location_zone(kind: ChartKind, sigma: F64 | float, n: NDArray[np.intp]) -> F64:
    s = np.asarray(sigma, dtype=np.float64)
    if kind is ChartKind.I_MR:
        return np.asarray(s * np.ones(n.shape), dtype=np.float64)
    if kind is ChartKind.XBAR_R:
        return np.asarray(_A2[n] * _D2[n] * s / 3.0, dtype=np.float64)
    return np.asarray(_A3[n] * _C4[n] * s / 3.0, dtype=np.float64)


def _dispersion_limits(
    kind: ChartKind, sigma: F64 | float, n: NDArray[np.intp]
) -> tuple[F64, F64, F64]:
    s = np.asarray(sigma, dtype=np.float64)
    if kind is ChartKind.I_MR:
        n = np.full(n.shape, 2, dtype=np.intp)
    if kind is ChartKind.XBAR_S:
        cl = _C4[n] * s
        return _B3[n] * cl, cl, _B4[n] * cl
    cl = _D2[n] * s
    return _D3[n] * cl, cl, _D4[n] * cl


def evaluate(
    subgroups: Subgroups, limits: LimitHistory | LimitSet
) -> tuple[ChartSeries, ChartSeries]:
    """The location chart (I or X̄) and the dispersion chart (MR, R or S) of the subgroups.

    A single ``LimitSet`` applies to every point (a Phase I study of the baseline itself);
    a ``LimitHistory`` applies to each point the version in effect at its time.
    """
    versions: Sequence[LimitSet]
    if isinstance(limits, LimitSet):
        kind, versions = limits.kind, [limits]
        idx = np.zeros(len(subgroups), dtype=np.intp)
    else:
        kind, versions = limits.kind, limits.versions
        idx = limits.version_index(subgroups.timestamps_ns)
    n = subgroups.sizes
    if kind is ChartKind.I_MR and np.any(n != 1):
        raise LimitsError("an I-MR chart takes subgroups of size 1")
    has = idx >= 0
    center = np.full(n.size, np.nan)
    sigma = np.full(n.size, np.nan)
    version = np.zeros(n.size, dtype=np.int64)
    if versions:
        centers = np.array([v.center for v in versions])
        sigmas = np.array([v.sigma for v in versions])
        center[has] = centers[idx[has]]
        sigma[has] = sigmas[idx[has]]
        version[has] = np.array([v.version for v in versions])[idx[has]]
    ts = subgroups.timestamps_ns
    zone = _location_zone(kind, sigma, n)
    loc_value = subgroups.values.copy() if kind is ChartKind.I_MR else subgroups.means
    location = ChartSeries(
        "x" if kind is ChartKind.I_MR else "xbar",
        ts,
        loc_value,
        center,
        center - 3.0 * zone,
        center + 3.0 * zone,
        zone,
        version,
    )
    if kind is ChartKind.I_MR:
        disp_value, name = moving_ranges(subgroups.values), "mr"
    elif kind is ChartKind.XBAR_R:
        disp_value, name = subgroups.ranges, "r"
    else:
        disp_value, name = subgroups.stdevs, "s"
    lcl, cl, ucl = _dispersion_limits(kind, sigma, n)
    dispersion = ChartSeries(
        name,  # type: ignore[arg-type]
        ts,
        disp_value,
        cl,
        lcl,
        ucl,
        (ucl - cl) / 3.0,
        version,
    )
    return location, dispersion
