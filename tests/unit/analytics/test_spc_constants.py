"""The chart constants: the printed table against the range distribution, c4 against the
published values (ASTM E2587 / NIST e-Handbook 6.3.2 / Montgomery Appendix VI)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isthmus.analytics.spc import constants as k

_X = np.linspace(-8.0, 8.0, 1601)
_PHI = 0.5 * (1.0 + np.vectorize(math.erf)(_X / math.sqrt(2.0)))
_DX = float(_X[1] - _X[0])


def _range_moments(n: int) -> tuple[float, float]:
    """E[W] and sd[W] of the range W of n standard normal values, by quadrature."""
    ew = float(np.trapezoid(1.0 - _PHI**n - (1.0 - _PHI) ** n, dx=_DX))
    # E[W^2] = ∫ 2w (1 - F(w)) dw with W's cdf F(w) = n ∫ φ(x)(Φ(x+w)-Φ(x))^(n-1) dx
    w = np.linspace(0.0, 10.0, 501)
    pdf_x = np.exp(-0.5 * _X**2) / math.sqrt(2.0 * math.pi)
    shifted = np.vectorize(math.erf)((_X[None, :] + w[:, None]) / math.sqrt(2.0))
    inner = (0.5 * (1.0 + shifted) - _PHI[None, :]) ** (n - 1)
    cdf = n * np.trapezoid(pdf_x[None, :] * inner, dx=_DX, axis=1)
    ew2 = float(np.trapezoid(2.0 * w * (1.0 - cdf), w))
    return ew, math.sqrt(ew2 - ew * ew)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 10, 15, 20, 25])
def test_d2_and_d4_agree_with_the_range_distribution(n: int) -> None:
    ew, sdw = _range_moments(n)
    assert k.d2(n) == pytest.approx(ew, abs=6e-4)
    assert k.d4_factor(n) == pytest.approx(1.0 + 3.0 * sdw / ew, abs=1.5e-3)
    assert k.d3_factor(n) == pytest.approx(max(0.0, 1.0 - 3.0 * sdw / ew), abs=1.5e-3)


@pytest.mark.parametrize("n", range(2, 26))
def test_a2_is_three_over_d2_root_n(n: int) -> None:
    assert k.a2(n) == pytest.approx(3.0 / (k.d2(n) * math.sqrt(n)), abs=1.5e-3)


@pytest.mark.parametrize(
    ("n", "c4", "a3", "b3", "b4"),
    [  # the printed table (Montgomery Appendix VI; ASTM E2587)
        (2, 0.7979, 2.659, 0.0, 3.267),
        (5, 0.9400, 1.427, 0.0, 2.089),
        (6, 0.9515, 1.287, 0.030, 1.970),
        (10, 0.9727, 0.975, 0.284, 1.716),
        (25, 0.9896, 0.606, 0.565, 1.435),
    ],
)
def test_c4_family_matches_the_printed_table(
    n: int, c4: float, a3: float, b3: float, b4: float
) -> None:
    assert k.c4(n) == pytest.approx(c4, abs=5e-5)
    assert k.a3(n) == pytest.approx(a3, abs=5e-4)
    assert k.b3(n) == pytest.approx(b3, abs=5e-4)
    assert k.b4(n) == pytest.approx(b4, abs=5e-4)


@pytest.mark.parametrize("n", [0, 1, 26])
def test_sizes_outside_the_table_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        k.d2(n)
