"""The historian benchmark: 10 million samples through ``DuckDBStore``.

Targets (from the issue):
  * batch write of 10M samples at >= 1M samples/s on one core (DuckDB threads=1), and
    within 2x of a raw insert into the same engine in the same run
    (``INSERT INTO t SELECT * FROM <arrow table>``, no idempotency);
  * a 1-minute-bucket aggregate over those 10M samples in under 1 s: avg/min/max/count
    per tag per minute over the whole table (the single-tag ``buckets()`` call is
    reported too).

Shape: ``--tags`` tags (1000) x ``samples / tags`` timestamps 1 s apart, written in
batches of ``--batch`` samples (100k = 100 timestamps of every tag), in time order, to
a file.  Write figures are the best of ``--repeat`` runs (2).  Each figure is measured
with threads=1 (the "one core" figure) and with DuckDB's default thread count.  CPU time
(process_time, all threads) over wall time shows how many cores were busy.

    .venv/bin/python bench/historian.py                       # 10M samples
    .venv/bin/python bench/historian.py --samples 1000000     # a quick run

Results: a table on stdout and ``bench/results/historian.json``.  A missed target is
printed as MISSED and recorded as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 1_000_000_000
MINUTE = 60 * S
T0 = 28_333_333 * MINUTE
ALL_TAGS_SQL = (
    f"SELECT tag_id, ts - (((ts % {MINUTE}) + {MINUTE}) % {MINUTE}) AS bucket, "
    "avg(value), min(value), max(value), count(*) "
    "FROM samples WHERE quality < 2147483648 GROUP BY tag_id, bucket"
)


@dataclass
class Timing:
    wall_s: float
    cpu_s: float

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


def measure(fn: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def best(fn: Callable[[], object], repeat: int = 3) -> Timing:
    return min((measure(fn) for _ in range(repeat)), key=lambda t: t.wall_s)


def make_batches(samples: int, tags: int, per_batch: int, seed: int = 11) -> list[Batch]:
    rng = np.random.default_rng(seed)
    steps = max(1, per_batch // tags)
    tag_col = np.tile(np.arange(1, tags + 1, dtype=np.int32), steps)
    batches = []
    level = np.zeros(tags)
    for i in range(samples // (tags * steps)):
        ts = np.repeat(T0 + (i * steps + np.arange(steps, dtype=np.int64)) * S, tags)
        values = rng.normal(0.0, 0.1, size=(steps, tags)).cumsum(axis=0) + level
        level = values[-1]
        quality = np.where(rng.random(tags * steps) < 0.01, 0x808C0000, 0).astype(np.uint32)
        batches.append(Batch(tag_col, ts, values.reshape(-1), quality))
    return batches


@dataclass
class Run:
    threads: str
    samples: int
    raw_insert_s: float
    raw_insert_cores: float
    store_write_s: float
    store_write_cores: float
    store_antijoin_write_s: float
    rewrite_batch_ms: float
    agg_all_tags_s: float
    agg_all_tags_cores: float
    agg_all_tags_rows: int
    agg_one_tag_ms: float
    last_all_tags_ms: float
    raw_1h_ms: float
    file_bytes_per_sample: float

    @property
    def raw_rate(self) -> float:
        return self.samples / self.raw_insert_s

    @property
    def store_rate(self) -> float:
        return self.samples / self.store_write_s

    @property
    def ratio(self) -> float:
        return self.store_write_s / self.raw_insert_s


def raw_insert(batches: list[Batch], path: Path, threads: int | None) -> Timing:
    config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": "256MB"}
    if threads is not None:
        config["threads"] = threads
    con = duckdb.connect(str(path), config=config)
    con.execute(
        "CREATE TABLE samples (tag_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
        "value DOUBLE NOT NULL, quality UINTEGER NOT NULL)"
    )

    def run() -> None:
        for b in batches:
            arrow_batch = pa.table(
                {"tag_id": b.tag_id, "ts": b.ts, "value": b.value, "quality": b.quality}
            )
            con.register("_batch", arrow_batch)
            con.execute("INSERT INTO samples SELECT * FROM _batch")
            con.unregister("_batch")

    timing = measure(run)
    con.close()
    return timing


def store_write(
    batches: list[Batch], work: Path, name: str, threads: int | None, fast_path: bool
) -> tuple[DuckDBStore, Timing]:
    store = DuckDBStore(StorageConfig(path=name), work, threads=threads, append_fast_path=fast_path)
    store.open()

    def run() -> None:
        for b in batches:
            store.write(b)

    return store, measure(run)


def one_run(batches: list[Batch], work: Path, threads: int | None, tags: int, repeat: int) -> Run:
    samples = sum(len(b) for b in batches)
    label = "default" if threads is None else str(threads)
    # Best of ``repeat`` for each write path, alternated so machine noise hits both alike.
    raws: list[Timing] = []
    writes: list[Timing] = []
    antijoins: list[Timing] = []
    store: DuckDBStore | None = None
    for rep in range(repeat):
        raws.append(raw_insert(batches, work / f"raw-{label}-{rep}.duckdb", threads))
        aj_store, aj = store_write(batches, work, f"aj-{label}-{rep}.duckdb", threads, False)
        aj_store.close()
        antijoins.append(aj)
        if store is not None:
            store.close()
        store, write = store_write(batches, work, f"store-{label}-{rep}.duckdb", threads, True)
        writes.append(write)
    assert store is not None
    raw = min(raws, key=lambda t: t.wall_s)
    write = min(writes, key=lambda t: t.wall_s)
    antijoin = min(antijoins, key=lambda t: t.wall_s)
    assert store.count() == samples
    middle = batches[len(batches) // 2]
    rewrite = measure(lambda: store.write(middle))
    one_tag = best(lambda: store.buckets(tags // 2, 0, 2**62, MINUTE))
    ids = list(range(1, tags + 1))
    last = best(lambda: store.last(ids))
    hour = T0 + (int(batches[-1].ts[-1] - T0) // 2 // S) * S
    raw_1h = best(lambda: store.raw(tags // 2, hour, hour + 3600 * S))
    cur = store._reader()
    rows: list[int] = []
    agg = best(lambda: rows.append(len(cur.execute(ALL_TAGS_SQL).fetchnumpy()["bucket"])))
    store.close()
    assert store.path is not None
    return Run(
        threads=label,
        samples=samples,
        raw_insert_s=raw.wall_s,
        raw_insert_cores=raw.cores,
        store_write_s=write.wall_s,
        store_write_cores=write.cores,
        store_antijoin_write_s=antijoin.wall_s,
        rewrite_batch_ms=rewrite.wall_s * 1e3,
        agg_all_tags_s=agg.wall_s,
        agg_all_tags_cores=agg.cores,
        agg_all_tags_rows=rows[-1],
        agg_one_tag_ms=one_tag.wall_s * 1e3,
        last_all_tags_ms=last.wall_s * 1e3,
        raw_1h_ms=raw_1h.wall_s * 1e3,
        file_bytes_per_sample=store.path.stat().st_size / samples,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="best of N write runs")
    args = parser.parse_args()
    console = Console(width=160)

    batches = make_batches(args.samples, args.tags, args.batch)
    samples = sum(len(b) for b in batches)
    console.print(
        f"{samples:,} samples = {args.tags} tags x {samples // args.tags:,} timestamps (1 s), "
        f"{len(batches)} batches of {len(batches[0]):,}; DuckDB {duckdb.__version__}, "
        f"{os.cpu_count()} CPUs, memory_limit 256MB, load average {os.getloadavg()[0]:.1f}"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp:
        for threads in (1, None):
            with console.status(f"threads={threads or 'default'}..."):
                runs.append(one_run(batches, Path(tmp), threads, args.tags, args.repeat))

    table = Table(title=f"DuckDBStore, {samples:,} samples")
    table.add_column("measure")
    for r in runs:
        table.add_column(f"threads={r.threads}", justify="right")
    rows: list[tuple[str, Callable[[Run], str]]] = [
        ("raw insert samples/s", lambda r: f"{r.raw_rate:,.0f}"),
        ("raw insert cores (CPU/wall)", lambda r: f"{r.raw_insert_cores:.2f}"),
        ("store.write samples/s", lambda r: f"{r.store_rate:,.0f}"),
        ("store.write cores (CPU/wall)", lambda r: f"{r.store_write_cores:.2f}"),
        ("store.write / raw insert time", lambda r: f"{r.ratio:.2f}x"),
        (
            "store.write, anti-join forced, samples/s",
            lambda r: f"{r.samples / r.store_antijoin_write_s:,.0f}",
        ),
        ("re-write one stored batch ms", lambda r: f"{r.rewrite_batch_ms:.1f}"),
        ("1-min buckets, all tags (s)", lambda r: f"{r.agg_all_tags_s:.3f}"),
        ("  rows / cores", lambda r: f"{r.agg_all_tags_rows:,} / {r.agg_all_tags_cores:.2f}"),
        ("1-min buckets, one tag (ms)", lambda r: f"{r.agg_one_tag_ms:.1f}"),
        ("last, all tags (ms)", lambda r: f"{r.last_all_tags_ms:.1f}"),
        ("raw, one tag, 1 h (ms)", lambda r: f"{r.raw_1h_ms:.1f}"),
        ("file bytes/sample", lambda r: f"{r.file_bytes_per_sample:.1f}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in runs))
    console.print(table)

    one = runs[0]
    targets = {
        "write >= 1M samples/s on one core": one.store_rate >= 1_000_000,
        "write within 2x of raw insert (one core)": one.ratio <= 2.0,
        "1-min aggregate over all samples < 1 s (one core)": one.agg_all_tags_s < 1.0,
        "1-min aggregate over all samples < 1 s (default threads)": runs[-1].agg_all_tags_s < 1.0,
    }
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) - 0.5:
        console.print(
            f"[yellow]warning: load average {load:.1f} on {os.cpu_count()} CPUs: other "
            "processes shared the cores during this run; figures are pessimistic[/]"
        )
    if samples < 10_000_000:
        console.print(f"[yellow]note: {samples:,} samples, the targets are for 10,000,000[/]")
    for name, met in targets.items():
        console.print(f"{'[green]met' if met else '[red]MISSED'}[/]  {name}")

    report = {
        "command": f"bench/historian.py --samples {args.samples} --tags {args.tags} "
        f"--batch {args.batch} --repeat {args.repeat}",
        "versions": {
            "duckdb": duckdb.__version__,
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
        },
        "load_average_at_end": os.getloadavg(),
        "samples": samples,
        "tags": args.tags,
        "batch": len(batches[0]),
        "runs": [
            asdict(r) | {"raw_rate": r.raw_rate, "store_rate": r.store_rate, "ratio": r.ratio}
            for r in runs
        ],
        "targets": targets,
    }
    console.print(f"written {write_result('historian', report)}")


if __name__ == "__main__":
    main()
