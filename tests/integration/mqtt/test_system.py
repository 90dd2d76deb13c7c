"""The whole app with an MQTT source and a `uns:` section against a private broker:
a JSON message in → the historian and the UNS topic out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from isthmus.app import build_runtime, start_pipeline, stop_pipeline
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.loader import load_plant_config
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import publish, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

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
uns:
  type: mqtt
  host: 127.0.0.1
  port: {port}
  qos: 1
  retain: true
  min_interval: 100ms
  prefix: uns
sources:
  - name: line1_mqtt
    type: mqtt
    host: 127.0.0.1
    port: {port}
    subscriptions:
      - topic: plant/{{line}}/{{machine}}/telemetry
        qos: 1
        values:
          - field: $.temperature
            tag: packaging/{{line}}/filling/{{machine}}/temperature
    tags:
      - path: packaging/line1/filling/filler1/temperature
        unit: °C
"""


async def test_mqtt_in_historian_and_uns_out(broker: Broker, tmp_path: Path) -> None:
    text = CONFIG.format(port=broker.port)
    plant, sources = load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    rt = build_runtime(plant, sources, tmp_path / "data")
    assert rt.uns is not None
    await start_pipeline(rt)
    try:
        await wait_for(lambda: all(rt.source_status().values()) and rt.uns is not None)
        await wait_for(lambda: rt.uns is not None and rt.uns.connected)
        await publish(
            broker.port, [("plant/line1/filler1/telemetry", json.dumps({"temperature": 71.5}))]
        )
        entry = rt.catalog.by_path("acme/plant1/packaging/line1/filling/filler1/temperature")
        assert entry is not None

        def stored() -> bool:
            last = rt.store.last([entry.tag_id])
            return len(last) == 1 and float(last.value[0]) == 71.5

        await wait_for(stored)
        topic = "uns/acme/plant1/packaging/line1/filling/filler1/temperature"
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(topic, qos=1)
            async with asyncio.timeout(3):
                message = await anext(aiter(client.messages))
        assert message.retain
        assert isinstance(message.payload, bytes)
        doc = json.loads(message.payload)
        assert doc["value"] == 71.5 and doc["quality"] == "Good"
        assert rt.metrics.counters["uns.published"] >= 1
    finally:
        await stop_pipeline(rt)
