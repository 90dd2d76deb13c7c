"""String tags of the MQTT source against a private Mosquitto broker: JSON fields and
plain payloads become text samples; numeric tags keep refusing text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isthmus.model.quality import Quality
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import Collector, make_source, publish, running, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

BASE = "packaging/line1/filling/filler1"


def config(port: int) -> dict[str, Any]:
    return {
        "name": "mq-text",
        "type": "mqtt",
        "host": "127.0.0.1",
        "port": port,
        "subscriptions": [
            {
                "topic": "plant/filler1/state",
                "qos": 1,
                "values": [
                    {"field": "$.recipe", "tag": f"{BASE}/recipe"},
                    {"field": "$.serial", "tag": f"{BASE}/serial"},
                    {"field": "$.speed", "tag": f"{BASE}/speed"},
                ],
            },
            {"topic": "plant/filler1/operator", "values": [{"tag": f"{BASE}/operator"}]},
        ],
        "tags": [
            {"path": f"{BASE}/recipe", "data_type": "string"},
            {"path": f"{BASE}/serial", "data_type": "string"},
            {"path": f"{BASE}/speed"},
            {"path": f"{BASE}/operator", "data_type": "string"},
        ],
    }


def rows(out: Collector, tag: int) -> list[tuple[float, int, str | None]]:
    b = out.all()
    texts = b.texts()
    return [
        (float(b.value[i]), int(b.quality[i]), texts[i])
        for i in range(len(b))
        if int(b.tag_id[i]) == tag
    ]


async def test_json_fields_and_plain_payloads_become_text(broker: Broker) -> None:
    out = Collector()
    source, ctx, ids = make_source(config(broker.port), out)
    recipe, serial = ids[f"{BASE}/recipe"], ids[f"{BASE}/serial"]
    speed, operator = ids[f"{BASE}/speed"], ids[f"{BASE}/operator"]
    state = "plant/filler1/state"
    async with running(source):
        await publish(
            broker.port,
            [
                (state, json.dumps({"recipe": "R-100", "serial": 4711, "speed": 12.5})),
                (state, json.dumps({"recipe": "Crème brûlée", "serial": "SN-9", "speed": 13})),
                (state, json.dumps({"recipe": {"id": 3}, "serial": None, "speed": "fast"})),
                ("plant/filler1/operator", "  Ada Lovelace\n"),
                ("plant/filler1/operator", b"\xff\xfe"),  # not UTF-8
            ],
        )
        await wait_for(lambda: len(rows(out, operator)) >= 2)
    assert [r[1:] for r in rows(out, recipe)] == [
        (Quality.GOOD, "R-100"),
        (Quality.GOOD, "Crème brûlée"),
        (Quality.BAD_DECODING_ERROR, None),  # an object is not text
    ]
    assert [r[1:] for r in rows(out, serial)] == [
        (Quality.GOOD, "4711"),  # a number on a string tag: its JSON text
        (Quality.GOOD, "SN-9"),
        (Quality.BAD_DECODING_ERROR, None),  # null
    ]
    # The numeric tag keeps its numbers and keeps refusing text.
    assert [(v, q, t) for v, q, t in rows(out, speed)][:2] == [
        (12.5, Quality.GOOD, None),
        (13.0, Quality.GOOD, None),
    ]
    assert rows(out, speed)[2][1] == Quality.BAD_DECODING_ERROR
    assert [r[1:] for r in rows(out, operator)] == [
        (Quality.GOOD, "Ada Lovelace"),
        (Quality.BAD_DECODING_ERROR, None),
    ]
    assert ctx.metrics.counters["source.mq-text.rejected"] == 4


async def test_numeric_only_batches_carry_no_text(broker: Broker) -> None:
    out = Collector()
    source, _, ids = make_source(config(broker.port), out)
    async with running(source):
        await publish(broker.port, [("plant/filler1/state", json.dumps({"speed": 1.5}))])
        await wait_for(lambda: len(out.batches) >= 1)
    (batch,) = out.batches
    assert batch.tag_id.tolist().count(ids[f"{BASE}/speed"]) == 1
    assert batch.text is None  # missing string fields are Bad rows without text
