"""Downsampling tiers of the DuckDB historian: rollup throughput, a 1-year query at 1 h
from the tiers vs from raw samples, and bytes per row of each tier.

In one run on one file:
  * ``maintain()`` over the whole backlog (every closed minute and hour), in samples
    rolled up per second, against a raw DuckDB reference in the same run: one
    ``CREATE TABLE AS SELECT ... GROUP BY tag_id, minute`` over the same samples (what
    the 1-minute tier costs without watermarks, chunks, late data or first/last);
  * the steady state: one more hour of every tag written, then ``maintain()`` again
    (three times: the first run may include DuckDB's automatic checkpoint);
  * ``buckets(tag, 1 year, 1 h)``: from raw samples (before maintenance, the store's own
    raw path) and from the tiers (after), plus the raw DuckDB ``GROUP BY`` of that tag as
    reference; the two store answers are checked equal;
  * compression: each table copied into a fresh database file and checkpointed; file
    bytes per row, and DuckDB's compression per column of ``samples``.

Shape: ``--tags`` tags (4) sampled every ``--step`` seconds (10) for ``--days`` (365):
12.6M samples by default.  DuckDB threads: 1 (``--threads``).

    .venv/bin/python bench/historian_tiers.py
    .venv/bin/python bench/historian_tiers.py --days 30        # a quick run

Results: a table on stdout and ``bench/results/historian_tiers.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 1_000_000_000
HOUR = 3600 * S
DAY = 86_400 * S
T0 = 19_358 * DAY  # 2023-01-01 00:00 UTC
T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float]:
    """The result and the best wall time of ``repeat`` calls."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def history(tags: int, start: int, n: int, step_ns: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    ts = np.repeat(start + np.arange(n, dtype=np.int64) * step_ns, tags)
    tag = np.tile(np.arange(1, tags + 1, dtype=np.int32), n)
    value = np.round(20 + np.cumsum(rng.normal(scale=0.1, size=n * tags)), 2)
    return Batch.of(tag, ts, value, 0)


def table_bytes(con: Any, table: str, workdir: Path) -> dict[str, float]:
    """Bytes per row of ``table`` alone in a fresh, checkpointed database file."""
    target = workdir / f"only_{table}.duckdb"
    con.execute(f"ATTACH '{target}' AS only_{table}")
    con.execute(f"CREATE TABLE only_{table}.t AS SELECT * FROM {table}")
    con.execute(f"DETACH only_{table}")  # detaching checkpoints the file
    rows = int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    size = target.stat().st_size
    empty = workdir / f"empty_{table}.duckdb"
    con.execute(f"ATTACH '{empty}' AS empty_{table}")
    con.execute(f"CREATE TABLE empty_{table}.t AS SELECT * FROM {table} LIMIT 0")
    con.execute(f"DETACH empty_{table}")
    data = size - empty.stat().st_size  # without the file's fixed headers
    return {"rows": rows, "file_bytes": size, "bytes_per_row": round(data / max(rows, 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=4)
    ap.add_argument("--step", type=int, default=10, help="seconds between samples")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="query repetitions (best kept)")
    args = ap.parse_args()
    console = Console()
    n = args.days * 86_400 // args.step
    step_ns = args.step * S
    end = T0 + n * step_ns
    samples = n * args.tags
    config = StorageConfig.model_validate(
        {
            "path": "tiers.duckdb",
            "memory_limit": "1GB",
            "retention": {"default": {"raw": f"{args.days + 30}d"}},
        }
    )
    result: dict[str, Any] = {
        "shape": {"tags": args.tags, "step_s": args.step, "days": args.days, "samples": samples},
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="isthmus-tiers-") as tmp:
        workdir = Path(tmp)
        store = DuckDBStore(config, workdir, threads=args.threads)
        store.open()
        per_day = 86_400 // args.step
        write_s = 0.0
        for day in range(args.days):
            batch = history(args.tags, T0 + day * DAY, per_day, step_ns, seed=day)
            write_s += timed(lambda b=batch: store.write(b))[1]  # type: ignore[misc]
        result["write_samples_per_s"] = round(samples / write_s)
        con = store._write_cursor()
        con.execute("CHECKPOINT")

        # -- a 1-year query at 1 h, from raw samples (no tiers yet) ----------------------
        raw_agg, raw_query_s = timed(lambda: store.buckets(1, T0, end, HOUR), args.repeat)
        ref_sql = (
            f"SELECT ts - ts % {HOUR} AS b, avg(value), min(value), max(value), count(*) "
            "FROM samples WHERE tag_id = 1 AND quality < 2147483648 GROUP BY b ORDER BY b"
        )
        _, ref_query_s = timed(lambda: con.execute(ref_sql).fetchall(), args.repeat)

        # -- the raw reference rollup: one GROUP BY into a table -------------------------
        ref_rollup = (
            f"CREATE OR REPLACE TABLE ref_1m AS SELECT tag_id, ts - ts % {60 * S} AS b, "
            "count(*), sum(value), min(value), max(value) FROM samples "
            "WHERE quality < 2147483648 GROUP BY ALL"
        )
        _, ref_rollup_s = timed(lambda: con.execute(ref_rollup))
        con.execute("DROP TABLE ref_1m")

        # -- maintain over the whole backlog ---------------------------------------------
        report, maintain_s = timed(lambda: store.maintain(end + 20 * S))
        assert report.samples_rolled_up == samples, report
        tier_agg, tier_query_s = timed(lambda: store.buckets(1, T0, end, HOUR), args.repeat)
        assert tier_agg.bucket_ns.tolist() == raw_agg.bucket_ns.tolist()
        assert tier_agg.count.tolist() == raw_agg.count.tolist()
        assert np.array_equal(tier_agg.min, raw_agg.min)
        assert np.array_equal(tier_agg.max, raw_agg.max)
        assert np.allclose(tier_agg.avg, raw_agg.avg, rtol=1e-9)

        # -- steady state: one more hour, one more run (three times) ---------------------
        per_hour = 3600 // args.step
        step_times: list[float] = []
        step_samples = 0
        for h in range(3):
            store.write(history(args.tags, end + h * HOUR, per_hour, step_ns, seed=10**6 + h))
            now = end + (h + 1) * HOUR + 20 * S
            step_report, step_s = timed(lambda now=now: store.maintain(now))  # type: ignore[misc]
            step_times.append(round(step_s, 4))
            step_samples = step_report.samples_rolled_up

        # -- bytes per row -----------------------------------------------------------------
        con.execute("CHECKPOINT")
        sizes = {t: table_bytes(con, t, workdir) for t in ("samples", "tier_1m", "tier_1h")}
        compression = con.execute(
            "SELECT column_name, compression, count(*) AS segments "
            "FROM pragma_storage_info('samples') WHERE segment_type <> 'VALIDITY' "
            "GROUP BY ALL ORDER BY column_name, segments DESC"
        ).fetchall()
        store.close()

    result.update(
        {
            "maintain": {
                "samples_rolled_up": report.samples_rolled_up,
                "rows": report.rows_rolled_up,
                "seconds": round(maintain_s, 3),
                "samples_per_s": round(samples / maintain_s),
                "reference_group_by_s": round(ref_rollup_s, 3),
                "reference_samples_per_s": round(samples / ref_rollup_s),
                "ratio_vs_reference": round(maintain_s / ref_rollup_s, 2),
            },
            "maintain_one_more_hour": {"samples": step_samples, "seconds": step_times},
            "query_1y_1h": {
                "buckets": len(tier_agg),
                "from_raw_s": round(raw_query_s, 4),
                "from_tiers_s": round(tier_query_s, 4),
                "raw_duckdb_group_by_s": round(ref_query_s, 4),
                "speedup_tiers_vs_raw": round(raw_query_s / tier_query_s, 1),
            },
            "bytes_per_row": sizes,
            "bytes_per_raw_sample": {
                t: round(sizes[t]["file_bytes"] / samples, 3)
                for t in ("samples", "tier_1m", "tier_1h")
            },
            "samples_compression": [list(row) for row in compression],
        }
    )
    path = write_result("historian_tiers", result)

    table = Table(title=f"historian tiers: {samples:,} samples, threads={args.threads}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("reference (same run)", justify="right")
    m, q = result["maintain"], result["query_1y_1h"]
    table.add_row(
        "maintain() backlog, samples/s",
        f"{m['samples_per_s']:,} ({m['seconds']} s)",
        f"GROUP BY into a table: {m['reference_samples_per_s']:,} ({m['reference_group_by_s']} s)",
    )
    table.add_row("  ratio maintain / reference", f"{m['ratio_vs_reference']}x", "")
    table.add_row(
        "maintain() after 1 more hour (x3)",
        " / ".join(f"{t * 1e3:.0f}" for t in step_times) + " ms",
        f"{result['maintain_one_more_hour']['samples']:,} samples",
    )
    table.add_row(
        "buckets(1 tag, 1 y, 1 h) from tiers",
        f"{q['from_tiers_s'] * 1e3:.1f} ms",
        f"raw DuckDB GROUP BY: {q['raw_duckdb_group_by_s'] * 1e3:.1f} ms",
    )
    table.add_row(
        "buckets(1 tag, 1 y, 1 h) from raw",
        f"{q['from_raw_s'] * 1e3:.1f} ms",
        f"tiers {q['speedup_tiers_vs_raw']}x faster",
    )
    for name, s in sizes.items():
        table.add_row(
            f"{name}: bytes/row",
            f"{s['bytes_per_row']}",
            f"{s['rows']:,} rows, {result['bytes_per_raw_sample'][name]} B per raw sample",
        )
    table.add_row("write (for scale), samples/s", f"{result['write_samples_per_s']:,}", "")
    console.print(table)
    console.print(f"samples columns compressed as: {result['samples_compression']}")
    console.print(f"written {path}")


if __name__ == "__main__":
    main()
