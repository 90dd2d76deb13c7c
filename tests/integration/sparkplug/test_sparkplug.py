"""Sparkplug B against a private Mosquitto: our edge → our host (values, qualities,
rebirth), an independent raw-protobuf edge node (seq gaps → NCMD rebirth, bdSeq), and
the primary host STATE message with its will."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.sparkplug import sparkplug_b_pb2
from isthmus.connectors.sparkplug.config import (
    SparkplugEdgeConfig,
    SparkplugSourceConfig,
    SparkplugTagConfig,
)
from isthmus.connectors.sparkplug.edge import SparkplugEdge
from isthmus.connectors.sparkplug.host import SparkplugHost
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality
from isthmus.transport.local import LocalTransport
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import wait_for
from tests.support import Collector, running_task

Payload: Any = getattr(sparkplug_b_pb2, "Payload")  # noqa: B009 - generated, untyped

# Each step has its own limit (3-8 s); the test as a whole gets room for a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[3]


def host_for(
    broker: Broker, paths: list[str], collector: Collector, **extra: Any
) -> tuple[SparkplugHost, dict[str, int]]:
    raw: dict[str, Any] = {
        "name": "sp",
        "host": broker.host,
        "port": broker.port,
        "groups": ["plant"],
        "tags": [{"path": p} for p in paths],
    } | extra
    cfg = SparkplugSourceConfig.model_validate(raw)
    tags = [BoundTag(200 + i, f"e/s/{t.path}", t) for i, t in enumerate(cfg.tags)]
    ctx = SourceContext(emit=collector.emit)
    bound: list[BoundTag[SparkplugTagConfig]] = tags
    return SparkplugHost(cfg, bound, ctx), {t.config.path: t.tag_id for t in tags}


def rows(collector: Collector, tag_id: int) -> list[tuple[float, int]]:
    out = []
    for b in collector.batches:
        for k in np.flatnonzero(b.tag_id == tag_id).tolist():
            out.append((float(b.value[k]), int(b.quality[k])))
    return out


async def test_edge_to_host_round_trip(broker: Broker) -> None:
    paths = ["area/line1/cell/press/temp", "area/line1/cell/press/run", "area/line2/c/pump/n"]
    kinds = ["float64", "bool", "int32"]
    catalog = TagCatalog(
        CatalogEntry(10 + i, f"ent/site/{p}", "sim", TagConfig(path=p, data_type=k))  # type: ignore[arg-type]
        for i, (p, k) in enumerate(zip(paths, kinds, strict=True))
    )
    transport = LocalTransport()
    edge_cfg = SparkplugEdgeConfig(
        host=broker.host, port=broker.port, group="plant", edge_node="isthmus", data_datatype=False
    )
    edge = SparkplugEdge(edge_cfg, catalog, transport)
    collector = Collector()
    host, ids = host_for(broker, paths, collector, tag_template="{device_path}/{metric}")
    async with running_task(host.run, lambda: host.connected):
        await edge.start()
        await wait_for(lambda: edge.connected, 5.0)
        temp, run, n = (ids[p] for p in paths)
        # births before any data: every tag known, no value yet → Bad (null)
        await wait_for(lambda: all(rows(collector, t) for t in (temp, run, n)))
        assert rows(collector, temp)[0][1] == Quality.BAD
        ts = time.time_ns()
        await transport.publish(
            Batch.of([10, 11, 12], ts, [21.5, 1.0, -40], [0, 0, Quality.UNCERTAIN])
        )
        await wait_for(lambda: len(rows(collector, n)) >= 2)
        assert rows(collector, temp)[-1] == (21.5, Quality.GOOD)
        assert rows(collector, run)[-1] == (1.0, Quality.GOOD)
        assert rows(collector, n)[-1] == (-40.0, Quality.UNCERTAIN)
        last = [b for b in collector.batches if n in b.tag_id.tolist()][-1]
        assert abs(int(last.ts[0]) - ts) < 1_000_000  # ms resolution on the wire
        # a rebirth request from outside makes the edge publish its births again
        async with aiomqtt.Client(broker.host, broker.port) as other:
            await other.subscribe("spBv1.0/plant/NBIRTH/isthmus")
            payload = Payload()
            metric = payload.metrics.add()
            metric.name, metric.datatype, metric.boolean_value = "Node Control/Rebirth", 11, True
            await other.publish("spBv1.0/plant/NCMD/isthmus", payload.SerializeToString())
            async with asyncio.timeout(5):
                async for message in other.messages:
                    birth = Payload.FromString(message.payload)
                    assert birth.seq == 0
                    assert birth.metrics[0].name == "bdSeq"
                    break
        # values continue after the rebirth (births carry the latest values)
        await wait_for(lambda: rows(collector, temp)[-1] == (21.5, Quality.GOOD))
        assert host._ctx.metrics.snapshot().get("source.sp.gaps", 0) == 0
        await edge.stop()
        # a clean stop publishes NDEATH: the host marks the edge's tags Bad once
        await wait_for(lambda: rows(collector, temp)[-1][1] == Quality.BAD_NO_COMMUNICATION)


def raw_payload(
    seq: int | None, metrics: Sequence[tuple[str | None, int | None, int, Any]]
) -> bytes:
    """A Sparkplug payload built with protobuf directly (not our codec)."""
    payload = Payload()
    payload.timestamp = int(time.time() * 1000)
    if seq is not None:
        payload.seq = seq
    for name, alias, datatype, value in metrics:
        m = payload.metrics.add()
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        m.datatype = datatype
        if datatype == 11:
            m.boolean_value = value
        elif datatype in (4, 8):
            m.long_value = value
        elif datatype == 10:
            m.double_value = value
        else:
            m.int_value = value
    data: bytes = payload.SerializeToString()
    return data


async def test_independent_edge_gaps_rebirth_and_bdseq(broker: Broker) -> None:
    collector = Collector()
    host, ids = host_for(
        broker,
        ["sparkplug/plant/raw/node/flow"],
        collector,
        reorder_window=2,
        reorder_timeout=0.5,
        rebirth_min_interval=0.0,
    )
    flow = ids["sparkplug/plant/raw/node/flow"]
    async with (
        running_task(host.run, lambda: host.connected),
        aiomqtt.Client(broker.host, broker.port) as edge,
    ):
        await edge.subscribe("spBv1.0/plant/NCMD/raw")
        t = "spBv1.0/plant/{}/raw"
        # data before any birth: rebirth request
        await edge.publish(t.format("NDATA"), raw_payload(3, [(None, 7, 10, 1.0)]))
        async with asyncio.timeout(3):
            async for message in edge.messages:
                cmd = Payload.FromString(message.payload)
                assert cmd.metrics[0].name == "Node Control/Rebirth"
                assert cmd.metrics[0].boolean_value is True
                break
        birth = [("bdSeq", None, 8, 5), ("flow", 7, 10, 1.5)]
        await edge.publish(t.format("NBIRTH"), raw_payload(0, birth))
        await edge.publish(t.format("NDATA"), raw_payload(1, [(None, 7, 10, 2.5)]))
        # out of order within the window: 3 before 2 → both, in order, no rebirth
        await edge.publish(t.format("NDATA"), raw_payload(3, [(None, 7, 10, 4.5)]))
        await edge.publish(t.format("NDATA"), raw_payload(2, [(None, 7, 10, 3.5)]))
        await wait_for(lambda: len(rows(collector, flow)) >= 4)
        assert [v for v, _ in rows(collector, flow)] == [1.5, 2.5, 3.5, 4.5]
        # a gap (5 missing, 4 never comes within the timeout): held data kept + rebirth
        await edge.publish(t.format("NDATA"), raw_payload(5, [(None, 7, 10, 6.5)]))
        async with asyncio.timeout(3):
            async for message in edge.messages:
                assert Payload.FromString(message.payload).metrics[0].boolean_value
                break
        await wait_for(lambda: rows(collector, flow)[-1][0] == 6.5)
        assert host._ctx.metrics.snapshot()["source.sp.gaps"] == 1
        # NDEATH with another bdSeq (an old session's will) is ignored
        await edge.publish(t.format("NDEATH"), raw_payload(None, [("bdSeq", None, 8, 4)]))
        await wait_for(lambda: host._ctx.metrics.snapshot().get("source.sp.stale_deaths") == 1)
        assert rows(collector, flow)[-1] == (6.5, Quality.GOOD)
        # the matching bdSeq: tags Bad
        await edge.publish(t.format("NDEATH"), raw_payload(None, [("bdSeq", None, 8, 5)]))
        await wait_for(lambda: rows(collector, flow)[-1][1] == Quality.BAD_NO_COMMUNICATION)


HOST_SCRIPT = """
import asyncio, logging, sys
from isthmus.connectors.base import SourceContext
from isthmus.connectors.sparkplug.config import SparkplugSourceConfig
from isthmus.connectors.sparkplug.host import SparkplugHost

async def emit(batch): pass
cfg = SparkplugSourceConfig(name="p", host="127.0.0.1", port=int(sys.argv[1]),
                            groups=["plant"], host_id="scada1", keepalive=2)
asyncio.run(SparkplugHost(cfg, [], SourceContext(emit=emit)).run())
"""


async def test_state_retained_and_will_on_kill(broker: Broker) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOST_SCRIPT, str(broker.port), env=env
    )
    try:
        states: list[dict[str, Any]] = []
        async with aiomqtt.Client(broker.host, broker.port) as watcher:
            await watcher.subscribe("spBv1.0/STATE/scada1", qos=1)
            async with asyncio.timeout(8):
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    states.append(json.loads(message.payload))
                    if states[-1]["online"] is True:
                        assert message.retain or len(states) == 1
                        proc.send_signal(signal.SIGKILL)
                    else:
                        break
        assert states[-1]["online"] is False
        assert states[-1]["timestamp"] == states[-2]["timestamp"]  # Sparkplug 3.0 will
        # and it is retained: a new subscriber sees offline
        async with aiomqtt.Client(broker.host, broker.port) as late:
            await late.subscribe("spBv1.0/STATE/scada1", qos=1)
            async with asyncio.timeout(3):
                async for message in late.messages:
                    assert message.retain
                    assert isinstance(message.payload, bytes)
                    assert json.loads(message.payload)["online"] is False
                    break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
