"""The UNS publisher against a private Mosquitto broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, TagConfig, UnsConfig
from isthmus.model.quality import Quality
from isthmus.observe.metrics import Metrics
from isthmus.transport.local import LocalTransport
from isthmus.transport.mqtt import UnsPublisher
from tests.integration.mqtt.conftest import AUTH_PASSWORD, AUTH_USER, Broker
from tests.integration.mqtt.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

PATHS = {
    0: ("packaging/line1/filling/filler1/temperature", DataType.FLOAT64),
    1: ("packaging/line1/filling/filler1/running", DataType.BOOL),
    2: ("packaging/line1/filling/filler1/count", DataType.UINT32),
}


def catalog() -> TagCatalog:
    return TagCatalog(
        CatalogEntry(i, f"acme/plant1/{path}", "src", TagConfig(path=path, data_type=kind))
        for i, (path, kind) in PATHS.items()
    )


@contextlib.asynccontextmanager
async def uns(port: int, **options: Any) -> AsyncIterator[tuple[UnsPublisher, LocalTransport]]:
    metrics = Metrics()
    transport = LocalTransport(metrics)
    cfg = UnsConfig.model_validate({"host": "127.0.0.1", "port": port, **options})
    publisher = UnsPublisher(cfg, catalog(), transport, metrics, client_id="test-uns")
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for(lambda: publisher.connected and transport.subscriber_count == 1)
        yield publisher, transport
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def collect(port: int, topic: str, seconds: float, **kwargs: Any) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client("127.0.0.1", port, **kwargs) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    got.append(message)
    return got


def doc(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    data: dict[str, Any] = json.loads(message.payload)
    return data


TS = 1_700_000_000_123_456_000


async def test_retained_topics_and_payloads(broker: Broker) -> None:
    async with uns(broker.port, prefix="uns/v1", min_interval=0.05) as (_pub, transport):
        await transport.publish(
            Batch.of(
                [0, 1, 2, 0],
                [TS, TS, TS, TS + 1000],
                [20.0, 1.0, 42.0, math.nan],
                [Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD_SENSOR_FAILURE],
            )
        )
        await wait_for(lambda: transport.metrics.counters["uns.published"] >= 3)
        # A subscriber arriving later gets every tag's retained last value at once.
        got = await collect(broker.port, "uns/v1/#", 0.5)
    by_topic = {str(m.topic): m for m in got}
    base = "uns/v1/acme/plant1/packaging/line1/filling/filler1"
    assert set(by_topic) == {f"{base}/temperature", f"{base}/running", f"{base}/count"}
    assert all(m.retain for m in got)
    assert doc(by_topic[f"{base}/temperature"]) == {
        "value": None,
        "quality": "Bad_SensorFailure",
        "timestamp": "2023-11-14T22:13:20.123457Z",
    }
    assert doc(by_topic[f"{base}/running"])["value"] is True
    count = doc(by_topic[f"{base}/count"])
    assert count["value"] == 42 and isinstance(count["value"], int)
    assert count["quality"] == "Good"
    assert transport.metrics.counters["uns.coalesced"] == 1


async def test_rate_limit_coalesces_to_newest(broker: Broker) -> None:
    topic = "acme/plant1/packaging/line1/filling/filler1/temperature"
    values: list[Any] = []
    async with (
        uns(broker.port, min_interval=0.4) as (_pub, transport),
        aiomqtt.Client("127.0.0.1", broker.port) as client,
    ):
        await client.subscribe(topic, qos=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(100):
            await transport.publish(Batch.of([0], [TS + i], [float(i)], [Quality.GOOD]))
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            async for message in client.messages:
                values.append(doc(message)["value"])
                if values[-1] == 99.0:
                    break
        elapsed = loop.time() - started
    # The newest value always arrives; in between at most one publish per 0.4 s.
    assert values[-1] == 99.0
    assert 2 <= len(values) <= elapsed / 0.4 + 2, (values, elapsed)
    assert len(values) < 20
    assert transport.metrics.counters["uns.coalesced"] >= 100 - len(values)


async def test_qos1_publish(broker: Broker) -> None:
    async with uns(broker.port, qos=1, retain=False, min_interval=0.01) as (_pub, transport):
        listener = asyncio.create_task(collect(broker.port, "acme/#", 0.6))
        await asyncio.sleep(0.2)
        await transport.publish(Batch.of([2], [TS], [7.0], [Quality.GOOD]))
        got = await listener
    assert [m.qos for m in got] == [1]
    assert not got[0].retain
    assert doc(got[0])["value"] == 7


async def test_broker_restart_gets_state_again(broker: Broker) -> None:
    async with uns(broker.port, min_interval=0.05, reconnect_max=0.5) as (pub, transport):
        await transport.publish(Batch.of([0], [TS], [1.5], [Quality.GOOD]))
        await wait_for(lambda: transport.metrics.counters["uns.published"] == 1)
        broker.stop()  # persistence off: retained messages are gone
        await wait_for(lambda: not pub.connected)
        await transport.publish(Batch.of([1], [TS], [0.0], [Quality.GOOD]))  # waits
        broker.start()
        await wait_for(lambda: pub.connected, within=5)
        await wait_for(lambda: transport.metrics.counters["uns.published"] >= 3)
        got = await collect(broker.port, "acme/#", 0.5)
    assert {str(m.topic).rsplit("/", 1)[1]: doc(m)["value"] for m in got} == {
        "temperature": 1.5,
        "running": False,
    }
    assert transport.metrics.counters["uns.reconnects"] == 1


async def test_username_password_from_env(
    auth_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UNS_PASSWORD", AUTH_PASSWORD)
    async with uns(
        auth_broker.port, username=AUTH_USER, password_env="TEST_UNS_PASSWORD", min_interval=0.01
    ) as (_pub, transport):
        await transport.publish(Batch.of([0], [TS], [3.0], [Quality.GOOD]))
        await wait_for(lambda: transport.metrics.counters["uns.published"] == 1)
        got = await collect(
            auth_broker.port, "acme/#", 0.4, username=AUTH_USER, password=AUTH_PASSWORD
        )
    assert [doc(m)["value"] for m in got] == [3.0]
