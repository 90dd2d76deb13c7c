"""Spool records carry string samples (``Batch.text``) through encode → parse → decode."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.model.batch import Batch
from isthmus.transport.spool import format as fmt


@st.composite
def text_batches(draw: st.DrawFn) -> Batch:
    n = draw(st.integers(0, 40))
    text = draw(st.lists(st.none() | st.text(max_size=16), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))
    return Batch.of(list(range(n)), list(range(n)), values, 0, text=text)


@given(text_batches(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_text_round_trips_through_a_record(batch: Batch, compress: bool) -> None:
    bufs, total = fmt.encode(batch, 7, 1, compress)
    raw = b"".join(bytes(b) for b in bufs)
    assert len(raw) == total
    head = fmt.parse_header(raw)
    assert head is not None
    payload = bytearray(raw[fmt.HEADER_SIZE :])
    assert fmt.check_payload(head, payload)
    out = fmt.decode(head, payload, historical=False)
    np.testing.assert_array_equal(out.value, batch.value)  # NaN on string rows
    if batch.text is None:
        assert out.text is None
    else:
        assert out.text is not None
        assert out.text.tolist() == batch.text.tolist()
