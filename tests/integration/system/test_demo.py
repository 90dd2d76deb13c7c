"""The whole system as a user runs it: `isthmus demo` as a process, real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support import free_port, running_demo

pytestmark = pytest.mark.integration


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def get(url: str, token: str, **params: Any) -> httpx.Response:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, params=params, timeout=10)


def test_demo_end_to_end_stop_and_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_demo(data) as demo:
        token = demo.token()
        assert httpx.get(f"{demo.url}/api/tags", timeout=5).status_code == 401
        tags = get(f"{demo.url}/api/tags", token).json()
        assert len(tags) >= 20
        by_source: dict[str, list[str]] = {}
        for t in tags:
            by_source.setdefault(t["source"], []).append(t["path"])
        assert len(by_source) == 2, by_source.keys()  # one OPC UA and one Modbus source

        # Every source delivers Good values through the whole pipeline into the historian.
        for source, source_paths in by_source.items():

            def good(source_paths: list[str] = source_paths) -> bool:
                for p in source_paths:
                    r = get(f"{demo.url}/api/tags/{p}/last", token)
                    if r.status_code == 200 and r.json()["quality"] == "Good":
                        return True
                return False

            wait_for(good, 30, f"a Good value from {source}")
        health = httpx.get(f"{demo.url}/health", timeout=5).json()
        assert health["status"] == "ok"
        assert all(health["sources"].values()), health

        # The energy counter always moves: it must gather raw samples.
        probe = next(t["path"] for t in tags if t["path"].endswith("active_energy"))

        def recent() -> list[dict[str, Any]] | None:
            r = get(f"{demo.url}/api/tags/{probe}/samples", token, **{"from": "-5m"})
            rows: list[dict[str, Any]] = r.json()["samples"]
            return rows if len(rows) >= 3 else None

        samples = wait_for(recent, 20, f"samples of {probe}")
        first_ts = samples[0]["timestamp"]
        assert httpx.get(f"{demo.url}/health", timeout=5).json()["samples_written"] >= 3

        # The CLI reads through the running server (the historian file is held by it).
        q = subprocess.run(
            [sys.executable, "-m", "isthmus", "query", probe, "--since", "5m", "--json",
             "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert q.returncode == 0, q.stderr
        rows = json.loads(q.stdout)
        assert len(rows) >= 3 and {"timestamp", "value", "quality"} <= set(rows[0])
        q = subprocess.run(
            [sys.executable, "-m", "isthmus", "query", probe, "--since", "10s", "--interval",
             "500ms", "--json", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert q.returncode == 0, q.stderr
        points = json.loads(q.stdout)
        # The demo has run for seconds: the newest instants follow its first samples.
        assert len(points) == 20 and points[-1]["quality"] == "Good"

        # A live-stream client stays connected through the shutdown.
        ws_url = demo.url.replace("http://", "ws://") + "/api/stream"
        with connect(ws_url, open_timeout=10) as ws:
            ws.send(json.dumps({"token": token}))
            assert "samples" in json.loads(ws.recv(timeout=10))
            took = demo.stop()
        assert took < 5.0, f"Ctrl-C took {took:.1f} s"
        assert demo.proc.returncode == 0
        output = demo.proc.stdout.read() if demo.proc.stdout else ""
        assert "Traceback" not in output and "ERROR" not in output, output
        # Ports are free again: the simulator child went away too.
        for port in demo.ports.values():
            import socket

            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))

    # With the server stopped, the CLI opens the historian directly.
    q = subprocess.run(
        [sys.executable, "-m", "isthmus", "query", probe, "--since", "10m", "--bucket", "1m",
         "--json", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert q.returncode == 0, q.stderr
    buckets = json.loads(q.stdout)
    assert buckets and sum(b["count"] for b in buckets) >= 3

    # A second demo resumes with the history kept.
    with running_demo(data) as demo:
        token = demo.token()
        old = get(f"{demo.url}/api/tags/{probe}/samples", token, **{"from": "-10m"}).json()
        assert old["samples"][0]["timestamp"] <= first_ts
        demo.stop()


def test_unreachable_device_turns_tags_bad_and_system_keeps_running(tmp_path: Path) -> None:
    """A gateway whose Modbus device is down: Bad quality, health ok, no crash."""
    dead_port = free_port()  # nothing listens here
    http = free_port()
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(
        f"""\
enterprise: acme
site: test
hierarchy:
  utilities:
    water:
      pumping: [pump1]
sources:
  - name: dead_plc
    type: modbus
    host: 127.0.0.1
    port: {dead_port}
    poll_interval: 200ms
    timeout: 500ms
    tags:
      - path: utilities/water/pumping/pump1/flow
        address: 0
        data_type: float32
api: {{port: {http}}}
"""
    )
    env_pw = "pw-for-this-test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "isthmus", "run", str(cfg), "--data-dir", str(tmp_path / "d")],
        env={**__import__("os").environ, "ISTHMUS_ADMIN_PASSWORD": env_pw},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{http}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "health")
        token = httpx.post(
            f"{url}/api/auth/login", json={"username": "admin", "password": env_pw}, timeout=5
        ).json()["access_token"]
        path = "acme/test/utilities/water/pumping/pump1/flow"

        def bad() -> str | None:
            r = get(f"{url}/api/tags/{path}/last", token)
            return r.json()["quality"] if r.status_code == 200 else None

        assert wait_for(bad, 20, "Bad quality") == "Bad_CommunicationError"
        assert httpx.get(f"{url}/health", timeout=5).json()["sources"] == {"dead_plc": False}
        assert proc.poll() is None  # still running
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
