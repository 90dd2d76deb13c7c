"""SQLite vs DuckDB for the historian workload, measured in one run.

Workload: ``--tags`` tags sampled every second, written in batches of ``--batch`` samples
(default 1000 tags x 10 timestamps), then: a raw range read of one tag over one hour,
the last value of every tag, and 1-minute avg/min/max/count buckets over all the data of
one tag and of all tags.  Every variant is idempotent on (tag, ts) except the "raw
append" reference.

    .venv/bin/python bench/historian_engines.py                      # 2M samples, ~2 min
    .venv/bin/python bench/historian_engines.py --samples 10000000   # the full size

Results: a table on stdout and ``bench/results/historian_engines.json``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from isthmus.historian.base import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.historian.sqlite.store import SQLiteStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 1_000_000_000
MINUTE = 60 * S
T0 = 28_333_333 * MINUTE
BUCKET_SQL = f"ts - (((ts % {MINUTE}) + {MINUTE}) % {MINUTE})"
ALL_TAGS_SQL = (
    f"SELECT tag_id, {BUCKET_SQL} AS bucket, avg(value), min(value), max(value), count(*) "
    "FROM samples WHERE quality < 2147483648 GROUP BY tag_id, bucket"
)


@dataclass
class Result:
    engine: str
    samples: int
    write_s: float
    write_cpu_s: float
    samples_per_s: float
    bytes_per_sample: float | None = None
    rewrite_s: float | None = None
    """Writing one already-stored batch again (the idempotency path)."""
    raw_1h_ms: float | None = None
    last_all_tags_ms: float | None = None
    buckets_one_tag_ms: float | None = None
    buckets_all_tags_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def make_batches(samples: int, tags: int, per_batch: int, seed: int = 7) -> list[Batch]:
    """Batches of ``per_batch`` samples: all tags at consecutive 1 s timestamps."""
    rng = np.random.default_rng(seed)
    steps = max(1, per_batch // tags)
    tag_col = np.tile(np.arange(1, tags + 1, dtype=np.int32), steps)
    walk = np.zeros(tags)
    batches = []
    for i in range(samples // (tags * steps)):
        ts = np.repeat(T0 + (i * steps + np.arange(steps, dtype=np.int64)) * S, tags)
        steps_values = rng.normal(0.0, 0.1, size=(steps, tags)).cumsum(axis=0) + walk
        walk = steps_values[-1]
        quality = np.where(rng.random(tags * steps) < 0.01, 0x80000000, 0).astype(np.uint32)
        batches.append(Batch(tag_col, ts, steps_values.reshape(-1), quality))
    return batches


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time in ms over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def write_all(write: Callable[[Batch], object], batches: list[Batch]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        write(b)
    return time.perf_counter() - wall, time.process_time() - cpu


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def bench_store(
    name: str, store: Store, path: Path, batches: list[Batch], tags: int
) -> Iterator[Result]:
    samples = sum(len(b) for b in batches)
    store.open()
    wall, cpu = write_all(store.write, batches)
    res = Result(name, samples, wall, cpu, samples / wall)
    middle = batches[len(batches) // 2]
    t = time.perf_counter()
    assert store.write(middle) == 0
    res.rewrite_s = time.perf_counter() - t
    hour_start = T0 + (int(batches[-1].ts.max() - T0) // 2 // S) * S
    res.raw_1h_ms = timed(lambda: store.raw(tags // 2, hour_start, hour_start + 3600 * S))
    ids = list(range(1, tags + 1))
    res.last_all_tags_ms = timed(lambda: store.last(ids))
    res.buckets_one_tag_ms = timed(lambda: store.buckets(tags // 2, 0, 2**62, MINUTE))
    assert store.count() == samples
    store.close()
    res.bytes_per_sample = file_size(path) / samples
    yield res


def bench_sqlite(batches: list[Batch], tags: int, work: Path) -> Result:
    path = work / "sqlite.db"
    store = SQLiteStore(StorageConfig(type="sqlite", path=str(path)), work)
    (res,) = bench_store(
        "sqlite store (WITHOUT ROWID PK, INSERT OR IGNORE)", store, path, batches, tags
    )
    con = sqlite3.connect(path)
    res.buckets_all_tags_ms = timed(lambda: con.execute(ALL_TAGS_SQL).fetchall(), repeat=1)
    con.close()
    return res


def bench_duckdb_store(
    batches: list[Batch], tags: int, work: Path, threads: int, fast_path: bool
) -> Result:
    path = work / f"duck-{threads}-{fast_path}.duckdb"
    store = DuckDBStore(
        StorageConfig(path=str(path), memory_limit="1GB"),
        work,
        threads=threads,
        append_fast_path=fast_path,
    )
    label = "duckdb store" if fast_path else "duckdb store, anti-join forced"
    (res,) = bench_store(label, store, path, batches, tags)
    con = duckdb.connect(str(path), config={"threads": threads})
    res.buckets_all_tags_ms = timed(lambda: con.execute(ALL_TAGS_SQL).fetchall())
    con.close()
    return res


def bench_duckdb_plain(batches: list[Batch], work: Path, threads: int, primary_key: bool) -> Result:
    path = work / f"duck-plain-{primary_key}.duckdb"
    con = duckdb.connect(str(path), config={"threads": threads})
    key = ", PRIMARY KEY (tag_id, ts)" if primary_key else ""
    con.execute(
        "CREATE TABLE samples (tag_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
        f"value DOUBLE NOT NULL, quality UINTEGER NOT NULL{key})"
    )
    verb = "INSERT OR IGNORE" if primary_key else "INSERT"

    def write(b: Batch) -> None:
        arrow_batch = pa.table(
            {"tag_id": b.tag_id, "ts": b.ts, "value": b.value, "quality": b.quality}
        )
        con.register("_batch", arrow_batch)
        con.execute(f"{verb} INTO samples SELECT * FROM _batch")
        con.unregister("_batch")

    wall, cpu = write_all(write, batches)
    samples = sum(len(b) for b in batches)
    name = "duckdb PK + INSERT OR IGNORE" if primary_key else "duckdb raw append (not idempotent)"
    res = Result(name, samples, wall, cpu, samples / wall)
    res.buckets_all_tags_ms = timed(lambda: con.execute(ALL_TAGS_SQL).fetchall())
    con.close()
    res.bytes_per_sample = file_size(path) / samples
    return res


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000, help="samples per write")
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    console = Console(width=200)
    batches = make_batches(args.samples, args.tags, args.batch)
    samples = sum(len(b) for b in batches)
    console.print(
        f"{samples:,} samples, {args.tags} tags, {len(batches)} batches of {len(batches[0]):,}, "
        f"DuckDB threads={args.threads}, load average {os.getloadavg()[0]:.1f}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[], Result]]] = [
            ("duckdb raw", lambda: bench_duckdb_plain(batches, work, args.threads, False)),
            (
                "duckdb store",
                lambda: bench_duckdb_store(batches, args.tags, work, args.threads, True),
            ),
            (
                "duckdb store anti-join",
                lambda: bench_duckdb_store(batches, args.tags, work, args.threads, False),
            ),
            ("duckdb pk", lambda: bench_duckdb_plain(batches, work, args.threads, True)),
        ]
        if not args.skip_sqlite:
            steps.append(("sqlite", lambda: bench_sqlite(batches, args.tags, work)))
        for label, step in steps:
            with console.status(f"{label}..."):
                results.append(step())
            r = results[-1]
            console.print(f"  {r.engine}: {r.samples_per_s:,.0f} samples/s")

    table = Table(title=f"Historian engines, {samples:,} samples, batches of {len(batches[0]):,}")
    for col in (
        "engine",
        "write samples/s",
        "CPU/wall",
        "B/sample",
        "re-write batch ms",
        "raw 1 h ms",
        "last (all tags) ms",
        "1-min buckets 1 tag ms",
        "1-min buckets all tags ms",
    ):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in results:
        table.add_row(
            r.engine,
            f"{r.samples_per_s:,.0f}",
            f"{r.write_cpu_s / r.write_s:.2f}",
            fmt(r.bytes_per_sample),
            fmt(None if r.rewrite_s is None else r.rewrite_s * 1e3),
            fmt(r.raw_1h_ms),
            fmt(r.last_all_tags_ms),
            fmt(r.buckets_one_tag_ms),
            fmt(r.buckets_all_tags_ms),
        )
    console.print(table)

    report = {
        "command": "bench/historian_engines.py "
        + f"--samples {args.samples} --tags {args.tags} --batch {args.batch} "
        + f"--threads {args.threads}",
        "versions": {
            "duckdb": duckdb.__version__,
            "sqlite": sqlite3.sqlite_version,
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
        },
        "load_average_at_end": os.getloadavg(),
        "samples": samples,
        "tags": args.tags,
        "batch": len(batches[0]),
        "results": [asdict(r) for r in results],
    }
    console.print(f"written {write_result('historian_engines', report)}")


if __name__ == "__main__":
    main()
