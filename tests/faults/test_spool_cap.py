"""The spool at its cap while NATS is unreachable: the oldest data is dropped, the
dropped count is exact, one event is raised, and the rest reaches the historian."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import psycopg
import pytest

from isthmus.historian.postgres.windows import postgres_store
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.config import StorageConfig, TransportConfig
from isthmus.observe.metrics import Metrics
from isthmus.pipeline.hub import HubConsumer
from isthmus.transport.local import LocalTransport
from isthmus.transport.nats import wire
from isthmus.transport.nats.ledger import HubLedger
from isthmus.transport.nats.publisher import EdgePublisher
from isthmus.transport.nats.spooler import SpoolWriter
from isthmus.transport.spool import Spool
from tests.integration.nats.nats_server import NatsServer, wait_jetstream_async

N_TAGS = 100
BATCHES = 300
TICKS = 10  # 1,000 samples per batch: 300,000 samples, ~7.2 MB against a 1 MB cap
CAP = 1 << 20


def batch(i: int) -> Batch:
    ks = np.repeat(np.arange(i * TICKS, (i + 1) * TICKS, dtype=np.int64), N_TAGS)
    ids = np.tile(np.arange(N_TAGS, dtype=np.int32), TICKS)
    return Batch.of(ids, 1_700_000_000_000_000_000 + ks * 1_000_000, ks.astype(np.float64), 0)


@pytest.mark.timeout(120)
async def test_spool_cap_drops_exactly_and_once(
    tmp_path: Path, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(tmp_path / "nats")  # not started yet: the hub link is down
    cfg = TransportConfig(servers=[server.url], flush_interval=0.0, batch_samples=1000)
    metrics = Metrics()
    events: list[int] = []
    spool = Spool(tmp_path / "spool", max_bytes=CAP, metrics=metrics, on_overflow=events.append)
    transport = LocalTransport(metrics)
    writer = SpoolWriter(spool, transport, metrics, flush_interval=0.0, batch_samples=1000)
    tags = {i: wire.WireTag(f"acme/cap/a/l/c/e/t{i}", "float64", "") for i in range(N_TAGS)}
    publisher = EdgePublisher(spool, cfg, "cap", tags, metrics, SystemClock(), writer.appended)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(publisher.run())]
    hub_task = None
    store = ledger = None
    try:
        with caplog.at_level(logging.WARNING, logger="isthmus.transport.spool"):
            for i in range(BATCHES):
                await transport.publish(batch(i))
            for _ in range(3000):  # until every batch is appended (one record each)
                if spool.next_seq - 1 >= BATCHES:
                    break
                await asyncio.sleep(0.01)
        emitted = BATCHES * TICKS * N_TAGS
        stats = spool.stats()
        waiting = sum(len(b) for _, b in spool.read(spool.acked_seq, 1 << 20))
        overflow_lines = [r for r in caplog.records if "reached its" in r.getMessage()]
        print(
            f"FAULT spool-cap: samples={emitted} dropped={stats.dropped_samples} "
            f"kept={waiting} events={stats.overflow_events} cap_bytes={CAP}"
        )
        assert stats.dropped_samples > 0
        assert stats.dropped_samples + waiting == emitted  # exact, not an estimate
        assert metrics.counters["spool.dropped_samples"] == stats.dropped_samples
        assert stats.overflow_events == 1 and len(events) == 1 and len(overflow_lines) == 1

        # The hub link comes back: everything kept is delivered, nothing else.
        server.start()
        await wait_jetstream_async([server.url])
        store = postgres_store(StorageConfig(type="postgres"), tmp_path, dsn=dsn)
        store.open()
        ledger = HubLedger(dsn, "hub-cap")
        ledger.open()
        hub = HubConsumer(cfg, store, ledger, Metrics(), SystemClock(), name="hub-cap")
        hub_task = asyncio.create_task(hub.run())
        for _ in range(600):
            if spool.acked_seq == spool.next_seq - 1 and store.count() >= waiting:
                break
            await asyncio.sleep(0.1)
        assert store.count() == waiting == emitted - stats.dropped_samples
        with psycopg.connect(dsn) as con:
            (first_seq,) = con.execute("SELECT min(seq) FROM hub_ledger").fetchone() or (0,)
        assert int(first_seq) > 1  # the oldest records were the ones dropped
    finally:
        for task in [*tasks, *([hub_task] if hub_task else [])]:
            task.cancel()
        await asyncio.gather(*tasks, *([hub_task] if hub_task else []), return_exceptions=True)
        spool.close()
        if store is not None:
            store.close()
        if ledger is not None:
            ledger.close()
        server.stop()
