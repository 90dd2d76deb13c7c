"""``isthmus export``: a real DuckDBStore (and SQLiteStore) exported to Parquet and CSV,
read back with pyarrow, DuckDB, and pandas / polars when they are installed."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from isthmus.cli.export import run_export
from isthmus.historian.base import Store, TagMeta
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.historian.export import COLUMNS, ExportProgress, export
from isthmus.historian.sqlite.store import SQLiteStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import IsthmusError
from isthmus.model.quality import Quality

S = 1_000_000_000
H = 3600 * S
DAY = 24 * H
D0 = 20_414 * DAY  # 2025-11-22T00:00:00Z
BAD = int(Quality.BAD_COMMUNICATION_ERROR)

TAGS = [
    TagMeta("acme/lyon/utilities/boiler/b1/pump1/flow", "float64", "m3/h"),
    TagMeta("acme/lyon/utilities/boiler/b1/pump1/temp", "float64", "°C"),
    TagMeta("acme/lyon/packaging/line1/filling/filler/speed", "float64", "bpm"),
    TagMeta("acme/paris/utilities/boiler/b2/pump1/flow", "float64", "m3/h"),
]
UNITS = {t.path: t.unit for t in TAGS}
PER_TAG = 48 * 60  # one sample a minute for two days


def _fill(store: Store) -> dict[str, int]:
    ids = store.register_tags(TAGS)
    ts = D0 + np.arange(PER_TAG, dtype=np.int64) * 60 * S + 1_234_567  # sub-µs digits: 567
    for n, tag in enumerate(TAGS):
        value = np.arange(PER_TAG, dtype=np.float64) + 1000 * n
        quality = np.zeros(PER_TAG, dtype=np.uint32)
        quality[-3:] = BAD  # the last three samples of each tag are Bad
        value[-1] = math.nan  # a Bad sample may carry NaN
        store.write(Batch.of(np.full(PER_TAG, ids[tag.path]), ts, value, quality))
    return ids


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(StorageConfig(path="h.duckdb"), tmp_path)
    with s:
        _fill(s)
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(StorageConfig(path="h.sqlite"), tmp_path)
    s.open()
    try:
        _fill(s)
        yield s
    finally:
        s.close()


def _export(store: Store, dest: Path, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "start_ns": D0,
        "end_ns": D0 + 2 * DAY,
        "tags_glob": None,
        "fmt": "parquet",
        "dest": dest,
        "units": UNITS,
    }
    args.update(kw)
    return export(store, **args)


def _files(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def _expected_ts_us() -> np.ndarray[Any, np.dtype[np.int64]]:
    return (D0 + np.arange(PER_TAG, dtype=np.int64) * 60 * S + 1_234_567) // 1000


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_layout_schema_and_rows_with_pyarrow(store: DuckDBStore, tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    seen: list[ExportProgress] = []
    result = _export(store, dest, progress=seen.append)
    assert result.rows == 4 * PER_TAG
    assert _files(dest) == [
        "site=lyon/date=2025-11-22/part-0.parquet",
        "site=lyon/date=2025-11-23/part-0.parquet",
        "site=paris/date=2025-11-22/part-0.parquet",
        "site=paris/date=2025-11-23/part-0.parquet",
    ]
    assert result.bytes == sum(f.stat().st_size for f in result.files)
    assert seen[-1].rows_done == seen[-1].rows_total == 4 * PER_TAG
    assert seen[-1].days_done == seen[-1].days_total == 4

    table = pq.read_table(dest / "site=lyon/date=2025-11-22/part-0.parquet")
    assert table.column_names == list(COLUMNS)
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("value").type == pa.float64()
    assert table.schema.field("quality").type == pa.uint32()
    assert pa.types.is_string(table.schema.field("tag").type)
    # a day holds exactly that day's samples
    assert table.num_rows == 3 * PER_TAG // 2
    assert set(table.column("tag").to_pylist()) == {t.path for t in TAGS[:3]}
    flow = table.filter(pc.equal(table["tag"], TAGS[0].path)).sort_by("time")
    times = flow.column("time").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(times, _expected_ts_us()[: PER_TAG // 2])
    np.testing.assert_array_equal(flow.column("value").to_numpy(), np.arange(PER_TAG // 2))
    assert set(flow.column("unit").to_pylist()) == {"m3/h"}
    assert set(flow.column("quality_name").to_pylist()) == {"Good"}

    # the whole dataset through pyarrow's Hive partitioning
    dataset = ds.dataset(dest, format="parquet", partitioning="hive")
    full = dataset.to_table()
    assert full.num_rows == 4 * PER_TAG
    bad = full.filter(pc.equal(full["quality"], BAD))
    assert bad.num_rows == 4 * 3
    assert set(bad.column("quality_name").to_pylist()) == {"Bad_CommunicationError"}
    assert bad.column("value").null_count == 0  # NaN stays NaN, not NULL
    assert sum(math.isnan(v) for v in bad.column("value").to_pylist()) == 4
    assert set(full.column("site").to_pylist()) == {"lyon", "paris"}


def test_duckdb_reads_the_dataset_with_hive_partitioning(
    store: DuckDBStore, tmp_path: Path
) -> None:
    dest = tmp_path / "lake"
    _export(store, dest)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Europe/Paris'")  # must not shift anything
    rel = f"read_parquet('{dest}/**/*.parquet', hive_partitioning = true)"
    types = dict(con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()[i][:2] for i in range(8))
    assert types["time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["value"] == "DOUBLE"
    assert types["quality"] == "UINTEGER"
    rows = con.execute(
        f"SELECT site, CAST(date AS VARCHAR), count(*), min(epoch_us(time)), "
        f"min(CAST(timezone('UTC', time) AS DATE)) "
        f"FROM {rel} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    d0_us = D0 // 1000 + 1234
    day_us = DAY // 1000
    assert [r[:4] for r in rows] == [
        ("lyon", "2025-11-22", 3 * PER_TAG // 2, d0_us),
        ("lyon", "2025-11-23", 3 * PER_TAG // 2, d0_us + day_us),
        ("paris", "2025-11-22", PER_TAG // 2, d0_us),
        ("paris", "2025-11-23", PER_TAG // 2, d0_us + day_us),
    ]
    # every row's UTC date is its partition's date
    mismatched = con.execute(
        f"SELECT count(*) FROM {rel} WHERE CAST(timezone('UTC', time) AS DATE) <> date"
    ).fetchone()
    assert mismatched == (0,)


def test_pandas_reads_utc_timestamps(store: DuckDBStore, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    dest = tmp_path / "lake"
    _export(store, dest)
    df = pd.read_parquet(dest)
    assert len(df) == 4 * PER_TAG
    assert str(df["time"].dt.tz) == "UTC"
    assert df["value"].dtype == "float64"
    first = df[df["tag"] == TAGS[0].path]["time"].min()
    assert first == pd.Timestamp(D0 + 1_234_000, unit="ns", tz="UTC")


def test_polars_reads_utc_timestamps(store: DuckDBStore, tmp_path: Path) -> None:
    pl = pytest.importorskip("polars")
    dest = tmp_path / "lake"
    _export(store, dest)
    df = pl.read_parquet(dest / "**/*.parquet", hive_partitioning=True)
    assert df.height == 4 * PER_TAG
    assert df.schema["time"] == pl.Datetime("us", "UTC")
    assert df.schema["value"] == pl.Float64


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_is_read_as_utc_timestamps(store: DuckDBStore, tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    result = _export(store, dest, fmt="csv")
    assert _files(dest) == [
        "site=lyon/date=2025-11-22/part-0.csv",
        "site=lyon/date=2025-11-23/part-0.csv",
        "site=paris/date=2025-11-22/part-0.csv",
        "site=paris/date=2025-11-23/part-0.csv",
    ]
    assert result.rows == 4 * PER_TAG
    text = (dest / "site=lyon/date=2025-11-22/part-0.csv").read_text()
    header, first = text.splitlines()[:2]
    assert header.replace('"', "") == ",".join(COLUMNS)
    assert (
        first
        == "2025-11-22T00:00:00.001234Z,acme/lyon/utilities/boiler/b1/pump1/flow,0.0,0,Good,m3/h,"
    )  # the text column is empty for numeric samples

    table = pcsv.read_csv(dest / "site=lyon/date=2025-11-22/part-0.csv")
    time_type = table.schema.field("time").type
    assert pa.types.is_timestamp(time_type)
    assert time_type.tz == "UTC"
    assert table.schema.field("value").type == pa.float64()
    assert table.num_rows == 3 * PER_TAG // 2

    con = duckdb.connect()
    rel = f"read_csv('{dest}/**/*.csv', hive_partitioning = true)"
    types = dict(r[:2] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall())
    assert types["time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["value"] == "DOUBLE"
    assert con.execute(f"SELECT count(*) FROM {rel}").fetchone() == (4 * PER_TAG,)


def test_generic_path_writes_what_the_duckdb_path_writes(
    store: DuckDBStore, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    for fmt in ("parquet", "csv"):
        fast = _export(store, tmp_path / f"fast-{fmt}", fmt=fmt)
        slow = _export(sqlite_store, tmp_path / f"slow-{fmt}", fmt=fmt)
        assert fast.rows == slow.rows == 4 * PER_TAG
        assert _files(tmp_path / f"fast-{fmt}") == _files(tmp_path / f"slow-{fmt}")
        for a, b in zip(fast.files, slow.files, strict=True):
            if fmt == "parquet":
                ta, tb = pq.read_table(a), pq.read_table(b)
            else:
                ta, tb = pcsv.read_csv(a), pcsv.read_csv(b)
            ta, tb = (
                ta.sort_by([("tag", "ascending"), ("time", "ascending")]),
                tb.sort_by([("tag", "ascending"), ("time", "ascending")]),
            )
            assert ta.schema.names == tb.schema.names
            assert [f.type for f in ta.schema] == [f.type for f in tb.schema]
            for name in COLUMNS:
                assert ta.column(name).to_pylist() == tb.column(name).to_pylist() or (
                    name == "value"  # NaN != NaN
                    and np.array_equal(
                        ta.column(name).to_numpy(), tb.column(name).to_numpy(), equal_nan=True
                    )
                )


# -- string samples ---------------------------------------------------------------------------

RECIPE = TagMeta("acme/lyon/packaging/line1/filling/filler/recipe", "string", "")
RECIPES = ["R-100", 'Crème, "brûlée"', "", "R-200"]


def _fill_text(store: Store) -> int:
    """A string tag with four samples on the first day (one Bad), between the numbers."""
    (tag_id,) = store.register_tags([RECIPE]).values()
    ts = D0 + np.array([0, 3, 7, 11], dtype=np.int64) * H + 500_000
    quality = [0, 0, 0, BAD]
    store.write(Batch.of(np.full(4, tag_id), ts, np.nan, quality, text=RECIPES))
    return tag_id


def test_string_samples_fill_the_text_column(
    store: DuckDBStore, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    for s in (store, sqlite_store):
        _fill_text(s)
    for fmt in ("parquet", "csv"):
        fast = _export(store, tmp_path / f"fast-{fmt}", fmt=fmt)
        slow = _export(sqlite_store, tmp_path / f"slow-{fmt}", fmt=fmt)
        assert fast.rows == slow.rows == 4 * PER_TAG + 4
        for result in (fast, slow):
            day = result.dest / "site=lyon/date=2025-11-22" / f"part-0.{fmt}"
            if fmt == "parquet":
                table = pq.read_table(day)
                assert table.schema.field("text").type == pa.string()
            else:
                table = pcsv.read_csv(
                    day,
                    convert_options=pcsv.ConvertOptions(
                        column_types={"text": pa.string()}, strings_can_be_null=True
                    ),
                )
            assert table.column_names == list(COLUMNS)
            recipe = table.filter(pc.equal(table["tag"], RECIPE.path)).sort_by("time")
            texts = recipe.column("text").to_pylist()
            if fmt == "csv":  # DuckDB writes "" for empty text; pyarrow reads it as null
                texts = [t or "" for t in texts]
            assert texts == RECIPES
            assert recipe.column("quality_name").to_pylist()[-1] == "Bad_CommunicationError"
            # NaN (pyarrow's CSV reader takes the text "nan" for null)
            assert all(v is None or math.isnan(v) for v in recipe.column("value").to_pylist())
            numbers = table.filter(pc.not_equal(table["tag"], RECIPE.path))
            assert numbers.num_rows == 3 * PER_TAG // 2
            assert numbers.column("text").null_count == numbers.num_rows
            # the second day has no strings: the column is there, all null
            other = result.dest / "site=lyon/date=2025-11-23" / f"part-0.{fmt}"
            if fmt == "parquet":
                assert pq.read_table(other).column("text").null_count == 3 * PER_TAG // 2

    # DuckDB reads the Parquet lake: the text beside the numbers, an old reader's
    # numeric query unchanged.
    con = duckdb.connect()
    rel = f"read_parquet('{tmp_path}/fast-parquet/**/*.parquet', hive_partitioning = true)"
    rows = con.execute(
        f"SELECT text, quality FROM {rel} WHERE tag = '{RECIPE.path}' ORDER BY time"
    ).fetchall()
    assert rows == [(t, q) for t, q in zip(RECIPES, [0, 0, 0, BAD], strict=True)]
    numeric = con.execute(
        f"SELECT count(*), sum(value) FROM {rel} WHERE text IS NULL AND quality = 0"
    ).fetchone()
    expected = sum(
        float(np.sum(np.arange(PER_TAG - 3, dtype=np.float64) + 1000 * n)) for n in range(4)
    )
    assert numeric == (4 * (PER_TAG - 3), expected)


# -- globs, ranges, re-export ------------------------------------------------------------------


def test_tag_glob_filters(store: DuckDBStore, tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    result = _export(store, dest, tags_glob="*/pump1/*")
    assert result.tags == 3
    got = set(ds.dataset(dest, partitioning="hive").to_table().column("tag").to_pylist())
    assert got == {TAGS[0].path, TAGS[1].path, TAGS[3].path}

    result = _export(store, tmp_path / "b", tags_glob="acme/lyon/packaging/**")
    assert result.tags == 1
    assert result.rows == PER_TAG
    assert _files(tmp_path / "b") == [
        "site=lyon/date=2025-11-22/part-0.parquet",
        "site=lyon/date=2025-11-23/part-0.parquet",
    ]


def test_partial_range_and_empty_days(store: DuckDBStore, tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    # 22:00 on day 1 to 02:00 on day 2
    result = _export(store, dest, start_ns=D0 + 22 * H, end_ns=D0 + DAY + 2 * H)
    assert result.rows == 4 * 4 * 60
    assert len(result.files) == 4
    assert result.partitions == [
        "site=lyon/date=2025-11-22",
        "site=lyon/date=2025-11-23",
        "site=paris/date=2025-11-22",
        "site=paris/date=2025-11-23",
    ]
    # a day without data writes no partition
    empty = _export(store, tmp_path / "empty", start_ns=D0 + 2 * DAY, end_ns=D0 + 3 * DAY)
    assert (empty.rows, empty.files) == (0, [])
    assert _files(tmp_path / "empty") == []


def test_reexport_replaces_days_atomically_and_is_idempotent(
    store: DuckDBStore, tmp_path: Path
) -> None:
    dest = tmp_path / "lake"
    first = _export(store, dest)
    before = {f: f.read_bytes() for f in first.files}

    with pytest.raises(IsthmusError, match="--overwrite"):
        _export(store, dest)

    # a crashed export's leftover temp file is invisible to readers and cleaned up
    leftover = dest / "site=lyon/date=2025-11-22/.part-0.parquet.dead.tmp"
    leftover.write_bytes(b"half a file")
    again = _export(store, dest, overwrite=True)
    assert again.rows == first.rows
    assert not leftover.exists()
    assert {f: f.read_bytes() for f in again.files} == before

    # re-export day 2 only, one tag only, as CSV: day 2 of the glob's site (lyon) is
    # replaced by that tag's rows; day 1 and the other site are kept
    partial = _export(
        store,
        dest,
        start_ns=D0 + DAY,
        tags_glob="acme/lyon/packaging/**",
        fmt="csv",
        overwrite=True,
    )
    assert partial.rows == PER_TAG // 2
    assert [str(p.relative_to(dest)) for p in partial.removed] == [
        "site=lyon/date=2025-11-23/part-0.parquet",
    ]
    assert _files(dest) == [
        "site=lyon/date=2025-11-22/part-0.parquet",
        "site=lyon/date=2025-11-23/part-0.csv",
        "site=paris/date=2025-11-22/part-0.parquet",
        "site=paris/date=2025-11-23/part-0.parquet",
    ]

    # a day whose samples were purged since loses its old files on re-export; files
    # an export did not write are never touched
    (dest / "site=lyon/date=2025-11-23/notes.txt").write_text("mine")
    store.purge_before(D0 + DAY)
    after_purge = _export(store, dest, overwrite=True)
    assert after_purge.rows == 4 * PER_TAG // 2
    assert _files(dest) == [
        "site=lyon/date=2025-11-23/notes.txt",
        "site=lyon/date=2025-11-23/part-0.parquet",
        "site=paris/date=2025-11-23/part-0.parquet",
    ]
    assert not list(dest.rglob(".*"))  # no temp file left behind


def test_bad_inputs(store: DuckDBStore, tmp_path: Path) -> None:
    dest = tmp_path / "lake"
    with pytest.raises(IsthmusError, match="must be before"):
        _export(store, dest, start_ns=D0 + DAY, end_ns=D0 + DAY)
    with pytest.raises(IsthmusError, match="must be before"):
        _export(store, dest, start_ns=D0 + DAY, end_ns=D0)
    with pytest.raises(IsthmusError, match="--format must be one of parquet, csv"):
        _export(store, dest, fmt="xlsx")
    with pytest.raises(IsthmusError, match="matches none of the 4 tags"):
        _export(store, dest, tags_glob="acme/berlin/**")
    with pytest.raises(IsthmusError, match="pattern is empty"):
        _export(store, dest, tags_glob="")
    assert not dest.exists()  # nothing was created by a refused export

    (tmp_path / "afile").write_text("x")
    with pytest.raises(IsthmusError, match="not a directory"):
        _export(store, tmp_path / "afile")


def test_empty_store(tmp_path: Path) -> None:
    with (
        DuckDBStore(StorageConfig(path=":memory:"), tmp_path) as empty,
        pytest.raises(IsthmusError, match="no tags yet"),
    ):
        _export(empty, tmp_path / "lake")


# -- run_export (the CLI entry point) ----------------------------------------------------------


DEMO_TAG = "acme/lyon/packaging/line1/filling/filler/speed"


def _demo_history(data_dir: Path) -> None:
    with DuckDBStore(StorageConfig(path="historian.duckdb"), data_dir) as s:
        ids = s.register_tags([TagMeta(DEMO_TAG, "float64", "")])
        ts = D0 + np.arange(100, dtype=np.int64) * 60 * S
        s.write(Batch.of(np.full(100, ids[DEMO_TAG]), ts, np.arange(100.0), 0))


def test_run_export_with_progress_bar(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _demo_history(data_dir)
    out = io.StringIO()
    result = run_export(
        config=None,
        data_dir=data_dir,
        since="2025-11-22",
        until="2025-11-23T00:00:00Z",
        fmt="parquet",
        tags="*/filler/*",
        dest=tmp_path / "lake",
        overwrite=False,
        console=Console(file=out, width=120),
    )
    assert result.rows == 100
    assert result.partitions == ["site=lyon/date=2025-11-22"]
    assert "100 rows" in out.getvalue()
    assert "100" in result.summary()

    with pytest.raises(IsthmusError, match="--from"):
        run_export(
            config=None,
            data_dir=data_dir,
            since="yesterday",
            until="now",
            fmt="csv",
            tags=None,
            dest=tmp_path / "x",
            overwrite=False,
        )
    with pytest.raises(IsthmusError, match="must be before"):
        run_export(
            config=None,
            data_dir=data_dir,
            since="now",
            until="-1d",
            fmt="csv",
            tags=None,
            dest=tmp_path / "x",
            overwrite=False,
        )
    with pytest.raises(IsthmusError, match="no history"):
        run_export(
            config=None,
            data_dir=tmp_path / "none",
            since="-1d",
            until="now",
            fmt="csv",
            tags=None,
            dest=tmp_path / "x",
            overwrite=False,
        )


def test_run_export_when_a_server_holds_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _demo_history(data_dir)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(data_dir / "historian.duckdb")!r})
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(IsthmusError, match=r"stop it .* export on a schedule"):
            run_export(
                config=None,
                data_dir=data_dir,
                since="2025-11-22",
                until="2025-11-23",
                fmt="parquet",
                tags=None,
                dest=tmp_path / "lake",
                overwrite=False,
                console=Console(file=io.StringIO()),
            )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
