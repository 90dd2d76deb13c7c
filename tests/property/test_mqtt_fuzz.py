"""Fuzz the MQTT JSON mapper and payload decoder: no crash, every rejection counted.

The default run is small; a nightly run scales it with ``ISTHMUS_FUZZ_EXAMPLES``
(e.g. ``ISTHMUS_FUZZ_EXAMPLES=100000``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.mqtt.config import MqttSourceConfig, MqttTagConfig
from isthmus.connectors.mqtt.mapping import (
    MISSING,
    FieldMap,
    PathError,
    decode_message,
    extract,
    parse_path,
)
from isthmus.connectors.mqtt.source import MqttSource
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality

EXAMPLES = int(os.environ.get("ISTHMUS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PATHS = [
    "$",
    "$.t",
    "$.a.b",
    "$.v[0]",
    "$.v[-1]",
    "$.m[?name=Speed].value",
    '$["odd key"]',
    "$.a[1][?k=1].x",
]
FIELDS = tuple(FieldMap(parse_path(p), i) for i, p in enumerate(PATHS))
TS = parse_path("$.ts")
Q = parse_path("$.q")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["t", "a", "b", "v", "m", "name", "value", "ts", "q", "k", "x", "odd key"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def check(payload: bytes, fields: tuple[FieldMap, ...] = FIELDS) -> None:
    d = decode_message(payload, fields, 123, TS, Q)
    n = len(d.tag_ids)
    assert n == len(d.values) == len(d.qualities) == len(d.ts)
    assert n in (0, len(fields))  # every attributable tag gets a row, good or bad
    bad = [q for q in d.qualities if q == Quality.BAD_DECODING_ERROR]
    # Every Bad_DecodingError row has a reason; a message-wide problem has one reason.
    assert len(d.rejections) >= (1 if bad else 0)
    assert len(d.rejections) <= len(fields) or len(d.rejections) == 1
    for value, quality in zip(d.values, d.qualities, strict=True):
        if quality == Quality.BAD_DECODING_ERROR:
            assert math.isnan(value)
        else:
            assert math.isfinite(value)
    assert all(0 <= t < 2**63 for t in d.ts)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    check(payload)


@FUZZ
@given(json_values)
def test_arbitrary_json_never_crashes(doc: Any) -> None:
    check(json.dumps(doc).encode())
    for f in FIELDS:
        extract(doc, f.path)


@FUZZ
@given(st.text(max_size=40))
def test_path_parser_raises_only_path_error(text: str) -> None:
    try:
        path = parse_path(text)
    except PathError:
        return
    assert extract({}, path) is MISSING or path.is_root


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=64), json_values.map(json.dumps)), max_size=20))
def test_source_counts_every_rejection(payloads: list[Any]) -> None:
    cfg = MqttSourceConfig.model_validate(
        {
            "name": "f",
            "type": "mqtt",
            "host": "h",
            "subscriptions": [
                {"topic": "t/{m}", "values": [{"field": "$.t", "tag": "a/l/c/{m}/t"}]}
            ],
            "tags": [{"path": "a/l/c/m1/t"}],
        }
    )
    tags: list[BoundTag[MqttTagConfig]] = [BoundTag(0, "e/s/a/l/c/m1/t", cfg.tags[0])]

    async def emit(batch: Batch) -> None:
        return None

    ctx = SourceContext(emit=emit)
    source = MqttSource(cfg, tags, ctx)
    expected = 0
    for p in payloads:
        raw = p if isinstance(p, bytes) else p.encode()
        source.handle("t/m1", raw)
        expected += len(decode_message(raw, (FieldMap(parse_path("$.t"), 0),), 0).rejections)
    batch = source.take_batch()
    rows = 0 if batch is None else len(batch)
    assert rows == len(payloads)  # one row per message: a value or Bad_DecodingError
    assert ctx.metrics.counters["source.f.rejected"] == expected
    if batch is not None:
        assert int((batch.quality == Quality.BAD_DECODING_ERROR).sum()) == expected
