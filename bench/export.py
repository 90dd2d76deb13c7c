"""The data lake export benchmark: ``isthmus export`` vs DuckDB's own raw ``COPY``.

A DuckDB historian file is filled with ``--samples`` samples (5M: 1000 tags x 5000
timestamps one minute apart, i.e. about 3.5 days, so 4 day partitions), then each of
these runs in a fresh child process (so its peak RSS is its own, read from
``getrusage``):

  * ``raw-parquet`` / ``raw-csv``: ``COPY (SELECT * FROM samples) TO 'x.parquet'`` — the
    reference: DuckDB dumping the table as is (integer ns timestamps, tag ids, no join,
    no sort, no partitions, default compression);
  * ``export-parquet`` / ``export-csv``: :func:`isthmus.historian.export.export` on the
    same store: UTC timestamps, UNS paths, quality names, units, sorted by tag and time,
    Hive partitions, zstd, atomic renames and fsync;
  * ``export-1day``: one day only, to show peak memory does not grow with the range;
  * ``export-generic`` (only with ``--only export-generic``): the Parquet export through
    the generic ``Store`` path (``raw()`` per tag per day + pyarrow), the path other
    backends take.  On DuckDB it is slow by nature: each ``raw()`` call scans the day's
    rows of every tag (no index), so 1000 tags cost 1000 scans per day.

    .venv/bin/python bench/export.py                      # 5M samples, < 60 s
    .venv/bin/python bench/export.py --samples 1000000    # a quick run

Results: a table on stdout and ``bench/results/export.json``.  ``ratio`` is export time
over the raw COPY time of the same format (1.0 = as fast as DuckDB dumping the table).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.historian.base import TagMeta
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 1_000_000_000
DAY = 86_400 * S
T0 = 20_414 * DAY  # 2025-11-22T00:00:00Z
STEP = 60 * S
DB = "bench.duckdb"
MODES = ("raw-parquet", "export-parquet", "raw-csv", "export-csv", "export-1day", "export-generic")
DEFAULT_MODES = MODES[:-1]


def fill(work: Path, samples: int, tags: int) -> tuple[int, int]:
    """Write the history; returns (samples, end_ns)."""
    rng = np.random.default_rng(7)
    steps_total = samples // tags
    per_batch = max(1, 100_000 // tags)
    store = DuckDBStore(StorageConfig(path=DB), work)
    with store:
        metas = [
            TagMeta(f"acme/lyon/area{t % 4}/line{t % 8}/cell{t % 16}/eq{t}/value", "float64", "bar")
            for t in range(tags)
        ]
        ids = store.register_tags(metas)
        id_col = np.array([ids[m.path] for m in metas], dtype=np.int32)
        level = np.zeros(tags)
        for first in range(0, steps_total, per_batch):
            steps = min(per_batch, steps_total - first)
            ts = np.repeat(T0 + (first + np.arange(steps, dtype=np.int64)) * STEP, tags)
            values = rng.normal(0.0, 0.1, size=(steps, tags)).cumsum(axis=0) + level
            level = values[-1]
            quality = np.where(rng.random(tags * steps) < 0.01, 0x808C0000, 0)
            store.write(Batch.of(np.tile(id_col, steps), ts, values.reshape(-1), quality))
        return store.count(), T0 + steps_total * STEP


class _Generic:
    """Hides the DuckDBStore type so export() takes the generic Store path."""

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def child(mode: str, work: Path, end_ns: int) -> dict[str, Any]:
    """One measured operation in this (fresh) process."""
    import pyarrow  # noqa: F401  (imported before the baseline: both paths use it)

    from isthmus.historian.export import export

    store = DuckDBStore(StorageConfig(path=DB), work)
    store.open()
    cur = store._reader()
    cur.execute("SELECT count(*) FROM samples").fetchall()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dest = work / f"out-{mode}"
    began = time.perf_counter()
    if mode.startswith("raw-"):
        fmt = mode.removeprefix("raw-")
        target = work / f"raw.{fmt}"
        options = "FORMAT PARQUET" if fmt == "parquet" else "FORMAT CSV, HEADER true"
        rows = int(
            cur.execute(f"COPY (SELECT * FROM samples) TO '{target}' ({options})").fetchall()[0][0]
        )
        size = target.stat().st_size
    else:
        fmt = "csv" if mode == "export-csv" else "parquet"
        src: Any = _Generic(store) if mode == "export-generic" else store
        end = T0 + DAY if mode == "export-1day" else end_ns
        result = export(src, start_ns=T0, end_ns=end, tags_glob=None, fmt=fmt, dest=dest)
        rows, size = result.rows, result.bytes
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store.close()
    return {
        "mode": mode,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "output_mb": round(size / 1e6, 1),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "bytes_per_row": round(size / rows, 1) if rows else 0.0,
        "baseline_rss_mb": round(base_mb),
        "peak_rss_mb": round(peak_mb),
        "peak_rss_growth_mb": round(peak_mb - base_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5_000_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--only", choices=MODES, action="append")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--end", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), args.end)))
        return

    console = Console(width=max(130, Console().width))
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-export-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        samples, end_ns = fill(work, args.samples, args.tags)
        console.print(f"filled {samples:,} samples in {time.perf_counter() - began:.1f} s")
        runs: dict[str, dict[str, Any]] = {}
        for mode in args.only or DEFAULT_MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--work",
                    str(work),
                    "--end",
                    str(end_ns),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    for fmt in ("parquet", "csv"):
        raw, ours = runs.get(f"raw-{fmt}"), runs.get(f"export-{fmt}")
        if raw and ours:
            ours["ratio_vs_raw_copy"] = round(ours["seconds"] / raw["seconds"], 2)
    if "raw-parquet" in runs and "export-generic" in runs:
        generic = runs["export-generic"]
        generic["ratio_vs_raw_copy"] = round(generic["seconds"] / runs["raw-parquet"]["seconds"], 2)

    table = Table(title=f"export of {samples:,} samples ({args.tags} tags, 1/min)")
    for col in (
        "mode",
        "rows",
        "s",
        "rows/s",
        "MB",
        "MB/s",
        "B/row",
        "peak RSS MB",
        "+RSS MB",
        "ratio",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in runs.values():
        table.add_row(
            r["mode"],
            f"{r['rows']:,}",
            f"{r['seconds']:.2f}",
            f"{r['rows_per_s']:,}",
            f"{r['output_mb']}",
            f"{r['mb_per_s']}",
            f"{r['bytes_per_row']}",
            f"{r['peak_rss_mb']}",
            f"{r['peak_rss_growth_mb']}",
            f"{r.get('ratio_vs_raw_copy', '')}",
        )
    console.print(table)
    path = write_result(
        "export",
        {"samples": samples, "tags": args.tags, "step_s": STEP // S, "runs": list(runs.values())},
    )
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
