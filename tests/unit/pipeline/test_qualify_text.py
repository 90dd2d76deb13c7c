"""Qualify with string samples: they pass through untouched."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import DataType, TagConfig
from isthmus.model.quality import Quality
from isthmus.pipeline.qualify import Qualifier

G = Quality.GOOD
S = 1_000_000_000


def entry(tag_id: int, **kw: object) -> CatalogEntry:
    cfg = TagConfig.model_validate({"path": f"a/l/c/e/t{tag_id}", **kw})
    return CatalogEntry(tag_id, f"x/y/a/l/c/e/t{tag_id}", "src", cfg)


def test_string_rows_pass_through_mixed_with_scaled_numbers() -> None:
    q = Qualifier([entry(0, data_type="string"), entry(1, scale=2.0, range=(0, 10))])
    out = q.apply(
        Batch.of([0, 1, 0], [1, 1, 2], [0.0, 3.0, 0.0], G, text=["RECIPE-A", None, "RECIPE-B"])
    )
    assert out.texts() == ["RECIPE-A", None, "RECIPE-B"]
    assert out.quality.tolist() == [G, G, G]  # NaN on a string row is not Bad_OutOfRange
    assert np.isnan(out.value[0]) and out.value[1] == 6.0 and np.isnan(out.value[2])


def test_numeric_nan_still_bad_when_batch_has_text() -> None:
    q = Qualifier([entry(0, data_type="string"), entry(1)])
    out = q.apply(Batch.of([0, 1], [1, 1], [0.0, np.nan], G, text=["x", None]))
    assert out.quality.tolist() == [G, Quality.BAD_OUT_OF_RANGE]


def test_a_string_is_recorded_when_its_text_or_quality_changes() -> None:
    q = Qualifier([entry(0, data_type="string"), entry(1, data_type="string")])
    assert q.apply(Batch.of([0, 1], [1, 1], 0.0, G, text=["RUNNING", "SN-1"])).texts() == [
        "RUNNING",
        "SN-1",
    ]
    # Same texts again (and twice within one batch): nothing new to record.
    same = Batch.of([0, 1, 0], [2, 2, 3], 0.0, G, text=["RUNNING", "SN-1", "RUNNING"])
    assert len(q.apply(same)) == 0
    assert q.suppressed_samples == 3
    # A new text is recorded, then the same text with another quality too.
    out = q.apply(Batch.of([0, 0, 0], [4, 5, 6], 0.0, G, text=["STOPPED", "STOPPED", "RUNNING"]))
    assert list(zip(out.ts.tolist(), out.texts(), strict=True)) == [(4, "STOPPED"), (6, "RUNNING")]
    uncertain = Quality.UNCERTAIN
    assert q.apply(Batch.of([0], [7], 0.0, uncertain, text=["RUNNING"])).texts() == ["RUNNING"]
    # A Bad sample (no text) is recorded, and so is the first text after it.
    bad = q.apply(Batch.of([0], [8], np.nan, Quality.BAD_COMMUNICATION_ERROR))
    assert bad.text is None and bad.quality.tolist() == [Quality.BAD_COMMUNICATION_ERROR]
    assert q.apply(Batch.of([0], [9], 0.0, G, text=["RUNNING"])).texts() == ["RUNNING"]
    # A late sample passes untouched and does not move the state.
    assert q.apply(Batch.of([0], [3], 0.0, G, text=["RUNNING"])).texts() == ["RUNNING"]
    assert len(q.apply(Batch.of([0], [10], 0.0, G, text=["RUNNING"]))) == 0


def test_stale_string_tag_carries_its_last_text() -> None:
    q = Qualifier([entry(0, data_type="string", stale_after=1.0), entry(1, stale_after=1.0)])
    q.apply(Batch.of([0, 1], [S, S], [0.0, 4.0], G, text=["SN-1234", None]))
    stale = q.stale(5 * S)
    assert stale.tag_id.tolist() == [0, 1]
    assert stale.texts() == ["SN-1234", None]
    assert stale.value[1] == 4.0
    assert stale.quality.tolist() == [Quality.UNCERTAIN_LAST_USABLE_VALUE] * 2


def test_numeric_batches_keep_no_text_column() -> None:
    q = Qualifier([entry(0, stale_after=1.0)])
    assert q.apply(Batch.of([0], [S], [1.0], G)).text is None
    assert q.stale(5 * S).text is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"range": (0, 1)}, "no range, scale or offset"),
        ({"scale": 2.0}, "no range, scale or offset"),
        ({"offset": 1.0}, "no range, scale or offset"),
        ({"deadband": 1.0}, "no deadband"),
    ],
)
def test_string_tags_refuse_numeric_options(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TagConfig.model_validate({"path": "a/l/c/e/t", "data_type": "string", **extra})


def test_string_value_type_is_string() -> None:
    cfg = TagConfig.model_validate({"path": "a/l/c/e/t", "data_type": "string"})
    assert cfg.value_type is DataType.STRING
