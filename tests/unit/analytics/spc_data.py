"""Worked-example data with published answers, for the SPC tests.

PISTON_RINGS: Montgomery, Introduction to Statistical Quality Control (6th ed.), Table 6.3,
inside diameter (mm) of forged automobile engine piston rings, 25 samples of n = 5 (the
Phase I data of Examples 6.1 and 6.3).  Transcribed from two independent reproductions that
agree value for value: the table as quoted with its x̄_i and s_i columns in a published
exercise, and the ``pistonrings`` data set of the R package qcc (trial = TRUE rows).

NIST_FLOWRATE: NIST/SEMATECH e-Handbook of Statistical Methods, 6.3.2.2 (Individuals
control charts), the ten observations of its moving-range example.
"""

PISTON_RINGS: list[list[float]] = [
    [74.030, 74.002, 74.019, 73.992, 74.008],
    [73.995, 73.992, 74.001, 74.011, 74.004],
    [73.988, 74.024, 74.021, 74.005, 74.002],
    [74.002, 73.996, 73.993, 74.015, 74.009],
    [73.992, 74.007, 74.015, 73.989, 74.014],
    [74.009, 73.994, 73.997, 73.985, 73.993],
    [73.995, 74.006, 73.994, 74.000, 74.005],
    [73.985, 74.003, 73.993, 74.015, 73.988],
    [74.008, 73.995, 74.009, 74.005, 74.004],
    [73.998, 74.000, 73.990, 74.007, 73.995],
    [73.994, 73.998, 73.994, 73.995, 73.990],
    [74.004, 74.000, 74.007, 74.000, 73.996],
    [73.983, 74.002, 73.998, 73.997, 74.012],
    [74.006, 73.967, 73.994, 74.000, 73.984],
    [74.012, 74.014, 73.998, 73.999, 74.007],
    [74.000, 73.984, 74.005, 73.998, 73.996],
    [73.994, 74.012, 73.986, 74.005, 74.007],
    [74.006, 74.010, 74.018, 74.003, 74.000],
    [73.984, 74.002, 74.003, 74.005, 73.997],
    [74.000, 74.010, 74.013, 74.020, 74.003],
    [73.982, 74.001, 74.015, 74.005, 73.996],
    [74.004, 73.999, 73.990, 74.006, 74.009],
    [74.010, 73.989, 73.990, 74.009, 74.014],
    [74.015, 74.008, 73.993, 74.000, 74.010],
    [73.982, 73.984, 73.995, 74.017, 74.013],
]

# Table 6.3's x̄_i and s_i columns for samples 1-16 (the part of the table quoted in the
# source found; samples 17-25 are checked through the totals below).
PISTON_MEANS_1_16 = [
    74.010,
    74.001,
    74.008,
    74.003,
    74.003,
    73.996,
    74.000,
    73.997,
    74.004,
    73.998,
    73.994,
    74.001,
    73.998,
    73.990,
    74.006,
    73.997,
]
PISTON_STDEVS_1_16 = [
    0.0148,
    0.0075,
    0.0147,
    0.0091,
    0.0122,
    0.0087,
    0.0055,
    0.0123,
    0.0055,
    0.0063,
    0.0029,
    0.0042,
    0.0105,
    0.0153,
    0.0073,
    0.0078,
]

NIST_FLOWRATE = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]
