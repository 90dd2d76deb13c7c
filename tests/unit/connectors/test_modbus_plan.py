"""Coalescing and decoding of the Modbus read plan (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from isthmus.connectors.modbus.config import ModbusSourceConfig, Order, RegisterKind
from isthmus.connectors.modbus.decode import PlanTag, build_plan, encode_value
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

H = RegisterKind.HOLDING


def t(
    tag_id: int,
    address: int,
    dt: DataType = DataType.INT16,
    kind: RegisterKind = H,
    word: Order = Order.BIG,
    byte: Order = Order.BIG,
) -> PlanTag:
    return PlanTag(tag_id, kind, address, dt, word, byte)


def spans(plan: object) -> list[tuple[str, int, int]]:
    return [(b.kind.value, b.address, b.count) for b in plan.blocks]  # type: ignore[attr-defined]


def test_adjacent_tags_make_one_block() -> None:
    plan = build_plan([t(1, 0), t(2, 1), t(3, 2, DataType.FLOAT32)])
    assert spans(plan) == [("holding", 0, 4)]


def test_gap_within_max_gap_is_bridged() -> None:
    plan = build_plan([t(1, 0), t(2, 9)], max_gap=8)
    assert spans(plan) == [("holding", 0, 10)]


def test_gap_beyond_max_gap_splits() -> None:
    plan = build_plan([t(1, 0), t(2, 10)], max_gap=8)
    assert spans(plan) == [("holding", 0, 1), ("holding", 10, 1)]


def test_zero_gap_only_merges_contiguous() -> None:
    plan = build_plan([t(1, 0), t(2, 1), t(3, 3)], max_gap=0)
    assert spans(plan) == [("holding", 0, 2), ("holding", 3, 1)]


def test_limit_splits_without_breaking_a_value() -> None:
    # 0..123 int16, then a float32 at 124..125: it cannot straddle the 125 limit.
    tags = [t(i, i) for i in range(124)] + [t(999, 124, DataType.FLOAT32)]
    plan = build_plan(tags, max_registers=125)
    assert spans(plan) == [("holding", 0, 124), ("holding", 124, 2)]
    assert all(b.count <= 125 for b in plan.blocks)


def test_small_limit() -> None:
    plan = build_plan([t(i, 2 * i, DataType.UINT32) for i in range(5)], max_registers=4)
    assert spans(plan) == [("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 2)]


def test_kinds_never_share_a_block_and_bits_use_max_bits() -> None:
    tags = [
        t(1, 0),
        t(2, 0, kind=RegisterKind.INPUT),
        *[t(10 + i, i, DataType.BOOL, RegisterKind.COIL) for i in range(30)],
        t(50, 3, DataType.BOOL, RegisterKind.DISCRETE),
    ]
    plan = build_plan(tags, max_bits=16)
    assert spans(plan) == [
        ("holding", 0, 1),
        ("input", 0, 1),
        ("coil", 0, 16),
        ("coil", 16, 14),
        ("discrete", 3, 1),
    ]


def test_plan_order_is_tag_order_of_blocks() -> None:
    plan = build_plan([t(7, 5), t(3, 0), t(9, 2, kind=RegisterKind.INPUT)])
    assert plan.tag_ids.tolist() == [3, 7, 9]
    for block in plan.blocks:
        assert plan.tag_ids[block.start : block.stop].tolist() == block.tag_ids.tolist()


def test_value_wider_than_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_registers"):
        build_plan([t(1, 0, DataType.FLOAT64)], max_registers=2)


def test_config_refuses_value_wider_than_max_registers() -> None:
    with pytest.raises(ValueError, match="max_registers"):
        ModbusSourceConfig(
            name="m",
            host="h",
            max_registers=2,
            tags=[{"path": "a/b/c/d/e", "address": 0, "data_type": "float64"}],  # type: ignore[list-item]
        )


@pytest.mark.parametrize(
    ("dt", "word", "byte", "value", "registers"),
    [
        (DataType.FLOAT32, Order.BIG, Order.BIG, 1.0, [0x3F80, 0x0000]),
        (DataType.FLOAT32, Order.LITTLE, Order.BIG, 1.0, [0x0000, 0x3F80]),
        (DataType.FLOAT32, Order.BIG, Order.LITTLE, 1.0, [0x803F, 0x0000]),
        (DataType.FLOAT32, Order.LITTLE, Order.LITTLE, 1.0, [0x0000, 0x803F]),
        (DataType.FLOAT32, Order.BIG, Order.BIG, -2.5, [0xC020, 0x0000]),
        (DataType.INT16, Order.BIG, Order.BIG, -1, [0xFFFF]),
        (DataType.INT16, Order.BIG, Order.LITTLE, 0x0102, [0x0201]),
        (DataType.UINT16, Order.BIG, Order.BIG, 65535, [0xFFFF]),
        (DataType.INT32, Order.BIG, Order.BIG, 0x12345678, [0x1234, 0x5678]),
        (DataType.INT32, Order.LITTLE, Order.BIG, 0x12345678, [0x5678, 0x1234]),
        (DataType.INT32, Order.BIG, Order.BIG, -2, [0xFFFF, 0xFFFE]),
        (DataType.UINT32, Order.BIG, Order.LITTLE, 0x12345678, [0x3412, 0x7856]),
        (
            DataType.INT64,
            Order.BIG,
            Order.BIG,
            0x0102030405060708,
            [0x0102, 0x0304, 0x0506, 0x0708],
        ),
        (DataType.UINT64, Order.LITTLE, Order.BIG, 1, [0x0001, 0, 0, 0]),
        (DataType.FLOAT64, Order.BIG, Order.BIG, 1.0, [0x3FF0, 0, 0, 0]),
        (DataType.FLOAT64, Order.LITTLE, Order.LITTLE, 1.0, [0, 0, 0, 0xF03F]),
    ],
)
def test_known_vectors(
    dt: DataType, word: Order, byte: Order, value: float, registers: list[int]
) -> None:
    assert encode_value(dt, value, word, byte) == registers
    plan = build_plan([t(1, 10, dt, word=word, byte=byte)])
    values, quality = plan.blocks[0].decode(registers)
    assert values.tolist() == [float(value)]
    assert quality.tolist() == [Quality.GOOD]


def test_mixed_block_decodes_every_group() -> None:
    tags = [
        t(1, 0, DataType.FLOAT32),
        t(2, 2, DataType.INT16),
        t(3, 3, DataType.FLOAT32, word=Order.LITTLE, byte=Order.LITTLE),
        t(4, 6, DataType.UINT32, word=Order.LITTLE),
        t(5, 9, DataType.INT16),
    ]
    regs = (
        encode_value(DataType.FLOAT32, 1.5)
        + encode_value(DataType.INT16, -7)
        + encode_value(DataType.FLOAT32, 2.25, Order.LITTLE, Order.LITTLE)
        + [0xDEAD]  # gap register, bridged
        + encode_value(DataType.UINT32, 4_000_000_000, Order.LITTLE)
        + [0xBEEF]
        + encode_value(DataType.INT16, 300)
    )
    plan = build_plan(tags)
    assert spans(plan) == [("holding", 0, 10)]
    values, quality = plan.blocks[0].decode(regs)
    assert values.tolist() == [1.5, -7.0, 2.25, 4e9, 300.0]
    assert not quality.any()


def test_bits_decode_as_zero_and_one() -> None:
    plan = build_plan(
        [t(1, 0, DataType.BOOL, RegisterKind.COIL), t(2, 2, DataType.BOOL, RegisterKind.COIL)]
    )
    values, _ = plan.blocks[0].decode([True, False, False] + [False] * 5)
    assert values.tolist() == [1.0, 0.0]


def test_short_response_marks_only_missing_tags() -> None:
    plan = build_plan([t(1, 0), t(2, 1, DataType.FLOAT32)])
    values, quality = plan.blocks[0].decode([5, 0x3F80])
    assert values[0] == 5.0 and quality[0] == Quality.GOOD
    assert np.isnan(values[1]) and quality[1] == Quality.BAD_DECODING_ERROR


def test_non_register_values_are_a_decoding_error() -> None:
    plan = build_plan([t(1, 0), t(2, 1)])
    values, quality = plan.blocks[0].decode([70000, -1])
    assert np.isnan(values).all()
    assert (quality == Quality.BAD_DECODING_ERROR).all()


def test_fail_into_marks_only_that_block() -> None:
    plan = build_plan([t(1, 0), t(2, 100)])
    values = np.zeros(2)
    quality = np.zeros(2, dtype=np.uint32)
    plan.blocks[1].fail_into(quality, values, Quality.BAD_CONFIGURATION_ERROR)
    assert quality.tolist() == [0, Quality.BAD_CONFIGURATION_ERROR]


def test_bool_encoding() -> None:
    assert encode_value(DataType.BOOL, True) == [1]
    assert encode_value("bool", 0) == [0]


def test_payload_bytes_decode_like_registers() -> None:
    tags = [t(1, 0, DataType.FLOAT32), t(2, 2, DataType.INT16), t(3, 3, DataType.UINT16)]
    plan = build_plan(tags)
    payload = bytes([0x3F, 0x80, 0x00, 0x00, 0xFF, 0xFE, 0x12, 0x34])
    values, quality = plan.blocks[0].decode(payload)
    assert values.tolist() == [1.0, -2.0, 0x1234]
    assert not quality.any()


def test_payload_bits_are_lsb_first() -> None:
    tags = [t(i, i, DataType.BOOL, RegisterKind.COIL) for i in range(10)]
    plan = build_plan(tags)
    values, _ = plan.blocks[0].decode(bytes([0b00000101, 0b00000010]))
    assert values.tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]


def test_odd_payload_is_a_decoding_error() -> None:
    plan = build_plan([t(1, 0)])
    _, quality = plan.blocks[0].decode(b"\x01")
    assert quality.tolist() == [Quality.BAD_DECODING_ERROR]
