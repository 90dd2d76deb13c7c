"""Properties of the optional ``text`` column of a Batch (string samples)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.model.batch import Batch

Row = tuple[int, int, float, str | None]

rows = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.none() | st.text(max_size=12),
    ),
    max_size=30,
)


def build(items: list[Row]) -> Batch:
    if not items:
        return Batch.empty()
    tag, ts, value, text = zip(*items, strict=True)
    return Batch.of(tag, ts, value, 0, text=list(text))


def expected(items: list[Row]) -> list[tuple[int, int, float | None, str | None]]:
    """Each row as (tag, ts, value or None for a string row, text)."""
    return [(t, s, None if x is not None else v, x) for t, s, v, x in items]


def as_rows(b: Batch) -> list[tuple[int, int, float | None, str | None]]:
    values = [
        None if x is not None else v for v, x in zip(b.value.tolist(), b.texts(), strict=True)
    ]
    return list(zip(b.tag_id.tolist(), b.ts.tolist(), values, b.texts(), strict=True))


def check_invariants(b: Batch) -> None:
    if b.text is None:
        return
    assert len(b.text) == len(b)
    assert b.text.dtype == object
    for v, x in zip(b.value.tolist(), b.text.tolist(), strict=True):
        assert x is None or (isinstance(x, str) and np.isnan(v))


@settings(max_examples=200, deadline=None)
@given(rows)
def test_of_keeps_rows_and_nan_values(items: list[Row]) -> None:
    b = build(items)
    check_invariants(b)
    assert as_rows(b) == expected(items)
    has_text = any(x is not None for *_, x in items)
    assert (b.text is not None) == has_text  # an all-numeric batch keeps no column


@settings(max_examples=200, deadline=None)
@given(rows, st.data())
def test_select_mask_and_index(items: list[Row], data: st.DataObject) -> None:
    b = build(items)
    n = len(items)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    picked = b.select(mask)
    check_invariants(picked)
    assert as_rows(picked) == [r for r, m in zip(expected(items), mask.tolist(), strict=True) if m]
    index = np.array(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n if n else 0)))
    picked = b.select(index.astype(np.intp))
    check_invariants(picked)
    assert as_rows(picked) == [expected(items)[i] for i in index.tolist()]


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, max_size=5))
def test_concat_of_mixed_batches(parts: list[list[Row]]) -> None:
    batches = [build(p) for p in parts]
    merged = Batch.concat(batches)
    check_invariants(merged)
    assert as_rows(merged) == [r for p in parts for r in expected(p)]
    assert len(merged) == sum(len(p) for p in parts)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_sorted_carries_text_with_its_row(items: list[Row]) -> None:
    b = build(items).sorted()
    check_invariants(b)
    want = sorted(expected(items), key=lambda r: (r[0], r[1]))  # stable, like lexsort
    assert as_rows(b) == want


def test_numeric_batches_stay_without_text() -> None:
    a = Batch.of([1, 2], [0, 1], [1.0, 2.0], 0)
    assert a.text is None
    assert Batch.concat([a, a]).text is None
    assert a.select(np.array([True, False])).text is None
    assert a.sorted().text is None
    assert Batch.empty().text is None
    assert a.texts() == [None, None]
    assert a.is_text.tolist() == [False, False]


def test_concat_numeric_with_text_fills_none() -> None:
    a = Batch.of([1], [0], [1.5], 0)
    b = Batch.of([2, 3], [0, 0], [0.0, 7.0], 0, text=["AB", None])
    merged = Batch.concat([a, b])
    assert merged.texts() == [None, "AB", None]
    assert merged.value[0] == 1.5 and np.isnan(merged.value[1]) and merged.value[2] == 7.0
    assert merged.is_text.tolist() == [False, True, False]


def test_text_must_match_rows_and_hold_strings() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Batch.of([1, 2], [0, 0], [0.0, 0.0], 0, text=["a"])
    with pytest.raises(TypeError, match="text\\[0\\]"):
        Batch.of([1], [0], [0.0], 0, text=[b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="differ in length"):
        Batch(
            np.array([1], np.int32),
            np.array([0], np.int64),
            np.array([0.0]),
            np.array([0], np.uint32),
            text=np.array(["a", "b"], dtype=object),
        )
