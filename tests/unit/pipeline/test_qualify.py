from __future__ import annotations

import numpy as np

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality
from isthmus.pipeline.qualify import Qualifier

G = Quality.GOOD


def entry(tag_id: int, **kw: object) -> CatalogEntry:
    cfg = TagConfig.model_validate({"path": f"a/l/c/e/t{tag_id}", **kw})
    return CatalogEntry(tag_id, f"x/y/a/l/c/e/t{tag_id}", "src", cfg)


def test_scale_offset_and_range() -> None:
    q = Qualifier([entry(0, scale=0.1, offset=-5, range=(0, 100)), entry(1)])
    out = q.apply(Batch.of([0, 0, 1], [1, 2, 1], [100, 2000, 7], G))
    assert np.allclose(out.value, [5.0, 195.0, 7.0])
    assert list(out.quality) == [G, Quality.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, G]


def test_non_finite_good_value_becomes_bad() -> None:
    q = Qualifier([entry(0)])
    out = q.apply(Batch.of([0, 0], [1, 2], [np.nan, np.inf], G))
    assert list(out.quality) == [Quality.BAD_OUT_OF_RANGE] * 2


def test_bad_input_quality_is_kept_not_range_checked() -> None:
    q = Qualifier([entry(0, range=(0, 1))])
    out = q.apply(Batch.of([0], [1], [50], Quality.BAD_COMMUNICATION_ERROR))
    assert list(out.quality) == [Quality.BAD_COMMUNICATION_ERROR]


def test_deadband_suppresses_small_changes_across_and_within_batches() -> None:
    q = Qualifier([entry(0, deadband=1.0), entry(1, deadband=1.0)])
    first = q.apply(Batch.of([0, 1], [1, 1], [10.0, 20.0], G))
    assert len(first) == 2
    # within one batch: 10.5 suppressed (vs 10), 11.2 kept (vs 10), 11.9 suppressed (vs 11.2)
    out = q.apply(Batch.of([0, 0, 0, 1], [2, 3, 4, 2], [10.5, 11.2, 11.9, 25.0], G))
    assert list(zip(out.tag_id.tolist(), out.value.tolist(), strict=True)) == [
        (0, 11.2),
        (1, 25.0),
    ]
    assert q.suppressed_samples == 2


def test_quality_change_always_recorded_even_within_deadband() -> None:
    q = Qualifier([entry(0, deadband=5.0)])
    q.apply(Batch.of([0], [1], [10.0], G))
    out = q.apply(Batch.of([0, 0], [2, 3], [10.0, 10.0], [Quality.BAD_COMMUNICATION_ERROR, G]))
    assert list(out.quality) == [Quality.BAD_COMMUNICATION_ERROR, G]


def test_zero_deadband_records_every_sample() -> None:
    q = Qualifier([entry(0)])
    assert len(q.apply(Batch.of([0, 0, 0], [1, 2, 3], [1.0, 1.0, 1.0], G))) == 3


def test_late_sample_passes_without_moving_state() -> None:
    q = Qualifier([entry(0, deadband=1.0)])
    q.apply(Batch.of([0], [100], [10.0], G))
    late = q.apply(Batch.of([0], [50], [10.1], G))
    assert len(late) == 1
    assert len(q.apply(Batch.of([0], [101], [10.5], G))) == 0  # still compared with 10.0


def test_unknown_tags_are_dropped_and_counted() -> None:
    q = Qualifier([entry(0)])
    out = q.apply(Batch.of([0, 7, -1], [1, 1, 1], [1, 2, 3], G))
    assert list(out.tag_id) == [0]
    assert q.unknown_samples == 2


def test_stale_marks_once_then_clears_on_new_data() -> None:
    s = 1_000_000_000
    q = Qualifier([entry(0, stale_after="2s"), entry(1)])
    q.apply(Batch.of([0, 1], [10 * s, 10 * s], [5.0, 6.0], G))
    assert len(q.stale(11 * s)) == 0
    stale = q.stale(13 * s)
    assert list(stale.tag_id) == [0]
    assert list(stale.quality) == [Quality.UNCERTAIN_LAST_USABLE_VALUE]
    assert list(stale.value) == [5.0]
    assert len(q.stale(20 * s)) == 0  # once per silence
    back = q.apply(Batch.of([0], [21 * s], [5.0], G))
    assert list(back.quality) == [G]  # quality changed back: recorded
    assert len(q.stale(22 * s)) == 0
    assert list(q.stale(24 * s).tag_id) == [0]
