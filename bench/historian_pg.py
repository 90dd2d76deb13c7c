"""PostgresStore vs a raw binary COPY into a plain table with a primary key, one run.

Workload (the one of ``bench/historian_engines.py``): ``--tags`` tags sampled every
second, written in batches of ``--batch`` samples, 1 % Bad.  Measured, each in its own
fresh database of the same server:

- the store's writes, windows layout (the default: one row per tag and minute per write,
  arrays) and rows layout (direct COPY into the partitioned table when the batch is
  newer than all stored data; ``staged``: COPY into a temp table + INSERT ... ON CONFLICT),
  rewriting one stored batch (the idempotency path), 1-minute buckets of one tag and of
  all tags, bytes/sample (``pg_total_relation_size`` of every partition);
- the reference: binary COPY (encoded by NumPy, one COPY + commit per batch) into a plain
  table with PRIMARY KEY (tag_id, ts), and the same through psycopg's ``write_row``.

The server is ``ISTHMUS_PG_DSN`` (a database named ``postgres`` on it is used to create
throw-away databases) or, by default, a throw-away cluster started from the PostgreSQL
binaries on this machine with default durability settings (fsync on).

    .venv/bin/python bench/historian_pg.py                    # 1M samples, < 90 s
    .venv/bin/python bench/historian_pg.py --samples 10000000

Results: printed, and ``bench/results/historian_pg.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.historian.pg_cluster import PgCluster, find_bin_dir

from bench.common import write_result
from bench.historian_engines import MINUTE, T0, S, make_batches
from isthmus.historian.base import TagMeta
from isthmus.historian.postgres.store import PostgresStore, encode_copy
from isthmus.historian.postgres.windows import PostgresWindowStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

BUCKET_SQL = f"ts - (((ts % {MINUTE}) + {MINUTE}) % {MINUTE})"
ALL_TAGS_SQL = (
    f"SELECT tag_id, {BUCKET_SQL} AS bucket, avg(value), min(value), max(value), count(*) "
    "FROM {table} WHERE quality >= 0 GROUP BY tag_id, bucket"
)
RAW_TABLE = """
CREATE TABLE raw_samples (
    ts bigint NOT NULL, value double precision NOT NULL,
    tag_id integer NOT NULL, quality integer NOT NULL,
    PRIMARY KEY (tag_id, ts)
)
"""


@contextmanager
def server() -> Iterator[Callable[[str], str]]:
    """Yields ``new_database(name) -> dsn`` on the configured or a throw-away server."""
    base = os.environ.get("ISTHMUS_PG_DSN")
    cluster: PgCluster | None = None
    if base is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL binaries found and ISTHMUS_PG_DSN is not set")
        cluster = PgCluster(bin_dir, durable=True).start()
        base = cluster.dsn()
    admin_dsn = base

    def new_database(name: str) -> str:
        with psycopg.connect(admin_dsn, autocommit=True) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return str(psycopg.conninfo.make_conninfo(admin_dsn, dbname=name))

    try:
        yield new_database
    finally:
        if cluster is not None:
            cluster.stop()


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time in ms."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def size_of(con: psycopg.Connection[Any], parent: str) -> int:
    """Bytes of a table with its indexes, summed over its partitions if it has any."""
    row = con.execute(
        "SELECT CASE WHEN c.relkind = 'p' THEN"
        " (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid))"
        " ELSE pg_total_relation_size(c.oid) END"
        " FROM pg_class AS c WHERE c.oid = %s::regclass",
        [parent],
    ).fetchone()
    return int(row[0]) if row else 0


WINDOW_ROLLUP = f"""
SELECT tag_id, ts_first - (((ts_first % {MINUTE}) + {MINUTE}) % {MINUTE}) AS bucket,
       sum(v_sum) / sum(n_ok), min(v_min), max(v_max), sum(n_ok)
FROM sample_windows WHERE n_ok > 0 GROUP BY 1, 2
"""


def bench_store(
    dsn: str, batches: list[Batch], tags: int, direct: bool, layout: str = "rows"
) -> dict[str, Any]:
    samples = sum(len(b) for b in batches)
    store: PostgresStore
    if layout == "windows":
        store = PostgresWindowStore(StorageConfig(type="postgres"), Path("."), dsn=dsn)
    else:
        config = StorageConfig(type="postgres", layout="rows")
        store = PostgresStore(config, Path("."), dsn=dsn, direct_copy=direct)
    store.open()
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        store.write(b)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    middle = batches[len(batches) // 2]
    t = time.perf_counter()
    assert store.write(middle) == 0
    rewrite_s = time.perf_counter() - t
    assert store.count() == samples
    table = store.TABLE
    all_tags = WINDOW_ROLLUP if layout == "windows" else ALL_TAGS_SQL.format(table=table)
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"VACUUM ANALYZE {table}")
        size = size_of(con, table)
        all_tags_ms = timed(lambda: con.execute(all_tags).fetchall())
    one_tag_ms = timed(lambda: store.buckets(tags // 2, 0, 2**62, MINUTE))
    hour = T0 + (int(batches[-1].ts.max() - T0) // 2 // S) * S
    raw_ms = timed(lambda: store.raw(tags // 2, hour, hour + 3600 * S))
    last_ms = timed(lambda: store.last(list(range(1, tags + 1))))
    store.close()
    return {
        "variant": (
            "PostgresWindowStore (windows layout)"
            if layout == "windows"
            else "PostgresStore rows " + ("(direct COPY when newer)" if direct else "(staged)")
        ),
        "layout": layout,
        "samples": samples,
        "write_s": wall,
        "write_cpu_s": cpu,
        "samples_per_s": samples / wall,
        "rewrite_batch_ms": rewrite_s * 1e3,
        "bytes_per_sample": size / samples,
        "buckets_1min_all_tags_ms": all_tags_ms,
        "buckets_1min_one_tag_ms": one_tag_ms,
        "raw_1h_one_tag_ms": raw_ms,
        "last_all_tags_ms": last_ms,
    }


def bench_raw_copy(dsn: str, batches: list[Batch], write_rows: bool) -> dict[str, Any]:
    samples = sum(len(b) for b in batches)
    with psycopg.connect(dsn) as con:
        con.execute(RAW_TABLE)
        con.commit()
        wall, cpu = time.perf_counter(), time.process_time()
        with con.cursor() as cur:
            for b in batches:
                stmt = "COPY raw_samples FROM STDIN (FORMAT BINARY)"
                with cur.copy(stmt) as copy:
                    if write_rows:
                        copy.set_types(["int8", "float8", "int4", "int4"])
                        q = b.quality.view("int32").tolist()
                        cols = (b.ts.tolist(), b.value.tolist(), b.tag_id.tolist(), q)
                        for row in zip(*cols, strict=True):
                            copy.write_row(row)
                    else:
                        copy.write(encode_copy(b))
                con.commit()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        con.autocommit = True
        con.execute("VACUUM ANALYZE raw_samples")
        size = size_of(con, "raw_samples")
        query = ALL_TAGS_SQL.format(table="raw_samples")
        all_tags_ms = timed(lambda: con.execute(query).fetchall())
    return {
        "variant": "raw COPY BINARY, PK (tag_id, ts), "
        + ("psycopg write_row" if write_rows else "NumPy-encoded"),
        "samples": samples,
        "write_s": wall,
        "write_cpu_s": cpu,
        "samples_per_s": samples / wall,
        "bytes_per_sample": size / samples,
        "buckets_1min_all_tags_ms": all_tags_ms,
    }


def long_tag_reads(dsn: str, layout: str, days: int) -> dict[str, Any]:
    """One tag sampled every second for ``days`` days (written an hour at a time): the
    reads of one long history, best of three each."""
    config = StorageConfig(type="postgres", layout=layout)  # type: ignore[arg-type]
    store: PostgresStore = (
        PostgresWindowStore(config, Path("."), dsn=dsn)
        if layout == "windows"
        else PostgresStore(config, Path("."), dsn=dsn)
    )
    store.open()
    (tag,) = store.register_tags([TagMeta("bench/long/tag", "float64", "")]).values()
    day = 86_400
    for d in range(days):
        for h in range(24):
            k = np.arange(3600, dtype=np.int64) + d * day + h * 3600
            store.write(Batch.of(np.full(3600, tag), T0 + k * S, (k % 600).astype(float), 0))
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"VACUUM ANALYZE {store.TABLE}")
    end = T0 + days * day * S
    mid = T0 + days // 2 * day * S
    out = {
        "layout": layout,
        "samples": days * day,
        "raw_all_limit_1000_ms": timed(lambda: store.raw(tag, T0, end, limit=1000)),
        "raw_all_limit_100000_ms": timed(lambda: store.raw(tag, T0, end, limit=100_000)),
        "raw_1h_ms": timed(lambda: store.raw(tag, mid, mid + 3600 * S)),
        "before_1d_lookback_ms": timed(lambda: store.before(tag, mid + 17 * S + 1, day * S)),
        "buckets_all_1h_ms": timed(lambda: store.buckets(tag, T0, end, 3600 * S)),
        "buckets_1d_10s_ms": timed(lambda: store.buckets(tag, mid, mid + day * S, 10 * S)),
    }
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000, help="samples per write")
    parser.add_argument("--skip-write-row", action="store_true")
    parser.add_argument(
        "--long-days", type=int, default=30, help="days of one 1 Hz tag for the reads (0: skip)"
    )
    args = parser.parse_args()
    batches = make_batches(args.samples, args.tags, args.batch)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(), server() as new_database:
        results.append(bench_raw_copy(new_database("bench_raw"), batches, write_rows=False))
        results.append(bench_store(new_database("bench_store"), batches, args.tags, True))
        results.append(bench_store(new_database("bench_staged"), batches, args.tags, False))
        if not args.skip_write_row:
            results.append(bench_raw_copy(new_database("bench_rows"), batches, write_rows=True))
        results.append(
            bench_store(new_database("bench_windows"), batches, args.tags, False, "windows")
        )
        long_reads = [
            long_tag_reads(new_database(f"bench_long_{layout}"), layout, args.long_days)
            for layout in (("windows", "rows") if args.long_days > 0 else ())
        ]
        with psycopg.connect(new_database("bench_version")) as con:
            row = con.execute("SHOW server_version").fetchone()
            version = str(row[0]) if row else "?"
    reference = results[0]["samples_per_s"]
    for r in results:
        r["ratio_vs_raw_copy"] = r["samples_per_s"] / reference
        line = (
            f"{r['variant']:<52} {r['samples_per_s']:>10,.0f} samples/s"
            f"  x{r['ratio_vs_raw_copy']:.2f}  cpu {r['write_cpu_s']:.1f}s"
            f"  {r['bytes_per_sample']:.1f} B/sample"
            f"  1-min all tags {r['buckets_1min_all_tags_ms']:.0f} ms"
        )
        if "rewrite_batch_ms" in r:
            line += (
                f"  one tag {r['buckets_1min_one_tag_ms']:.1f} ms"
                f"  rewrite {r['rewrite_batch_ms']:.0f} ms"
                f"  raw 1h {r['raw_1h_one_tag_ms']:.1f} ms  last {r['last_all_tags_ms']:.1f} ms"
            )
        print(line)
    for r in long_reads:
        print(
            f"one tag, {r['samples']:,} samples ({r['layout']}): raw all limit 1000 "
            f"{r['raw_all_limit_1000_ms']:.1f} ms, limit 100000 {r['raw_all_limit_100000_ms']:.0f}"
            f" ms; raw 1 h {r['raw_1h_ms']:.1f} ms; before {r['before_1d_lookback_ms']:.1f} ms;"
            f" all at 1 h {r['buckets_all_1h_ms']:.0f} ms; 1 d at 10 s "
            f"{r['buckets_1d_10s_ms']:.0f} ms"
        )
    path = write_result(
        "historian_pg",
        {
            "postgres": version,
            "samples": args.samples,
            "tags": args.tags,
            "batch": args.batch,
            "total_s": time.perf_counter() - started,
            "results": results,
            "long_tag_reads": long_reads,
            "notes": [
                "same server, same run, one fresh database per variant",
                "throw-away cluster with default durability unless ISTHMUS_PG_DSN is set",
                "windows layout: one row per tag and minute per write (a write of "
                "--batch samples of --tags tags holds batch/tags samples per row); its "
                "all-tags 1-minute buckets come from the per-window aggregates",
            ],
        },
    )
    print(f"total {time.perf_counter() - started:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
