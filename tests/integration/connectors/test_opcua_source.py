"""OpcUaSource against a real asyncua server on 127.0.0.1 (started here)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality
from tests.support import Collector, running_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(15),
    pytest.mark.asyncio(loop_scope="module"),
]

LOGGER = "isthmus.test.opcua"
NS = "urn:isthmus:test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Plant:
    server: Server
    port: int
    ns: int
    nodes: dict[str, Node]

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/isthmus/"


async def start_plant(port: int) -> Plant:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/isthmus/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    obj = await server.nodes.objects.add_object(ua.NodeId("Filler", ns), "Filler")
    nodes = {
        "speed": await obj.add_variable(ua.NodeId("Speed", ns), "Speed", 1.5),
        "count": await obj.add_variable(
            ua.NodeId("Count", ns), "Count", 7, varianttype=ua.VariantType.Int32
        ),
        "running": await obj.add_variable(ua.NodeId("Running", ns), "Running", True),
        "label": await obj.add_variable(ua.NodeId("Label", ns), "Label", "batch-42"),
    }
    await server.start()
    return Plant(server, port, ns, nodes)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant() -> AsyncIterator[Plant]:
    p = await start_plant(free_port())
    yield p
    await p.server.stop()


def make_source(endpoint: str, nodes: list[str], collector: Collector) -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua1",
            "endpoint": endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": 2.0,
            "reconnect_max": 0.5,
            "tags": [{"path": f"a/l/c/e/t{i}", "node": n} for i, n in enumerate(nodes)],
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(200 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )


def has(
    tag: int, value: float | None = None, quality: int = Quality.GOOD
) -> Callable[[Batch], bool]:
    def check(batch: Batch) -> bool:
        for t, v, q in zip(
            batch.tag_id.tolist(), batch.value.tolist(), batch.quality.tolist(), strict=True
        ):
            if t == tag and q == quality and (value is None or v == value):
                return True
        return False

    return check


async def test_subscribes_and_batches_changes(
    plant: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ns = plant.ns
    collector = Collector()
    source = make_source(
        plant.endpoint,
        [
            f"ns={ns};s=Speed",
            f"ns={ns};s=Count",
            f"ns={ns};s=Running",
            f"ns={ns};s=Label",
            f"ns={ns};s=DoesNotExist",
        ],
        collector,
    )
    async with running_source(source):
        first = await collector.wait_for(lambda b: len(b) >= 3)
        assert len(set(first.tag_id.tolist())) == len(first)
        await collector.wait_for(has(204, quality=Quality.BAD_CONFIGURATION_ERROR))
        rows = collector.latest()
        assert rows[200] == (1.5, Quality.GOOD)
        assert rows[201] == (7.0, Quality.GOOD)
        assert rows[202] == (1.0, Quality.GOOD)
        assert np.isnan(rows[203][0]) and rows[203][1] == Quality.BAD_DECODING_ERROR
        assert source.connected

        # Server-side changes arrive, with the server's source timestamp.
        before = first.ts.max()
        await plant.nodes["speed"].write_value(2.75)
        await plant.nodes["running"].write_value(False)
        changed = await collector.wait_for(has(202, 0.0))
        if not has(200, 2.75)(changed):
            await collector.wait_for(has(200, 2.75))
        assert changed.ts.min() >= before
        # several items in one publish response arrive as one batch
        await plant.nodes["count"].write_value(ua.Variant(8, ua.VariantType.Int32))
        await plant.nodes["speed"].write_value(3.0)
        await collector.wait_for(lambda b: has(201, 8.0)(b) or has(200, 3.0)(b))
    counters = source.ctx.metrics.counters
    assert counters["source.ua1.publishes"] >= 2
    assert counters["source.ua1.decode_errors"] >= 1
    config_warnings = [
        r for r in caplog.records if r.name == LOGGER and "cannot be subscribed" in r.getMessage()
    ]
    assert len(config_warnings) == 1


async def test_bad_status_from_server_is_kept(plant: Plant) -> None:
    collector = Collector()
    source = make_source(plant.endpoint, [f"ns={plant.ns};s=Speed"], collector)
    async with running_source(source):
        await collector.wait_for(has(200))
        bad = ua.DataValue(
            ua.Variant(9.0, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure),
        )
        await plant.nodes["speed"].write_value(bad)
        batch = await collector.wait_for(has(200, quality=Quality.BAD_SENSOR_FAILURE))
        assert len(batch) == 1  # a Bad sample (the server may drop its value): not a crash
    await plant.nodes["speed"].write_value(1.5)


async def test_outage_then_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    own = await start_plant(free_port())
    collector = Collector()
    source = make_source(own.endpoint, [f"ns={own.ns};s=Speed", f"ns={own.ns};s=Count"], collector)
    try:
        async with running_source(source):
            await collector.wait_for(has(200, 1.5))
            await own.server.stop()
            lost = await collector.wait_for(lambda b: bool(b.quality.any()))
            assert lost.tag_id.tolist() == [200, 201]
            assert (lost.quality == Quality.BAD_COMMUNICATION_ERROR).all()
            await asyncio.sleep(1.0)
            assert not source.connected
            await own.server.start()  # same address space, same port
            back = await collector.wait_for(has(200, 1.5), limit=8.0)
            assert source.connected
            # The value did not change while we were away: it is recorded Good again
            # just after the Bad mark (not at its old source timestamp, which the
            # historian would drop as a duplicate, leaving the tag Bad).
            assert int(back.ts.min()) > int(lost.ts.max())
            await own.nodes["speed"].write_value(4.5)
            await collector.wait_for(has(200, 4.5))
            bad = [b for b in collector.batches if b.quality.any()]
            assert len(bad) == 1  # Bad once per outage, not once per retry
    finally:
        await own.server.stop()
    ours = [r for r in caplog.records if r.name == LOGGER]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == 1
    assert any("connected again" in r.getMessage() for r in ours)
    assert source.ctx.metrics.counters["source.ua1.reconnects"] == 1
