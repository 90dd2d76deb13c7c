"""MqttSource against a private Mosquitto broker."""

from __future__ import annotations

import asyncio
import json
import ssl
from functools import partial
from typing import Any

import numpy as np
import pytest

from isthmus.connectors.base import SourceContext
from isthmus.model.quality import Quality
from tests.integration.mqtt.conftest import AUTH_PASSWORD, AUTH_USER, WRITER_USER, Broker
from tests.integration.mqtt.helpers import (
    Collector,
    make_source,
    publish,
    running,
    values_of,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]


def config(port: int, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "mq",
        "type": "mqtt",
        "host": "127.0.0.1",
        "port": port,
        "subscriptions": [
            {
                "topic": "plant/{line}/{machine}/telemetry",
                "qos": 1,
                "timestamp": "$.ts",
                "values": [
                    {
                        "field": "$.temperature",
                        "tag": "packaging/{line}/filling/{machine}/temperature",
                    },
                    {
                        "field": "$.metrics[?name=Speed].value",
                        "tag": "packaging/{line}/filling/{machine}/speed",
                    },
                ],
            },
            {
                "topic": "sensors/{machine}/level",
                "values": [{"tag": "packaging/line1/filling/{machine}/level"}],
            },
        ],
        "tags": [
            {"path": "packaging/line1/filling/filler1/temperature"},
            {"path": "packaging/line1/filling/filler1/speed"},
            {"path": "packaging/line2/filling/filler1/temperature"},
            {"path": "packaging/line1/filling/filler1/level"},
        ],
    }
    raw.update(extra)
    return raw


def telemetry(temp: float, speed: float, ts_ms: int = 1_700_000_000_000) -> bytes:
    doc = {"ts": ts_ms, "temperature": temp, "metrics": [{"name": "Speed", "value": speed}]}
    return json.dumps(doc).encode()


async def test_json_and_topic_templates_make_few_batches(broker: Broker) -> None:
    out = Collector()
    source, ctx, ids = make_source(config(broker.port), out)
    async with running(source):
        messages: list[tuple[str, bytes | str]] = [
            ("plant/line1/filler1/telemetry", telemetry(20.0 + i, 100.0 + i, 1_700_000_000_000 + i))
            for i in range(200)
        ]
        messages.append(("plant/line2/filler1/telemetry", telemetry(55.5, 1.0)))
        messages.append(("plant/line9/filler1/telemetry", telemetry(1.0, 1.0)))  # not configured
        messages.append(("sensors/filler1/level", b"42.25"))
        await publish(broker.port, messages)
        await wait_for(lambda: len(out.all()) >= 200 * 2 + 1 + 1)
        await asyncio.sleep(0.1)
    temp = ids["packaging/line1/filling/filler1/temperature"]
    speed = ids["packaging/line1/filling/filler1/speed"]
    batch = out.all()
    np.testing.assert_array_equal(values_of(out, temp), 20.0 + np.arange(200))
    np.testing.assert_array_equal(values_of(out, speed), 100.0 + np.arange(200))
    np.testing.assert_array_equal(
        batch.ts[batch.tag_id == temp], (1_700_000_000_000 + np.arange(200)) * 1_000_000
    )
    assert values_of(out, ids["packaging/line2/filling/filler1/temperature"]).tolist() == [55.5]
    # line2 has no speed tag: one unknown field; line9 has neither: two.
    assert ctx.metrics.counters["source.mq.unknown_tags"] == 3
    assert values_of(out, ids["packaging/line1/filling/filler1/level"]).tolist() == [42.25]
    assert (batch.quality == Quality.GOOD).all()
    assert ctx.metrics.counters["source.mq.rejected"] == 0
    # Batches, not samples: 203 messages arrive in a handful of batches.
    assert len(out.batches) < 20, len(out.batches)


async def test_malformed_flood_is_counted_and_survived(broker: Broker) -> None:
    out = Collector()
    source, ctx, ids = make_source(config(broker.port), out)
    level = ids["packaging/line1/filling/filler1/level"]
    garbage: list[tuple[str, bytes | str]] = []
    for i in range(1000):
        garbage.append(("sensors/filler1/level", [b"\xff\xfe", b"{", b"[1,2]", b"abc"][i % 4]))
    garbage.append(("sensors/filler1/level", b"7"))
    async with running(source):
        await publish(broker.port, garbage, qos=0)
        await wait_for(lambda: 7.0 in values_of(out, level).tolist())
        assert source.connected
    assert ctx.metrics.counters["source.mq.rejected"] == 1000
    # Reported as events, a few per burst, whose counts add up to every rejected frame.
    ctx.events.tick(force=True)
    rejected = [e for e in ctx.events.recent(kind="source.rejected", limit=10_000)]
    assert 1 <= len(rejected) <= 5, [e.message for e in rejected]
    assert sum(e.count for e in rejected) == 1000
    assert {e.source for e in rejected} == {"mq"}
    b = out.all()
    bad = b.quality[b.tag_id == level] == Quality.BAD_DECODING_ERROR
    assert int(bad.sum()) == 1000  # attributable: the topic maps onto the tag


async def test_missing_field_marks_only_that_tag(broker: Broker) -> None:
    out = Collector()
    source, ctx, _ids = make_source(config(broker.port), out)
    async with running(source):
        payload = json.dumps({"ts": 1_700_000_000_000, "temperature": "hot", "metrics": []})
        await publish(broker.port, [("plant/line1/filler1/telemetry", payload)])
        await wait_for(lambda: len(out.all()) >= 2)
    b = out.all()
    assert set(b.quality.tolist()) == {Quality.BAD_DECODING_ERROR}
    assert ctx.metrics.counters["source.mq.rejected"] == 2


async def test_outage_bad_once_then_good_again(broker: Broker) -> None:
    out = Collector()
    source, ctx, ids = make_source(config(broker.port, reconnect_max=0.5), out)
    level = ids["packaging/line1/filling/filler1/level"]
    async with running(source):
        await publish(broker.port, [("sensors/filler1/level", b"1")])
        await wait_for(lambda: 1.0 in values_of(out, level).tolist())
        broker.stop()
        await wait_for(lambda: not source.connected)
        await asyncio.sleep(1.5)  # several failed attempts
        broker.start()
        await wait_for(lambda: source.connected, within=5)
        await publish(broker.port, [("sensors/filler1/level", b"2")])
        await wait_for(lambda: 2.0 in values_of(out, level).tolist())
    b = out.all()
    comm = b.quality[b.tag_id == level] == Quality.BAD_COMMUNICATION_ERROR
    assert int(comm.sum()) == 1  # Bad once per outage, not once per attempt
    assert ctx.metrics.counters["source.mq.errors"] >= 2
    assert ctx.metrics.counters["source.mq.reconnects"] == 1
    assert b.quality[b.tag_id == level][-1] == Quality.GOOD


async def test_username_password_from_env(
    auth_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", AUTH_PASSWORD)
    out = Collector()
    raw = config(auth_broker.port, username=AUTH_USER, password_env="TEST_MQTT_PASSWORD")
    source, _ctx, _ids = make_source(raw, out)
    async with running(source):
        await publish(
            auth_broker.port,
            [("sensors/filler1/level", b"3.5")],
            username=AUTH_USER,
            password=AUTH_PASSWORD,
        )
        await wait_for(lambda: len(out.all()) == 1)
    assert out.all().value.tolist() == [3.5]


async def test_wrong_password_is_an_outage_not_a_crash(
    auth_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
    out = Collector()
    raw = config(auth_broker.port, username=AUTH_USER, password_env="TEST_MQTT_PASSWORD")
    source, ctx, _ = make_source(raw, out)
    task = asyncio.create_task(source.run())
    await wait_for(lambda: ctx.metrics.counters["source.mq.errors"] >= 1)
    assert not task.done() and not source.connected
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert set(out.all().quality.tolist()) == {Quality.BAD_COMMUNICATION_ERROR}


async def test_missing_password_variable_is_reported(broker: Broker) -> None:
    out = Collector()
    raw = config(broker.port, username="u", password_env="ISTHMUS_TEST_UNSET_VARIABLE")
    source, ctx, _ = make_source(raw, out)
    task = asyncio.create_task(source.run())
    await wait_for(lambda: ctx.metrics.counters["source.mq.errors"] >= 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not source.connected


async def test_acl_denied_topic_delivers_nothing(
    acl_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mosquitto 2.0 grants a subscription its ACL denies (MQTT 3.1.1) and then delivers
    nothing on it: the troubleshooting page says so; allowed topics still work."""
    monkeypatch.setenv("TEST_MQTT_PASSWORD", AUTH_PASSWORD)
    out = Collector()
    raw = config(acl_broker.port, username=AUTH_USER, password_env="TEST_MQTT_PASSWORD")
    source, ctx, _ids = make_source(raw, out)
    async with running(source):
        await publish(
            acl_broker.port,
            [
                ("plant/line1/filler1/telemetry", telemetry(1.0, 2.0)),
                ("sensors/filler1/level", b"5"),
            ],
            username=WRITER_USER,
            password=AUTH_PASSWORD,
        )
        await wait_for(lambda: len(out.all()) >= 1)
        await asyncio.sleep(0.2)
    assert out.all().value.tolist() == [5.0]
    assert ctx.metrics.counters["source.mq.messages"] == 1


async def test_mutual_tls(tls_broker: Broker) -> None:
    files = tls_broker.tls
    assert files is not None
    out = Collector()
    raw = config(
        tls_broker.port,
        tls=True,
        ca_file=str(files.ca),
        cert_file=str(files.client_cert),
        key_file=str(files.client_key),
    )
    source, _, _ = make_source(raw, out)
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))
    async with running(source):
        await publish(tls_broker.port, [("sensors/filler1/level", b"8")], tls_context=context)
        await wait_for(lambda: len(out.all()) == 1)
    assert out.all().value.tolist() == [8.0]


def failed(ctx: SourceContext) -> bool:
    return ctx.metrics.counters["source.mq.errors"] >= 1


async def test_tls_never_falls_back(tls_broker: Broker) -> None:
    """An untrusted broker certificate (system CAs only) or plain TCP against a TLS
    listener is an outage, never a silent downgrade."""
    files = tls_broker.tls
    assert files is not None
    for raw in (
        config(tls_broker.port, tls=True),  # our test CA is not a system CA
        config(tls_broker.port, timeout=1),  # plain MQTT to a TLS port
    ):
        out = Collector()
        source, ctx, _ = make_source(raw, out)
        task = asyncio.create_task(source.run())
        await wait_for(partial(failed, ctx))
        assert not source.connected
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
