"""The whole app with a ``sparkplug_edge:`` section against a private Mosquitto: an MQTT
JSON value in → NBIRTH, DBIRTH and DDATA out; NDEATH on stop; bdSeq kept across restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from isthmus.app import Runtime, build_runtime, start_pipeline, stop_pipeline
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.connectors.sparkplug import sparkplug_b_pb2
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import publish, wait_for

Payload: Any = getattr(sparkplug_b_pb2, "Payload")  # noqa: B009 - generated, untyped

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

CONFIG = """
enterprise: acme
site: plant1
hierarchy:
  packaging:
    line1:
      filling: [filler1]
storage:
  type: sqlite
  path: historian.sqlite
pipeline:
  flush_interval: 50ms
sparkplug_edge:
  host: 127.0.0.1
  port: {port}
  group: acme
  edge_node: {node}
sources:
  - name: line1_mqtt
    type: mqtt
    host: 127.0.0.1
    port: {port}
    subscriptions:
      - topic: plant/{{line}}/{{machine}}/telemetry
        values:
          - field: $.temperature
            tag: packaging/{{line}}/filling/{{machine}}/temperature
    tags:
      - path: packaging/line1/filling/filler1/temperature
        unit: °C
"""


def runtime(port: int, data_dir: Path, node: str = "plant1") -> Runtime:
    text = CONFIG.format(port=port, node=node)
    plant, sources = load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    rt = build_runtime(plant, sources, data_dir)
    assert rt.sparkplug_edge is not None
    return rt


@asynccontextmanager
async def sparkplug_messages(port: int) -> AsyncIterator[list[tuple[str, Any]]]:
    """Every message under spBv1.0/acme/#, decoded, as it arrives."""
    seen: list[tuple[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("spBv1.0/acme/#", qos=1)

        async def pump() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append((str(message.topic), Payload.FromString(message.payload)))

        task = asyncio.create_task(pump())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def bd_seq(payload: Any) -> int:
    return next(int(m.long_value) for m in payload.metrics if m.name == "bdSeq")


async def test_edge_publishes_births_data_and_death(broker: Broker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with sparkplug_messages(broker.port) as seen:
        rt = runtime(broker.port, data)
        await start_pipeline(rt)
        try:
            await wait_for(lambda: rt.sparkplug_edge is not None and rt.sparkplug_edge.connected)
            await wait_for(lambda: all(rt.source_status().values()))
            await wait_for(lambda: any("/DBIRTH/" in t for t, _ in seen))
            await publish(
                broker.port, [("plant/line1/filler1/telemetry", json.dumps({"temperature": 71.5}))]
            )
            await wait_for(lambda: any("/DDATA/" in t for t, _ in seen))
        finally:
            await stop_pipeline(rt)
        await wait_for(lambda: any("/NDEATH/" in t for t, _ in seen))

        topics = [t for t, _ in seen]
        device = "packaging:line1:filling:filler1"
        assert topics[0] == "spBv1.0/acme/NBIRTH/plant1"
        assert topics[1] == f"spBv1.0/acme/DBIRTH/plant1/{device}"
        nbirth, dbirth = seen[0][1], seen[1][1]
        assert bd_seq(nbirth) == 0  # the first session of this data directory
        metric = next(m for m in dbirth.metrics if m.name == "temperature")
        ddata = next(p for t, p in seen if t == f"spBv1.0/acme/DDATA/plant1/{device}")
        assert [(m.alias, m.double_value) for m in ddata.metrics] == [(metric.alias, 71.5)]
        ndeath = next(p for t, p in seen if t.endswith("/NDEATH/plant1"))
        assert bd_seq(ndeath) == 0

        # A restart on the same data directory is a new session: the next bdSeq.
        rt = runtime(broker.port, data)
        await start_pipeline(rt)
        try:
            await wait_for(lambda: sum("/NBIRTH/" in t for t, _ in seen) == 2)
        finally:
            await stop_pipeline(rt)
        births = [p for t, p in seen if "/NBIRTH/" in t]
        assert bd_seq(births[1]) == 1
        assert (data / "sparkplug-edge-acme-plant1.bdseq").read_text() == "1"


def test_bad_edge_node_id_names_the_line() -> None:
    text = CONFIG.format(port=1883, node="line/1")
    with pytest.raises(ConfigError) as err:
        load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    assert "plant.yaml:" in str(err.value) and "sparkplug_edge.edge_node" in str(err.value)
