"""The Sparkplug B host as a Commander, against a private Mosquitto on 127.0.0.1 and a
small independent edge node (raw protobuf, not our codec) that applies DCMD/NCMD and
reports the new values in DDATA/NDATA: aliases, datatypes, scale/offset, refusals
before publishing, a dead device, and a metric whose value never comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest

from isthmus.connectors.base import BoundTag, Commander, CommandWriteError, SourceContext
from isthmus.connectors.sparkplug import sparkplug_b_pb2
from isthmus.connectors.sparkplug.config import SparkplugSourceConfig, SparkplugTagConfig
from isthmus.connectors.sparkplug.host import SparkplugHost
from tests.integration.mqtt.conftest import Broker, broker  # noqa: F401 - the fixture
from tests.support import Collector, running_source

Payload: Any = getattr(sparkplug_b_pb2, "Payload")  # noqa: B009 - generated, untyped

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

INT16, INT32, DOUBLE, BOOLEAN, STRING = 2, 3, 10, 11, 12
PREFIX = "sparkplug/plant/edge1"


@dataclass
class Point:
    alias: int | None
    datatype: int
    value: Any
    reports: bool = True
    """False: the edge applies commands but never publishes the new value."""


def set_value(m: Any, datatype: int, value: Any) -> None:
    if datatype == BOOLEAN:
        m.boolean_value = value
    elif datatype == DOUBLE:
        m.double_value = value
    elif datatype == STRING:
        m.string_value = value
    else:
        m.int_value = value & 0xFFFFFFFF


def get_value(m: Any, datatype: int) -> Any:
    if datatype == INT16:
        raw = m.int_value & 0xFFFF
        return raw - 0x10000 if raw & 0x8000 else raw
    if datatype == INT32:
        raw = m.int_value & 0xFFFFFFFF
        return raw - 0x100000000 if raw & 0x80000000 else raw
    return getattr(m, m.WhichOneof("value"))


class Edge:
    """Edge node ``plant/edge1`` with device ``boiler`` and one node-level metric."""

    def __init__(self, at: Broker) -> None:
        self.broker = at
        self.device = {
            "Setpoint": Point(1, DOUBLE, 20.0),
            "Level": Point(2, INT16, 0),
            "Recipe": Point(3, STRING, "R-1"),
            "Run": Point(4, BOOLEAN, False),
            "Mute": Point(5, DOUBLE, 0.0, reports=False),
            "Speed": Point(None, DOUBLE, 0.0),  # a birth without alias
        }
        self.node = {"Mode": Point(10, INT32, 0)}
        self.commands: list[tuple[str, Any]] = []  # (topic, the received metric)
        self.ready = asyncio.Event()
        self._seq = 0
        self._client: aiomqtt.Client | None = None

    def _payload(self, metrics: dict[str, Point], birth: bool, names: list[str]) -> bytes:
        payload = Payload()
        payload.timestamp = int(time.time() * 1000)
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        if birth and metrics is self.node:
            bd = payload.metrics.add()
            bd.name, bd.datatype, bd.long_value = "bdSeq", 8, 0
        for name in names:
            point = metrics[name]
            m = payload.metrics.add()
            if birth or point.alias is None:
                m.name = name
            if point.alias is not None:
                m.alias = point.alias
            m.datatype = point.datatype
            set_value(m, point.datatype, point.value)
        data: bytes = payload.SerializeToString()
        return data

    async def publish(self, kind: str, device: str | None, data: bytes) -> None:
        assert self._client is not None
        tail = f"/{device}" if device else ""
        await self._client.publish(f"spBv1.0/plant/{kind}/edge1{tail}", data)

    async def death(self) -> None:
        await self.publish("DDEATH", "boiler", self._payload({}, False, []))

    async def run(self) -> None:
        will = Payload()
        bd = will.metrics.add()
        bd.name, bd.datatype, bd.long_value = "bdSeq", 8, 0
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier="edge1",
            will=aiomqtt.Will("spBv1.0/plant/NDEATH/edge1", will.SerializeToString(), qos=1),
        ) as client:
            self._client = client
            await client.subscribe("spBv1.0/plant/NCMD/edge1", qos=0)
            await client.subscribe("spBv1.0/plant/DCMD/edge1/#", qos=0)
            self._seq = 0
            await self.publish("NBIRTH", None, self._payload(self.node, True, list(self.node)))
            await self.publish(
                "DBIRTH", "boiler", self._payload(self.device, True, list(self.device))
            )
            self.ready.set()
            async for message in client.messages:
                await self._command(message.topic.value, Payload.FromString(message.payload))

    async def _command(self, topic: str, payload: Any) -> None:
        on_device = "/DCMD/" in topic
        points = self.device if on_device else self.node
        by_alias = {p.alias: name for name, p in points.items() if p.alias is not None}
        changed: list[str] = []
        for m in payload.metrics:
            self.commands.append((topic, m))
            name = by_alias.get(m.alias) if m.HasField("alias") else m.name
            if name not in points:
                continue
            point = points[name]
            point.value = get_value(m, point.datatype)
            if point.reports:
                changed.append(name)
        if changed:
            kind, device = ("DDATA", "boiler") if on_device else ("NDATA", None)
            await self.publish(kind, device, self._payload(points, False, changed))


def make_host(port: int) -> SparkplugHost:
    tags: list[dict[str, Any]] = [
        {"path": f"{PREFIX}/boiler/Setpoint", "writable": True},
        {"path": f"{PREFIX}/boiler/Level", "data_type": "int16", "scale": 0.1, "writable": True},
        {"path": f"{PREFIX}/boiler/Recipe", "data_type": "string", "writable": True},
        {"path": f"{PREFIX}/boiler/Run", "data_type": "bool", "writable": True},
        {"path": f"{PREFIX}/boiler/Mute", "writable": True},
        {"path": f"{PREFIX}/boiler/Speed", "writable": True},
        {"path": f"{PREFIX}/node/Mode", "data_type": "int32", "writable": True},
        {"path": f"{PREFIX}/pump/Speed", "writable": True},  # a device never born
        {"path": f"{PREFIX}/boiler/Temperature"},  # not writable (and not in the birth)
    ]
    cfg = SparkplugSourceConfig.model_validate(
        {
            "name": "sp",
            "host": "127.0.0.1",
            "port": port,
            "groups": ["plant"],
            "timeout": 2.0,
            "reconnect_max": 0.2,
            "auto_tags": False,
            "tags": tags,
        }
    )
    bound: list[BoundTag[SparkplugTagConfig]] = [
        BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(cfg.tags)
    ]
    ctx = SourceContext(emit=Collector().emit, log=logging.getLogger("isthmus.test.cmd.sp"))
    return SparkplugHost(cfg, bound, ctx)


@contextlib.asynccontextmanager
async def born(host: SparkplugHost, edge: Edge) -> AsyncIterator[None]:
    """The host running and connected, the edge node and its device born."""
    async with running_source(host, connected_within=5):
        await asyncio.sleep(0.1)  # the host's subscription is in place before the births
        task = asyncio.create_task(edge.run())
        try:
            async with asyncio.timeout(5):
                while len(host.targets) < 7:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def test_write_then_read_back_equal(broker: Broker) -> None:  # noqa: F811
    edge = Edge(broker)
    host = make_host(broker.port)
    assert isinstance(host, Commander)
    async with born(host, edge):
        await host.write(f"{PREFIX}/boiler/Setpoint", 72.5)
        assert await host.read_back(f"{PREFIX}/boiler/Setpoint", 2.0) == 72.5
        topic, metric = edge.commands[-1]
        assert topic == "spBv1.0/plant/DCMD/edge1/boiler"
        # an alias and no name (the birth gave one), the birth's datatype
        assert metric.alias == 1 and not metric.HasField("name")
        assert (metric.datatype, metric.double_value) == (DOUBLE, 72.5)

        await host.write(f"ent/site/{PREFIX}/boiler/Recipe", "R-42 ünï")
        assert await host.read_back(102, 2.0) == "R-42 ünï"
        await host.write(f"{PREFIX}/boiler/Run", True)
        assert await host.read_back(f"{PREFIX}/boiler/Run", 2.0) is True
        await host.write(f"{PREFIX}/boiler/Speed", 3.5)  # no alias in the birth: by name
        assert await host.read_back(f"{PREFIX}/boiler/Speed", 2.0) == 3.5
        assert edge.commands[-1][1].name == "Speed"

        # a node-level metric: an NCMD, answered by NDATA
        await host.write(f"{PREFIX}/node/Mode", -7)
        got = await host.read_back(f"{PREFIX}/node/Mode", 2.0)
        assert got == -7 and isinstance(got, int)
        assert edge.commands[-1][0] == "spBv1.0/plant/NCMD/edge1"
        assert edge.node["Mode"].value == -7

        # the edge applies but never reports: no read back (uncertain for the gate)
        await host.write(f"{PREFIX}/boiler/Mute", 9.0)
        assert await host.read_back(f"{PREFIX}/boiler/Mute", 0.3) is None
        assert edge.device["Mute"].value == 9.0
    assert host._ctx.metrics.counters["source.sp.writes"] == 6


async def test_scale_and_offset_round_trip(broker: Broker) -> None:  # noqa: F811
    edge = Edge(broker)
    host = make_host(broker.port)
    async with born(host, edge):
        await host.write(f"{PREFIX}/boiler/Level", 21.37)  # raw 213.7 → 214
        assert await host.read_back(f"{PREFIX}/boiler/Level", 2.0) == pytest.approx(21.4)
        assert edge.device["Level"].value == 214
        assert edge.commands[-1][1].datatype == INT16
        await host.write(f"{PREFIX}/boiler/Level", -0.25)  # raw -2.5 → -3
        assert await host.read_back(f"{PREFIX}/boiler/Level", 2.0) == pytest.approx(-0.3)
        assert edge.device["Level"].value == -3


async def test_refusals_are_failed_and_publish_nothing(broker: Broker) -> None:  # noqa: F811
    edge = Edge(broker)
    host = make_host(broker.port)
    with pytest.raises(CommandWriteError, match="no birth") as info:
        await host.write(f"{PREFIX}/boiler/Setpoint", 1.0)
    assert info.value.outcome == "failed"
    async with born(host, edge):
        cases: list[tuple[str, Any, str]] = [
            (f"{PREFIX}/boiler/Level", 4000.0, "outside datatype 2"),  # raw 40000
            (f"{PREFIX}/boiler/Setpoint", float("nan"), "finite"),
            (f"{PREFIX}/boiler/Setpoint", "hot", "text"),
            (f"{PREFIX}/boiler/Recipe", 3, "takes text"),
            (f"{PREFIX}/boiler/Run", 2, "true/false"),
            (f"{PREFIX}/node/Mode", 2**31, "outside datatype 3"),
            (f"{PREFIX}/boiler/Temperature", 1.0, "not writable"),
            (f"{PREFIX}/pump/Speed", 1.0, "no birth"),
            ("nothing", 1.0, "no tag"),
        ]
        for tag, value, match in cases:
            with pytest.raises(CommandWriteError, match=match) as info:
                await host.write(tag, value)
            assert info.value.outcome == "failed", tag
        # a dead device takes no command
        await edge.death()
        async with asyncio.timeout(3):
            while host.state.is_born("plant", "edge1", "boiler"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        with pytest.raises(CommandWriteError, match="offline") as info:
            await host.write(f"{PREFIX}/boiler/Setpoint", 1.0)
        assert info.value.outcome == "failed"
        await asyncio.sleep(0.2)
        assert edge.commands == []  # nothing was ever published
    with pytest.raises(CommandWriteError) as info:
        await host.write(f"{PREFIX}/boiler/Setpoint", 1.0)  # stopped: not connected
    assert info.value.outcome == "failed"
