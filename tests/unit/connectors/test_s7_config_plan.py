"""S7 connector (pure parts): address parsing, config validation, read plan packing,
item parsing and write encoding."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from isthmus.connectors.s7 import spec
from isthmus.connectors.s7.config import (
    Area,
    S7SourceConfig,
    S7TagConfig,
    Size,
    parse_address,
)
from isthmus.connectors.s7.decode import (
    HEADER,
    PlanTag,
    build_plan,
    max_block_bytes,
    response_size,
)
from isthmus.connectors.s7.errors import WriteRefused
from isthmus.connectors.s7.source import item_quality, parse_items, raw_payload
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

PATH = "a/l/c/e/t"


@pytest.mark.parametrize(
    ("text", "area", "db", "byte", "size", "bit", "normal"),
    [
        ("DB10.DBX4.3", Area.DB, 10, 4, Size.X, 3, "DB10.DBX4.3"),
        ("db10.dbb5", Area.DB, 10, 5, Size.B, None, "DB10.DBB5"),
        ("DB10.DBW6", Area.DB, 10, 6, Size.W, None, "DB10.DBW6"),
        ("DB10.DBD8", Area.DB, 10, 8, Size.D, None, "DB10.DBD8"),
        ("DB1,DBL16", Area.DB, 1, 16, Size.L, None, "DB1.DBL16"),
        ("DB65535.DBB65535", Area.DB, 65535, 65535, Size.B, None, "DB65535.DBB65535"),
        ("I0.1", Area.I, 0, 0, Size.X, 1, "I0.1"),
        ("E0.7", Area.I, 0, 0, Size.X, 7, "I0.7"),
        ("Q0.0", Area.Q, 0, 0, Size.X, 0, "Q0.0"),
        ("A1.2", Area.Q, 0, 1, Size.X, 2, "Q1.2"),
        ("M10.2", Area.M, 0, 10, Size.X, 2, "M10.2"),
        ("MX10.2", Area.M, 0, 10, Size.X, 2, "M10.2"),
        ("MB4", Area.M, 0, 4, Size.B, None, "MB4"),
        ("MW20", Area.M, 0, 20, Size.W, None, "MW20"),
        ("MD24", Area.M, 0, 24, Size.D, None, "MD24"),
        ("IW64", Area.I, 0, 64, Size.W, None, "IW64"),
        ("EW64", Area.I, 0, 64, Size.W, None, "IW64"),
        ("QW2", Area.Q, 0, 2, Size.W, None, "QW2"),
        ("AD8", Area.Q, 0, 8, Size.D, None, "QD8"),
        (" mw 20 ", Area.M, 0, 20, Size.W, None, "MW20"),
    ],
)
def test_parse_valid(
    text: str, area: Area, db: int, byte: int, size: Size, bit: int | None, normal: str
) -> None:
    addr = parse_address(text)
    assert (addr.area, addr.db, addr.byte, addr.size, addr.bit) == (area, db, byte, size, bit)
    assert str(addr) == normal
    assert parse_address(str(addr)) == addr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DB10.DBX4", "needs .bit"),
        ("DB10.DBX4.8", "bit must be 0..7"),
        ("DB10.DBW4.1", "only bit addresses"),
        ("DB0.DBW4", "DB number must be 1..65535"),
        ("DB70000.DBW4", "DB number"),
        ("DB1.DBB70000", "byte offset"),
        ("DB1.DBW65535", "runs past"),
        ("M10", "needs .bit"),
        ("MW", "not an S7 address"),
        ("X10.1", "not an S7 address"),
        ("DB10", "not an S7 address"),
        ("T5", "not an S7 address"),
        ("", "not an S7 address"),
    ],
)
def test_parse_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def tag(**kw: Any) -> S7TagConfig:
    return S7TagConfig.model_validate({"path": PATH, **kw})


def test_default_types_follow_the_size_letter() -> None:
    assert tag(address="DB1.DBX0.0").data_type is DataType.BOOL
    assert tag(address="DB1.DBB0").data_type is DataType.UINT16
    assert tag(address="MW0").data_type is DataType.INT16
    assert tag(address="MD0").data_type is DataType.FLOAT32
    assert tag(address="DB1.DBL0").data_type is DataType.FLOAT64
    assert tag(address="db1.dbw2", data_type="uint16").address == "DB1.DBW2"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"address": "DB1.DBW0", "data_type": "float32"}, "cannot hold float32"),
        ({"address": "DB1.DBD0", "data_type": "int16"}, "use data_type float32, int32, uint32"),
        ({"address": "DB1.DBX0.0", "data_type": "int16"}, "cannot hold"),
        ({"address": "I0.0", "writable": True}, "inputs cannot be written"),
        ({"address": "DB1.DBQ0"}, "not an S7 address"),
    ],
)
def test_tag_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        tag(**kw)


def test_tag_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        tag(address="DB1.DBX0.9")
    assert info.value.errors()[0]["loc"] == ("address",)


def source(**kw: Any) -> S7SourceConfig:
    return S7SourceConfig.model_validate({"name": "plc", "host": "10.0.0.1", **kw})


def test_source_defaults_and_errors() -> None:
    cfg = source(tags=[{"path": PATH, "address": "MW0"}])
    assert (cfg.port, cfg.rack, cfg.slot, cfg.connection_type.value) == (102, 0, 1, "pg")
    assert cfg.max_pdu == 960 and cfg.bit_writes.value == "bit"
    with pytest.raises(ValidationError, match="both local_tsap and remote_tsap"):
        source(local_tsap=0x100)
    with pytest.raises(ValidationError) as info:
        source(tags=[{"path": PATH, "address": "MW0", "poll_group": "fast"}])
    assert info.value.errors()[0]["loc"] == ("tags", 0, "poll_group")
    with pytest.raises(ValidationError):
        source(max_pdu=100)
    assert spec().name == "s7" and spec().config_model is S7SourceConfig


def pt(tag_id: int, text: str, data_type: DataType | None = None) -> PlanTag:
    addr = parse_address(text)
    from isthmus.connectors.s7.config import ALLOWED_TYPES

    return PlanTag(tag_id, addr, data_type or ALLOWED_TYPES[addr.size][0])


def test_coalesces_per_area_and_bridges_small_gaps() -> None:
    tags = [
        pt(1, "DB1.DBW0"),
        pt(2, "DB1.DBD2"),
        pt(3, "DB1.DBX6.1"),
        pt(4, "DB1.DBW40"),  # gap 33 > 16: new block
        pt(5, "DB2.DBW0"),  # other DB
        pt(6, "MW0"),
        pt(7, "M3.0"),
        pt(8, "IW0"),
        pt(9, "Q0.0"),
    ]
    plan = build_plan(tags, pdu=240, max_gap=16)
    shape = [(b.area, b.db, b.byte, b.size) for b in plan.blocks]
    assert shape == [
        (Area.DB, 1, 0, 7),
        (Area.DB, 1, 40, 2),
        (Area.DB, 2, 0, 2),
        (Area.I, 0, 0, 2),
        (Area.Q, 0, 0, 1),
        (Area.M, 0, 0, 4),
    ]
    assert len(plan.requests) == 1  # all items fit one PDU
    assert sorted(plan.tag_ids.tolist()) == list(range(1, 10))
    assert build_plan(tags, max_gap=40).blocks[0].size == 42


def test_blocks_respect_the_pdu() -> None:
    limit = max_block_bytes(240)
    assert limit == 240 - HEADER - 2 - 4
    tags = [pt(i, f"DB1.DBD{i * 4}") for i in range(200)]  # 800 contiguous bytes
    for pdu in (240, 480, 960):
        plan = build_plan(tags, pdu=pdu, max_gap=0)
        assert all(b.size <= max_block_bytes(pdu) for b in plan.blocks)
        assert all(r.response_bytes <= pdu and r.request_bytes <= pdu for r in plan.requests)
        assert sum(b.size for b in plan.blocks) == 800
        assert len(plan) == 200


def test_requests_respect_item_limit_and_response_size() -> None:
    tags = [pt(i, f"DB{i + 1}.DBW0") for i in range(50)]  # 50 separate DBs
    plan = build_plan(tags, pdu=240, max_items=20)
    # request: 10 + 2 + 12 n <= 240 -> n <= 19
    assert [len(r.blocks) for r in plan.requests] == [19, 19, 12]
    plan = build_plan(tags, pdu=960, max_items=20)
    assert [len(r.blocks) for r in plan.requests] == [20, 20, 10]
    big = [pt(i, f"DB{i + 1}.DBB0") for i in range(3)] + [pt(9, "DB9.DBD0")]
    assert response_size([1, 1, 4]) == HEADER + 2 + (4 + 1 + 1) * 2 + 4 + 4
    assert len(build_plan(big, pdu=240).requests) == 1


def test_decode_block_and_short_answer() -> None:
    tags = [
        pt(1, "DB1.DBX0.0"),
        pt(2, "DB1.DBX0.7"),
        pt(3, "DB1.DBB1", DataType.INT16),
        pt(4, "DB1.DBW2", DataType.UINT16),
        pt(5, "DB1.DBD4", DataType.FLOAT32),
    ]
    block = build_plan(tags).blocks[0]
    data = bytes([0x80, 0xFF]) + struct.pack(">Hf", 65535, -2.5)
    values, quality = block.decode(data)
    assert values.tolist() == [0.0, 1.0, -1.0, 65535.0, -2.5]
    assert not quality.any()
    values, quality = block.decode(data[:-1])
    assert np.isnan(values).all() and (quality == Quality.BAD_DECODING_ERROR).all()


def test_parse_items_with_errors_and_fill_bytes() -> None:
    raw = bytes.fromhex("ff040008aa000a000000ff040010bbccff04000801")
    assert parse_items(raw, 4) == [b"\xaa", 0x0A, b"\xbb\xcc", b"\x01"]
    with pytest.raises(ValueError, match="truncated"):
        parse_items(raw[:-1], 4)
    assert item_quality(0x0A) == Quality.BAD_CONFIGURATION_ERROR
    assert item_quality(0x05) == Quality.BAD_CONFIGURATION_ERROR
    assert item_quality(0x01) == Quality.BAD_DEVICE_FAILURE


def test_raw_payload() -> None:
    def payload(address: str, value: float, **kw: Any) -> bytes:
        cfg = tag(address=address, writable=True, **kw)
        return raw_payload(cfg, cfg.parsed, value)

    assert payload("DB1.DBW0", 25.0, scale=0.1) == struct.pack(">h", 250)
    assert payload("DB1.DBD0", 1.5) == struct.pack(">f", 1.5)
    assert payload("DB1.DBL0", 1.5) == struct.pack(">d", 1.5)
    assert payload("DB1.DBB0", 255) == b"\xff"
    assert payload("DB1.DBB0", -1, data_type="int16") == b"\xff"
    assert payload("Q0.1", True) == b"\x01"
    with pytest.raises(WriteRefused, match="outside"):
        payload("DB1.DBB0", 256)
    with pytest.raises(WriteRefused, match="outside"):
        payload("DB1.DBW0", 40000)
    with pytest.raises(WriteRefused, match="not a bool"):
        payload("DB1.DBW0", True)
    with pytest.raises(WriteRefused, match="true/false"):
        payload("M0.0", 2)


def test_raw_payload_keeps_64_bit_integers_exact() -> None:
    cfg = tag(address="DB1.DBL0", data_type="uint64", writable=True)
    assert raw_payload(cfg, cfg.parsed, 2**64 - 1) == b"\xff" * 8
    cfg = tag(address="DB1.DBL0", data_type="int64", writable=True)
    assert raw_payload(cfg, cfg.parsed, -(2**63) + 1) == struct.pack(">q", -(2**63) + 1)
    with pytest.raises(WriteRefused, match="outside"):
        raw_payload(cfg, cfg.parsed, 2**63)


def test_strings_widen_their_block_and_decode_as_text() -> None:
    tags = [
        PlanTag(1, parse_address("DB1.DBB0"), DataType.STRING, length=6),
        PlanTag(2, parse_address("DB1.DBW8"), DataType.INT16),
        PlanTag(3, parse_address("DB1.DBB10"), DataType.STRING, length=2),
    ]
    plan = build_plan(tags, max_gap=0)
    (block,) = plan.blocks  # 0..7 string, 8..9 int, 10..13 string: one range
    assert (block.byte, block.size) == (0, 14) and plan.has_text
    data = bytes([6, 3]) + b"ab\xe9\0\0\0" + struct.pack(">h", -5) + bytes([2, 3]) + b"xy"
    values = np.empty(3, dtype=np.float64)
    quality = np.empty(3, dtype=np.uint32)
    texts = np.full(3, None, dtype=object)
    assert block.decode_into(data, values, quality, texts) == 2
    assert texts.tolist() == ["abé", None, None]
    assert values[1] == -5.0 and np.isnan(values[0])
    assert quality.tolist() == [0, 0, 0x80070000]  # actual 3 > max 2: Bad_DecodingError


def test_string_writes_are_checked() -> None:
    cfg = S7TagConfig(
        path="a/l/c/e/s", address="DB1.DBB0", data_type=DataType.STRING, length=4, writable=True
    )
    assert raw_payload(cfg, cfg.parsed, "Aé") == bytes([2]) + "Aé".encode("latin-1")
    assert cfg.width == 6
    for bad, match in (("toolong", "do not fit"), ("€uro", "Latin-1"), (1.0, "write text")):
        with pytest.raises(WriteRefused, match=match):
            raw_payload(cfg, cfg.parsed, bad)
    number = S7TagConfig(path="a/l/c/e/n", address="DB1.DBW0", data_type=DataType.INT16)
    with pytest.raises(WriteRefused, match="not text"):
        raw_payload(number, number.parsed, "12")
