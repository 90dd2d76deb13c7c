"""Property tests of the S7 read plan: values encoded big-endian with ``struct`` decode
to the same values, whatever the layout, the PDU and the gaps."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.connectors.s7.config import Area, S7Address, Size
from isthmus.connectors.s7.decode import PlanTag, build_plan, max_block_bytes
from isthmus.model.config import DataType

KINDS: list[tuple[Size, DataType, str]] = [
    (Size.X, DataType.BOOL, "?"),
    (Size.B, DataType.UINT16, ">B"),
    (Size.B, DataType.INT16, ">b"),
    (Size.W, DataType.INT16, ">h"),
    (Size.W, DataType.UINT16, ">H"),
    (Size.D, DataType.INT32, ">i"),
    (Size.D, DataType.UINT32, ">I"),
    (Size.D, DataType.FLOAT32, ">f"),
    (Size.L, DataType.INT64, ">q"),
    (Size.L, DataType.UINT64, ">Q"),
    (Size.L, DataType.FLOAT64, ">d"),
]


def value_for(fmt: str) -> st.SearchStrategy[float | int | bool]:
    if fmt == "?":
        return st.booleans()
    if fmt == ">f":
        return st.floats(width=32, allow_nan=False)
    if fmt == ">d":
        return st.floats(allow_nan=False)
    bits = struct.calcsize(fmt) * 8
    if fmt[-1].isupper():
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@st.composite
def layouts(draw: st.DrawFn) -> list[tuple[int, int, int, int | None, int, float | int | bool]]:
    """Non-overlapping values: (area index, db, byte, bit, kind index, value)."""
    n = draw(st.integers(1, 40))
    out = []
    cursor = {0: 0, 1: 0, 2: 0}
    for _ in range(n):
        area = draw(st.integers(0, 2))
        kind = draw(st.integers(0, len(KINDS) - 1))
        size, _, fmt = KINDS[kind]
        cursor[area] += draw(st.integers(0, 30))
        byte = cursor[area]
        bit = draw(st.integers(0, 7)) if size is Size.X else None
        cursor[area] += max(1, int(size))
        out.append((area, 5 if area == 0 else 0, byte, bit, kind, draw(value_for(fmt))))
    return out


AREAS = [Area.DB, Area.M, Area.Q]


@settings(max_examples=150, deadline=None)
@given(layouts(), st.sampled_from([240, 480, 960]), st.integers(0, 40))
def test_round_trip(
    layout: list[tuple[int, int, int, int | None, int, float | int | bool]],
    pdu: int,
    max_gap: int,
) -> None:
    memory = {a: bytearray(2048) for a in range(3)}
    tags = []
    expected: dict[int, float] = {}
    for tag_id, (area, db, byte, bit, kind, value) in enumerate(layout):
        size, data_type, fmt = KINDS[kind]
        if size is Size.X:
            assert bit is not None
            if value:
                memory[area][byte] |= 1 << bit
            else:
                memory[area][byte] &= ~(1 << bit) & 0xFF
        else:
            struct.pack_into(fmt, memory[area], byte, value)
        tags.append(PlanTag(tag_id, S7Address(AREAS[area], db, byte, size, bit), data_type))
        expected[tag_id] = float(value)
    plan = build_plan(tags, pdu=pdu, max_gap=max_gap)
    assert all(b.size <= max_block_bytes(pdu) for b in plan.blocks)
    assert all(r.response_bytes <= pdu for r in plan.requests)
    values = np.empty(len(plan), dtype=np.float64)
    quality = np.empty(len(plan), dtype=np.uint32)
    for block in plan.blocks:
        mem = memory[AREAS.index(block.area)]
        block.decode_into(mem[block.byte : block.byte + block.size], values, quality)
    assert not quality.any()
    got = dict(zip(plan.tag_ids.tolist(), values.tolist(), strict=True))
    for tag_id, want in expected.items():
        assert got[tag_id] == want  # exact: float32 widens losslessly, ints round alike


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(1, 20), st.text(max_size=20)),
        min_size=1,
        max_size=6,
    ),
    st.binary(min_size=80, max_size=80),
)
def test_strings_round_trip_and_garbage_never_raises(
    strings: list[tuple[int, int, str]], noise: bytes
) -> None:
    """STRING[n] written as the PLC stores it reads back as the same text (Latin-1);
    the same plan over random bytes never raises: each string is text or Bad."""
    tags: list[PlanTag] = []
    memory = bytearray(noise)
    expected: dict[int, str] = {}
    taken: set[int] = set()
    for k, (byte, n, text) in enumerate(strings):
        span = set(range(byte, byte + n + 2))
        if span & taken:
            continue
        taken |= span
        chars = text.encode("latin-1", "replace")[:n]
        memory[byte : byte + n + 2] = bytes([n, len(chars)]) + chars.ljust(n, b"\0")
        tags.append(PlanTag(k, S7Address(Area.DB, 1, byte, Size.B), DataType.STRING, n))
        expected[k] = chars.decode("latin-1")
    plan = build_plan(tags, max_gap=80)
    for data, check in ((bytes(memory), True), (noise, False)):
        values = np.empty(len(plan), dtype=np.float64)
        quality = np.empty(len(plan), dtype=np.uint32)
        texts = np.full(len(plan), None, dtype=object)
        for block in plan.blocks:
            raw = data[block.byte : block.byte + block.size]
            block.decode_into(raw, values, quality, texts)
        assert np.isnan(values).all()
        for i, tag_id in enumerate(plan.tag_ids.tolist()):
            assert (texts[i] is None) == (quality[i] != 0)
            if check:
                assert texts[i] == expected[tag_id]
