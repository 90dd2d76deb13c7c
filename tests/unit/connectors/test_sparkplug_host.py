"""Sparkplug codec, config and the host source's mapping of events onto batches."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.sparkplug import codec, spec
from isthmus.connectors.sparkplug.codec import OutMetric, decode, encode, parse_topic
from isthmus.connectors.sparkplug.config import (
    SparkplugEdgeConfig,
    SparkplugSourceConfig,
    SparkplugTagConfig,
)
from isthmus.connectors.sparkplug.host import SparkplugHost, rebirth_payload, sanitise, tag_path
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.quality import Quality

ROOT = Path(__file__).resolve().parents[3]


def make_host(
    tags: list[BoundTag[SparkplugTagConfig]] | None = None, **extra: object
) -> tuple[SparkplugHost, SourceContext]:
    """A host with four numeric tags (or ``tags``) mapped by the usual template."""
    if tags is None:
        paths = ["sp/g1/n1/node/temp", "sp/g1/n1/d1/level", "sp/g1/n1/d1/run", "sp/g1/n1/d1/hist"]
        tags = [
            BoundTag(100 + k, f"e/s/{p}", SparkplugTagConfig(path=p)) for k, p in enumerate(paths)
        ]
    cfg = SparkplugSourceConfig(
        name="sp",
        host="127.0.0.1",
        groups=["g1"],
        tag_template="sp/{group}/{node}/{device}/{metric}",
        **extra,  # type: ignore[arg-type]
    )

    async def emit(batch: Batch) -> None:
        raise AssertionError("handle() does not emit")

    ctx = SourceContext(emit=emit, clock=ManualClock(), log=logging.getLogger("t"))
    return SparkplugHost(cfg, tags, ctx), ctx


def nbirth() -> bytes:
    return encode(
        [
            OutMetric("bdSeq", None, codec.INT64, 1),
            OutMetric("temp", 1, codec.FLOAT, 20.5, timestamp_ms=1_000),
            OutMetric("unknown one", 2, codec.DOUBLE, 1.0),
            OutMetric("label", 3, codec.STRING, "hello"),
        ],
        seq=0,
        timestamp_ms=900,
    )


def dbirth() -> bytes:
    return encode(
        [
            OutMetric("level", 10, codec.INT32, -7),
            OutMetric("run", 11, codec.BOOLEAN, None),
            OutMetric("hist", 12, codec.DOUBLE, 1.0),
        ],
        seq=1,
        timestamp_ms=950,
    )


def test_codec_round_trip_all_numeric_types() -> None:
    cases = [
        (codec.INT8, -3), (codec.INT16, -300), (codec.INT32, -70_000),
        (codec.INT64, -(2**40)), (codec.UINT8, 200), (codec.UINT16, 65535),
        (codec.UINT32, 2**32 - 1), (codec.UINT64, 2**63), (codec.FLOAT, 1.5),
        (codec.DOUBLE, -2.25), (codec.BOOLEAN, True), (codec.DATETIME, 1_700_000_000_000),
    ]  # fmt: skip
    data = encode(
        [OutMetric(f"m{k}", k, t, v) for k, (t, v) in enumerate(cases)], seq=5, timestamp_ms=7
    )
    payload = decode(data)
    assert payload.seq == 5 and payload.timestamp_ms == 7
    assert [m.value for m in payload.metrics] == [float(v) for _, v in cases]


def test_codec_null_string_and_quality_property() -> None:
    data = encode(
        [
            OutMetric("n", 1, codec.DOUBLE, None),
            OutMetric("s", 2, codec.STRING, "x"),
            OutMetric("q", 3, codec.DOUBLE, 1.0, quality=int(Quality.UNCERTAIN)),
        ],
        seq=0,
        timestamp_ms=None,
    )
    n, s, q = decode(data).metrics
    assert n.is_null and math.isnan(n.value)
    assert not s.numeric and s.raw == "x"
    assert q.quality == Quality.UNCERTAIN


def test_codec_rejects_garbage_and_big_seq() -> None:
    with pytest.raises(codec.DecodeError):
        decode(b"\xff\xff\xff")
    with pytest.raises(codec.DecodeError):
        decode(encode([], seq=256, timestamp_ms=None))


def test_topics() -> None:
    assert parse_topic("spBv1.0/g/DDATA/n/d") == codec.Topic("g", "DDATA", "n", "d")
    assert parse_topic("spBv1.0/g/NBIRTH/n") == codec.Topic("g", "NBIRTH", "n", None)
    assert parse_topic("spBv1.0/STATE/host") is None
    assert parse_topic("spBv1.0/g/BOGUS/n") is None
    assert parse_topic("spBv1.0/g/NDATA/") is None
    assert codec.topic("g", "NCMD", "n") == "spBv1.0/g/NCMD/n"


def test_sanitise_and_template() -> None:
    assert sanitise("Motor 1/Speed (rpm)") == "Motor_1.Speed__rpm_"
    assert sanitise("__x") == "x"
    assert tag_path("a/{group}/{node}/{device}/{metric}", "G", "N", "D", "m/x") == "a/G/N/D/m.x"
    assert tag_path("{device_path}/{metric}", "G", "N", "a:b:c:d", "t") == "a/b/c/d/t"
    assert tag_path("{device_path}/{metric}", "G", "N", "not-four", "t") is None
    assert tag_path("a/{group}/{node}/{device}/{metric}", "G", "N", "D", "///") is None


def test_template_validation() -> None:
    base = {"name": "s", "host": "h", "groups": ["g"]}
    SparkplugSourceConfig.model_validate(base | {"tag_template": "{device_path}/{metric}"})
    for bad in ("{group}/{metric}", "{nope}/a/b/c/d", "{device_path}/x/{metric}"):
        with pytest.raises(ValidationError):
            SparkplugSourceConfig.model_validate(base | {"tag_template": bad})
    with pytest.raises(ValidationError):
        SparkplugSourceConfig.model_validate(base | {"groups": ["a/b"]})
    with pytest.raises(ValidationError):
        SparkplugEdgeConfig.model_validate({"host": "h", "group": "g", "edge_node": "n+"})
    assert spec().name == "sparkplug" and spec().config_model is SparkplugSourceConfig


def test_births_and_data_become_batches() -> None:
    host, ctx = make_host()
    batches, rebirths = host.handle("spBv1.0/g1/NBIRTH/n1", nbirth(), now=0.0)
    assert rebirths == []
    (batch,) = batches
    assert batch.tag_id.tolist() == [100] and batch.value.tolist() == [20.5]
    assert batch.ts.tolist() == [1_000 * 1_000_000]
    snap = ctx.metrics.snapshot()
    assert snap["source.sp.unmapped"] == 2  # "unknown one" and "label"
    (batch,) = host.handle("spBv1.0/g1/DBIRTH/n1/d1", dbirth(), now=0.0)[0]
    assert batch.tag_id.tolist() == [101, 102, 103]
    assert batch.value[0] == -7.0 and math.isnan(batch.value[1])
    assert batch.quality.tolist() == [Quality.GOOD, Quality.BAD, Quality.GOOD]
    assert batch.ts.tolist() == [950 * 1_000_000] * 3
    data = encode(
        [
            OutMetric(None, 10, codec.INT32, 5, send_datatype=False),
            OutMetric(None, 12, codec.DOUBLE, 3.0, timestamp_ms=10, is_historical=True,
                      send_datatype=False),
        ],
        seq=2,
        timestamp_ms=2_000,
    )  # fmt: skip
    live, hist = host.handle("spBv1.0/g1/DDATA/n1/d1", data, now=0.0)[0]
    assert not live.historical and live.tag_id.tolist() == [101] and live.value[0] == 5.0
    assert hist.historical and hist.tag_id.tolist() == [103] and hist.ts[0] == 10_000_000


def test_receive_timestamps_option() -> None:
    host, ctx = make_host(timestamps="receive")
    (batch,) = host.handle("spBv1.0/g1/NBIRTH/n1", nbirth(), now=0.0)[0]
    assert batch.ts.tolist() == [ctx.clock.now_ns()]


def test_death_marks_node_and_devices_bad_once() -> None:
    host, _ = make_host()
    host.handle("spBv1.0/g1/NBIRTH/n1", nbirth(), now=0.0)
    host.handle("spBv1.0/g1/DBIRTH/n1/d1", dbirth(), now=0.0)
    ddeath = encode([], seq=2, timestamp_ms=1)
    (batch,) = host.handle("spBv1.0/g1/DDEATH/n1/d1", ddeath, now=0.0)[0]
    assert batch.tag_id.tolist() == [101, 102, 103]
    assert set(batch.quality.tolist()) == {Quality.BAD_NO_COMMUNICATION}
    death = encode([OutMetric("bdSeq", None, codec.INT64, 1)], seq=None, timestamp_ms=1)
    (batch,) = host.handle("spBv1.0/g1/NDEATH/n1", death, now=0.0)[0]
    assert batch.tag_id.tolist() == [100, 101, 102, 103]
    assert host.handle("spBv1.0/g1/NDEATH/n1", death, now=0.0) == ([], [])


def test_malformed_payloads_counted_not_raised() -> None:
    host, ctx = make_host()
    assert host.handle("spBv1.0/g1/NDATA/n1", b"\x0a\xff", now=0.0) == ([], [])
    assert host.handle("other/topic", b"x", now=0.0) == ([], [])
    assert ctx.metrics.snapshot()["source.sp.malformed"] == 1


def test_wrong_type_gives_decoding_error_quality() -> None:
    host, ctx = make_host()
    host.handle("spBv1.0/g1/NBIRTH/n1", nbirth(), now=0.0)
    data = encode([OutMetric(None, 1, codec.STRING, "x", send_datatype=False)], seq=1,
                  timestamp_ms=1)  # fmt: skip
    assert host.handle("spBv1.0/g1/NDATA/n1", data, now=0.0)[0] == []
    assert ctx.metrics.snapshot()["source.sp.non_numeric"] == 1
    data = encode([OutMetric(None, 1, codec.DOUBLE, 2.0, send_datatype=False)], seq=2,
                  timestamp_ms=1)  # fmt: skip
    (batch,) = host.handle("spBv1.0/g1/NDATA/n1", data, now=0.0)[0]
    assert batch.quality[0] == Quality.BAD_DECODING_ERROR  # birth said Float
    assert ctx.metrics.snapshot()["source.sp.rejected"] == 1


def test_rebirth_requests_and_payload() -> None:
    host, ctx = make_host()
    data = encode([OutMetric(None, 1, codec.FLOAT, 1.0)], seq=4, timestamp_ms=1)
    batches, rebirths = host.handle("spBv1.0/g1/NDATA/n1", data, now=0.0)
    assert batches == [] and [(r.group, r.node) for r in rebirths] == [("g1", "n1")]
    assert ctx.metrics.snapshot()["source.sp.before_birth"] == 1
    (metric,) = decode(rebirth_payload(5)).metrics
    assert metric.name == "Node Control/Rebirth" and metric.raw is True
    assert metric.datatype == codec.BOOLEAN


def test_sample_yaml_and_docs_examples_validate() -> None:
    blocks = yaml.safe_load((ROOT / "src/isthmus/connectors/sparkplug/sample.yaml").read_text())
    assert blocks
    for block in blocks:
        SparkplugSourceConfig.model_validate(block)
    page = (ROOT / "docs/connectors/sparkplug.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", page, re.S)
    source = yaml.safe_load(examples[0])
    SparkplugSourceConfig.model_validate(source)
    edge = yaml.safe_load(examples[1])["sparkplug_edge"]
    SparkplugEdgeConfig.model_validate(edge)
    for name in SparkplugSourceConfig.model_fields:
        assert f"`{name}`" in page, name
    for name in SparkplugEdgeConfig.model_fields:
        assert f"`{name}`" in page, name


def test_string_and_text_metrics_on_string_tags() -> None:
    tags = [
        BoundTag(100, "e/s/sp/g1/n1/node/label", SparkplugTagConfig(path="sp/g1/n1/node/label",
                 data_type="string")),  # type: ignore[arg-type]
        BoundTag(101, "e/s/sp/g1/n1/node/note", SparkplugTagConfig(path="sp/g1/n1/node/note",
                 data_type="string")),  # type: ignore[arg-type]
        BoundTag(102, "e/s/sp/g1/n1/node/temp", SparkplugTagConfig(path="sp/g1/n1/node/temp")),
    ]  # fmt: skip
    host, _ = make_host(tags)
    birth = encode(
        [
            OutMetric("bdSeq", None, codec.INT64, 1),
            OutMetric("label", 1, codec.STRING, "hello"),
            OutMetric("note", 2, codec.TEXT, None),
            OutMetric("temp", 3, codec.DOUBLE, 1.5),
        ],
        seq=0,
        timestamp_ms=900,
    )
    (batch,) = host.handle("spBv1.0/g1/NBIRTH/n1", birth, now=0.0)[0]
    assert batch.tag_id.tolist() == [100, 101, 102]
    assert batch.texts() == ["hello", None, None]
    assert batch.quality.tolist() == [Quality.GOOD, Quality.BAD, Quality.GOOD]
    data = encode(
        [
            OutMetric(None, 2, codec.TEXT, "a longer note", send_datatype=False),
            OutMetric(None, 3, codec.DOUBLE, 2.5, send_datatype=False),
        ],
        seq=1,
        timestamp_ms=1_000,
    )
    (batch,) = host.handle("spBv1.0/g1/NDATA/n1", data, now=0.0)[0]
    assert batch.texts() == ["a longer note", None] and batch.value[1] == 2.5
    data = encode([OutMetric(None, 3, codec.DOUBLE, 3.5)], seq=2, timestamp_ms=1_100)
    (batch,) = host.handle("spBv1.0/g1/NDATA/n1", data, now=0.0)[0]
    assert batch.text is None  # numeric payloads: no text column
