"""kill -9 of the edge at random moments during ingest: no acknowledged sample lost,
none duplicated in the historian."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    edge_config,
    figures,
    hub_config,
    spool_state,
    start,
    wait_committed,
)
from tests.integration.nats.nats_server import NatsServer, wait_jetstream

ROUNDS = int(os.environ.get("ISTHMUS_FAULT_EDGE_ROUNDS", "20"))
PERIOD_NS = 5_000_000


@pytest.mark.timeout(240)
def test_edge_killed_at_random_moments(tmp_path: Path, dsn: str) -> None:
    rng = random.Random(int(os.environ.get("ISTHMUS_FAULT_SEED", "4")))
    server = NatsServer(tmp_path / "nats").start()
    hub = edge = None
    try:
        wait_jetstream([server.url])
        cfg = edge_config(tmp_path / "edge.yaml", "lyon", [server.url], n_tags=50)
        hub = start(hub_config(tmp_path / "hub.yaml", [server.url]), "hub", tmp_path / "hub", dsn)
        hub.wait_status("nats-hub")
        start_t = time.monotonic()
        during_ingest = 0
        for i in range(ROUNDS):
            edge = start(cfg, "edge", tmp_path / "edge")
            if i % 5 == 4:  # now and then during start-up (spool recovery, first connect)
                time.sleep(rng.uniform(0.0, 1.5))
            else:  # mostly while samples flow: spool appends, publishes, acks in flight
                edge.wait_status("nats-publisher")
                time.sleep(rng.uniform(0.05, 1.5))
                during_ingest += 1
            edge.kill9()
        edge = start(cfg, "edge", tmp_path / "edge")
        edge.wait_status("nats-publisher")
        time.sleep(2.0)
        edge.terminate()
        assert edge.proc.returncode == 0, edge.tail()
        n, acked, _ = spool_state(tmp_path / "edge" / "spool")
        wait_committed(dsn, "lyon", acked)
        f = figures(dsn, "lyon", tmp_path / "edge" / "spool", PERIOD_NS)
        duration = round(time.monotonic() - start_t, 1)
        print(
            f.line("edge-kill-9", rounds=ROUNDS, during_ingest=during_ingest, duration_s=duration)
        )
        assert f.records == n and f.records > during_ingest  # records spooled in kill rounds
        assert f.lost_records == 0 and f.lost_samples == 0
        assert f.duplicates == 0
        assert f.mismatched == 0
    finally:
        for p in (edge, hub):
            if p is not None:
                p.terminate()
        server.stop()
