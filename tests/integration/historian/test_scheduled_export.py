"""The scheduled export inside a running system: whole days from the server's own open
DuckDB store while the pipeline writes, re-runs replace the days, failures are events."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from isthmus.app import Runtime, build_runtime, start_pipeline, stop_pipeline
from isthmus.connectors.registry import default_connectors, source_models
from isthmus.historian.scheduled_export import DAY_NS
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.lifecycle import PartGroup, TaskPart
from isthmus.model.loader import load_plant_config
from isthmus.model.quality import Quality

pytestmark = pytest.mark.integration

S = 1_000_000_000
D0 = 20_414 * DAY_NS  # 2025-11-22T00:00:00Z

CONFIG = """
enterprise: acme
site: lyon
hierarchy:
  utilities:
    boiler:
      b1: [pump1]
storage:
  type: duckdb
pipeline:
  flush_interval: 20ms
export:
  dest: {dest}
  format: parquet
  at: "00:30"
  days: 2
sources:
  - name: plc
    type: modbus
    host: 127.0.0.1
    port: 1
    tags:
      - path: utilities/boiler/b1/pump1/flow
        address: 0
        unit: m3/h
"""


def _count(glob: str) -> int:
    with duckdb.connect() as con:
        row = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
    assert row is not None
    return int(row[0])


def _runtime(tmp_path: Path, dest: str, clock: ManualClock) -> Runtime:
    """The system with its tag, without starting the (unreachable) source: the tests
    write the history themselves."""
    text = CONFIG.format(dest=dest)
    plant, sources = load_plant_config(text, "plant.yaml", source_models(default_connectors()))
    rt = build_runtime(plant, sources, tmp_path / "data", clock=clock)
    rt.sources.clear()
    return rt


async def test_daily_run_writes_whole_days_while_the_server_writes(tmp_path: Path) -> None:
    clock = ManualClock(start_ns=D0 + 1800 * S)  # 00:30 on day D0
    rt = _runtime(tmp_path, "lake", clock)
    assert rt.scheduled_export is not None
    (entry,) = list(rt.catalog)
    # three days of one sample a minute: D0-2, D0-1 and (today) D0 until 00:30
    ts = np.arange(D0 - 2 * DAY_NS, D0 + 1800 * S, 60 * S, dtype=np.int64)
    rt.store.write(Batch.of(np.full(len(ts), entry.tag_id), ts, np.arange(len(ts)), Quality.GOOD))
    await start_pipeline(rt)
    try:
        # the pipeline keeps writing today's data during the export
        await rt.ingest.emit(Batch.of([entry.tag_id], [D0 + 1801 * S], [1.0], Quality.GOOD))
        result = await rt.scheduled_export.run_once()
        assert result is not None
        assert result.rows == 2 * 24 * 60  # exactly the two whole days before today
        assert result.partitions == ["site=lyon/date=2025-11-20", "site=lyon/date=2025-11-21"]
        lake = rt.data_dir / "lake"
        assert _count(f"{lake}/**/*.parquet") == 2 * 24 * 60
        # late data for yesterday, then the next day's run rewrites yesterday with it
        rt.store.write(Batch.of([entry.tag_id], [D0 - 30 * S], [7.0], Quality.GOOD))
        clock.advance(DAY_NS / S)
        again = await rt.scheduled_export.run_once()
        assert again is not None
        assert again.partitions == ["site=lyon/date=2025-11-21", "site=lyon/date=2025-11-22"]
        assert _count(f"{lake}/site=lyon/date=2025-11-21/*.parquet") == 24 * 60 + 1
        done = rt.events.recent(kind="export.done")
        assert [e.details["rows"] for e in done] == [2 * 24 * 60, again.rows]
        assert rt.metrics.counters["export.runs"] == 2
    finally:
        await stop_pipeline(rt)


async def test_a_failed_run_is_an_event_and_the_server_goes_on(tmp_path: Path) -> None:
    clock = ManualClock(start_ns=D0 + 1800 * S)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the lake should be")
    rt = _runtime(tmp_path, str(blocker), clock)
    assert rt.scheduled_export is not None
    (entry,) = list(rt.catalog)
    rt.store.write(Batch.of([entry.tag_id], [D0 - DAY_NS], [1.0], Quality.GOOD))
    await start_pipeline(rt)
    try:
        assert await rt.scheduled_export.run_once() is None
        (failed,) = rt.events.recent(kind="export.failed")
        assert str(blocker) in failed.message
        assert rt.metrics.counters["export.failures"] == 1
        assert all(
            p.task is not None and not p.task.done() for p in _task_parts(rt)
        )  # nothing else stopped
    finally:
        await stop_pipeline(rt)


def _task_parts(rt: Runtime) -> list[TaskPart]:
    """Every task-backed part the pipeline started, the sources' included."""
    found: list[TaskPart] = []
    stack: list[object] = list(rt.parts)
    while stack:
        part = stack.pop()
        if isinstance(part, TaskPart):
            found.append(part)
        elif isinstance(part, PartGroup):
            stack.extend(part.parts)
    assert found
    return found
