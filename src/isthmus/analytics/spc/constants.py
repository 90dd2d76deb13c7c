"""Control chart constants for subgroup sizes n = 2..25.

d2, A2, D3 and D4 are the standard published table (ASTM E2587, Table of factors for
constructing variables control charts; the same values are printed in the NIST/SEMATECH
e-Handbook of Statistical Methods, section 6.3.2, and in Montgomery, Introduction to
Statistical Quality Control, Appendix Table VI).  They are taken as printed (three
decimals) rather than recomputed, so limits match hand calculations from the tables.
d2 and D4 are checked against numerical integration of the range distribution in
tests/unit/analytics/test_spc_constants.py.

c4 is exact: c4(n) = sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2); A3, B3 and B4
follow from it (A3 = 3 / (c4 sqrt(n)), B3 = max(0, 1 - 3 sqrt(1 - c4^2) / c4),
B4 = 1 + 3 sqrt(1 - c4^2) / c4).
"""

from __future__ import annotations

import math

N_MIN = 2
N_MAX = 25

# n:      d2     A2     D3     D4
_TABLE: dict[int, tuple[float, float, float, float]] = {
    2: (1.128, 1.880, 0.0, 3.267),
    3: (1.693, 1.023, 0.0, 2.574),
    4: (2.059, 0.729, 0.0, 2.282),
    5: (2.326, 0.577, 0.0, 2.114),
    6: (2.534, 0.483, 0.0, 2.004),
    7: (2.704, 0.419, 0.076, 1.924),
    8: (2.847, 0.373, 0.136, 1.864),
    9: (2.970, 0.337, 0.184, 1.816),
    10: (3.078, 0.308, 0.223, 1.777),
    11: (3.173, 0.285, 0.256, 1.744),
    12: (3.258, 0.266, 0.283, 1.717),
    13: (3.336, 0.249, 0.307, 1.693),
    14: (3.407, 0.235, 0.328, 1.672),
    15: (3.472, 0.223, 0.347, 1.653),
    16: (3.532, 0.212, 0.363, 1.637),
    17: (3.588, 0.203, 0.378, 1.622),
    18: (3.640, 0.194, 0.391, 1.608),
    19: (3.689, 0.187, 0.403, 1.597),
    20: (3.735, 0.180, 0.415, 1.585),
    21: (3.778, 0.173, 0.425, 1.575),
    22: (3.819, 0.167, 0.434, 1.566),
    23: (3.858, 0.162, 0.443, 1.557),
    24: (3.895, 0.157, 0.451, 1.548),
    25: (3.931, 0.153, 0.459, 1.541),
}


def _check(n: int) -> None:
    if not N_MIN <= n <= N_MAX:
        raise ValueError(f"subgroup size {n} is outside {N_MIN}..{N_MAX}")


def d2(n: int) -> float:
    """Expected range of n standard normal values."""
    _check(n)
    return _TABLE[n][0]


def a2(n: int) -> float:
    _check(n)
    return _TABLE[n][1]


def d3_factor(n: int) -> float:
    """D3 (the R chart's lower limit factor)."""
    _check(n)
    return _TABLE[n][2]


def d4_factor(n: int) -> float:
    """D4 (the R chart's upper limit factor)."""
    _check(n)
    return _TABLE[n][3]


def c4(n: int) -> float:
    """Expected sample standard deviation (n - 1 divisor) of n standard normal values."""
    _check(n)
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def a3(n: int) -> float:
    return 3.0 / (c4(n) * math.sqrt(n))


def b3(n: int) -> float:
    c = c4(n)
    return max(0.0, 1.0 - 3.0 * math.sqrt(1.0 - c * c) / c)


def b4(n: int) -> float:
    c = c4(n)
    return 1.0 + 3.0 * math.sqrt(1.0 - c * c) / c
