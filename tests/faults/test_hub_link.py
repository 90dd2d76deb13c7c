"""Hub killed, NATS stopped, a NATS node killed, PostgreSQL restarted: lost = 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from tests.faults.conftest import OUTAGE_S
from tests.faults.harness import (
    Scenario,
    commits_by_hub,
    finish,
    ledger_stats,
    live_after_backlog,
    restart_postgres,
    spool_acked,
    start_scenario,
    stop_all,
    wait_commits,
)
from tests.integration.historian.pg_cluster import PgCluster
from tests.integration.nats.nats_server import NatsServer, start_cluster, wait_jetstream

PERIOD_NS = 5_000_000  # 50 tags every 5 ms: 10,000 samples/s


def stream_leader(urls: list[str], stream: str) -> str | None:
    async def ask() -> str | None:
        nc = await nats.connect(servers=urls)
        try:
            info = await nc.jetstream().stream_info(stream)
            return info.cluster.leader if info.cluster is not None else None
        finally:
            await nc.close()

    return asyncio.run(ask())


def check(fig_line: str, lost: int, duplicates: int, mismatched: int, samples: int) -> None:
    print(fig_line)
    assert samples > 0
    assert lost == 0
    assert duplicates == 0
    assert mismatched == 0


@pytest.mark.timeout(120)
def test_hub_killed_second_hub_takes_over(tmp_path: Path, dsn: str) -> None:
    server = NatsServer(tmp_path / "nats").start()
    sc: Scenario | None = None
    try:
        wait_jetstream([server.url])
        sc = start_scenario(tmp_path, dsn, [server.url], hubs=2, ack_wait="2s")
        t0 = time.monotonic()
        time.sleep(2.0)
        wait_commits(dsn, "lyon", 10)  # hubs find a new site's stream within seconds
        # Kill the hub doing the work (JetStream may hand all of it to one of them).
        counts = commits_by_hub(dsn, "lyon", 1 << 62)
        victim = max(sc.hubs, key=lambda h: counts.get(f"hub-{h.proc.pid}", (0, 0))[0])
        killed = f"hub-{victim.proc.pid}"
        victim.kill9()
        killed_at = ledger_stats(dsn, "lyon")["max_commit_id"]
        time.sleep(4.0)
        f = finish(sc, PERIOD_NS)
        line = f.line("hub-kill-9", hubs=2, duration_s=round(time.monotonic() - t0, 1))
        by_hub = commits_by_hub(dsn, "lyon", killed_at)
        assert by_hub.get(killed, (0, 0))[0] > 0, by_hub  # it was working when killed
        assert sum(after for name, (_, after) in by_hub.items() if name != killed) > 0
        assert by_hub.get(killed, (0, 0))[1] == 0
        check(line, f.lost_records + f.lost_samples, f.duplicates, f.mismatched, f.samples)
        assert f.pending == 0
    finally:
        stop_all(sc)
        server.stop()


@pytest.mark.timeout(120 + 3 * OUTAGE_S)
def test_nats_outage_backlog_replayed_in_order(tmp_path: Path, dsn: str) -> None:
    server = NatsServer(tmp_path / "nats").start()
    sc: Scenario | None = None
    try:
        wait_jetstream([server.url])
        sc = start_scenario(tmp_path, dsn, [server.url])
        t0 = time.monotonic()
        wait_commits(dsn, "lyon", 10)  # flowing end to end before the cut
        server.stop()
        time.sleep(OUTAGE_S)
        server.start()
        restored = time.monotonic()
        drained_s = None
        while time.monotonic() - restored < 60 + 3 * OUTAGE_S:
            if live_after_backlog(dsn, "lyon"):
                drained_s = time.monotonic() - restored
                break
            time.sleep(0.1)
        assert drained_s is not None, "the backlog was not drained"
        time.sleep(2.0)  # live data keeps flowing after the backlog
        f = finish(sc, PERIOD_NS)
        stats = ledger_stats(dsn, "lyon")
        line = f.line(
            "nats-outage",
            outage_s=OUTAGE_S,
            backlog_samples=stats["historical_samples"],
            drain_s=round(drained_s, 2),
            duration_s=round(time.monotonic() - t0, 1),
        )
        check(line, f.lost_records + f.lost_samples, f.duplicates, f.mismatched, f.samples)
        # The edge kept acquiring during the outage: about OUTAGE_S of samples replayed.
        assert stats["historical_samples"] >= 10_000 * OUTAGE_S * 0.5
        assert f.order_violations == 0
        assert f.pending == 0
    finally:
        stop_all(sc)
        server.stop()


@pytest.mark.timeout(150)
def test_one_node_of_three_killed(tmp_path: Path, dsn: str) -> None:
    servers = start_cluster(tmp_path / "nats", 3)
    sc: Scenario | None = None
    try:
        urls = [s.url for s in servers]
        wait_jetstream(urls, timeout=40, replicas=3)
        sc = start_scenario(tmp_path, dsn, urls, replicas=3)
        t0 = time.monotonic()
        wait_commits(dsn, "lyon", 10)
        leader = stream_leader(urls, "ISTHMUS_LYON")  # the worst node to lose
        victim = next((s for s in servers if s.name == leader), servers[0])
        victim.kill()
        killed_at = time.monotonic()
        acked_before = spool_acked(sc.spool_dir)
        resumed_s = None
        while time.monotonic() - killed_at < 60:  # the cluster may elect new leaders
            if spool_acked(sc.spool_dir) >= acked_before + 20:  # JetStream stores again
                resumed_s = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(0.2)
        assert resumed_s is not None, "delivery did not resume after the node was killed"
        time.sleep(3.0)
        f = finish(sc, PERIOD_NS)
        line = f.line(
            "nats-node-kill-9",
            killed=f"{victim.name}(leader={leader})",
            resumed_after_s=resumed_s,
            nodes=3,
            replicas=3,
            duration_s=round(time.monotonic() - t0, 1),
        )
        check(line, f.lost_records + f.lost_samples, f.duplicates, f.mismatched, f.samples)
        assert f.pending == 0
    finally:
        stop_all(sc)
        for s in servers:
            s.kill()


@pytest.mark.timeout(120)
def test_postgres_restarted(tmp_path: Path, dsn: str, pg: PgCluster) -> None:
    server = NatsServer(tmp_path / "nats").start()
    sc: Scenario | None = None
    try:
        wait_jetstream([server.url])
        sc = start_scenario(tmp_path, dsn, [server.url])
        t0 = time.monotonic()
        wait_commits(dsn, "lyon", 10)
        restart_postgres(pg, down_s=3.0)
        time.sleep(4.0)
        f = finish(sc, PERIOD_NS)
        line = f.line("postgres-restart", down_s=3.0, duration_s=round(time.monotonic() - t0, 1))
        check(line, f.lost_records + f.lost_samples, f.duplicates, f.mismatched, f.samples)
        assert f.order_violations == 0
    finally:
        stop_all(sc)
        server.stop()
