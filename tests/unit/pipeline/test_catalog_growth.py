"""Tags created at run time: the catalog grows, tells its subscribers, and the qualifier,
the UNS publisher and the Sparkplug edge take the new tags on."""

from __future__ import annotations

import numpy as np

from isthmus.connectors.sparkplug.config import SparkplugEdgeConfig
from isthmus.connectors.sparkplug.edge import SparkplugEdge
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, TagConfig, UnsConfig
from isthmus.model.quality import Quality
from isthmus.observe.metrics import Metrics
from isthmus.pipeline.qualify import Qualifier
from isthmus.transport.local import LocalTransport
from isthmus.transport.mqtt import UnsPublisher


def entry(i: int, path: str, **cfg: object) -> CatalogEntry:
    return CatalogEntry(i, f"e/s/{path}", "src", TagConfig(path=path, **cfg))  # type: ignore[arg-type]


def test_extend_adds_only_new_and_tells_subscribers() -> None:
    catalog = TagCatalog([entry(0, "a/l/c/e/t0")])
    seen: list[list[str]] = []
    catalog.subscribe(lambda new: seen.append([e.path for e in new]))
    assert catalog.extend([entry(0, "a/l/c/e/t0"), entry(5, "a/l/c/e/t5")]) == 1
    assert catalog.extend([entry(5, "a/l/c/e/t5")]) == 0
    assert seen == [["e/s/a/l/c/e/t5"]]
    assert [e.tag_id for e in catalog] == [0, 5]
    assert catalog.by_id(5) is not None


def test_qualifier_grows_and_applies_the_new_tags_config() -> None:
    q = Qualifier([entry(0, "a/l/c/e/t0")])
    unknown = q.apply(Batch.of([0, 7], [1, 1], [1.0, 2.0], Quality.GOOD))
    assert unknown.tag_id.tolist() == [0] and q.unknown_samples == 1
    q.add([entry(7, "a/l/c/e/t7", scale=10.0, range=(0.0, 50.0))])
    out = q.apply(Batch.of([0, 7, 7], [2, 2, 3], [1.0, 2.0, 9.0], Quality.GOOD))
    assert out.tag_id.tolist() == [0, 7, 7]
    assert out.value.tolist() == [1.0, 20.0, 90.0]
    assert out.quality[2] != Quality.GOOD  # 90 is outside the new tag's range
    assert len(q.known) == 8 and not q.known[3]


def test_uns_and_sparkplug_edge_follow_the_catalog() -> None:
    catalog = TagCatalog([entry(0, "a/l/c/e/t0")])
    transport = LocalTransport()
    uns = UnsPublisher(
        UnsConfig(host="h", prefix="uns"), catalog, transport, Metrics(), client_id="x"
    )
    edge = SparkplugEdge(
        SparkplugEdgeConfig(host="h", group="g", edge_node="n"), catalog, transport
    )
    catalog.extend([entry(3, "a/l/c/pump/status", data_type=DataType.STRING)])
    assert uns.topics[3] == "uns/e/s/a/l/c/pump/status"
    assert edge.devices["a:l:c:pump"] == [3]
    assert edge._births_due  # a new metric is born before its first data
    assert np.array_equal(sorted(uns.topics), [0, 3])
