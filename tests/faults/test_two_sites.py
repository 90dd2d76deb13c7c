"""``scripts/two-sites`` as a user runs it: two simulated plants, two edges, a 3-node NATS
JetStream cluster, two hubs and PostgreSQL, all real processes.  Both sites' values
reach the hub's API; Ctrl-C stops everything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.historian.pg_cluster import find_bin_dir
from tests.integration.nats.nats_server import NATS_SERVER
from tests.support import require_binary

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "two-sites-test-password"


def _start(data: Path) -> tuple[subprocess.Popen[str], str]:
    """Start the script on random ports (retrying when a port is taken); the hub URL."""
    for _ in range(5):
        offset = random.randrange(20_000, 40_000, 10)
        http = random.randrange(41_000, 60_000, 10)
        proc = subprocess.Popen(
            [
                sys.executable, str(ROOT / "scripts/two_sites.py"),
                "--data-dir", str(data), "--port-offset", str(offset),
                "--http-port", str(http), "--hubs", "2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "ISTHMUS_ADMIN_PASSWORD": PASSWORD},
        )  # fmt: skip
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line)
            if "Hub API and control tower:" in line:
                return proc, line.split("http://", 1)[1].split()[0]
        proc.wait(10)
        if proc.returncode == 2 and any("ports in use" in s for s in seen):
            continue
        raise AssertionError("two-sites did not start:\n" + "".join(seen[-40:]))
    raise AssertionError("no free ports for two-sites after 5 tries")


def test_two_sites_reach_the_hub(tmp_path: Path) -> None:
    bin_dir = find_bin_dir()
    require_binary(str(bin_dir / "initdb") if bin_dir else "initdb", "PostgreSQL for the hub")
    require_binary(NATS_SERVER, "the 3-node NATS cluster")
    proc, hostport = _start(tmp_path / "two-sites")
    url = f"http://{hostport}"
    try:
        token = httpx.post(
            f"{url}/api/auth/login", json={"username": "admin", "password": PASSWORD}, timeout=10
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 120
        good: dict[str, int] = {}
        while time.monotonic() < deadline:
            for site in ("lyon", "paris"):
                r = httpx.get(f"{url}/api/last", params={"prefix": f"acme/{site}"}, headers=auth)
                good[site] = sum(v["quality"] == "Good" for v in r.json()["values"])
            if all(good.get(s, 0) >= 5 for s in ("lyon", "paris")):
                break
            time.sleep(1)
        assert all(good.get(s, 0) >= 5 for s in ("lyon", "paris")), good
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
    assert proc.returncode == 0
