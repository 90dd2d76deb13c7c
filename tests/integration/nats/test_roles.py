"""``--role edge|hub`` wiring on a real runtime: errors, spooling, overflow event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from isthmus.app import build_runtime, start_pipeline, stop_pipeline
from isthmus.cli import load_config
from isthmus.model.errors import IsthmusError
from isthmus.roles import attach_role, hub_entries
from isthmus.transport.spool import Spool
from tests.faults.harness import edge_config, hub_config
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_roles_need_a_transport_and_a_postgres_hub(tmp_path: Path) -> None:
    plant, sources, _ = load_config("examples/demo-plant.yaml")
    rt = build_runtime(plant, sources, tmp_path / "a")
    try:
        with pytest.raises(IsthmusError, match="transport"):
            attach_role(rt, "edge")
    finally:
        rt.store.close()
    plant, sources, _ = load_config(str(hub_config(tmp_path / "hub.yaml", ["nats://x:1"])))
    plant = plant.model_copy(
        update={"storage": plant.storage.model_copy(update={"type": "duckdb"})}
    )
    rt = build_runtime(plant, sources, tmp_path / "b")
    try:
        with pytest.raises(IsthmusError, match="postgres"):
            attach_role(rt, "hub")
    finally:
        rt.store.close()


async def test_edge_spools_while_nats_is_down_and_raises_one_overflow_event(
    tmp_path: Path,
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    cfg = edge_config(
        tmp_path / "edge.yaml", "lyon", [dead], n_tags=50, period="1ms", spool_max_bytes=200_000
    )
    plant, sources, _ = load_config(str(cfg))
    rt = build_runtime(plant, sources, tmp_path / "edge")
    parts = attach_role(rt, "edge")
    await start_pipeline(rt)
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if rt.metrics.counters.get("spool.dropped_samples", 0) > 0:
                break
        assert rt.source_status()["nats-publisher"] is False
        await asyncio.sleep(0.5)  # the episode goes on: still one event
    finally:
        await stop_pipeline(rt)
    assert parts.spool is not None
    dropped = parts.spool.dropped_samples
    assert dropped > 0
    overflow = [e for e in rt.events.recent(kind="spool.overflow")]
    assert len(overflow) == 1
    with Spool(tmp_path / "edge" / "spool") as spool:
        kept = sum(len(b) for _, b in spool.read(spool.acked_seq, 1 << 20))
        assert spool.acked_seq == 0
    assert kept + dropped == rt.metrics.counters["spool.appended_samples"]


def test_hub_catalog_entries_from_historian_tags() -> None:
    rows = [
        (1, "acme/lyon/a/l/c/e/t0", "float64", "bar"),
        (2, "acme/paris/a/l/c/e/t1", "not-a-type", ""),
        (3, "too/short", "float64", ""),
    ]
    entries = hub_entries(rows)
    assert [(e.tag_id, e.path, e.source) for e in entries] == [
        (1, "acme/lyon/a/l/c/e/t0", "lyon"),
        (2, "acme/paris/a/l/c/e/t1", "paris"),
    ]
    assert entries[0].config.unit == "bar"
    assert entries[1].config.data_type.value == "float64"
