"""The MQTT source as a Commander, against a private Mosquitto on 127.0.0.1 and a small
device (an MQTT client that applies each command and publishes its new state), directly
and through the DroppingProxy: templates, write then read back, scale/offset, refusals
before publishing, and no PUBACK = uncertain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
import pytest_asyncio

from isthmus.connectors.base import BoundTag, Commander, CommandWriteError, SourceContext
from isthmus.connectors.mqtt.config import MqttSourceConfig, MqttTagConfig
from isthmus.connectors.mqtt.source import MqttSource
from isthmus.model.clock import ManualClock
from tests.integration.connectors.proxy import MQTT, DroppingProxy, mqtt_publish
from tests.integration.mqtt.conftest import Broker, broker  # noqa: F401 - the fixture
from tests.support import Collector, running_source

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

T0_MS = 1_700_000_000_000

TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/boiler/setpoint", "writable": True, "command": {"topic": "plant/cmd/{tag}"}},
    {"path": "a/l/c/boiler/level", "data_type": "int16", "scale": 0.1, "writable": True,
     "command": {"topic": "plant/cmd/{tag}",
                 "payload": '{"value": {value}, "path": "{path}", "ts": {ts}}'}},
    {"path": "a/l/c/boiler/recipe", "data_type": "string", "writable": True,
     "command": {"topic": "plant/cmd/{tag}"}},
    {"path": "a/l/c/boiler/run", "data_type": "bool", "writable": True,
     "command": {"topic": "plant/cmd/{tag}", "payload": "{value}", "qos": 0}},
    {"path": "a/l/c/boiler/mute", "writable": True,  # a device that never answers
     "command": {"topic": "plant/ignored/{tag}"}},
    {"path": "a/l/c/boiler/temperature"},
]  # fmt: skip


class Device:
    """Subscribes to ``plant/cmd/#``; applies each command (its JSON ``value``, or the
    plain payload) and publishes ``{"value": ...}`` on ``plant/state/<name>``."""

    def __init__(self, at: Broker) -> None:
        self.broker = at
        self.received: list[tuple[str, str]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier="dev") as c:
            await c.subscribe("plant/cmd/#", qos=1)
            self.ready.set()
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                text = message.payload.decode()
                self.received.append((message.topic.value, text))
                doc = json.loads(text)
                value = doc["value"] if isinstance(doc, dict) else doc
                name = message.topic.value.rsplit("/", 1)[-1]
                await c.publish(f"plant/state/{name}", json.dumps({"value": value}), qos=1)


@pytest_asyncio.fixture
async def device(broker: Broker) -> AsyncIterator[Device]:  # noqa: F811
    dev = Device(broker)
    task = asyncio.create_task(dev.run())
    async with asyncio.timeout(5):
        await dev.ready.wait()
    yield dev
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task


def make_source(port: int, timeout: float = 2.0) -> MqttSource:
    cfg = MqttSourceConfig.model_validate(
        {
            "name": "mq",
            "host": "127.0.0.1",
            "port": port,
            "timeout": timeout,
            "reconnect_max": 0.2,
            "subscriptions": [
                {
                    "topic": "plant/state/{name}",
                    "qos": 1,
                    "values": [{"field": "$.value", "tag": "a/l/c/boiler/{name}"}],
                }
            ],
            "tags": TAGS,
        }
    )
    bound: list[BoundTag[MqttTagConfig]] = [
        BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(cfg.tags)
    ]
    ctx = SourceContext(
        emit=Collector().emit,
        clock=ManualClock(T0_MS * 1_000_000),
        log=logging.getLogger("isthmus.test.cmd.mqtt"),
    )
    return MqttSource(cfg, bound, ctx)


async def test_write_then_read_back_equal(broker: Broker, device: Device) -> None:  # noqa: F811
    source = make_source(broker.port)
    assert isinstance(source, Commander)
    async with running_source(source, connected_within=5):
        await source.write("a/l/c/boiler/setpoint", 72.5)
        assert await source.read_back("a/l/c/boiler/setpoint", 2.0) == 72.5
        assert device.received[-1] == ("plant/cmd/setpoint", '{"value": 72.5}')

        await source.write("ent/site/a/l/c/boiler/recipe", 'R-42 "ünï"')  # JSON-quoted
        assert await source.read_back(102, 2.0) == 'R-42 "ünï"'
        assert json.loads(device.received[-1][1]) == {"value": 'R-42 "ünï"'}

        await source.write("a/l/c/boiler/run", True)  # QoS 0, plain payload
        assert await source.read_back("a/l/c/boiler/run", 2.0) is True
        assert device.received[-1] == ("plant/cmd/run", "true")

        # a device that does not publish its value: no read back (uncertain for the gate)
        await source.write("a/l/c/boiler/mute", 1.0)
        assert await source.read_back("a/l/c/boiler/mute", 0.3) is None
    assert source._ctx.metrics.counters["source.mq.writes"] == 4


async def test_templates_and_scale_round_trip(broker: Broker, device: Device) -> None:  # noqa: F811
    source = make_source(broker.port)
    async with running_source(source, connected_within=5):
        await source.write("a/l/c/boiler/level", 21.37)  # raw 213.7 → 214
        assert await source.read_back("a/l/c/boiler/level", 2.0) == pytest.approx(21.4)
        topic, payload = device.received[-1]
        assert topic == "plant/cmd/level"
        assert json.loads(payload) == {"value": 214, "path": "a/l/c/boiler/level", "ts": T0_MS}
        await source.write("a/l/c/boiler/level", -0.25)  # raw -2.5 → -3
        assert json.loads(device.received[-1][1])["value"] == -3
        assert await source.read_back("a/l/c/boiler/level", 2.0) == pytest.approx(-0.3)


async def test_refusals_are_failed_and_publish_nothing(broker: Broker, device: Device) -> None:  # noqa: F811
    source = make_source(broker.port)
    with pytest.raises(CommandWriteError, match="not connected") as info:
        await source.write("a/l/c/boiler/setpoint", 1.0)
    assert info.value.outcome == "failed"
    async with running_source(source, connected_within=5):
        cases: list[tuple[str, Any, str]] = [
            ("a/l/c/boiler/level", 4000.0, "int16 range"),  # raw 40000
            ("a/l/c/boiler/setpoint", float("nan"), "finite"),
            ("a/l/c/boiler/setpoint", "hot", "text"),
            ("a/l/c/boiler/recipe", 3, "takes text"),
            ("a/l/c/boiler/run", 2, "true/false"),
            ("a/l/c/boiler/temperature", 20.0, "not writable"),
            ("a/l/c/boiler/nothing", 1.0, "no tag"),
        ]
        for tag, value, match in cases:
            with pytest.raises(CommandWriteError, match=match) as info:
                await source.write(tag, value)
            assert info.value.outcome == "failed", tag
        await asyncio.sleep(0.2)
        assert device.received == []
        assert await source.read_back("a/l/c/boiler/nothing", 0.1) is None


async def test_no_puback_is_uncertain(broker: Broker, device: Device) -> None:  # noqa: F811
    outcomes: dict[str, str] = {}
    async with DroppingProxy(broker.host, broker.port, framing=MQTT, watch=mqtt_publish) as proxy:
        source = make_source(proxy.port, timeout=1.0)
        async with running_source(source, connected_within=5):
            proxy.drop_next("request", when=mqtt_publish)  # PUBLISH forwarded, then cut
            with pytest.raises(CommandWriteError, match="may have reached") as info:
                await source.write("a/l/c/boiler/setpoint", 11.0)
            outcomes["after request"] = info.value.outcome

            async with asyncio.timeout(10):
                await proxy.reconnected(source)
            proxy.drop_next("response", when=mqtt_publish)  # the PUBACK is thrown away
            with pytest.raises(CommandWriteError) as info:
                await source.write("a/l/c/boiler/setpoint", 22.0)
            outcomes["after response"] = info.value.outcome

            async with asyncio.timeout(10):
                await proxy.reconnected(source)
            proxy.drop_next("response", when=mqtt_publish, close=False)  # no PUBACK, ever
            with pytest.raises(CommandWriteError) as info:
                await source.write("a/l/c/boiler/setpoint", 33.0)
            outcomes["no answer"] = info.value.outcome

            await source.write("a/l/c/boiler/setpoint", 44.0)  # the connection still works
            assert await source.read_back("a/l/c/boiler/setpoint", 2.0) == 44.0
    print(f"\nMQTT outcomes through the dropping proxy: {outcomes}")
    assert set(outcomes.values()) == {"uncertain"}
    # every one of them did reach the device through the broker
    assert [json.loads(p)["value"] for _, p in device.received] == [11.0, 22.0, 33.0, 44.0]
