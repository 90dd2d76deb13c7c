"""OpcUaSource subscription groups (own subscription, server-side deadband), arrays and
enumerations, against a real asyncua server on 127.0.0.1 started here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.discover import discover, render_yaml
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.config import DataType
from isthmus.model.loader import load_plant_config
from isthmus.model.quality import Quality
from tests.integration.connectors.ua_plant import UaPlant as Plant
from tests.integration.connectors.ua_plant import ua_plant
from tests.support import Collector, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(20),
    pytest.mark.asyncio(loop_scope="module"),
]

LOGGER = "isthmus.test.opcua.groups"


async def _plant(server: Server, ns: int, obj: Node) -> dict[str, Node]:
    nodes = {
        "raw": await obj.add_variable(ua.NodeId("Raw", ns), "Raw", 10.0),
        "noisy": await obj.add_variable(ua.NodeId("Noisy", ns), "Noisy", 10.0),
        "norange": await obj.add_variable(ua.NodeId("NoRange", ns), "NoRange", 1.0),
        "ranged": await obj.add_variable(ua.NodeId("Ranged", ns), "Ranged", 1.0),
        "temps": await obj.add_variable(
            ua.NodeId("Temps", ns),
            "Temps",
            ua.Variant([1.5, 2.5, 3.5], ua.VariantType.Double),
        ),
    }
    await nodes["ranged"].add_property(
        ua.NodeId("Ranged.EURange", ns), ua.QualifiedName("EURange", 0), ua.Range(0.0, 100.0)
    )
    state_type = await server.nodes.enum_data_type.add_data_type(
        ua.NodeId("MachineState", ns), "MachineState"
    )
    await state_type.add_property(
        ua.NodeId("MachineState.EnumStrings", ns),
        ua.QualifiedName("EnumStrings", 0),
        [ua.LocalizedText("Stopped"), ua.LocalizedText("Running"), ua.LocalizedText("Jammed")],
    )
    nodes["state"] = await obj.add_variable(
        ua.NodeId("State", ns),
        "State",
        ua.Variant(1, ua.VariantType.Int32),
        datatype=state_type.nodeid,
    )
    return nodes


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant() -> AsyncIterator[Plant]:
    async with ua_plant("urn:isthmus:test:groups", "Plant", _plant) as p:
        yield p


def make_source(
    plant: Plant, tags: list[dict[str, Any]], collector: Collector, **extra: Any
) -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": plant.endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "queue_size": 100,
            "timeout": 2.0,
            "reconnect_max": 0.5,
            "tags": tags,
            **extra,
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(100 + i, f"acme/site/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )


async def wait_for(predicate: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    assert predicate()


def good_values(collector: Collector, tag_id: int) -> list[float]:
    batch = collector.all()
    mask = (batch.tag_id == tag_id) & (batch.quality == Quality.GOOD)
    return [float(v) for v in batch.value[mask]]


async def test_group_deadband_is_applied_by_the_server(
    plant: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ns = plant.ns
    collector = Collector()
    source = make_source(
        plant,
        [
            {"path": "a/l/c/e/raw", "node": f"ns={ns};s=Raw"},
            {"path": "a/l/c/e/noisy", "node": f"ns={ns};s=Noisy", "group": "filtered"},
            {"path": "a/l/c/e/norange", "node": f"ns={ns};s=NoRange", "group": "pct"},
            {"path": "a/l/c/e/ranged", "node": f"ns={ns};s=Ranged", "group": "pct"},
        ],
        collector,
        groups=[
            {
                "name": "filtered",
                "publishing_interval": "100ms",
                "sampling_interval": "50ms",
                "deadband": {"type": "absolute", "value": 0.5},
            },
            {"name": "pct", "deadband": {"type": "percent", "value": 2}},
        ],
    )
    await plant.nodes["raw"].write_value(10.0)
    await plant.nodes["noisy"].write_value(10.0)
    async with running_source(source, connected_within=5.0):
        # one subscription per group, each with its own publishing interval
        assert set(source.subscriptions) == {"default", "filtered", "pct"}
        assert source.subscriptions["filtered"] == pytest.approx(0.1)
        assert source.subscriptions["default"] == pytest.approx(0.05)
        await wait_for(lambda: good_values(collector, 100) and good_values(collector, 101))
        # the same sequence on both nodes: ten steps of 0.1, then two steps of 10
        steps = [round(10.0 + 0.1 * k, 1) for k in range(1, 11)] + [20.0, 30.0]
        for value in steps:
            await plant.nodes["raw"].write_value(value)
            await plant.nodes["noisy"].write_value(value)
            await asyncio.sleep(0.02)
        await wait_for(lambda: 30.0 in good_values(collector, 101))
        await wait_for(lambda: 30.0 in good_values(collector, 100))
        await asyncio.sleep(0.3)  # let any late notification arrive
        raw = good_values(collector, 100)
        noisy = good_values(collector, 101)
        # the default group receives every change; the filtered group only the big ones
        assert raw == [10.0, *steps]
        assert noisy == [10.0, 20.0, 30.0]

        # percent deadband on a node without EURange: that tag only, Bad with the reason
        bad = collector.all()
        norange = bad.quality[bad.tag_id == 102]
        assert list(norange) == [Quality.BAD_CONFIGURATION_ERROR]
        assert good_values(collector, 103) == [1.0]  # the ranged node is subscribed
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    rejected = [m for m in messages if "cannot be subscribed" in m]
    assert len(rejected) == 1
    assert "NoRange" in rejected[0] and "EURange" in rejected[0] and "Ranged:" not in rejected[0]


async def test_array_elements_and_short_arrays(plant: Plant) -> None:
    ns = plant.ns
    collector = Collector()
    source = make_source(
        plant,
        [
            {"path": "a/l/c/e/temp", "node": f"ns={ns};s=Temps", "array_length": 3},
            {"path": "a/l/c/e/second", "node": f"ns={ns};s=Temps", "index": 1},
            {"path": "a/l/c/e/sixth", "node": f"ns={ns};s=Temps", "index": 5},
            {"path": "a/l/c/e/scalar", "node": f"ns={ns};s=Temps"},
            {"path": "a/l/c/e/raw", "node": f"ns={ns};s=Raw"},
        ],
        collector,
    )
    paths = [t.config.path for t in source.tags]
    assert paths == [
        "a/l/c/e/temp.0",
        "a/l/c/e/second",
        "a/l/c/e/sixth",
        "a/l/c/e/scalar",
        "a/l/c/e/raw",
        "a/l/c/e/temp.1",
        "a/l/c/e/temp.2",
    ]
    ids = {p.rsplit("/", 1)[1]: 100 + i for i, p in enumerate(paths)}
    await plant.nodes["temps"].write_value(ua.Variant([1.5, 2.5, 3.5], ua.VariantType.Double))
    async with running_source(source, connected_within=5.0):
        await wait_for(lambda: good_values(collector, ids["temp.2"]))
        assert good_values(collector, ids["temp.0"]) == [1.5]
        assert good_values(collector, ids["temp.1"]) == [2.5]
        assert good_values(collector, ids["temp.2"]) == [3.5]
        assert good_values(collector, ids["second"]) == [2.5]
        assert good_values(collector, ids["raw"])  # unaffected by the array problems

        batch = collector.all()

        def last_quality(name: str) -> int:
            b = collector.all()
            return int(b.quality[b.tag_id == ids[name]][-1])

        # past the end: that tag only; a scalar tag on an array node: Bad_DecodingError
        assert last_quality("sixth") == Quality.BAD_OUT_OF_RANGE
        assert last_quality("scalar") == Quality.BAD_DECODING_ERROR
        assert np.isnan(batch.value[batch.tag_id == ids["sixth"]]).all()

        # a shorter array: the missing element goes Bad, the others stay Good
        await plant.nodes["temps"].write_value(ua.Variant([7.0, 8.0], ua.VariantType.Double))
        await wait_for(lambda: 7.0 in good_values(collector, ids["temp.0"]))
        await wait_for(lambda: last_quality("temp.2") == Quality.BAD_OUT_OF_RANGE)
        assert good_values(collector, ids["temp.1"])[-1] == 8.0
        assert last_quality("temp.1") == Quality.GOOD
        counters = source.ctx.metrics.counters
        # sixth out of range twice (two notifications), temp.2 once
        assert counters["source.ua.array_errors"] == 3
        assert counters["source.ua.decode_errors"] == 2


async def test_enumeration_labels_from_server_and_config(plant: Plant) -> None:
    ns = plant.ns
    collector = Collector()
    source = make_source(
        plant,
        [
            {"path": "a/l/c/e/state", "node": f"ns={ns};s=State", "data_type": "int32"},
            {
                "path": "a/l/c/e/state_cfg",
                "node": f"ns={ns};s=State",
                "enum": {0: "Off", 1: "On"},
            },
            {"path": "a/l/c/e/raw", "node": f"ns={ns};s=Raw"},
        ],
        collector,
    )
    await plant.nodes["state"].write_value(ua.Variant(1, ua.VariantType.Int32))
    async with running_source(source, connected_within=5.0):
        await wait_for(lambda: 100 in source.enum_labels)
        # values stay numbers; the labels come from the DataType's EnumStrings
        await wait_for(lambda: good_values(collector, 100) == [1.0])
        assert source.enum_labels[100] == {0: "Stopped", 1: "Running", 2: "Jammed"}
        assert source.enum_labels[101] == {0: "Off", 1: "On"}  # the config wins
        assert 102 not in source.enum_labels  # a Double is not an enumeration
        await plant.nodes["state"].write_value(ua.Variant(2, ua.VariantType.Int32))
        await wait_for(lambda: good_values(collector, 100) == [1.0, 2.0])


async def test_discover_writes_arrays_and_enumerations(plant: Plant) -> None:
    # ValueRank 0 (asyncua's default for a list): the current value gives the length
    await plant.nodes["temps"].write_value(ua.Variant([1.0, 2.0, 3.0], ua.VariantType.Double))
    found = await discover(plant.endpoint, request_timeout=3.0)
    by_name = {v.name: v for v in found.variables}
    assert by_name["Temps"].array_length == 3
    assert by_name["Temps"].data_type is DataType.FLOAT64
    assert by_name["State"].data_type is DataType.INT32
    assert by_name["State"].enum == {0: "Stopped", 1: "Running", 2: "Jammed"}
    text = render_yaml(found, source_name="ua")
    assert "array_length: 3" in text
    assert 'enum: {0: "Stopped", 1: "Running", 2: "Jammed"}' in text
    _, sources = load_plant_config(text, "discovered.yaml", {"opcua": OpcUaSourceConfig})
    (source,) = sources
    paths = {t.path: t for t in source.tags}
    assert {"Plant/Temps.0", "Plant/Temps.1", "Plant/Temps.2"} <= {
        p.split("/", 3)[3] for p in paths
    }
    state = next(t for t in source.tags if t.path.endswith("/State"))
    assert state.enum == {0: "Stopped", 1: "Running", 2: "Jammed"}
