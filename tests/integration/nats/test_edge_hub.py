"""Edge → NATS JetStream → hub → PostgreSQL, in one process over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import numpy as np
import psycopg
import pytest

from isthmus.historian.base import Store
from isthmus.historian.postgres.windows import postgres_store
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.config import StorageConfig, TransportConfig
from isthmus.observe.metrics import Metrics
from isthmus.pipeline.hub import HubConsumer
from isthmus.transport.local import LocalTransport
from isthmus.transport.nats import wire
from isthmus.transport.nats.connect import stream_for, subject_for
from isthmus.transport.nats.ledger import HubLedger
from isthmus.transport.nats.publisher import EdgePublisher
from isthmus.transport.nats.spooler import SpoolWriter
from isthmus.transport.spool import Spool
from tests.integration.nats.nats_server import NatsServer

pytestmark = pytest.mark.integration

N_TAGS = 20
TAGS = {
    100 + i: wire.WireTag(f"acme/{{site}}/a/l/c/e/t{i}", "float64", "bar") for i in range(N_TAGS)
}


@dataclass
class Link:
    site: str
    transport: LocalTransport
    spool: Spool
    metrics: Metrics
    hub_metrics: Metrics
    store: Store
    dsn: str


def batch(k0: int, ticks: int) -> Batch:
    ks = np.repeat(np.arange(k0, k0 + ticks, dtype=np.int64), N_TAGS)
    ids = np.tile(np.array(list(TAGS), dtype=np.int32), ticks)
    return Batch.of(ids, 1_700_000_000_000_000_000 + ks * 1_000_000, ks * 0.5 + ids, 0)


@contextlib.asynccontextmanager
async def running(
    nats_server: NatsServer, pg_dsn: str, tmp_path: Path, site: str
) -> AsyncIterator[Link]:
    cfg = TransportConfig(
        servers=[nats_server.url], flush_interval=0.02, batch_samples=2000, fetch_batch=8
    )
    metrics, hub_metrics = Metrics(), Metrics()
    transport = LocalTransport(metrics)
    spool = Spool(tmp_path / "spool", metrics=metrics)
    tags = {i: wire.WireTag(t.path.format(site=site), t.data_type, t.unit) for i, t in TAGS.items()}
    writer = SpoolWriter(spool, transport, metrics, flush_interval=0.02, batch_samples=2000)
    publisher = EdgePublisher(spool, cfg, site, tags, metrics, SystemClock(), writer.appended)
    store = postgres_store(StorageConfig(type="postgres"), tmp_path, dsn=pg_dsn)
    store.open()
    ledger = HubLedger(pg_dsn, "hub-a")
    ledger.open()
    hub = HubConsumer(cfg, store, ledger, hub_metrics, SystemClock(), name="hub-a")
    tasks = [asyncio.create_task(t) for t in (writer.run(), publisher.run(), hub.run())]
    try:
        yield Link(site, transport, spool, metrics, hub_metrics, store, pg_dsn)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        spool.close()
        store.close()
        ledger.close()


def ledger(dsn: str, site: str) -> list[tuple[int, int, int]]:
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT seq, n_samples, deliveries FROM hub_ledger WHERE site = %s ORDER BY seq",
            [site],
        ).fetchall()
    return [(int(a), int(b), int(c)) for a, b, c in rows]


async def wait_committed(link: Link, records: int, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if len(ledger(link.dsn, link.site)) >= records and link.spool.acked_seq >= records:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(ledger(link.dsn, link.site))} of {records} records committed")


async def test_edge_to_hub_end_to_end(nats_server: NatsServer, pg_dsn: str, tmp_path: Path) -> None:
    async with running(nats_server, pg_dsn, tmp_path, "lyon") as link:
        for i in range(30):
            await link.transport.publish(batch(i * 50, 50))  # 1000 samples each
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        records = link.spool.next_seq - 1
        await wait_committed(link, records)
        rows = ledger(pg_dsn, "lyon")
        assert [r[0] for r in rows] == list(range(1, records + 1))
        assert sum(r[1] for r in rows) == 30_000
        assert link.store.count() == 30_000
        ids = link.store.tags()
        tag0 = ids["acme/lyon/a/l/c/e/t0"]
        got = link.store.raw(tag0, 0, 2**62)
        ks = np.arange(1500)
        np.testing.assert_array_equal(got.ts, 1_700_000_000_000_000_000 + ks * 1_000_000)
        np.testing.assert_array_equal(got.value, ks * 0.5 + 100)
        assert link.hub_metrics.counters["hub.samples_written"] == 30_000
        assert link.metrics.counters["transport.nats.published_samples"] == 30_000


def _forged_version(payload: bytes, version: int) -> bytes:
    body = bytearray(payload[:-4])
    body[4] = version
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


async def test_malformed_and_unknown_version_are_quarantined(
    nats_server: NatsServer, pg_dsn: str, tmp_path: Path
) -> None:
    site = "paris"
    async with running(nats_server, pg_dsn, tmp_path, site) as link:
        await link.transport.publish(batch(0, 10))
        await wait_committed(link, 1)
        table = [wire.WireTag("x/y", "float64", "")]
        good = wire.encode(site, 999, 0, table, Batch.of([0], [1], [1.0], [0]))
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.publish(subject_for(site), b"\x00garbage\xff" * 10, stream=stream_for(site))
            await js.publish(subject_for(site), _forged_version(good, 7), stream=stream_for(site))
        finally:
            await nc.close()
        for i in range(1, 6):
            await link.transport.publish(batch(i * 10, 10))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        records = link.spool.next_seq - 1
        await wait_committed(link, records)
        assert link.store.count() == 60 * N_TAGS
        with psycopg.connect(pg_dsn) as con:
            q = con.execute(
                "SELECT reason, length(payload) FROM hub_quarantine ORDER BY id"
            ).fetchall()
        assert len(q) == 2
        assert "bad magic" in q[0][0]
        assert "unknown wire version 7" in q[1][0]
        assert link.hub_metrics.counters["hub.quarantined_messages"] == 2


async def test_string_samples_cross_spool_nats_and_hub(
    nats_server: NatsServer, pg_dsn: str, tmp_path: Path
) -> None:
    async with running(nats_server, pg_dsn, tmp_path, "nantes") as link:
        ids = np.array([100, 101, 100, 101], dtype=np.int32)
        ts = 1_700_000_000_000_000_000 + np.array([1, 1, 2, 2]) * 1_000_000
        text = [None, "RUNNING", None, "STOPPED: jam at infeed"]
        await link.transport.publish(Batch.of(ids, ts, [1.5, 0, 2.5, 0], 0, text=text))
        await asyncio.sleep(0.2)
        await wait_committed(link, link.spool.next_seq - 1)
        tags = link.store.tags()
        got = link.store.raw(tags["acme/nantes/a/l/c/e/t1"], 0, 2**62)
        assert got.text is not None
        assert got.text.tolist() == ["RUNNING", "STOPPED: jam at infeed"]
        num = link.store.raw(tags["acme/nantes/a/l/c/e/t0"], 0, 2**62)
        assert num.value.tolist() == [1.5, 2.5]
