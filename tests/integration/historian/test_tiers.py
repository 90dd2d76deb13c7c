"""DuckDB downsampling tiers and retention per tag class, on real database files:
classes expire independently, maintain() is idempotent, and an interrupted maintenance
(an exception, or the process killed with SIGKILL) leaves a consistent store that the
next run completes exactly as an uninterrupted one would have."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isthmus.historian.base import Maintainable, MaintenanceReport
from isthmus.historian.duckdb import tiers
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.historian.duckdb.tiers import HOUR_NS, MINUTE_NS
from isthmus.historian.maintenance import HistorianMaintenance, start_maintenance
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import StorageConfig, TagConfig

S = 10**9
DAY = 86_400 * S
T0 = 19_675 * DAY  # 2023-11-14 00:00 UTC
BAD = 0x808C0000

RETENTION = {
    "default": {"raw": "3d", "1m": "6d", "1h": "30d"},
    "classes": {"fast": {"raw": "1d", "1m": "2d", "1h": "10d"}},
}


def config(path: str = "hist.duckdb") -> StorageConfig:
    return StorageConfig.model_validate(
        {"path": path, "memory_limit": "128MB", "retention": RETENTION}
    )


def open_store(tmp_path: Path, path: str = "hist.duckdb") -> DuckDBStore:
    store = DuckDBStore(config(path), tmp_path, threads=1)
    store.open()
    return store


def history(tags: int, days: int, step_s: int = 10, seed: int = 7) -> Batch:
    """Every tag every ``step_s`` from T0, random walk values, 1 % Bad."""
    rng = np.random.default_rng(seed)
    n = days * 86_400 // step_s
    ts = np.tile(T0 + np.arange(n, dtype=np.int64) * step_s * S, tags)
    tag = np.repeat(np.arange(1, tags + 1), n)
    value = np.cumsum(rng.normal(size=n * tags))
    quality = np.where(rng.random(n * tags) < 0.01, BAD, 0).astype(np.uint32)
    order = np.lexsort((tag, ts))  # time order, as sources emit
    return Batch.of(tag[order], ts[order], value[order], quality[order])


def dump(store: DuckDBStore) -> dict[str, Any]:
    cur = store._reader()
    out: dict[str, Any] = {}
    for table in ("tier_1m", "tier_1h"):
        rows = cur.execute(f"SELECT * FROM {table} ORDER BY tag_id, bucket").fetchnumpy()
        out[table] = {k: np.asarray(v) for k, v in rows.items()}
    out["samples"] = cur.execute("SELECT count(*), sum(ts), max(ts) FROM samples").fetchall()
    out["state"] = cur.execute("SELECT * FROM tier_state ORDER BY name").fetchall()
    out["dirty"] = cur.execute("SELECT count(*) FROM tier_dirty").fetchall()
    return out


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["samples"] == b["samples"]
    assert a["state"] == b["state"]
    assert a["dirty"] == b["dirty"]
    for table in ("tier_1m", "tier_1h"):
        x, y = a[table], b[table]
        assert x.keys() == y.keys()
        for key in x:
            if key == "total":  # a float sum: the summation order may differ
                np.testing.assert_allclose(x[key], y[key], rtol=1e-9, atol=1e-9)
            else:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{table}.{key}")


def assert_consistent(store: DuckDBStore) -> None:
    """Every committed rollup equals a fresh GROUP BY of what it was made from."""
    cur = store._reader()
    marks = store.watermarks()
    for tier, source, col, width in (
        ("1m", "samples", "ts", MINUTE_NS),
        ("1h", "tier_1m", "bucket", HOUR_NS),
    ):
        wm = marks[tier]
        if wm is None:
            assert cur.execute(f"SELECT count(*) FROM tier_{tier}").fetchall()[0][0] == 0
            continue
        beyond = cur.execute(f"SELECT count(*) FROM tier_{tier} WHERE bucket >= ?", [wm])
        assert beyond.fetchall()[0][0] == 0, f"{tier} rows past its watermark"
        n = "count(*)" if source == "samples" else "sum(n)"
        good = "AND quality < 2147483648" if source == "samples" else ""
        # Compared per tag where the source still holds its rows (after its own cut).
        lo = (
            f"(SELECT tag_id, min({col}) - min({col}) % {HOUR_NS} + {HOUR_NS} AS lo "
            f"FROM {source} GROUP BY tag_id)"
        )
        ref = cur.execute(
            f"SELECT s.tag_id, {col} - {col} % {width} AS b, {n} FROM {source} s "
            f"JOIN {lo} l ON s.tag_id = l.tag_id "
            f"WHERE {col} >= l.lo AND {col} < ? {good} GROUP BY ALL ORDER BY 1, 2",
            [wm],
        ).fetchall()
        got = cur.execute(
            f"SELECT t.tag_id, bucket, n FROM tier_{tier} t JOIN {lo} l ON t.tag_id = l.tag_id "
            "WHERE bucket >= l.lo AND bucket < ? ORDER BY 1, 2",
            [wm],
        ).fetchall()
        assert got == ref, tier


# -- retention per class ------------------------------------------------------------------


def test_each_class_keeps_its_own_horizon(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        store.write(history(tags=2, days=5, step_s=60))
        store.assign_retention_classes({2: "fast"})
        now = T0 + 5 * DAY + HOUR_NS
        full = {t: store.buckets(t, T0, now, HOUR_NS) for t in (1, 2)}
        minutes = store.buckets(1, T0, T0 + DAY, MINUTE_NS)
        report = store.maintain(now)
        assert report.samples_rolled_up > 0
        # raw: default keeps 3 days, fast 1 day (cut on the minute grid)
        oldest = {t: int(store.raw(t, 0, now, 1).ts[0]) for t in (1, 2)}
        assert oldest[1] == now - 3 * DAY
        assert oldest[2] == now - DAY
        # 1m: default keeps 6 days (all of it), fast 2 days (cut on the hour grid)
        assert int(store.rollups(1, 0, now, "1m").bucket_ns[0]) == T0
        assert int(store.rollups(2, 0, now, "1m").bucket_ns[0]) == now - 2 * DAY
        # hourly queries still answer the whole range, from the 1-hour tier
        for t in (1, 2):
            agg = store.buckets(t, T0, now, HOUR_NS)
            assert agg.bucket_ns.tolist() == full[t].bucket_ns.tolist()
            assert agg.count.tolist() == full[t].count.tolist()
            np.testing.assert_allclose(agg.avg, full[t].avg, rtol=1e-9)
        # a raw query over the expired range returns what is kept: nothing
        assert len(store.raw(2, T0, T0 + DAY, 1000)) == 0
        # 1m buckets: gone for fast's expired minutes, from tier_1m for default's
        assert len(store.buckets(2, T0, T0 + DAY, MINUTE_NS)) == 0
        after = store.buckets(1, T0, T0 + DAY, MINUTE_NS)
        assert after.bucket_ns.tolist() == minutes.bucket_ns.tolist()
        np.testing.assert_array_equal(after.max, minutes.max)
        deleted = report.rows_deleted
        assert deleted["raw"] == (2 * 24 * 60 + 60) + (4 * 24 * 60 + 60)
        assert deleted["1h"] == 0
        # A sample arriving for a minute whose raw samples are gone cannot be merged
        # (its neighbours are lost): the rollup stays as it was, the sample expires.
        minute = T0 + DAY + 5 * MINUTE_NS
        kept = store.rollups(1, minute, minute + 1, "1m")
        store.write(Batch.of([1], [minute + 30 * S], [1e9], 0))
        later = store.maintain(now + MINUTE_NS)
        assert later.late_buckets == 0 and later.rows_deleted["raw"] >= 1
        assert store.rollups(1, minute, minute + 1, "1m") == kept or (
            store.rollups(1, minute, minute + 1, "1m").max.tolist() == kept.max.tolist()
        )
        assert len(store.raw(1, minute, minute + MINUTE_NS, 10)) == 0
    finally:
        store.close()


def test_unknown_class_is_refused_and_default_clears(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        with pytest.raises(ValueError, match="unknown retention class"):
            store.assign_retention_classes({1: "slow"})
        store.assign_retention_classes({1: "fast", 2: "fast"})
        store.assign_retention_classes({2: "default"})
        rows = store._reader().execute("SELECT * FROM tag_retention").fetchall()
        assert rows == [(1, "fast")]
    finally:
        store.close()


# -- idempotency and interruptions --------------------------------------------------------


def test_maintain_twice_equals_once_and_reopen_keeps_state(tmp_path: Path) -> None:
    data = history(tags=3, days=4, step_s=30)
    now = T0 + 4 * DAY + 5 * MINUTE_NS
    once = open_store(tmp_path, "once.duckdb")
    twice = open_store(tmp_path, "twice.duckdb")
    try:
        for store in (once, twice):
            store.write(data)
            store.assign_retention_classes({3: "fast"})
        once.maintain(now)
        first = twice.maintain(now)
        second = twice.maintain(now)
        assert first.samples_rolled_up > 0 and sum(first.rows_deleted.values()) > 0
        assert second.samples_rolled_up == 0
        assert sum(second.rows_rolled_up.values()) == sum(second.rows_deleted.values()) == 0
        assert_same(dump(once), dump(twice))
        assert_consistent(twice)
    finally:
        once.close()
        twice.close()
    again = open_store(tmp_path, "twice.duckdb")
    try:
        before = dump(again)
        assert again.maintain(now).samples_rolled_up == 0
        assert_same(before, dump(again))
        # late data after a restart is still noticed (the watermark is reloaded)
        late = T0 + 3 * DAY + 30 * MINUTE_NS + 7 * S
        again.write(Batch.of([1], [late], [1e9], 0))
        report = again.maintain(now)
        assert report.late_buckets == 1
        assert again.rollups(1, late - late % MINUTE_NS, late + 1, "1m").max.tolist() == [1e9]
        hour = late - late % HOUR_NS
        assert again.rollups(1, hour, hour + 1, "1h").max.tolist() == [1e9]
        assert_consistent(again)
    finally:
        again.close()


def test_exception_mid_rollup_rolls_back_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = history(tags=2, days=3, step_s=20)
    now = T0 + 3 * DAY + HOUR_NS
    clean = open_store(tmp_path, "clean.duckdb")
    broken = open_store(tmp_path, "broken.duckdb")
    try:
        for store in (clean, broken):
            store.write(data)
            store.chunk_target_rows = 1_000  # many small chunks
        clean.maintain(now)
        calls = {"n": 0}
        real = tiers.TieredMixin._set_state

        def failing(self: Any, cur: Any, name: str, value: int) -> None:
            calls["n"] += 1
            if calls["n"] == 5:  # inside the 5th step's transaction, after its INSERT
                raise RuntimeError("simulated crash")
            real(self, cur, name, value)

        monkeypatch.setattr(tiers.TieredMixin, "_set_state", failing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            broken.maintain(now)
        assert_consistent(broken)
        wm = broken.watermarks()["1m"]
        assert wm is not None and T0 < wm < now  # four steps committed, the fifth not
        monkeypatch.setattr(tiers.TieredMixin, "_set_state", real)
        broken.maintain(now)
        assert_same(dump(clean), dump(broken))
    finally:
        clean.close()
        broken.close()


_CHILD = """
import sys
from pathlib import Path
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.config import StorageConfig
cfg = StorageConfig.model_validate({"path": sys.argv[1], "memory_limit": "128MB",
                                    "retention": %r})
store = DuckDBStore(cfg, Path("."), threads=1)
store.open()
store.chunk_target_rows = 5_000
print("go", flush=True)
store.maintain(int(sys.argv[2]))
print("done", flush=True)
store.close()
"""


def test_sigkill_mid_maintenance_is_consistent_and_completes(tmp_path: Path) -> None:
    """Kill -9 the process running maintain() at random moments; reopen; finish."""
    now = T0 + 3 * DAY + HOUR_NS
    seed_file = tmp_path / "seed.duckdb"
    seed = DuckDBStore(config(str(seed_file)), tmp_path, threads=1)
    seed.open()
    seed.write(history(tags=6, days=3, step_s=10))
    seed.assign_retention_classes({t: "fast" for t in range(1, 4)})
    seed._write_cursor().execute("CHECKPOINT")
    seed.close()

    reference = tmp_path / "reference.duckdb"
    shutil.copy(seed_file, reference)
    ref = DuckDBStore(config(str(reference)), tmp_path, threads=1)
    ref.open()
    ref.chunk_target_rows = 5_000  # as the child: many steps to be killed in
    took = ref.maintain(now).seconds
    expected = dump(ref)
    ref.close()

    rng = random.Random(4)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    killed = 0
    for round_ in range(3):
        target = tmp_path / f"round{round_}.duckdb"
        shutil.copy(seed_file, target)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD % RETENTION, str(target), str(now)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "go"
            try:
                # killed within the time an uninterrupted run takes (+ the child's start)
                child.wait(timeout=rng.uniform(0.0, took))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                killed += 1
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        store = DuckDBStore(config(str(target)), tmp_path, threads=1)
        store.open()
        try:
            assert_consistent(store)
            store.maintain(now)
            assert_same(expected, dump(store))
        finally:
            store.close()
    assert killed >= 1, "every child finished before the kill: the test proved nothing"


# -- the maintenance task -----------------------------------------------------------------


def test_maintenance_task_runs_periodically_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path)
    try:
        store.write(history(tags=2, days=2, step_s=60))
        clock = ManualClock(T0 + 2 * DAY + HOUR_NS)
        tags = [(1, TagConfig(path="a/b/c/d/e")), (2, TagConfig(path="a/b/c/d/f"))]
        tags[1] = (2, tags[1][1].model_copy(update={"retention_class": "fast"}))
        task = start_maintenance(store, tags, clock, interval_s=0.05)
        assert isinstance(task, HistorianMaintenance)
        assert isinstance(store, Maintainable)

        async def run_a_while() -> None:
            loop = asyncio.get_running_loop()
            three = asyncio.Event()
            real = task.run_once

            def counted() -> MaintenanceReport:
                report = real()
                if task.runs == 3:
                    loop.call_soon_threadsafe(three.set)
                return report

            monkeypatch.setattr(task, "run_once", counted)
            running = asyncio.create_task(task.run())
            await asyncio.wait_for(three.wait(), timeout=30)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

        with caplog.at_level(logging.INFO, logger="isthmus.historian.maintenance"):
            asyncio.run(run_a_while())
        lines = [r.getMessage() for r in caplog.records if "maintenance" in r.getMessage()]
        assert len(lines) >= 3 and "rolled up" in lines[0] and "deleted" in lines[0]
        assert store._reader().execute("SELECT * FROM tag_retention").fetchall() == [(2, "fast")]
        assert int(store.raw(2, 0, clock.now_ns(), 1).ts[0]) == clock.now_ns() - DAY
        assert task.last_report is not None and task.last_report.samples_rolled_up == 0
    finally:
        store.close()


def test_start_maintenance_skips_stores_without_it(tmp_path: Path) -> None:
    class Plain:
        pass

    assert start_maintenance(Plain(), [], ManualClock()) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        HistorianMaintenance(open_store(tmp_path), ManualClock(), interval_s=0)
