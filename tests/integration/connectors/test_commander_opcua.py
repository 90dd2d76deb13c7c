"""The OPC UA source as a Commander, against an asyncua server on 127.0.0.1, directly
and through the DroppingProxy: write then read back (a fresh Read, not the
subscription), scale/offset round trips, refusals before sending, a Bad status from the
server, and the outcome of a connection dropped after the Write request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from isthmus.connectors.base import BoundTag, Commander, CommandWriteError, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource
from tests.integration.connectors.proxy import (
    OPCUA,
    DroppingProxy,
    opcua_write,
    write_through_drops,
)
from tests.integration.connectors.ua_plant import UaPlant, ua_plant
from tests.support import Collector, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.asyncio(loop_scope="module"),
]

NS = "urn:isthmus:test:commands"


async def _boiler(server: Server, ns: int, obj: Node) -> dict[str, Node]:
    def var(name: str, value: Any, vtype: ua.VariantType) -> Any:
        return obj.add_variable(ua.NodeId(name, ns), name, value, varianttype=vtype)

    nodes = {
        "setpoint": await var("Setpoint", 20.0, ua.VariantType.Double),
        "level": await var("Level", 0, ua.VariantType.Int16),
        "ratio": await var("Ratio", 0.0, ua.VariantType.Float),
        "count": await var("Count", 0, ua.VariantType.UInt64),
        "run": await var("Run", False, ua.VariantType.Boolean),
        "recipe": await var("Recipe", "R-1", ua.VariantType.String),
        "locked": await var("Locked", 1.0, ua.VariantType.Double),
    }
    for name, node in nodes.items():
        if name != "locked":
            await node.set_writable()
    return nodes


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant() -> AsyncIterator[UaPlant]:
    async with ua_plant(NS, "Boiler", _boiler) as p:
        yield p


def make_source(plant: UaPlant, endpoint: str | None = None, timeout: float = 2.0) -> OpcUaSource:
    ns = plant.ns

    def tag(name: str, **fields: Any) -> dict[str, Any]:
        return {"path": f"a/l/c/boiler/{name.lower()}", "node": f"ns={ns};s={name}"} | fields

    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": endpoint or plant.endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": timeout,
            "reconnect_max": 0.3,
            "tags": [
                tag("Setpoint", writable=True),
                # level in % = raw / 10 (an Int16 node)
                tag("Level", data_type="int16", scale=0.1, writable=True),
                tag("Ratio", data_type="float32", scale=100.0, offset=-5.0, writable=True),
                tag("Count", data_type="uint64", writable=True),
                tag("Run", data_type="bool", writable=True),
                tag("Recipe", data_type="string", writable=True),
                tag("Locked", writable=True),  # the server refuses writes to it
            ],
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=Collector().emit, log=logging.getLogger("isthmus.test.cmd.ua"))
    return opcua_source(config, bound, ctx)


async def test_write_then_read_back_equal(plant: UaPlant) -> None:
    source = make_source(plant)
    assert isinstance(source, Commander)
    async with running_source(source, connected_within=10):
        await source.write("a/l/c/boiler/setpoint", 72.5)
        assert await source.read_back("a/l/c/boiler/setpoint", 2.0) == 72.5
        await source.write("ent/site/a/l/c/boiler/count", 2**60 + 1)
        got = await source.read_back(103, 2.0)
        assert got == 2**60 + 1 and isinstance(got, int)
        await source.write("a/l/c/boiler/run", True)
        assert await source.read_back("a/l/c/boiler/run", 2.0) is True
        await source.write("a/l/c/boiler/recipe", "R-42 ünï")
        assert await source.read_back("a/l/c/boiler/recipe", 2.0) == "R-42 ünï"
        # a fresh Read: a change made on the server shows at once
        await plant.nodes["setpoint"].write_value(ua.Variant(80.25, ua.VariantType.Double))
        assert await source.read_back("a/l/c/boiler/setpoint", 2.0) == 80.25
        assert await source.read_back("a/l/c/boiler/nothing", 2.0) is None
    assert await source.read_back("a/l/c/boiler/setpoint", 0.5) is None  # not connected


async def test_scale_and_offset_round_trip(plant: UaPlant) -> None:
    source = make_source(plant)
    async with running_source(source, connected_within=10):
        await source.write("a/l/c/boiler/level", 12.34)  # raw 123.4 → 123
        assert await plant.nodes["level"].read_value() == 123
        assert await source.read_back("a/l/c/boiler/level", 2.0) == pytest.approx(12.3)
        await source.write("a/l/c/boiler/level", -0.25)  # raw -2.5 → -3 (half away from 0)
        assert await plant.nodes["level"].read_value() == -3
        await source.write("a/l/c/boiler/ratio", 70.0)  # raw (70 + 5) / 100 = 0.75
        assert await plant.nodes["ratio"].read_value() == 0.75
        assert await source.read_back("a/l/c/boiler/ratio", 2.0) == pytest.approx(70.0)


async def test_refusals_are_failed_and_send_nothing(plant: UaPlant) -> None:
    async with DroppingProxy(
        "127.0.0.1", int(plant.endpoint.rsplit(":", 1)[1].strip("/")), framing=OPCUA,
        watch=opcua_write,
    ) as proxy:  # fmt: skip
        source = make_source(plant, f"opc.tcp://127.0.0.1:{proxy.port}/")
        async with running_source(source, connected_within=10):
            await source.write("a/l/c/boiler/setpoint", 1.0)  # reads the node type once
            sent = proxy.matched
            cases: list[tuple[str, Any, str]] = [
                ("a/l/c/boiler/level", 4000.0, "out of the Int16 range"),  # raw 40000
                ("a/l/c/boiler/count", -1, "out of the UInt64 range"),
                ("a/l/c/boiler/setpoint", "hot", "not a number"),
                ("a/l/c/boiler/setpoint", float("nan"), "not a finite number"),
                ("a/l/c/boiler/recipe", 3, "not text"),
                ("a/l/c/boiler/nothing", 1.0, "no tag"),
            ]
            for tag, value, match in cases:
                with pytest.raises(CommandWriteError, match=match) as info:
                    await source.write(tag, value)
                assert info.value.outcome == "failed", tag
            assert proxy.matched == sent  # no Write request left
            # the server refuses: a Bad status, nothing written → failed
            with pytest.raises(
                CommandWriteError, match=r"refused by the server: Bad(NotWritable|UserAccessDenied)"
            ) as info:
                await source.write("a/l/c/boiler/locked", 5.0)
            assert info.value.outcome == "failed"
            assert await plant.nodes["locked"].read_value() == 1.0
    disconnected = make_source(plant)
    with pytest.raises(CommandWriteError, match="not connected") as info:
        await disconnected.write("a/l/c/boiler/setpoint", 1.0)
    assert info.value.outcome == "failed"


async def test_connection_dropped_after_the_write_request_is_uncertain(plant: UaPlant) -> None:
    port = int(plant.endpoint.rsplit(":", 1)[1].strip("/"))
    async with DroppingProxy("127.0.0.1", port, framing=OPCUA, watch=opcua_write) as proxy:
        source = make_source(plant, f"opc.tcp://127.0.0.1:{proxy.port}/", timeout=1.0)
        async with running_source(source, connected_within=10):
            await source.write("a/l/c/boiler/setpoint", 10.0)  # node type known from here
            outcomes = await write_through_drops(
                proxy,
                source,
                "a/l/c/boiler/setpoint",
                plant.nodes["setpoint"].read_value,
                (11.0, 22.0, 33.0, 44.0, 55.0),
                watch=opcua_write,
                where="server",
                read_back_within=2.0,
            )
    print(f"\nOPC UA outcomes through the dropping proxy: {outcomes}")
    assert set(outcomes.values()) == {"uncertain"}
    assert proxy.drops == 3
