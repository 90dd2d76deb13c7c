"""Real processes for the fault tests: ``isthmus run --role edge|hub`` on generated
configs, the spool and the hub ledger read back to count lost and duplicate samples.

How the figures are computed (see ``docs/decisions/0006-edge-hub.md``):

* every record the edge's spool ever accepted has a seq in ``1..N`` (``N = next_seq - 1``
  once the last edge has stopped; seqs are never reused, a kill -9 cannot lose a record
  whose append returned);
* ``lost`` = seqs in ``1..N`` neither committed by a hub (``hub_ledger``) nor still
  waiting in the spool after its acknowledged position, plus samples of committed
  records missing from ``samples``;
* ``duplicates`` = rows of ``samples`` beyond one per ``(tag, ts)`` (the primary key
  makes it 0 by construction; the figure shows it was checked) and ``redelivered`` =
  records committed more than once (absorbed by the idempotent writes);
* ``mismatched`` = rows whose value is not the synthetic source's ``value_of(tag, k)``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from isthmus.connectors.synthetic.source import VALUE_MODULO
from isthmus.transport.spool import Spool
from tests.integration.historian.pg_cluster import PgCluster
from tests.support import free_port

ENTERPRISE = "acme"
ADMIN_PASSWORD = "Fault-Test-Secret-4711"


def tag_paths(n_tags: int) -> list[str]:
    return [f"load/line1/cell1/gen/t{i}" for i in range(n_tags)]


def edge_config(
    path: Path,
    site: str,
    nats_urls: list[str],
    *,
    n_tags: int = 50,
    period: str = "5ms",
    spool_max_bytes: int = 1 << 30,
    replicas: int = 1,
    storage: str = "sqlite",
) -> Path:
    tags = "\n".join(f"      - path: {p}" for p in tag_paths(n_tags))
    servers = ", ".join(nats_urls)
    path.write_text(
        f"""version: 1
enterprise: {ENTERPRISE}
site: {site}
hierarchy:
  load:
    line1:
      cell1: [gen]
sources:
  - name: gen
    type: synthetic
    period: {period}
    emit_interval: 50ms
    tags:
{tags}
storage:
  type: {storage}
  path: edge.{storage}
transport:
  servers: [{servers}]
  flush_interval: 50ms
  ack_timeout: 3s
  stream:
    replicas: {replicas}
  spool:
    max_bytes: {spool_max_bytes}
    fsync: always
"""
    )
    return path


def hub_config(
    path: Path, nats_urls: list[str], *, ack_wait: str = "3s", layout: str = "windows"
) -> Path:
    servers = ", ".join(nats_urls)
    path.write_text(
        f"""version: 1
enterprise: {ENTERPRISE}
site: hub
hierarchy: {{}}
storage:
  type: postgres
  layout: {layout}
transport:
  servers: [{servers}]
  ack_wait: {ack_wait}
  fetch_batch: 16
"""
    )
    return path


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, object] | None:
        try:
            r = httpx.get(f"{self.url}/health", timeout=1.0)
            return dict(r.json()) if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def wait_status(self, key: str, timeout: float = 30.0) -> None:
        """Until ``/health`` shows ``key`` (a source or nats-publisher/nats-hub) up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited {self.proc.returncode}: {self.tail()}")
            h = self.health()
            if h is not None and dict(h.get("sources") or {}).get(key):  # type: ignore[call-overload]
                return
            time.sleep(0.1)
        raise RuntimeError(f"{key} not up within {timeout} s: {self.tail()}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def start(config: Path, role: str, data_dir: Path, dsn: str | None = None) -> Process:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ISTHMUS_ADMIN_PASSWORD=ADMIN_PASSWORD)
    if dsn is not None:
        env["ISTHMUS_PG_DSN"] = dsn
    log = data_dir / f"{role}.log"
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "isthmus", "run", str(config), "--role", role,
         "--data-dir", str(data_dir), "--http-port", str(port)],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    out.close()
    return Process(proc, port, log)


@dataclass
class Figures:
    records: int
    committed: int
    pending: int
    samples: int
    lost_records: int
    lost_samples: int
    duplicates: int
    redelivered: int
    mismatched: int
    order_violations: int
    dropped_samples: int = 0

    def line(self, name: str, **extra: object) -> str:
        more = " ".join(f"{k}={v}" for k, v in extra.items())
        return (
            f"FAULT {name}: samples={self.samples} records={self.records} "
            f"lost={self.lost_records + self.lost_samples} duplicates={self.duplicates} "
            f"redelivered={self.redelivered} mismatched={self.mismatched} "
            f"order_violations={self.order_violations} pending={self.pending} {more}"
        ).rstrip()


def spool_state(spool_dir: Path) -> tuple[int, int, set[int]]:
    """(N records ever appended, acked seq, seqs still waiting); the edge must be stopped."""
    with Spool(spool_dir) as spool:
        pending = {seq for seq, _ in spool.read(spool.acked_seq, 1 << 30)}
        return spool.next_seq - 1, spool.acked_seq, pending


def wait_committed(dsn: str, site: str, upto: int, timeout: float = 60.0) -> None:
    """Until the ledger holds every seq in 1..upto of ``site`` (or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as con:
            row = con.execute(
                "SELECT count(*) FROM hub_ledger WHERE site = %s AND seq <= %s", [site, upto]
            ).fetchone()
        if row is not None and int(row[0]) >= upto:
            return
        time.sleep(0.2)


def figures(dsn: str, site: str, spool_dir: Path, period_ns: int) -> Figures:
    n, _acked, pending = spool_state(spool_dir)
    prefix = f"{ENTERPRISE}/{site}/%"
    with psycopg.connect(dsn) as con:
        ledger = con.execute(
            "SELECT seq, n_samples, deliveries FROM hub_ledger WHERE site = %s ORDER BY commit_id",
            [site],
        ).fetchall()
        (rows, distinct) = con.execute(
            "SELECT count(*), count(DISTINCT (s.tag_id, s.ts)) FROM sample_rows s"
            " JOIN tags t ON t.id = s.tag_id WHERE t.path LIKE %s",
            [prefix],
        ).fetchone() or (0, 0)
        (mismatched,) = con.execute(
            "SELECT count(*) FROM sample_rows s JOIN tags t ON t.id = s.tag_id"
            " WHERE t.path LIKE %s AND (s.ts %% %s <> 0 OR abs(s.value - ("
            " (s.ts / %s) %% %s + substring(t.path from '/t([0-9]+)$')::int * 0.001)) > 1e-6)",
            [prefix, period_ns, period_ns, VALUE_MODULO],
        ).fetchone() or (0,)
    seqs = [int(r[0]) for r in ledger]
    committed = set(seqs)
    lost_records = len(set(range(1, n + 1)) - committed - pending)
    expected_rows = sum(int(r[1]) for r in ledger)
    order_violations = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    return Figures(
        records=n,
        committed=len(committed),
        pending=len(pending - committed),
        samples=int(rows),
        lost_records=lost_records,
        lost_samples=max(0, expected_rows - int(rows)),
        duplicates=int(rows) - int(distinct) + max(0, int(rows) - expected_rows),
        redelivered=sum(1 for r in ledger if int(r[2]) > 1),
        mismatched=int(mismatched),
        order_violations=order_violations,
    )


def restart_postgres(cluster: PgCluster, down_s: float) -> None:
    """Stop the server (fast: clients are disconnected), wait, start it on the same port."""
    assert cluster.root is not None
    data = cluster.root / "data"
    cluster._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    time.sleep(down_s)
    settings = [
        f"port={cluster.port}",
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={cluster.root}",
        "max_connections=200",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
    ]
    opts = " ".join(f"-c {s}" for s in settings)
    cluster._run(
        "pg_ctl", "-D", str(data), "-l", str(cluster.root / "server.log"), "-o", opts,
        "-w", "-t", "30", "start",
    )  # fmt: skip


@dataclass
class Scenario:
    """One edge (site ``lyon``) and ``hubs`` hub processes against ``nats_urls``."""

    tmp: Path
    dsn: str
    nats_urls: list[str]
    hubs: list[Process]
    edge: Process
    site: str = "lyon"

    @property
    def spool_dir(self) -> Path:
        return self.tmp / "edge" / "spool"


def start_scenario(
    tmp: Path, dsn: str, nats_urls: list[str], *, hubs: int = 1, replicas: int = 1,
    n_tags: int = 50, period: str = "5ms", ack_wait: str = "3s",
) -> Scenario:  # fmt: skip
    hub_cfg = hub_config(tmp / "hub.yaml", nats_urls, ack_wait=ack_wait)
    procs = [start(hub_cfg, "hub", tmp / f"hub{i}", dsn) for i in range(hubs)]
    for p in procs:
        p.wait_status("nats-hub")
    cfg = edge_config(
        tmp / "edge.yaml", "lyon", nats_urls, n_tags=n_tags, period=period, replicas=replicas
    )
    edge = start(cfg, "edge", tmp / "edge")
    edge.wait_status("nats-publisher")
    return Scenario(tmp, dsn, nats_urls, procs, edge)


def finish(sc: Scenario, period_ns: int, drain_timeout: float = 60.0) -> Figures:
    """Stop the edge cleanly, wait for the hubs to commit what it acknowledged, count."""
    sc.edge.terminate(timeout=30)
    if sc.edge.proc.returncode != 0:
        raise RuntimeError(f"edge exit {sc.edge.proc.returncode}: {sc.edge.tail()}")
    _n, acked, _ = spool_state(sc.spool_dir)
    wait_committed(sc.dsn, sc.site, acked, drain_timeout)
    return figures(sc.dsn, sc.site, sc.spool_dir, period_ns)


def stop_all(sc: Scenario | None) -> None:
    if sc is None:
        return
    for p in [sc.edge, *sc.hubs]:
        p.terminate()


def live_after_backlog(dsn: str, site: str) -> bool:
    """Whether a live record appended after the replayed backlog (a seq above every
    historical one) is committed: the backlog is drained and live data flows."""
    with psycopg.connect(dsn) as con:
        row = con.execute(
            "SELECT count(*) FROM hub_ledger WHERE site = %s AND NOT historical AND seq >"
            " (SELECT max(seq) FROM hub_ledger WHERE site = %s AND historical)",
            [site, site],
        ).fetchone()
    return row is not None and int(row[0]) > 0


def spool_acked(spool_dir: Path) -> int:
    """The acknowledged seq in a running edge's spool ``ack`` file (8 bytes LE + CRC)."""
    try:
        raw = (spool_dir / "ack").read_bytes()
    except FileNotFoundError:
        return 0
    return int.from_bytes(raw[:8], "little") if len(raw) == 12 else 0


def wait_commits(dsn: str, site: str, at_least: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger_stats(dsn, site)["max_commit_id"] >= at_least:
            return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {at_least} records committed within {timeout} s")


def ledger_stats(dsn: str, site: str) -> dict[str, int]:
    with psycopg.connect(dsn) as con:
        row = con.execute(
            "SELECT coalesce(max(commit_id), 0), count(*) FILTER (WHERE historical),"
            " coalesce(sum(n_samples) FILTER (WHERE historical), 0)"
            " FROM hub_ledger WHERE site = %s",
            [site],
        ).fetchone()
    assert row is not None
    return {
        "max_commit_id": int(row[0]),
        "historical_records": int(row[1]),
        "historical_samples": int(row[2]),
    }


def commits_by_hub(dsn: str, site: str, split_commit_id: int) -> dict[str, tuple[int, int]]:
    """Per hub: records committed up to and after ``split_commit_id``."""
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT hub, count(*) FILTER (WHERE commit_id <= %s),"
            " count(*) FILTER (WHERE commit_id > %s) FROM hub_ledger WHERE site = %s"
            " GROUP BY hub",
            [split_commit_id, split_commit_id, site],
        ).fetchall()
    return {str(h): (int(a), int(b)) for h, a, b in rows}
