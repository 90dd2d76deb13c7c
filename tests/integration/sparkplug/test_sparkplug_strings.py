"""String tags over Sparkplug B against a private Mosquitto: our edge publishes them as
String metrics (datatype 12) in births and data, our host turns String metrics into
text samples; numeric batches stay text-free; a type mismatch is Bad, not a crash."""

from __future__ import annotations

import asyncio
import contextlib
import time
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
from isthmus.model.config import DataType, TagConfig
from isthmus.model.quality import Quality
from isthmus.transport.local import LocalTransport
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import wait_for
from tests.support import Collector, running_task

Payload: Any = getattr(sparkplug_b_pb2, "Payload")  # noqa: B009 - generated, untyped

pytestmark = [pytest.mark.integration, pytest.mark.timeout(15)]

RECIPE = "area/line1/cell/mixer/recipe"
SPEED = "area/line1/cell/mixer/speed"
COUNT = "area/line1/cell/mixer/count"  # int32 at the edge, declared string at the host
EDGE = {RECIPE: DataType.STRING, SPEED: DataType.FLOAT64, COUNT: DataType.INT32}
HOST = {RECIPE: "string", SPEED: "float64", COUNT: "string"}


def samples(collector: Collector, tag_id: int) -> list[tuple[float, int, str | None]]:
    out = []
    for b in collector.batches:
        texts = b.texts()
        for k in np.flatnonzero(b.tag_id == tag_id).tolist():
            out.append((float(b.value[k]), int(b.quality[k]), texts[k]))
    return out


async def test_string_tags_round_trip(broker: Broker) -> None:
    catalog = TagCatalog(
        CatalogEntry(10 + i, f"ent/site/{p}", "sim", TagConfig(path=p, data_type=k))
        for i, (p, k) in enumerate(EDGE.items())
    )
    transport = LocalTransport()
    edge = SparkplugEdge(
        SparkplugEdgeConfig(host=broker.host, port=broker.port, group="plant", edge_node="n1"),
        catalog,
        transport,
    )
    cfg = SparkplugSourceConfig.model_validate(
        {
            "name": "sp-text",
            "host": broker.host,
            "port": broker.port,
            "groups": ["plant"],
            "tag_template": "{device_path}/{metric}",
            "tags": [{"path": p, "data_type": k} for p, k in HOST.items()],
        }
    )
    bound: list[BoundTag[SparkplugTagConfig]] = [
        BoundTag(200 + i, f"e/s/{t.path}", t) for i, t in enumerate(cfg.tags)
    ]
    collector = Collector()
    host = SparkplugHost(cfg, bound, SourceContext(emit=collector.emit))
    recipe, speed, count = 200, 201, 202
    births: list[Any] = []
    async with (
        aiomqtt.Client(broker.host, broker.port) as spy,
        running_task(host.run, lambda: host.connected),
    ):
        await spy.subscribe("spBv1.0/plant/DBIRTH/#")

        async def watch() -> None:
            async for message in spy.messages:
                births.append(Payload.FromString(message.payload))

        watcher = asyncio.create_task(watch())
        try:
            await edge.start()
            await wait_for(lambda: edge.connected and bool(births), 5.0)
            declared = {m.name: m.datatype for m in births[0].metrics}
            assert declared == {"recipe": 12, "speed": 10, "count": 3}  # String, Double, Int32

            ts = time.time_ns()
            await transport.publish(
                Batch.of([10, 11], ts, [np.nan, 3.5], [0, 0], text=["R-100 crème", None])
            )
            await wait_for(lambda: any(s[2] == "R-100 crème" for s in samples(collector, recipe)))
            assert samples(collector, recipe)[-1][1] == Quality.GOOD
            assert samples(collector, speed)[-1] == (3.5, Quality.GOOD, None)

            # numeric data only: the host's batch carries no text column
            before = len(collector.batches)
            await transport.publish(Batch.of([11], ts + 1_000_000, [4.5], [0]))
            await wait_for(lambda: samples(collector, speed)[-1][0] == 4.5)
            assert all(b.text is None for b in collector.batches[before:])

            # an int32 metric on a tag the host declares string: Bad, counted
            await transport.publish(Batch.of([12], ts + 2_000_000, [7], [0]))
            await wait_for(
                lambda: any(s[1] == Quality.BAD_DECODING_ERROR for s in samples(collector, count))
            )
            assert host._ctx.metrics.snapshot()["source.sp-text.rejected"] >= 1

            # a Bad string sample with its text, then a rebirth carries the latest text
            await transport.publish(
                Batch.of([10], ts + 3_000_000, [np.nan], [Quality.UNCERTAIN], text=["R-200"])
            )
            await wait_for(
                lambda: samples(collector, recipe)[-1][1:] == (Quality.UNCERTAIN, "R-200")
            )
            births.clear()
            rebirth = Payload()
            metric = rebirth.metrics.add()
            metric.name, metric.datatype, metric.boolean_value = "Node Control/Rebirth", 11, True
            await spy.publish("spBv1.0/plant/NCMD/n1", rebirth.SerializeToString())
            await wait_for(lambda: bool(births), 5.0)
            (again,) = [m for m in births[0].metrics if m.name == "recipe"]
            assert again.datatype == 12 and again.string_value == "R-200"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await edge.stop()
