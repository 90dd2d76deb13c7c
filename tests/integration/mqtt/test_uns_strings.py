"""A string tag published to the UNS on a private Mosquitto broker."""

from __future__ import annotations

import asyncio

import pytest

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, TagConfig, UnsConfig
from isthmus.model.quality import Quality
from isthmus.observe.metrics import Metrics
from isthmus.transport.local import LocalTransport
from isthmus.transport.mqtt import UnsPublisher
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import wait_for
from tests.integration.mqtt.test_uns import TS, collect, doc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

PATH = "utilities/water/pumping/pump1/recipe"


async def test_string_tag_is_published_as_text(broker: Broker) -> None:
    catalog = TagCatalog(
        [
            CatalogEntry(
                5, f"acme/plant1/{PATH}", "src", TagConfig(path=PATH, data_type=DataType.STRING)
            )
        ]
    )
    metrics = Metrics()
    transport = LocalTransport(metrics)
    cfg = UnsConfig(host="127.0.0.1", port=broker.port, min_interval=0.05)
    publisher = UnsPublisher(cfg, catalog, transport, metrics, client_id="test-uns-text")
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for(lambda: publisher.connected and transport.subscriber_count == 1)
        await transport.publish(Batch.of([5], [TS], 0.0, Quality.GOOD, text=["CLEAN-IN-PLACE"]))
        await wait_for(lambda: metrics.counters["uns.published"] >= 1)
        (message,) = await collect(broker.port, "acme/#", 0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert str(message.topic) == f"acme/plant1/{PATH}"
    assert doc(message) == {
        "value": "CLEAN-IN-PLACE",
        "quality": "Good",
        "timestamp": "2023-11-14T22:13:20.123456Z",
    }
