"""The demo plant configuration validates and maps exactly what the simulator serves."""

from __future__ import annotations

from importlib import resources
from typing import TypeVar

import pytest

from isthmus.connectors.modbus.config import ModbusSourceConfig, Order
from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.config import PlantConfig, SourceConfig
from isthmus.model.loader import load_plant_config
from isthmus.sim.addressspace import (
    MODBUS_POINTS,
    MODBUS_TABLE_SIZE,
    MODBUS_UNIT_ID,
    OPCUA_BY_NODE_ID,
    OPCUA_VARIABLES,
    Kind,
    modbus_point,
)

DEMO = "demo-plant.yaml"
T = TypeVar("T")


@pytest.fixture(scope="module")
def demo() -> tuple[PlantConfig, list[SourceConfig]]:
    text = resources.files("isthmus.examples").joinpath(DEMO).read_text(encoding="utf-8")
    return load_plant_config(text, DEMO, source_models(default_connectors()))


def _one(sources: list[SourceConfig], kind: type[T]) -> T:
    found = [s for s in sources if isinstance(s, kind)]
    assert len(found) == 1
    return found[0]


def test_demo_validates(demo: tuple[PlantConfig, list[SourceConfig]]) -> None:
    plant, sources = demo
    assert plant.simulator is not None
    assert plant.storage.type == "duckdb"
    assert {s.type for s in sources} == {"opcua", "modbus"}
    opcua = _one(sources, OpcUaSourceConfig)
    modbus = _one(sources, ModbusSourceConfig)
    assert opcua.endpoint.rstrip("/").endswith(f":{plant.simulator.opcua_port}")
    assert modbus.port == plant.simulator.modbus_port
    assert modbus.unit_id == MODBUS_UNIT_ID


def test_opcua_tags_are_served(demo: tuple[PlantConfig, list[SourceConfig]]) -> None:
    source = _one(demo[1], OpcUaSourceConfig)
    for tag in source.tags:
        var = OPCUA_BY_NODE_ID.get(tag.node)
        assert var is not None, f"{tag.path}: {tag.node} is not in the simulator's address space"
        assert tag.data_type == var.data_type, tag.path
        assert tag.writable == var.writable, tag.path
        assert tag.unit == var.unit, tag.path
    mapped = {tag.node for tag in source.tags}
    assert mapped == {v.node_id for v in OPCUA_VARIABLES}, "every served variable is mapped"


def test_modbus_tags_are_served(demo: tuple[PlantConfig, list[SourceConfig]]) -> None:
    source = _one(demo[1], ModbusSourceConfig)
    mapped = set()
    for tag in source.tags:
        point = modbus_point(Kind(tag.kind.value), tag.address)
        assert point is not None, f"{tag.path}: no {tag.kind} at {tag.address} in the map"
        assert tag.data_type == point.data_type, tag.path
        assert tag.scale == point.scale, tag.path
        assert tag.offset == 0.0, tag.path
        word_order = tag.word_order or source.word_order
        assert word_order == Order(point.word_order), tag.path
        assert (tag.byte_order or source.byte_order) == Order.BIG, tag.path
        assert tag.writable == point.writable, tag.path
        assert tag.unit == point.unit, tag.path
        assert tag.address + point.width <= MODBUS_TABLE_SIZE[point.kind], tag.path
        mapped.add((point.kind, point.address))
    assert mapped == {(p.kind, p.address) for p in MODBUS_POINTS}, "every served point is mapped"


def test_setpoints_are_guarded(demo: tuple[PlantConfig, list[SourceConfig]]) -> None:
    writable = [t for s in demo[1] for t in s.tags if t.writable]
    assert len(writable) == 4
    for tag in writable:
        assert tag.criticality != "low", tag.path


def test_register_map_has_no_overlaps() -> None:
    used: dict[tuple[Kind, int], str] = {}
    for point in MODBUS_POINTS:
        for addr in point.addresses:
            key = (point.kind, addr)
            assert key not in used, f"{point.name} overlaps {used[key]}"
            used[key] = point.name
            assert addr < MODBUS_TABLE_SIZE[point.kind]


def test_readme_documents_the_address_space() -> None:
    readme = resources.files("isthmus.sim").joinpath("README.md").read_text(encoding="utf-8")
    for var in OPCUA_VARIABLES:
        assert f"| `{var.node_id}` | {var.data_type.value} |" in readme, var.node_id
    for point in MODBUS_POINTS:
        last = point.address + point.width - 1
        addr = str(point.address) if point.width == 1 else f"{point.address}-{last}"
        assert f"| {point.kind.value} | {addr} | {point.name} |" in readme, point.name
