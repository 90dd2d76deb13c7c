"""Modbus config rules (bit-in-register, poll groups, writable kinds) and write encoding."""

from __future__ import annotations

import struct
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
from isthmus.connectors.modbus.decode import PlanTag, build_plan
from isthmus.connectors.modbus.errors import WriteRefused
from isthmus.connectors.modbus.writes import WriteFunction, to_raw, write_request
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.config import DataType
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config


def tag(**fields: Any) -> ModbusTagConfig:
    return ModbusTagConfig.model_validate({"path": "a/l/c/e/t", "address": 0, **fields})


def test_bit_in_register_rules() -> None:
    assert tag(data_type="bool", bit=15).bit == 15
    assert tag(data_type="bool", bit=0, kind="input").bit == 0
    with pytest.raises(ValidationError, match="needs bit"):
        tag(data_type="bool")
    with pytest.raises(ValidationError, match="needs data_type: bool"):
        tag(data_type="int16", bit=3)
    with pytest.raises(ValidationError, match="not coil"):
        tag(data_type="bool", bit=3, kind="coil")
    with pytest.raises(ValidationError):
        tag(data_type="bool", bit=16)


def test_writable_needs_a_writable_kind() -> None:
    assert tag(data_type="int16", writable=True).writable
    with pytest.raises(ValidationError, match="read-only"):
        tag(data_type="int16", kind="input", writable=True)
    with pytest.raises(ValidationError, match="read-only"):
        tag(data_type="bool", kind="discrete", writable=True)


PLANT = """\
enterprise: acme
site: plant1
hierarchy: {area: {line: {cell: [eq]}}}
sources:
  - name: plc
    type: modbus
    host: 127.0.0.1
    poll_groups: {fast: 100ms, slow: 10s}
    tags:
      - {path: area/line/cell/eq/a, address: 0, data_type: int16, poll_group: fast}
      - {path: area/line/cell/eq/b, address: 1, data_type: int16, poll_group: medium}
"""


def test_unknown_poll_group_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_plant_config(PLANT, "plant.yaml", source_models(default_connectors()))
    (issue,) = info.value.issues
    assert issue.path == "sources.0.tags.1.poll_group"
    assert issue.line == 11
    assert "'medium'" in issue.message and "fast, slow" in issue.message


def test_poll_group_intervals() -> None:
    good = PLANT.replace("medium", "slow")
    _, (source,) = load_plant_config(good, "plant.yaml", source_models(default_connectors()))
    assert isinstance(source, ModbusSourceConfig)
    assert source.group_interval("fast") == 0.1
    assert source.group_interval("slow") == 10.0
    assert source.group_interval(None) == 1.0
    with pytest.raises(ValidationError, match="not a valid name"):
        ModbusSourceConfig.model_validate({"name": "p", "host": "h", "poll_groups": {"a b": 1}})


def test_bit_in_register_decode_vectorised() -> None:
    tags = [PlanTag(i, RegisterKind.HOLDING, 0, DataType.BOOL, bit=i) for i in range(16)]
    plan = build_plan(tags)
    values, quality = plan.blocks[0].decode([0b1010_0000_0000_0011])
    assert values.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
    assert not quality.any()
    short, q = plan.blocks[0].decode([])
    assert np.isnan(short).all() and q.all()


@pytest.mark.parametrize(
    ("fields", "value", "raw"),
    [
        ({"data_type": "int16", "scale": 0.1}, 21.37, 214),
        ({"data_type": "int16", "scale": 0.1}, -0.05, -1),  # half away from zero
        ({"data_type": "uint16", "scale": 0.1, "offset": -50}, 0, 500),
        ({"data_type": "int32", "scale": 2}, 2.0, 1),
        ({"data_type": "float32", "scale": 0.5}, 1.5, 3.0),
        ({"data_type": "bool", "kind": "coil"}, True, 1),
    ],
)
def test_to_raw(fields: dict[str, Any], value: float, raw: float) -> None:
    assert to_raw(tag(**fields), value) == raw


@pytest.mark.parametrize(
    ("fields", "value", "match"),
    [
        ({"data_type": "int16"}, 32768, "int16 range"),
        ({"data_type": "uint16"}, -1, "uint16 range"),
        ({"data_type": "uint32", "scale": 0.001}, 4_294_968, "uint32 range"),
        ({"data_type": "float32"}, 1e39, "float32"),
        ({"data_type": "float64"}, float("nan"), "finite"),
        ({"data_type": "int16", "scale": 0}, 1, "scale is 0"),
        ({"data_type": "bool", "kind": "coil"}, 2, "0/1"),
    ],
)
def test_to_raw_refuses(fields: dict[str, Any], value: float, match: str) -> None:
    with pytest.raises(WriteRefused, match=match):
        to_raw(tag(**fields), value)


def test_write_requests_by_width_and_kind() -> None:
    big, little = Order.BIG, Order.LITTLE
    single = write_request(tag(data_type="uint16", writable=True), 7, big, big)
    assert (single.function, single.words) == (WriteFunction.REGISTER, (7,))
    f32 = write_request(tag(data_type="float32", writable=True), 1.5, little, big)
    assert f32.function == WriteFunction.REGISTERS
    assert f32.words == tuple(reversed(struct.unpack(">HH", struct.pack(">f", 1.5))))
    f64 = write_request(tag(data_type="float64", address=4, writable=True), 2.0, big, big)
    assert (f64.function, f64.address, f64.count) == (WriteFunction.REGISTERS, 4, 4)
    coil = write_request(tag(data_type="bool", kind="coil", writable=True), 1, big, big)
    assert (coil.function, coil.words) == (WriteFunction.COIL, (1,))
    bit = write_request(tag(data_type="bool", bit=3, writable=True), True, big, big)
    assert (bit.function, bit.and_mask, bit.or_mask, bit.bit) == (
        WriteFunction.MASK,
        0xFFF7,
        0x0008,
        3,
    )
    swapped = write_request(tag(data_type="bool", bit=3, writable=True), False, big, little)
    assert (swapped.and_mask, swapped.or_mask, swapped.bit) == (0xF7FF, 0, 11)
    with pytest.raises(WriteRefused, match="not writable"):
        write_request(tag(data_type="int16"), 1, big, big)
