"""Property tests of Modbus fixed-length strings: round trips and fuzzed registers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.connectors.modbus.config import Order, RegisterKind
from isthmus.connectors.modbus.decode import (
    PlanTag,
    build_plan,
    decode_string,
    encode_string,
)
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

ORDERS = st.sampled_from([Order.BIG, Order.LITTLE])

# The supported alphabet: any text without NUL (it ends a string) and without trailing
# spaces (stripped, as devices pad with them).
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
).map(lambda s: s.rstrip(" "))


@settings(max_examples=500, deadline=None)
@given(texts, ORDERS, st.integers(0, 5))
def test_decode_encode_round_trip(text: str, order: Order, spare: int) -> None:
    length = (len(text.encode("utf-8")) + 1) // 2 + spare
    length = max(length, 1)
    words = encode_string(text, length, order)
    assert len(words) == length
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_string(words, order) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCXYZ-_0123456789 ", max_size=20), st.integers(1, 12))
def test_ascii_layout_is_high_byte_first(text: str, length: int) -> None:
    data = text.encode()
    if len(data) > 2 * length:
        return
    words = encode_string(text, length)
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    assert raw == data.ljust(2 * length, b"\x00")  # independent of the encoder's NumPy path
    swapped = encode_string(text, length, Order.LITTLE)
    assert swapped == [((w & 0xFF) << 8) | (w >> 8) for w in words]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=125), ORDERS)
def test_random_registers_never_crash(words: list[int], order: Order) -> None:
    text = decode_string(words, order)
    assert isinstance(text, str)
    assert "\x00" not in text and not text.endswith(" ")
    assert len(text) <= 2 * len(words)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=40),
    st.integers(1, 8),
    st.integers(1, 8),
    ORDERS,
)
def test_block_with_strings_and_numbers_never_raises(
    response: list[int], len_a: int, len_b: int, order: Order
) -> None:
    """Random (possibly short) responses: Good strings carry text, short ones are Bad."""
    tags = [
        PlanTag(0, RegisterKind.HOLDING, 0, DataType.STRING, byte_order=order, length=len_a),
        PlanTag(1, RegisterKind.HOLDING, len_a, DataType.UINT16),
        PlanTag(2, RegisterKind.HOLDING, len_a + 2, DataType.STRING, length=len_b),
    ]
    plan = build_plan(tags, max_gap=4)
    (block,) = plan.blocks
    assert plan.has_text
    values, quality, text = block.decode_text(np.array(response, dtype=np.uint16))
    order_of = {int(t): i for i, t in enumerate(block.tag_ids.tolist())}
    for tag in tags:
        i = order_of[tag.tag_id]
        end = tag.address + tag.width
        if len(response) >= end:
            assert quality[i] == Quality.GOOD
            if tag.data_type == DataType.STRING:
                want = decode_string(response[tag.address : end], tag.byte_order)
                assert text[i] == want and np.isnan(values[i])
            else:
                assert values[i] == response[tag.address] and text[i] is None
        else:
            assert quality[i] == Quality.BAD_DECODING_ERROR
            assert np.isnan(values[i]) and text[i] is None
