"""The edge node's message sequence, with a fake MQTT client: births before data,
seq modulo 256, aliases only in data, rebirth on NCMD."""

from __future__ import annotations

import itertools
import math
from typing import Any

from isthmus.connectors.sparkplug import codec
from isthmus.connectors.sparkplug.codec import OutMetric, decode, encode
from isthmus.connectors.sparkplug.config import SparkplugEdgeConfig
from isthmus.connectors.sparkplug.edge import SparkplugEdge
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import ManualClock
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality
from isthmus.transport.local import LocalTransport


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, codec.Payload]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, **_: Any) -> None:
        self.sent.append((topic, decode(payload)))


def make_edge() -> SparkplugEdge:
    tags = [("a/l/c/m1/t", "float64"), ("a/l/c/m1/b", "bool"), ("a/l/c/m2/n", "uint16")]
    catalog = TagCatalog(
        CatalogEntry(i, f"e/s/{p}", "x", TagConfig.model_validate({"path": p, "data_type": k}))
        for i, (p, k) in enumerate(tags)
    )
    cfg = SparkplugEdgeConfig(host="h", group="g", edge_node="n", data_datatype=False)
    return SparkplugEdge(cfg, catalog, LocalTransport(), clock=ManualClock())


async def test_births_then_data_with_aliases_and_seq() -> None:
    edge = make_edge()
    client = FakeClient()
    await edge._births(client)  # type: ignore[arg-type]
    edge._client = client  # type: ignore[assignment]
    topics = [t for t, _ in client.sent]
    assert topics == [
        "spBv1.0/g/NBIRTH/n",
        "spBv1.0/g/DBIRTH/n/a:l:c:m1",
        "spBv1.0/g/DBIRTH/n/a:l:c:m2",
    ]
    assert [p.seq for _, p in client.sent] == [0, 1, 2]
    nbirth = client.sent[0][1]
    assert [(m.name, m.raw) for m in nbirth.metrics] == [
        ("bdSeq", edge.bd_seq), ("Node Control/Rebirth", False),
    ]  # fmt: skip
    dbirth = client.sent[1][1]
    assert {(m.name, m.alias, m.datatype) for m in dbirth.metrics} == {
        ("t", 0, codec.DOUBLE), ("b", 1, codec.BOOLEAN),
    }  # fmt: skip
    assert all(m.is_null for m in dbirth.metrics)
    client.sent.clear()
    await edge.publish_batch(
        Batch.of([0, 2, 0], [1_000_000, 2_000_000, 3_000_000], [1.5, 7, math.nan],
                 [0, 0, Quality.BAD_SENSOR_FAILURE])
    )  # fmt: skip
    (t1, p1), (t2, p2) = client.sent
    assert t1.endswith("DDATA/n/a:l:c:m1") and t2.endswith("DDATA/n/a:l:c:m2")
    assert [p1.seq, p2.seq] == [3, 4]
    assert [(m.name, m.alias, m.datatype, m.timestamp_ms) for m in p1.metrics] == [
        (None, 0, None, 1), (None, 0, None, 3),
    ]  # fmt: skip
    assert p1.metrics[0].raw == 1.5 and p1.metrics[1].is_null
    assert p1.metrics[1].quality == Quality.BAD_SENSOR_FAILURE
    assert p2.metrics[0].raw == 7


async def test_seq_wraps_and_rebirth_restarts_at_zero() -> None:
    edge = make_edge()
    client = FakeClient()
    await edge._births(client)  # type: ignore[arg-type]
    edge._client = client  # type: ignore[assignment]
    client.sent.clear()
    for k in range(300):
        await edge.publish_batch(Batch.of([1], [k], [k % 2], [0]))
    seqs = [p.seq or 0 for _, p in client.sent]
    assert all(0 <= seq <= 255 for seq in seqs) and len(seqs) == 300
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(seqs))
    client.sent.clear()
    rebirth = encode([OutMetric("Node Control/Rebirth", None, codec.BOOLEAN, True)], seq=None,
                     timestamp_ms=1)  # fmt: skip
    await edge._on_command(client, rebirth)  # type: ignore[arg-type]
    assert [p.seq for _, p in client.sent] == [0, 1, 2]
    # the DBIRTH carries the latest value
    (b,) = [m for m in client.sent[1][1].metrics if m.name == "b"]
    assert b.raw is True
    # a rebirth=false command or garbage does nothing
    client.sent.clear()
    await edge._on_command(client, b"\xff")  # type: ignore[arg-type]
    not_rebirth = encode([OutMetric("Node Control/Rebirth", None, codec.BOOLEAN, False)],
                         seq=None, timestamp_ms=1)  # fmt: skip
    await edge._on_command(client, not_rebirth)  # type: ignore[arg-type]
    assert client.sent == []


def test_ndeath_carries_bdseq() -> None:
    edge = make_edge()
    (metric,) = decode(edge.ndeath_payload()).metrics
    assert metric.name == "bdSeq" and metric.raw == edge.bd_seq and metric.datatype == codec.INT64
