"""Cp, Cpk, Pp, Ppk against published worked examples.

NIST/SEMATECH e-Handbook 6.1.6: USL = 20, LSL = 8, mean 16, sigma 2 give Cp = 1.0,
Cpu = 0.6667, Cpl = 1.3333, Cpk = 0.6667.
Montgomery, Introduction to Statistical Quality Control (6th ed.), piston rings (Table 6.3),
specification 74.000 ± 0.05 mm: sigma = R̄ / d2 = 0.023 / 2.326 = 0.0099 and Cp = 1.68 (the
book rounds sigma to 0.0099 first; from the unrounded R̄ = 0.02324 Cp is 1.668).
"""

from __future__ import annotations

import numpy as np
import pytest

from isthmus.analytics.spc.capability import MIN_SUBGROUPS, capability, indices
from isthmus.analytics.spc.charts import ChartKind, subgroups_by_count

from .spc_data import PISTON_RINGS

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def test_nist_6_1_6_example() -> None:
    got = indices(16.0, 2.0, lsl=8.0, usl=20.0)
    assert got.cp == pytest.approx(1.0)
    assert got.upper == pytest.approx(0.6667, abs=5e-5)
    assert got.lower == pytest.approx(1.3333, abs=5e-5)
    assert got.cpk == pytest.approx(0.6667, abs=5e-5)


def test_one_sided_specifications() -> None:
    upper_only = indices(16.0, 2.0, lsl=None, usl=20.0)
    assert upper_only.cp is None and upper_only.lower is None
    assert upper_only.cpk == pytest.approx(2 / 3)
    lower_only = indices(16.0, 2.0, lsl=8.0, usl=None)
    assert lower_only.cp is None and lower_only.cpk == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="at least one"):
        indices(16.0, 2.0, lsl=None, usl=None)
    with pytest.raises(ValueError, match="below"):
        indices(16.0, 2.0, lsl=20.0, usl=8.0)


def test_piston_rings_capability() -> None:
    flat = np.array(PISTON_RINGS).ravel()
    sg = subgroups_by_count(T0 + np.arange(flat.size) * S, flat, 5)
    cap = capability(ChartKind.XBAR_R, sg, lsl=73.95, usl=74.05)
    assert cap.subgroups_used == 25 and cap.values_used == 125
    assert cap.warnings == ()
    assert round(cap.sigma_within, 4) == 0.0100  # 0.02324 / 2.326 = 0.00999
    assert pytest.approx(1.68, abs=5e-3) == 0.10 / (6 * 0.0099)  # the book's arithmetic
    assert cap.cp == pytest.approx(1.68, abs=0.015)
    assert cap.cp == pytest.approx(0.10 / (6 * 0.02324 / 2.326))
    nearest = min(74.05 - cap.mean, cap.mean - 73.95)
    assert cap.cpk == pytest.approx(nearest / (3 * cap.sigma_within))
    # Pp/Ppk use the overall sample standard deviation of the 125 values
    s = float(np.std(flat, ddof=1))
    assert cap.sigma_overall == pytest.approx(s)
    assert cap.pp == pytest.approx(0.10 / (6 * s))
    assert cap.ppk == pytest.approx(nearest / (3 * s))
    # X̄-S estimates sigma from s̄ / c4 instead
    cap_s = capability(ChartKind.XBAR_S, sg, lsl=73.95, usl=74.05)
    assert cap_s.sigma_within == pytest.approx(0.0093995 / 0.9400, rel=1e-3)


def test_fewer_than_25_subgroups_warn() -> None:
    flat = np.array(PISTON_RINGS[:24]).ravel()
    sg = subgroups_by_count(T0 + np.arange(flat.size) * S, flat, 5)
    cap = capability(ChartKind.XBAR_R, sg, usl=74.05)
    assert cap.subgroups_used == 24 == MIN_SUBGROUPS - 1
    assert len(cap.warnings) == 1 and "24 subgroups" in cap.warnings[0]
    assert cap.cp is None and cap.pp is None  # one-sided
    assert cap.cpk == cap.cpu and cap.ppk == cap.ppu


def test_individuals_capability_counts_values_as_subgroups() -> None:
    values = [10.0, 10.5, 9.5, 10.2, 9.8] * 6
    sg = subgroups_by_count(T0 + np.arange(30) * S, values, 1)
    cap = capability(ChartKind.I_MR, sg, lsl=8.0, usl=12.0)
    assert cap.subgroups_used == 30 and cap.warnings == ()
    mr_bar = float(np.mean(np.abs(np.diff(values))))
    assert cap.sigma_within == pytest.approx(mr_bar / 1.128)


def test_zero_spread_gives_no_index() -> None:
    sg = subgroups_by_count(T0 + np.arange(30) * S, [5.0] * 30, 1)
    cap = capability(ChartKind.I_MR, sg, lsl=4.0, usl=6.0)
    assert cap.cp is None and cap.cpk is None and cap.pp is None
    assert any("zero spread" in w for w in cap.warnings)
