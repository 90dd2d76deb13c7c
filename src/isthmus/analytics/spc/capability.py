"""Process capability: Cp, Cpk (within sigma) and Pp, Ppk (overall sigma).

NIST/SEMATECH e-Handbook 6.1.6; Montgomery, Introduction to Statistical Quality Control, ch. 8:

    Cp  = (USL - LSL) / (6 sigma_within)        Pp  = (USL - LSL) / (6 s_overall)
    Cpu = (USL - mean) / (3 sigma_within)       Ppu = (USL - mean) / (3 s_overall)
    Cpl = (mean - LSL) / (3 sigma_within)       Ppl = (mean - LSL) / (3 s_overall)
    Cpk = min(Cpu, Cpl)                         Ppk = min(Ppu, Ppl)

sigma_within is the chart's estimate (MR̄/d2, R̄/d2 or s̄/c4, see charts.sigma_within);
s_overall is the sample standard deviation (n - 1 divisor) of every value.  With one
specification limit only, Cp and Pp are undefined (None) and Cpk / Ppk are the one-sided
index of the limit given.  Fewer than 25 subgroups give a warning: the indices are then
too uncertain to act on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isthmus.analytics.spc.charts import ChartKind, Subgroups, sigma_within

MIN_SUBGROUPS = 25


@dataclass(frozen=True)
class Indices:
    cp: float | None  # potential: both limits needed
    cpk: float | None
    upper: float | None  # Cpu / Ppu
    lower: float | None  # Cpl / Ppl


def indices(mean: float, sigma: float, lsl: float | None, usl: float | None) -> Indices:
    """The capability indices of a process with this mean and sigma against LSL/USL."""
    _check_spec(lsl, usl)
    if not sigma > 0:
        return Indices(None, None, None, None)
    upper = (usl - mean) / (3.0 * sigma) if usl is not None else None
    lower = (mean - lsl) / (3.0 * sigma) if lsl is not None else None
    cp = (usl - lsl) / (6.0 * sigma) if usl is not None and lsl is not None else None
    sides = [x for x in (upper, lower) if x is not None]
    return Indices(cp, min(sides), upper, lower)


def _check_spec(lsl: float | None, usl: float | None) -> None:
    if lsl is None and usl is None:
        raise ValueError("give at least one specification limit (lsl or usl)")
    if lsl is not None and usl is not None and not lsl < usl:
        raise ValueError("lsl must be below usl")


@dataclass(frozen=True)
class Capability:
    lsl: float | None
    usl: float | None
    mean: float
    sigma_within: float
    sigma_overall: float
    cp: float | None
    cpk: float | None
    cpu: float | None
    cpl: float | None
    pp: float | None
    ppk: float | None
    ppu: float | None
    ppl: float | None
    subgroups_used: int
    values_used: int
    warnings: tuple[str, ...]


def capability(
    kind: ChartKind,
    subgroups: Subgroups,
    *,
    lsl: float | None = None,
    usl: float | None = None,
) -> Capability:
    """Cp/Cpk/Pp/Ppk of the subgroups, with the number used and a warning under 25."""
    _check_spec(lsl, usl)
    within = sigma_within(kind, subgroups)
    values = subgroups.values
    overall = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    mean = float(np.mean(values))
    short = indices(mean, within, lsl, usl)
    long = indices(mean, overall, lsl, usl)
    warnings: list[str] = []
    if len(subgroups) < MIN_SUBGROUPS:
        warnings.append(
            f"only {len(subgroups)} subgroups (fewer than {MIN_SUBGROUPS}): "
            "the indices are too uncertain to act on"
        )
    if not within > 0 or not overall > 0:
        warnings.append("zero spread: the indices are undefined")
    return Capability(
        lsl=lsl,
        usl=usl,
        mean=mean,
        sigma_within=within,
        sigma_overall=overall,
        cp=short.cp,
        cpk=short.cpk,
        cpu=short.upper,
        cpl=short.lower,
        pp=long.cp,
        ppk=long.cpk,
        ppu=long.upper,
        ppl=long.lower,
        subgroups_used=len(subgroups),
        values_used=int(values.size),
        warnings=tuple(warnings),
    )
