"""Births create tags: the whole app with a Sparkplug host source that declares no tag,
fed by an edge node over a private Mosquitto.  The birth's metrics become tags with
the birth's types and units (``engUnit``), their values reach the historian, and they
appear in the catalog (API, hierarchy); a metric whose path is not a valid tag path
stays unmapped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from isthmus.app import Runtime, build_runtime, start_pipeline, stop_pipeline
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.connectors.sparkplug.config import SparkplugEdgeConfig
from isthmus.connectors.sparkplug.edge import SparkplugEdge
from isthmus.connectors.sparkplug.host import tag_path
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, TagConfig
from isthmus.model.loader import load_plant_config
from isthmus.model.quality import Quality
from isthmus.transport.local import LocalTransport
from tests.integration.mqtt.conftest import Broker
from tests.integration.mqtt.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]

CONFIG = """
enterprise: acme
site: lyon
hierarchy:
  utilities:
    water:
      pumping: [pump1]
storage:
  type: sqlite
  path: historian.sqlite
pipeline:
  flush_interval: 20ms
sources:
  - name: spb
    type: sparkplug
    host: 127.0.0.1
    port: {port}
    groups: [plant]
    max_auto_tags: {cap}
"""

# What the remote edge node publishes (its own catalog, its own types).
REMOTE = [
    ("area/line1/cell/press/temp", DataType.FLOAT64),
    ("area/line1/cell/press/running", DataType.BOOL),
    ("area/line1/cell/press/count", DataType.INT32),
    ("area/line1/cell/press/recipe", DataType.STRING),
]
UNITS = {"area/line1/cell/press/temp": "degC", "area/line1/cell/press/count": "pcs"}
"""Sent as each birth metric's ``engUnit`` property."""


def runtime(broker: Broker, data: Path, cap: int = 10_000) -> Runtime:
    text = CONFIG.format(port=broker.port, cap=cap)
    plant, sources = load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    return build_runtime(plant, sources, data)


def remote_edge(broker: Broker) -> tuple[SparkplugEdge, LocalTransport]:
    catalog = TagCatalog(
        CatalogEntry(
            10 + i, f"x/y/{p}", "sim", TagConfig(path=p, data_type=k, unit=UNITS.get(p, ""))
        )
        for i, (p, k) in enumerate(REMOTE)
    )
    transport = LocalTransport()
    cfg = SparkplugEdgeConfig(host=broker.host, port=broker.port, group="plant", edge_node="n1")
    return SparkplugEdge(cfg, catalog, transport), transport


def local_path(rt: Runtime, metric: str) -> str:
    path = tag_path(
        "sparkplug/{group}/{node}/{device}/{metric}", "plant", "n1", "area:line1:cell:press", metric
    )
    assert path is not None
    return f"acme/lyon/{path}"


async def test_births_create_typed_tags_whose_values_are_stored(
    broker: Broker, tmp_path: Path
) -> None:
    rt = runtime(broker, tmp_path / "data")
    assert len(rt.catalog) == 0
    edge, transport = remote_edge(broker)
    await start_pipeline(rt)
    try:
        await wait_for(lambda: all(rt.source_status().values()))
        await edge.start()
        await wait_for(lambda: len(rt.catalog) == len(REMOTE), 5.0)
        ts = time.time_ns()
        await transport.publish(Batch.of([10, 11, 12], ts, [21.5, 1.0, 7.0], Quality.GOOD))
        temp = rt.catalog.by_path(local_path(rt, "temp"))
        assert temp is not None

        def stored() -> bool:
            last = rt.store.last([temp.tag_id])
            return len(last) == 1 and float(last.value[0]) == 21.5

        await wait_for(stored, 5.0)
        types = {e.path.rsplit("/", 1)[-1]: e.config.data_type for e in rt.catalog}
        assert types == {
            "temp": DataType.FLOAT64,
            "running": DataType.BOOL,
            "count": DataType.INT32,
            "recipe": DataType.STRING,
        }
        assert {e.source for e in rt.catalog} == {"spb"}
        units = {e.path.rsplit("/", 1)[-1]: e.config.unit for e in rt.catalog}
        assert units == {"temp": "degC", "running": "", "count": "pcs", "recipe": ""}
        assert rt.metrics.counters["source.spb.auto_tags"] == len(REMOTE)
        assert rt.metrics.counters.get("source.spb.unmapped", 0) == 0
        # the tags are the historian's: a restart finds the same ids
        ids = {e.path: e.tag_id for e in rt.catalog}
    finally:
        await edge.stop()
        await stop_pipeline(rt)
    assert {m.path: i for m, i in zip(*_registered(tmp_path / "data", ids), strict=True)} == ids


def _registered(data: Path, ids: dict[str, int]) -> tuple[list[object], list[int]]:
    from isthmus.historian.base import TagMeta
    from isthmus.historian.sqlite.store import SQLiteStore
    from isthmus.model.config import StorageConfig

    store = SQLiteStore(StorageConfig(type="sqlite", path="historian.sqlite"), data)
    store.open()
    try:
        metas = [TagMeta(p, "float64", "") for p in ids]
        again = store.register_tags(metas)
        return metas, [again[m.path] for m in metas]
    finally:
        store.close()


async def test_the_cap_leaves_the_rest_unmapped(broker: Broker, tmp_path: Path) -> None:
    rt = runtime(broker, tmp_path / "data", cap=2)
    edge, _ = remote_edge(broker)
    await start_pipeline(rt)
    try:
        await wait_for(lambda: all(rt.source_status().values()))
        await edge.start()
        await wait_for(lambda: rt.metrics.counters.get("source.spb.unmapped", 0) >= 2, 5.0)
        assert len(rt.catalog) == 2
        assert rt.metrics.counters["source.spb.auto_tags_refused"] >= 2
        assert [e.kind for e in rt.events.recent(kind="source.auto_tags")]
    finally:
        await edge.stop()
        await stop_pipeline(rt)
