"""What only the PostgreSQL historian has: migrations, partitions, Grafana views, retries.

The behaviour every backend shares is in ``test_store_contract.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from isthmus.historian.base import TagMeta
from isthmus.historian.postgres.store import (
    DAY_NS,
    MIGRATIONS,
    PostgresStore,
    decode_copy,
    encode_copy,
    last_per_tag,
    partition_day,
    partition_name,
)
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import StoreError
from isthmus.model.quality import Quality
from tests.integration.historian.pg_cluster import query

S = 1_000_000_000
T0 = 19_675 * DAY_NS  # 2023-11-14 00:00 UTC
BAD = int(Quality.BAD_SENSOR_FAILURE)


def make(tmp_path: Path, dsn: str | None = None) -> PostgresStore:
    return PostgresStore(StorageConfig(type="postgres"), tmp_path, dsn=dsn)


@pytest.fixture
def store(pg_dsn: str, tmp_path: Path) -> Iterator[PostgresStore]:
    s = make(tmp_path)
    s.open()
    yield s
    s.close()


# -- pure helpers ----------------------------------------------------------------------


def test_copy_binary_round_trip() -> None:
    batch = Batch.of([1, 7, -3], [-5, 0, 2**62], [1.5, np.nan, -np.inf], [0, BAD, 0xFFFFFFFF])
    from isthmus.historian.postgres.store import _SAMPLE_ROW

    rec = decode_copy(encode_copy(batch), _SAMPLE_ROW)
    assert rec["ts"].tolist() == batch.ts.tolist()
    assert rec["tag_id"].tolist() == [1, 7, -3]
    assert rec["quality"].astype(np.int32).view(np.uint32).tolist() == batch.quality.tolist()
    assert np.isnan(rec["value"][1]) and rec["value"][2] == -np.inf
    assert len(decode_copy(b"", _SAMPLE_ROW)) == 0
    with pytest.raises(StoreError, match="header"):
        decode_copy(b"not a copy stream at all", _SAMPLE_ROW)


def test_partition_names_round_trip() -> None:
    assert partition_name(19_675) == "samples_p20231114"
    assert partition_name(-1) == "samples_p19691231"
    for day in (-1, 0, 19_675, 100_000):
        assert partition_day(partition_name(day)) == day
    assert partition_day("samples_default") is None
    assert partition_day("tags") is None


def test_last_per_tag() -> None:
    b = Batch.of([2, 1, 2, 1], [5, 9, 7, 3], [0.0, 1.0, 2.0, 3.0], 0)
    last = last_per_tag(b)
    assert last.tag_id.tolist() == [1, 2]
    assert last.ts.tolist() == [9, 7]


def test_missing_dsn_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_PG_DSN", raising=False)
    with pytest.raises(StoreError, match="ISTHMUS_PG_DSN"):
        make(tmp_path).open()


# -- schema --------------------------------------------------------------------------------


def test_migrations_run_once_in_order(pg_dsn: str, tmp_path: Path) -> None:
    for _ in range(2):
        s = make(tmp_path)
        s.open()
        s.close()
    rows = query(pg_dsn, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [v for v, _ in MIGRATIONS]
    mode = query(pg_dsn, "SELECT value FROM historian_settings WHERE key = 'partitioning'")
    assert mode[0][0] in ("native", "timescaledb")


def test_a_newer_schema_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    s = make(tmp_path)
    s.open()
    s.close()
    with psycopg.connect(pg_dsn) as con:
        con.execute("INSERT INTO schema_migrations (version) VALUES (999)")
    with pytest.raises(StoreError, match="newer"):
        make(tmp_path).open()


def test_daily_partitions_on_demand_and_purge_drops_them(store: PostgresStore, pg_dsn: str) -> None:
    if store.partitioning != "native":
        pytest.skip("TimescaleDB manages its own chunks")
    # three days, 10 samples a day, one tag; then late data on an earlier day
    ts = np.concatenate([T0 + d * DAY_NS + np.arange(10) * S for d in range(3)])
    assert store.write(Batch.of(np.ones(30), ts, np.arange(30.0), 0)) == 30
    assert store.write(Batch.of([1], [T0 - DAY_NS], [-1.0], 0)) == 1
    parts = query(
        pg_dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'samples'::regclass ORDER BY 1",
    )
    assert [p[0] for p in parts] == [
        "samples_p20231113",
        "samples_p20231114",
        "samples_p20231115",
        "samples_p20231116",
    ]
    # the first two days are dropped whole, the third is cut in the middle
    assert store.purge_before(T0 + DAY_NS + 5 * S) == 1 + 10 + 5
    assert store.count() == 15
    parts = query(pg_dsn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'samples'::regclass")
    assert parts[0][0] == 2
    # a dropped day can be written again (its partition is created again)
    assert store.write(Batch.of([1], [T0], [5.0], 0)) == 1


def test_grafana_views(store: PostgresStore, pg_dsn: str) -> None:
    ids = store.register_tags([TagMeta("plant/line1/temp", "float", "degC")])
    tag = ids["plant/line1/temp"]
    uncertain = int(Quality.UNCERTAIN_LAST_USABLE_VALUE)
    store.write(
        Batch.of(
            [tag] * 3, [T0, T0 + S, T0 + 2 * S + 1500], [20.5, np.nan, 21.0], [0, BAD, uncertain]
        )
    )
    rows = query(
        pg_dsn,
        "SELECT time, tag, value, quality, severity, quality_name FROM samples_v"
        " WHERE tag = %s AND ts >= isthmus_ns(%s) ORDER BY time",
        "plant/line1/temp",
        "2023-11-14T00:00:00Z",
    )
    assert [r[1] for r in rows] == ["plant/line1/temp"] * 3
    assert rows[0][0].isoformat() == "2023-11-14T00:00:00+00:00"  # type: ignore[union-attr]
    assert rows[2][0].isoformat() == "2023-11-14T00:00:02.000001+00:00"  # type: ignore[union-attr]
    assert [r[3] for r in rows] == [0, BAD, uncertain]
    assert [r[4] for r in rows] == ["Good", "Bad", "Uncertain"]
    assert [r[5] for r in rows] == ["Good", "Bad_SensorFailure", "Uncertain_LastUsableValue"]
    last = query(pg_dsn, "SELECT tag, value, severity FROM last_v")
    assert last == [("plant/line1/temp", 21.0, "Uncertain")]
    # a time filter through isthmus_ns prunes partitions at plan time
    plan = query(
        pg_dsn,
        "EXPLAIN SELECT * FROM samples_v WHERE ts >= isthmus_ns('2023-11-15T00:00:00Z')",
    )
    assert "samples_p20231114" not in "\n".join(str(r[0]) for r in plan)


def test_grafana_views_of_string_samples(store: PostgresStore, pg_dsn: str) -> None:
    ids = store.register_tags(
        [TagMeta("plant/line1/recipe", "string", ""), TagMeta("plant/line1/temp", "float", "")]
    )
    recipe, temp = ids["plant/line1/recipe"], ids["plant/line1/temp"]
    store.write(
        Batch.of(
            [recipe, recipe, temp, recipe],
            [T0, T0 + S, T0 + S, T0 + 2 * S],
            [np.nan, np.nan, 21.0, np.nan],
            [0, 0, 0, BAD],
            text=["R-100", "Crème", None, "R-200"],
        )
    )
    store.write(Batch.of([temp], [T0 + 3 * S], [22.5], [0]))
    rows = query(
        pg_dsn,
        "SELECT time, tag, text, quality, severity, quality_name FROM samples_text_v"
        " WHERE ts >= isthmus_ns(%s) ORDER BY time",
        "2023-11-14T00:00:00Z",
    )
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("plant/line1/recipe", "R-100", "Good"),
        ("plant/line1/recipe", "Crème", "Good"),
        ("plant/line1/recipe", "R-200", "Bad"),
    ]
    assert rows[2][3] == BAD and rows[2][5] == "Bad_SensorFailure"
    assert rows[1][0].isoformat() == "2023-11-14T00:00:01+00:00"  # type: ignore[union-attr]
    # last_v: the numeric tag as before (text NULL), the string tag's newest text
    last = query(pg_dsn, "SELECT tag, value, severity, text FROM last_v ORDER BY tag")
    assert len(last) == 2
    (tag_r, value_r, severity_r, text_r), temp_row = last
    assert (tag_r, severity_r, text_r) == ("plant/line1/recipe", "Bad", "R-200")
    assert isinstance(value_r, float) and np.isnan(value_r)
    assert temp_row == ("plant/line1/temp", 22.5, "Good", None)
    # samples_v stays numbers only
    numbers = query(pg_dsn, "SELECT tag, value FROM samples_v ORDER BY ts")
    assert numbers == [("plant/line1/temp", 21.0), ("plant/line1/temp", 22.5)]


# -- concurrency and failures ------------------------------------------------------------


def test_two_stores_write_the_same_batches(pg_dsn: str, tmp_path: Path) -> None:
    """Two hub processes (two stores) racing on the same data: no error, no duplicate."""
    a, b = make(tmp_path), make(tmp_path)
    a.open()
    b.open()
    errors: list[BaseException] = []
    written: list[int] = []
    tags = np.tile(np.arange(1, 11), 100)
    batches = [
        Batch.of(tags, np.repeat(T0 + (i * 100 + np.arange(100)) * S, 10), 1.0, 0)
        for i in range(10)
    ]

    def run(s: PostgresStore) -> None:
        try:
            written.extend(s.write(batch) for batch in batches)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not errors, errors
        assert sum(written) == 10 * 1000
        assert a.count() == 10 * 1000
        assert a.last([1]).ts.tolist() == [T0 + 999 * S]
    finally:
        a.close()
        b.close()


def test_lost_connections_are_reopened(store: PostgresStore, pg_dsn: str) -> None:
    """A restarted server (here: every backend of the store killed) costs one retry."""
    assert store.write(Batch.of(np.ones(10), T0 + np.arange(10) * S, 1.0, 0)) == 10
    assert store.count() == 10  # a pooled reader exists now
    query(
        pg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'isthmus-historian'",
    )
    assert store.write(Batch.of(np.ones(10), T0 + (10 + np.arange(10)) * S, 1.0, 0)) == 10
    assert store.count() == 20
    assert store.retries >= 2


def test_a_partition_dropped_by_another_process(store: PostgresStore, pg_dsn: str) -> None:
    if store.partitioning != "native":
        pytest.skip("TimescaleDB manages its own chunks")
    assert store.write(Batch.of([1], [T0], [1.0], 0)) == 1
    other = PostgresStore(StorageConfig(type="postgres"), Path("."))
    other.open()
    try:
        assert other.purge_before(T0 + DAY_NS) == 1  # drops samples_p20231114
    finally:
        other.close()
    # this store still believes the partition exists: it finds out and creates it again
    assert store.write(Batch.of([1, 1], [T0 - S, T0 + S], [2.0, 3.0], 0)) == 2
    assert store.count() == 2
    assert store.retries == 1
