"""Modbus fixed-length strings: config rules, coalescing, decoding and write encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from isthmus.connectors.modbus.config import (
    ModbusSourceConfig,
    ModbusTagConfig,
    Order,
    RegisterKind,
)
from isthmus.connectors.modbus.decode import (
    PlanTag,
    build_plan,
    decode_string,
    encode_string,
)
from isthmus.connectors.modbus.errors import WriteRefused
from isthmus.connectors.modbus.writes import WriteFunction, write_request
from isthmus.model.config import DataType
from isthmus.model.quality import Quality


def tag(**fields: Any) -> ModbusTagConfig:
    return ModbusTagConfig.model_validate({"path": "a/l/c/e/t", "address": 0, **fields})


def regs(text: bytes) -> list[int]:
    """Registers from raw bytes, high byte first (independent of the encoder)."""
    data = text + b"\x00" * (len(text) % 2)
    return [int.from_bytes(data[k : k + 2], "big") for k in range(0, len(data), 2)]


def test_string_config_rules() -> None:
    t = tag(data_type="string", length=10, kind="input")
    assert t.width == 10 and t.value_type is DataType.STRING
    with pytest.raises(ValidationError, match="needs length"):
        tag(data_type="string")
    with pytest.raises(ValidationError, match="length: applies to data_type: string"):
        tag(data_type="uint16", length=2)
    with pytest.raises(ValidationError, match="hold booleans"):
        tag(data_type="string", length=2, kind="coil")
    with pytest.raises(ValidationError, match="no range, scale or offset"):
        tag(data_type="string", length=2, scale=0.1)
    with pytest.raises(ValidationError, match="runs past register 65535"):
        tag(data_type="string", length=10, address=65530)
    with pytest.raises(ValidationError):
        tag(data_type="string", length=126)
    with pytest.raises(ValidationError, match="more than max_registers=8"):
        ModbusSourceConfig.model_validate(
            {
                "name": "s",
                "host": "h",
                "max_registers": 8,
                "tags": [{"path": "a/l/c/e/t", "address": 0, "data_type": "string", "length": 9}],
            }
        )


def test_decode_ascii_nul_and_space_padding() -> None:
    assert decode_string(regs(b"SN-4711")) == "SN-4711"
    assert decode_string(regs(b"PUMP    ")) == "PUMP"  # space padded
    assert decode_string(regs(b"  LEAD\x00\x00")) == "  LEAD"  # leading spaces kept
    assert decode_string(regs(b"AB\x00GARBAGE")) == "AB"  # text ends at the first NUL
    assert decode_string([]) == ""
    assert decode_string(regs(b"\x00\x00")) == ""


def test_decode_byte_order_and_invalid_utf8() -> None:
    assert decode_string(regs(b"EMCR"), Order.LITTLE) == "MERC"
    assert decode_string(regs("Brühe".encode())) == "Brühe"
    assert decode_string(regs(b"caf\xe9")) == "caf\ufffd"  # Latin-1 é: replacement, no error


def test_encode_pads_with_nul_and_refuses_what_does_not_fit() -> None:
    assert encode_string("ABC", 3) == regs(b"ABC\x00\x00\x00")
    assert encode_string("ABC", 2, Order.LITTLE) == [0x4241, 0x0043]
    assert encode_string("", 1) == [0]
    with pytest.raises(ValueError, match="do not fit 2 registers"):
        encode_string("ABCDE", 2)
    with pytest.raises(ValueError, match="do not fit 1 registers"):
        encode_string("éé", 1)  # 4 bytes in UTF-8
    with pytest.raises(ValueError, match="NUL"):
        encode_string("A\x00B", 4)


def test_strings_coalesce_with_numbers_into_one_block() -> None:
    tags = [
        PlanTag(1, RegisterKind.HOLDING, 0, DataType.UINT16),
        PlanTag(2, RegisterKind.HOLDING, 1, DataType.STRING, length=4),
        PlanTag(3, RegisterKind.HOLDING, 5, DataType.FLOAT32),
        PlanTag(4, RegisterKind.HOLDING, 7, DataType.STRING, byte_order=Order.LITTLE, length=2),
        PlanTag(5, RegisterKind.HOLDING, 200, DataType.STRING, length=3),
    ]
    plan = build_plan(tags, max_registers=125, max_gap=8)
    assert [(b.address, b.count) for b in plan.blocks] == [(0, 9), (200, 3)]
    assert plan.has_text
    response = [7, *regs(b"RECIPE-1"), 0x4248, 0x0000, 0, 0]
    response[7:9] = [0x4B4F, 0x5941]  # "OKAY" with each register's characters swapped
    values, quality, text = plan.blocks[0].decode_text(np.array(response, dtype=np.uint16))
    by_id = dict(zip(plan.blocks[0].tag_ids.tolist(), range(4), strict=True))
    assert quality.tolist() == [Quality.GOOD] * 4
    assert values[by_id[1]] == 7 and values[by_id[3]] == 50.0
    assert text[by_id[2]] == "RECIPE-1" and np.isnan(values[by_id[2]])
    assert text[by_id[4]] == "OKAY"
    assert text[by_id[1]] is None
    # the same block decoded from raw payload bytes (the source's fast path)
    payload = b"".join(int(w).to_bytes(2, "big") for w in response)
    _, _, again = plan.blocks[0].decode_text(payload)
    assert again.tolist() == text.tolist()
    # a numeric-only plan needs no text column
    assert not build_plan(tags[:1] + tags[2:3]).has_text


def test_short_response_makes_the_string_bad() -> None:
    plan = build_plan([PlanTag(1, RegisterKind.INPUT, 0, DataType.STRING, length=4)])
    values, quality, text = plan.blocks[0].decode_text(np.array(regs(b"ABCD"), dtype=np.uint16))
    assert quality.tolist() == [Quality.BAD_DECODING_ERROR]
    assert text.tolist() == [None] and np.isnan(values[0])
    # without a place for the text (a caller that passes no text column): Bad, not lost
    _, q = plan.blocks[0].decode(np.array(regs(b"ABCDEFGH"), dtype=np.uint16))
    assert q.tolist() == [Quality.BAD_DECODING_ERROR]


def test_string_write_request() -> None:
    t = tag(data_type="string", length=4, writable=True)
    request = write_request(t, "LOT-7", Order.BIG, Order.BIG)
    assert request.function == WriteFunction.REGISTERS
    assert request.words == tuple(regs(b"LOT-7\x00\x00\x00"))
    assert request.count == 4
    swapped = write_request(t, "LOT-7", Order.BIG, Order.LITTLE)
    assert swapped.words == tuple(encode_string("LOT-7", 4, Order.LITTLE))
    with pytest.raises(WriteRefused, match="do not fit 4 registers"):
        write_request(t, "X" * 9, Order.BIG, Order.BIG)
    with pytest.raises(WriteRefused, match="takes text"):
        write_request(t, 42.0, Order.BIG, Order.BIG)
    numeric = tag(data_type="uint16", writable=True)
    with pytest.raises(WriteRefused, match="strings go to string tags"):
        write_request(numeric, "42", Order.BIG, Order.BIG)
