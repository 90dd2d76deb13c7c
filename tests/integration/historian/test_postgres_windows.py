"""What only the window layout of the PostgreSQL historian has (the contract every store
shares is in ``test_store_contract.py``, which runs it too).

The central test writes random batches — in order, late, overlapping, redelivered,
across minute and day boundaries, with Bad samples — and compares every query with a
plain-Python model of "first write of a (tag, ts) wins".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from isthmus.historian.base import TagMeta
from isthmus.historian.postgres.store import DAY_NS, PostgresStore
from isthmus.historian.postgres.windows import (
    PostgresWindowStore,
    drop_stored,
    encode_windows,
    window_starts,
)
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import StoreError
from isthmus.model.quality import Quality
from tests.integration.historian.pg_cluster import query

S = 1_000_000_000
T0 = 19_675 * DAY_NS + 23 * 3600 * S + 58 * 60 * S  # 2023-11-14 23:58 UTC: crosses midnight
BAD = int(Quality.BAD_SENSOR_FAILURE)
UNCERTAIN = int(Quality.UNCERTAIN_LAST_USABLE_VALUE)


def make(tmp_path: Path, layout: str = "windows") -> PostgresWindowStore:
    return PostgresWindowStore(
        StorageConfig(type="postgres", layout=layout),  # type: ignore[arg-type]
        tmp_path,
    )


@pytest.fixture
def store(pg_dsn: str, tmp_path: Path) -> Iterator[PostgresWindowStore]:
    s = make(tmp_path)
    s.open()
    yield s
    s.close()


# -- pure helpers ------------------------------------------------------------------------


def test_window_starts_split_at_each_tag_and_minute() -> None:
    tag = np.array([1, 1, 1, 1, 2, 2], dtype=np.int32)
    ts = np.array([0, 59 * S, 60 * S, 61 * S, 61 * S, 200 * S], dtype=np.int64)
    assert window_starts(tag, ts).tolist() == [0, 2, 4, 5]
    assert window_starts(tag[:0], ts[:0]).tolist() == []
    before_1970 = np.array([-61 * S, -60 * S, -1, 0], dtype=np.int64)
    assert window_starts(np.ones(4, np.int32), before_1970).tolist() == [0, 1, 3]


def test_drop_stored_keeps_order_and_only_new_rows() -> None:
    batch = Batch.of([1, 1, 1, 2, 2], [10, 20, 30, 10, 40], [1.0, 2.0, 3.0, 4.0, 5.0], 0)
    kept = drop_stored(batch, np.array([1, 2, 3]), np.array([20, 40, 10]))
    assert kept.tag_id.tolist() == [1, 1, 2]
    assert kept.ts.tolist() == [10, 30, 10]
    assert drop_stored(batch, np.array([]), np.array([])) is batch


def test_encode_windows_counts_windows() -> None:
    ts = T0 + np.arange(150, dtype=np.int64) * S  # 150 s from 23:58: 3 minutes
    batch = Batch.of(np.full(150, 3), ts, np.arange(150.0), 0)
    data, windows = encode_windows(batch)
    assert windows == 3
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00") and data.endswith(b"\xff\xff")


# -- the model test ----------------------------------------------------------------------


class Model:
    """What the store must answer: the first written value of each (tag, ts)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int], tuple[float, int]] = {}

    def write(self, batch: Batch) -> int:
        new = 0
        for t, s, v, q in zip(
            batch.tag_id.tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            strict=True,
        ):
            if (t, s) not in self.rows:
                self.rows[(t, s)] = (v, q)
                new += 1
        return new

    def series(self, tag: int, start: int, end: int) -> list[tuple[int, float, int]]:
        return sorted(
            (s, v, q) for (t, s), (v, q) in self.rows.items() if t == tag and start <= s < end
        )


def random_batch(rng: np.random.Generator, tags: list[int], written: list[Batch]) -> Batch:
    kind = rng.choice(["live", "late", "redeliver", "overlap"], p=[0.5, 0.2, 0.15, 0.15])
    if kind == "redeliver" and written:
        return written[int(rng.integers(len(written)))]
    n = int(rng.integers(1, 400))
    base = T0 + int(rng.integers(0, 300)) * S if kind != "live" else T0 + len(written) * 7 * S
    ts = base + rng.integers(0, 240, size=n).astype(np.int64) * (S // 2)
    tag = rng.choice(tags, size=n)
    value = rng.normal(size=n).round(3)
    quality = rng.choice([0, 0, 0, UNCERTAIN, BAD], size=n).astype(np.uint32)
    batch = Batch.of(tag, ts, value, quality)
    if kind == "overlap" and written:
        batch = Batch.concat([batch, written[-1]])  # half new, half known
    return batch


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_writes_match_the_model(store: PostgresWindowStore, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = store.register_tags([TagMeta(f"s/t{i}", "float", "") for i in range(4)])
    tags = sorted(ids.values())
    model = Model()
    written: list[Batch] = []
    for _ in range(25):
        batch = random_batch(rng, tags, written)
        assert store.write(batch) == model.write(batch)
        written.append(batch)
    assert store.count() == len(model.rows)
    end = T0 + 3600 * S
    for tag in tags:
        want = model.series(tag, T0 - S, end)
        got = store.raw(tag, T0 - S, end)
        assert got.ts.tolist() == [s for s, _, _ in want]
        assert got.value.tolist() == [v for _, v, _ in want]
        assert got.quality.tolist() == [q for _, _, q in want]
        # a range starting and ending inside minutes
        lo, hi = T0 + 37 * S + S // 3, T0 + 171 * S
        assert store.raw(tag, lo, hi).ts.tolist() == [s for s, _, _ in model.series(tag, lo, hi)]
        for limit in (1, 5, 37, 200):  # the limit bounds the minutes read: still exact
            assert store.raw(tag, lo, hi, limit=limit).ts.tolist() == [
                s for s, _, _ in model.series(tag, lo, hi)[:limit]
            ]
            assert store.raw(tag, T0 - S, end, limit=limit).ts.tolist() == [
                s for s, _, _ in model.series(tag, T0 - S, end)[:limit]
            ]
        # the value in force at a time inside a minute
        at = T0 + 95 * S + S // 4
        prior = model.series(tag, at - 3600 * S, at)
        before = store.before(tag, at, 3600 * S)
        assert before.ts.tolist() == ([prior[-1][0]] if prior else [])
        for width in (7 * S, 60 * S, 120 * S, 3600 * S):
            for lo, hi in ((T0 - 60 * S, end), (T0 + 13 * S, T0 + 250 * S)):
                check_buckets(store, model, tag, lo, hi, width)


def check_buckets(
    store: PostgresWindowStore, model: Model, tag: int, lo: int, hi: int, width: int
) -> None:
    rows = [(s, v) for s, v, q in model.series(tag, lo, hi) if q < 0x80000000]
    want: dict[int, list[float]] = {}
    for s, v in rows:
        want.setdefault(s - s % width, []).append(v)
    agg = store.buckets(tag, lo, hi, width)
    assert agg.bucket_ns.tolist() == sorted(want)
    assert agg.count.tolist() == [len(want[b]) for b in sorted(want)]
    np.testing.assert_allclose(agg.avg, [np.mean(want[b]) for b in sorted(want)], atol=1e-9)
    assert agg.min.tolist() == [min(want[b]) for b in sorted(want)]
    assert agg.max.tolist() == [max(want[b]) for b in sorted(want)]


# -- layout and schema -------------------------------------------------------------------


def test_live_batches_make_one_row_per_tag_and_minute(
    store: PostgresWindowStore, pg_dsn: str
) -> None:
    ids = store.register_tags([TagMeta(f"s/t{i}", "float", "") for i in range(10)])
    tag_ids = np.array(sorted(ids.values()), dtype=np.int32)
    for k in range(9):  # 9 writes of 20 s of 10 tags at 1 Hz: 3 minutes, over midnight
        ts = T0 + (k * 20 + np.arange(20, dtype=np.int64)) * S
        batch = Batch.of(np.repeat(tag_ids, 20), np.tile(ts, 10), 1.0, 0)
        assert store.write(batch) == 200
    rows = query(pg_dsn, "SELECT count(*), sum(n), min(n), max(n) FROM sample_windows")
    assert rows == [(90, 1800, 20, 20)]  # a window per tag, write and minute
    # sample_rows and samples_v (Grafana) see every sample
    assert query(pg_dsn, "SELECT count(*) FROM sample_rows") == [(1800,)]
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT tag) FROM samples_v") == [(1800, 10)]
    assert query(pg_dsn, "SELECT count(*) FROM samples") == [(0,)]
    # windows land in the partition of their first sample's day
    parts = {str(r[0]) for r in query(pg_dsn, "SELECT tableoid::regclass FROM sample_windows")}
    assert parts == {"sample_windows_p20231114", "sample_windows_p20231115"}


def test_minute_buckets_come_from_window_aggregates(store: PostgresWindowStore) -> None:
    """Buckets of whole minutes read n_ok/v_sum/v_min/v_max: Bad samples excluded,
    a window of Bad samples only yields no bucket."""
    (tag,) = store.register_tags([TagMeta("s/t", "float", "")]).values()
    ts = T0 + np.arange(180, dtype=np.int64) * S
    quality = np.where(np.arange(180) < 120, 0, BAD).astype(np.uint32)  # 3rd minute all Bad
    store.write(Batch.of(np.full(180, tag), ts, np.arange(180.0), quality))
    agg = store.buckets(tag, T0, T0 + 180 * S, 60 * S)
    assert agg.count.tolist() == [60, 60]
    assert agg.avg.tolist() == [29.5, 89.5]
    assert agg.min.tolist() == [0.0, 60.0] and agg.max.tolist() == [59.0, 119.0]


def test_a_database_keeps_its_layout(pg_dsn: str, tmp_path: Path) -> None:
    rows = PostgresStore(StorageConfig(type="postgres", layout="rows"), tmp_path)
    rows.open()
    (tag,) = rows.register_tags([TagMeta("s/t", "float", "")]).values()
    rows.write(Batch.of([tag], [T0], [1.0], 0))
    rows.close()
    windows = make(tmp_path)
    with pytest.raises(StoreError, match=r"'rows' layout.*storage\.layout: rows"):
        windows.open()


def test_before_commit_runs_in_the_write_transaction(
    store: PostgresWindowStore, pg_dsn: str
) -> None:
    (tag,) = store.register_tags([TagMeta("s/t", "float", "")]).values()
    with psycopg.connect(pg_dsn) as con:
        con.execute("CREATE TABLE hook_log (n integer)")

    def hook(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        cur.execute("INSERT INTO hook_log VALUES (1)")

    def failing(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
        hook(cur)
        raise RuntimeError("ledger refused")

    with pytest.raises(RuntimeError):
        store.write(Batch.of([tag], [T0], [1.0], 0), before_commit=failing)
    assert store.count() == 0 and query(pg_dsn, "SELECT count(*) FROM hook_log") == [(0,)]
    assert store.write(Batch.of([tag], [T0], [1.0], 0), before_commit=hook) == 1
    assert store.write(Batch.empty(), before_commit=hook) == 0  # a hook alone still commits
    assert query(pg_dsn, "SELECT count(*) FROM hook_log") == [(2,)]


def test_concurrent_writers_store_each_sample_once(pg_dsn: str, tmp_path: Path) -> None:
    """Two stores (two hubs) writing the same samples at once: every (tag, ts) once."""
    stores = [make(tmp_path) for _ in range(2)]
    for s in stores:
        s.open()
    ids = stores[0].register_tags([TagMeta(f"s/t{i}", "float", "") for i in range(20)])
    tag_ids = np.array(sorted(ids.values()), dtype=np.int32)
    batches = []
    for k in range(30):
        ts = T0 + (k * 10 + np.arange(10, dtype=np.int64)) * S
        batches.append(Batch.of(np.repeat(tag_ids, 10), np.tile(ts, 20), float(k), 0))
    written = [0, 0]

    def run(i: int) -> None:
        for b in batches if i == 0 else reversed(batches):
            written[i] += stores[i].write(b)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = 30 * 200
    assert sum(written) == total
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT (tag_id, ts)) FROM sample_rows") == [
        (total, total)
    ]
    for s in stores:
        s.close()


def test_purge_trims_windows_cut_by_the_cutoff(store: PostgresWindowStore, pg_dsn: str) -> None:
    (a, b) = store.register_tags(
        [TagMeta("s/a", "float", ""), TagMeta("s/b", "float", "")]
    ).values()
    ts = T0 + np.arange(300, dtype=np.int64) * S  # 5 minutes, over midnight
    store.write(
        Batch.of(np.concatenate([np.full(300, a), np.full(300, b)]), np.tile(ts, 2), 1.0, 0)
    )
    cut = T0 + 90 * S  # inside the second minute
    assert store.purge_before(cut) == 2 * 90
    assert store.count() == 2 * 210
    assert store.raw(a, 0, T0 + DAY_NS).ts.tolist() == ts[90:].tolist()
    assert store.buckets(a, T0, T0 + 300 * S, 60 * S).count.tolist() == [30, 60, 60, 60]
    # a purge past midnight drops the first day's partition whole
    assert store.purge_before(T0 + 150 * S) == 2 * 60
    parts = {str(r[0]) for r in query(pg_dsn, "SELECT tableoid::regclass FROM sample_windows")}
    assert parts == {"sample_windows_p20231115"}
    assert store.write(Batch.of([a], [int(ts[0])], [2.0], 0)) == 1  # purged: writable again


def test_retention_per_class_deletes_only_that_class(pg_dsn: str, tmp_path: Path) -> None:
    from isthmus.model.config import RetentionConfig

    retention = RetentionConfig.model_validate(
        {"default": {"raw": "30d"}, "classes": {"short": {"raw": "1h"}}}
    )
    store = PostgresWindowStore(StorageConfig(type="postgres", retention=retention), tmp_path)
    store.open()
    ids = store.register_tags([TagMeta("s/keep", "float", ""), TagMeta("s/short", "float", "")])
    store.assign_retention_classes({ids["s/short"]: "short"})
    ts = T0 + np.arange(7200, dtype=np.int64) * S  # two hours
    for tag in ids.values():
        store.write(Batch.of(np.full(7200, tag), ts, 1.0, 0))
    report = store.maintain(T0 + 7200 * S)
    assert report.rows_deleted["raw"] == 3600
    assert len(store.raw(ids["s/keep"], 0, T0 + DAY_NS, limit=10**6)) == 7200
    assert store.raw(ids["s/short"], 0, T0 + DAY_NS, limit=10**6).ts[0] == T0 + 3600 * S
    store.close()


def test_grafana_function_reads_only_the_range(store: PostgresWindowStore, pg_dsn: str) -> None:
    ids = store.register_tags([TagMeta("acme/p/oven/temp", "float", "degC")])
    tag = ids["acme/p/oven/temp"]
    ts = T0 + np.arange(600, dtype=np.int64) * S  # 10 minutes
    quality = np.where(np.arange(600) % 100 == 0, BAD, 0).astype(np.uint32)
    store.write(Batch.of(np.full(600, tag), ts, np.arange(600.0), quality))
    lo, hi = T0 + 150 * S + S // 2, T0 + 301 * S
    rows = query(
        pg_dsn,
        "SELECT ts, value, severity, quality_name FROM isthmus_samples(%s, %s)"
        " WHERE tag = 'acme/p/oven/temp' ORDER BY ts",
        lo,
        hi,
    )
    want = store.raw(tag, lo, hi)
    assert [r[0] for r in rows] == want.ts.tolist()
    assert [r[1] for r in rows] == want.value.tolist()
    assert rows[50 - 1][2:] == ("Bad", "Bad_SensorFailure")  # ts = T0 + 200 s
    # the range bounds the windows read: 3 of the 10 minutes, not the whole history
    plan = "\n".join(
        str(r[0])
        for r in query(
            pg_dsn,
            "EXPLAIN (ANALYZE, FORMAT TEXT) SELECT count(*) FROM isthmus_samples(%s, %s)"
            " WHERE tag = 'acme/p/oven/temp'",
            lo,
            hi,
        )
    )
    assert "sample_windows" in plan and "Function Scan on isthmus_samples" not in plan
