"""OpcUaSource writes, BuildInfo and server state watch, against the simulator and a
plain asyncua server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource, OpcUaWriteError
from isthmus.model.config import SimulatorConfig
from isthmus.model.errors import IsthmusError
from isthmus.model.quality import Quality
from isthmus.sim.runner import run_simulator
from tests.support import Collector, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(15),
    pytest.mark.asyncio(loop_scope="module"),
]

HOST = "127.0.0.1"
LOGGER = "isthmus.test.opcua.features"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim_endpoint() -> AsyncIterator[str]:
    config = SimulatorConfig(seed=3, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield f"opc.tcp://{HOST}:{config.opcua_port}/"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_source(endpoint: str, tags: list[dict[str, Any]], collector: Collector) -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": 2.0,
            "reconnect_max": 0.5,
            "tags": tags,
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(100 + i, f"acme/site/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )


SIM_TAGS = [
    {"path": "l/m/m/sp/speed", "node": "ns=2;s=Line1.Setpoints.LineSpeed", "writable": True},
    {"path": "l/m/m/sp/volume", "node": "ns=2;s=Line1.Setpoints.FillVolume", "writable": True},
    {"path": "l/m/m/filler/speed", "node": "ns=2;s=Line1.Filler.Speed"},
    {"path": "l/m/m/filler/ghost", "node": "ns=2;s=Line1.Filler.Ghost", "writable": True},
    # writable in our config, read-only on the server: the server's status is reported
    {"path": "l/m/m/filler/speed_rw", "node": "ns=2;s=Line1.Filler.Speed", "writable": True},
]


async def test_write_setpoint_with_coercion_and_read_back(
    sim_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    source = make_source(sim_endpoint, SIM_TAGS, Collector())
    async with running_source(source, connected_within=5.0):
        # server identity, read once after connecting
        assert source.server_info.get("product_name")
        assert "software_version" in source.server_info
        logged = [r.getMessage() for r in caplog.records if "server" in r.getMessage()]
        assert len([m for m in logged if "(build" in m]) == 1

        # an int written to a Double node becomes a Double Variant (else Bad_TypeMismatch)
        await source.write("l/m/m/sp/speed", 450)
        client = source._client
        node = client.get_node("ns=2;s=Line1.Setpoints.LineSpeed")
        dv = await node.read_data_value()
        assert dv.Value.VariantType == ua.VariantType.Double
        assert dv.Value.Value == 450.0
        # by UNS path and by tag id too
        await source.write("acme/site/l/m/m/sp/volume", 600.5)
        await source.write(100, 420)
        assert source.ctx.metrics.counters["source.ua.writes"] == 3

        with pytest.raises(OpcUaWriteError, match="not writable"):
            await source.write("l/m/m/filler/speed", 1.0)
        with pytest.raises(OpcUaWriteError, match="no tag"):
            await source.write("l/m/m/filler/nothing", 1.0)
        with pytest.raises(OpcUaWriteError, match="BadNodeIdUnknown"):
            await source.write("l/m/m/filler/ghost", 1.0)
        with pytest.raises(OpcUaWriteError, match=r"refused by the server: Bad(NotWritable|User)"):
            await source.write("l/m/m/filler/speed_rw", 1.0)
        with pytest.raises(OpcUaWriteError, match="not a number"):
            await source.write("l/m/m/sp/speed", "fast")  # type: ignore[arg-type]
        assert issubclass(OpcUaWriteError, IsthmusError)


async def test_write_refused_when_not_connected(sim_endpoint: str) -> None:
    source = make_source(sim_endpoint, SIM_TAGS, Collector())
    with pytest.raises(OpcUaWriteError, match="not connected"):
        await source.write("l/m/m/sp/speed", 100)


async def test_server_state_not_running_marks_values_uncertain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{HOST}:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.disable_clock(True)
    ns = await server.register_namespace("urn:isthmus:test:state")
    var = await server.nodes.objects.add_variable(ua.NodeId("V", ns), "V", 1.0)
    await server.start()
    state = server.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State))
    try:
        collector = Collector()
        source = make_source(
            f"opc.tcp://{HOST}:{port}/", [{"path": "a/l/c/e/v", "node": f"ns={ns};s=V"}], collector
        )
        async with running_source(source, connected_within=5.0):
            for _ in range(40):
                if source.server_state == 0 and collector.qualities(100):
                    break
                await asyncio.sleep(0.05)
            assert source.server_state == 0
            assert collector.qualities(100)[-1] == Quality.GOOD
            await state.write_value(ua.Variant(ua.ServerState.Suspended, ua.VariantType.Int32))
            for _ in range(60):
                if source.server_state == int(ua.ServerState.Suspended):
                    break
                await asyncio.sleep(0.05)
            assert source.server_state == int(ua.ServerState.Suspended)
            await var.write_value(2.0)
            for _ in range(40):
                if collector.qualities(100)[-1] == Quality.UNCERTAIN:
                    break
                await asyncio.sleep(0.05)
            assert collector.qualities(100)[-1] == Quality.UNCERTAIN
            await state.write_value(ua.Variant(ua.ServerState.Running, ua.VariantType.Int32))
            await asyncio.sleep(0.3)
            await var.write_value(3.0)
            for _ in range(40):
                if collector.qualities(100)[-1] == Quality.GOOD:
                    break
                await asyncio.sleep(0.05)
            assert collector.qualities(100)[-1] == Quality.GOOD
    finally:
        await server.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len([m for m in messages if "server state Suspended" in m]) == 1
    assert any("Running again" in m for m in messages)
