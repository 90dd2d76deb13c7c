"""Properties of qualify that must hold for any input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality
from isthmus.pipeline.qualify import Qualifier

N_TAGS = 4
QUALITIES = [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD_COMMUNICATION_ERROR]


def qualifier(deadband: float) -> Qualifier:
    return Qualifier(
        CatalogEntry(
            i,
            f"e/s/a/l/c/e/t{i}",
            "s",
            TagConfig(path=f"a/l/c/e/t{i}", deadband=deadband, range=(-100.0, 100.0)),
        )
        for i in range(N_TAGS)
    )


batches = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.int32, n, elements=st.integers(-1, N_TAGS)),
        hnp.arrays(np.int64, n, elements=st.integers(0, 10**6)),
        hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True, allow_infinity=True)),
        hnp.arrays(np.uint32, n, elements=st.sampled_from(QUALITIES)),
    )
)


@settings(max_examples=200, deadline=None)
@given(st.lists(batches, min_size=1, max_size=5), st.sampled_from([0.0, 0.5, 10.0]))
def test_output_is_a_subset_with_valid_quality(
    raw: list[tuple[np.ndarray, ...]], deadband: float
) -> None:
    q = qualifier(deadband)
    for tags, ts, values, quals in raw:
        out = q.apply(Batch.of(tags, ts, values, quals))
        assert len(out) <= len(tags)
        assert set(out.tag_id.tolist()) <= set(range(N_TAGS))
        good = out.quality == Quality.GOOD
        # a Good output is always finite and inside the engineering range
        assert np.all(np.isfinite(out.value[good]))
        assert np.all((out.value[good] >= -100) & (out.value[good] <= 100))


@settings(max_examples=200, deadline=None)
@given(batches)
def test_without_deadband_nothing_known_is_dropped(raw: tuple[np.ndarray, ...]) -> None:
    tags, ts, values, quals = raw
    out = qualifier(0.0).apply(Batch.of(tags, ts, values, quals))
    assert len(out) == int(((tags >= 0) & (tags < N_TAGS)).sum())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=60), st.floats(0.01, 20))
def test_deadband_matches_sequential_reference(values: list[float], deadband: float) -> None:
    """The vectorised deadband equals the obvious per-sample loop."""
    q = qualifier(deadband)
    out = q.apply(Batch.of(np.zeros(len(values)), np.arange(len(values)), values, 0))
    expected, last = [], None
    for v in values:
        if last is None or abs(v - last) > deadband:
            expected.append(v)
            last = v
    assert out.value.tolist() == expected
