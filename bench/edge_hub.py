"""Edge → NATS JetStream → hub → PostgreSQL: throughput, latency and edge memory, one run.

Measured in one run on this machine, against servers started for it (a nats-server with
JetStream on a free port, a throw-away PostgreSQL cluster with fsync on):

1. **reference**: a raw nats-py loop in one process — ``publish_async`` of payloads the
   size of an Isthmus message (window 32) into a file stream, and a pull consumer that
   fetches and acks them — in samples/s at ``--batch`` samples per message;
2. **edge→hub→PostgreSQL throughput**: ``--samples`` samples (``--tags`` tags) are put in
   an edge spool while the hub link is down, then the edge publisher (this process)
   drains them to ``--hubs`` hubs (``isthmus run --role hub``, each its own process)
   that commit them to PostgreSQL; samples/s from the publisher's start until the hub
   ledger holds them all;
3. **latency**: live batches (every 20 ms, or one period of every tag) at half the
   target (150,000 samples/s, or half the measured throughput when lower), then at
   ``--low-rate``, through the spool writer (fsync always), the publisher and the hubs;
   per message, hub commit time minus its oldest sample's timestamp (worst sample) and
   newest (best), p50/p99 after a 2 s warm-up;
4. **edge memory while a backlog accumulates**: ``isthmus run --role edge`` with a
   synthetic source of ``--rss-rate`` samples/s and no reachable NATS, its RSS sampled
   every second for ``--rss-s`` seconds while the spool grows on disk.

    .venv/bin/python bench/edge_hub.py                 # ~2 min
    .venv/bin/python bench/edge_hub.py --samples 10000000 --rss-s 600

Results: printed, and ``bench/results/edge_hub.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.faults.harness import edge_config, hub_config, start
from tests.integration.historian.pg_cluster import PgCluster, find_bin_dir
from tests.integration.nats.nats_server import NatsServer, free_port, wait_jetstream

from bench.common import write_result
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.config import TransportConfig
from isthmus.observe.metrics import Metrics
from isthmus.transport.local import LocalTransport
from isthmus.transport.nats import wire
from isthmus.transport.nats.connect import ensure_stream
from isthmus.transport.nats.publisher import EdgePublisher
from isthmus.transport.nats.spooler import SpoolWriter
from isthmus.transport.spool import Spool

TARGET = 300_000
T0 = 1_700_000_000_000_000_000


def tags(n: int, site: str) -> dict[int, wire.WireTag]:
    return {i: wire.WireTag(f"acme/{site}/a/l/c/e{i // 100}/t{i}", "float64", "") for i in range(n)}


def make_batch(k0: int, ticks: int, n_tags: int, t0: int, step_ns: int) -> Batch:
    ks = np.repeat(np.arange(k0, k0 + ticks, dtype=np.int64), n_tags)
    ids = np.tile(np.arange(n_tags, dtype=np.int32), ticks)
    return Batch.of(ids, t0 + ks * step_ns, ks * 0.25, 0)


async def raw_reference(url: str, payload: bytes, messages: int) -> dict[str, float]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=32)
    await js.add_stream(name="RAWREF", subjects=["rawref"])
    sub = await js.pull_subscribe("rawref", durable="rawref", stream="RAWREF")
    got = 0

    async def consume() -> None:
        nonlocal got
        while got < messages:
            try:
                msgs = await sub.fetch(16, timeout=1.0)
            except TimeoutError:
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)

    start_t = time.perf_counter()
    consumer = asyncio.create_task(consume())
    futures = [await js.publish_async("rawref", payload) for _ in range(messages)]
    await asyncio.gather(*futures)
    published = time.perf_counter() - start_t
    await consumer
    elapsed = time.perf_counter() - start_t
    await js.delete_stream("RAWREF")
    await nc.close()
    return {"publish_msgs_per_s": messages / published, "end_to_end_msgs_per_s": messages / elapsed}


def ledger(dsn: str, site: str) -> tuple[int, list[tuple[float, float, float]]]:
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT n_samples, extract(epoch FROM committed_at)::float8, ts_min, ts_max"
            " FROM hub_ledger WHERE site = %s",
            [site],
        ).fetchall()
    total = sum(int(r[0]) for r in rows)
    return total, [(float(r[1]), int(r[2]) / 1e9, int(r[3]) / 1e9) for r in rows]


async def wait_total(dsn: str, site: str, total: int, limit_s: float) -> float:
    start_t = time.perf_counter()
    while time.perf_counter() - start_t < limit_s:
        if (await asyncio.to_thread(ledger, dsn, site))[0] >= total:
            return time.perf_counter() - start_t
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{site}: not all {total} samples committed within {limit_s} s")


async def drain(
    url: str, dsn: str, root: Path, samples: int, batch: int, n_tags: int
) -> dict[str, Any]:
    site = "drain"
    cfg = TransportConfig(servers=[url], batch_samples=batch)
    ticks = batch // n_tags
    spool = Spool(root / "spool-drain", fsync="never", max_bytes=1 << 34)
    for i in range(samples // (ticks * n_tags)):
        spool.append(make_batch(i * ticks, ticks, n_tags, T0, 1_000_000))
    spool.sync()
    spool.close()
    total = (samples // (ticks * n_tags)) * ticks * n_tags
    spool = Spool(root / "spool-drain", fsync="always", max_bytes=1 << 34)
    metrics = Metrics()
    pub = EdgePublisher(spool, cfg, site, tags(n_tags, site), metrics, SystemClock())
    start_t = time.perf_counter()
    cpu0 = psutil.Process().cpu_times()
    task = asyncio.create_task(pub.run())
    elapsed = await wait_total(dsn, site, total, 600)
    cpu1 = psutil.Process().cpu_times()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    spool.close()
    del start_t
    edge_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
    return {
        "samples": total,
        "seconds": elapsed,
        "samples_per_s": total / elapsed,
        "edge_publisher_cpu_cores": edge_cpu,
    }


async def latency(
    url: str,
    dsn: str,
    root: Path,
    rate: float,
    seconds: float,
    batch: int,
    n_tags: int,
    site: str = "live",
) -> dict[str, Any]:
    cfg = TransportConfig(servers=[url], batch_samples=batch)
    metrics = Metrics()
    transport = LocalTransport(metrics)
    spool = Spool(root / f"spool-{site}", fsync="always", max_bytes=1 << 34, metrics=metrics)
    writer = SpoolWriter(spool, transport, metrics, flush_interval=0.05, batch_samples=batch)
    pub = EdgePublisher(
        spool, cfg, site, tags(n_tags, site), metrics, SystemClock(), writer.appended
    )
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(pub.run())]
    interval = max(0.02, n_tags / rate)  # at least one period of every tag per batch
    ticks_per_emit = max(1, round(rate * interval / n_tags))
    step_ns = int(interval * 1e9 / ticks_per_emit)
    emitted = 0
    k = 0
    start_t = time.perf_counter()
    next_t = start_t
    while time.perf_counter() - start_t < seconds:
        now_ns = time.time_ns()
        b = make_batch(0, ticks_per_emit, n_tags, now_ns - ticks_per_emit * step_ns, step_ns)
        await transport.publish(b)
        emitted += len(b)
        k += ticks_per_emit
        next_t += interval
        await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
    actual_rate = emitted / (time.perf_counter() - start_t)
    await wait_total(dsn, site, emitted, 120)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    spool.close()
    _, rows = ledger(dsn, site)
    warm = min(r[2] for r in rows) + 2.0
    worst = np.array([(c - lo) * 1e3 for c, lo, hi in rows if hi >= warm])
    best = np.array([(c - hi) * 1e3 for c, lo, hi in rows if hi >= warm])
    return {
        "target_rate": rate,
        "actual_rate": actual_rate,
        "seconds": seconds,
        "messages": len(worst),
        "oldest_sample_ms": pct(worst),
        "newest_sample_ms": pct(best),
    }


def pct(ms: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float]:
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
    }


def edge_rss(
    root: Path,
    rate: int,
    seconds: float,
    spool_max_bytes: int = 1 << 30,
    progress: Callable[[float, float, float], None] | None = None,
    storage: str = "duckdb",
) -> dict[str, Any]:
    """``isthmus run --role edge`` with no reachable NATS: its RSS and spool size every
    second (``progress(t, rss_mb, spool_mb)`` once a minute)."""
    n_tags = 100
    period_ms = n_tags * 1000 / rate
    dead = f"nats://127.0.0.1:{free_port()}"
    cfg = edge_config(
        root / "rss-edge.yaml",
        "rss",
        [dead],
        n_tags=n_tags,
        period=f"{period_ms}ms",
        storage=storage,
        spool_max_bytes=spool_max_bytes,
    )
    proc = start(cfg, "edge", root / "rss-edge")
    try:
        proc.wait_status("gen", timeout=60)
        ps = psutil.Process(proc.proc.pid)
        samples = []
        start_t = time.monotonic()
        while time.monotonic() - start_t < seconds:
            time.sleep(1.0)
            spool_bytes = sum(f.stat().st_size for f in (root / "rss-edge" / "spool").glob("*.seg"))
            samples.append(
                (
                    round(time.monotonic() - start_t, 1),
                    ps.memory_info().rss / 2**20,
                    spool_bytes / 2**20,
                )
            )
            if progress is not None and len(samples) % 60 == 0:
                progress(*samples[-1])
    finally:
        proc.terminate()
    warm = [s for s in samples if s[0] >= 5.0] or samples
    rss = [s[1] for s in warm]
    return {
        "rate": rate,
        "seconds": seconds,
        "rss_mb_after_5s": round(rss[0], 1),
        "rss_mb_end": round(rss[-1], 1),
        "rss_mb_max": round(max(rss), 1),
        "spool_mb_end": round(warm[-1][2], 1),
        "edge_historian": storage,
        "series": [[t, round(r, 1), round(s, 1)] for t, r, s in samples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", type=int, default=3_000_000)
    ap.add_argument("--batch", type=int, default=20_000, help="samples per message")
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--latency-s", type=float, default=15.0)
    ap.add_argument("--low-rate", type=int, default=20_000, help="second latency point")
    ap.add_argument("--rss-s", type=float, default=30.0)
    ap.add_argument("--rss-rate", type=int, default=50_000)
    ap.add_argument("--hubs", type=int, default=2, help="hub processes sharing the consumer")
    ap.add_argument(
        "--layout", choices=["windows", "rows"], default="windows", help="hub PostgreSQL layout"
    )
    args = ap.parse_args()

    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL server binaries not found")
    with (
        tempfile.TemporaryDirectory(prefix="isthmus-bench-") as tmp,
        PgCluster(bin_dir, durable=True) as pg,
    ):
        root = Path(tmp)
        dsn = pg.create_database("bench")
        nats_server = NatsServer(root / "nats").start()
        hubs = []
        try:
            wait_jetstream([nats_server.url])
            ref_batch = make_batch(0, args.batch // args.tags, args.tags, T0, 1_000_000)
            payload = wire.encode("ref", 1, 0, list(tags(args.tags, "ref").values()), ref_batch)
            ref = asyncio.run(
                raw_reference(nats_server.url, payload, max(50, args.samples // args.batch))
            )
            ref_sps = ref["end_to_end_msgs_per_s"] * args.batch
            print(
                f"raw nats-py publish+consume: {ref['end_to_end_msgs_per_s']:.0f} msg/s "
                f"({len(payload) / 1e3:.0f} kB) = {ref_sps:,.0f} samples/s"
            )

            async def setup_streams() -> None:
                import nats

                nc = await nats.connect(nats_server.url)
                cfg = TransportConfig(servers=[nats_server.url])
                for site in ("drain", "live0", "live1"):
                    await ensure_stream(nc.jetstream(), cfg, site)
                await nc.close()

            asyncio.run(setup_streams())
            hub_cfg = hub_config(root / "hub.yaml", [nats_server.url], layout=args.layout)
            hubs = [start(hub_cfg, "hub", root / f"hub{i}", dsn) for i in range(args.hubs)]
            for hub in hubs:
                hub.wait_status("nats-hub", timeout=60)

            d = asyncio.run(drain(nats_server.url, dsn, root, args.samples, args.batch, args.tags))
            sps = d["samples_per_s"]
            verdict = "met" if sps >= TARGET else "NOT met"
            print(
                f"edge→hub→PostgreSQL ({args.hubs} hub(s), {args.layout} layout): "
                f"{d['samples']:,} samples in "
                f"{d['seconds']:.1f} s = {sps:,.0f} samples/s ({sps / ref_sps:.3f} of raw NATS; "
                f"target {TARGET:,}: {verdict})"
            )
            rates = [min(TARGET / 2, d["samples_per_s"] / 2), args.low_rate]
            lats = []
            for i, rate in enumerate(rates):
                lat = asyncio.run(
                    latency(
                        nats_server.url,
                        dsn,
                        root,
                        rate,
                        args.latency_s,
                        args.batch,
                        args.tags,
                        site=f"live{i}",
                    )
                )
                lats.append(lat)
                old, new = lat["oldest_sample_ms"], lat["newest_sample_ms"]
                print(
                    f"latency at {lat['actual_rate']:,.0f} samples/s: oldest sample of a "
                    f"message p50 {old['p50']:.0f} ms p99 {old['p99']:.0f} ms; newest p50 "
                    f"{new['p50']:.0f} ms p99 {new['p99']:.0f} ms (target p99 < 250 ms)"
                )
        finally:
            for hub in hubs:
                hub.terminate()
            nats_server.stop()
        rss = edge_rss(root, args.rss_rate, args.rss_s)
        print(
            f"edge RSS with NATS down at {rss['rate']:,} samples/s for {rss['seconds']:.0f} s: "
            f"{rss['rss_mb_after_5s']} MB after 5 s, {rss['rss_mb_end']} MB at the end "
            f"(max {rss['rss_mb_max']}), spool {rss['spool_mb_end']} MB on disk"
        )
    path = write_result(
        "edge_hub" if args.layout == "windows" else "edge_hub_rows",
        {
            "reference_raw_nats": {**ref, "samples_per_s": ref_sps, "payload_bytes": len(payload)},
            "edge_hub_pg": {
                **d,
                "ratio_vs_raw_nats": d["samples_per_s"] / ref_sps,
                "target": TARGET,
                "layout": args.layout,
                "hubs": args.hubs,
            },
            "latency": lats,
            "edge_rss_backlog": rss,
            "settings": vars(args),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
