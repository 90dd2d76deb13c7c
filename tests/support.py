"""Helpers shared by integration and e2e tests: free ports, a running demo process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ADMIN_PASSWORD = "test-admin-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(path: str, why: str) -> None:
    """Skip when a needed binary is missing, except in CI where that is a failure."""
    if os.path.exists(path) or _which(path):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{path} is required in CI: {why}")
    pytest.skip(f"{path} not installed: {why}")


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    ports: dict[str, int]

    def token(self) -> str:
        r = httpx.post(
            f"{self.url}/api/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stop(self, timeout: float = 5.0) -> float:
        """Ctrl-C the demo; returns how long it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - start


def start_demo(data_dir: Path, *extra: str, timeout: float = 60.0) -> Demo:
    ports = {"http": free_port(), "opcua": free_port(), "modbus": free_port()}
    env = dict(os.environ, ISTHMUS_ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "isthmus", "demo",
            "--data-dir", str(data_dir),
            "--http-port", str(ports["http"]),
            "--opcua-port", str(ports["opcua"]),
            "--modbus-port", str(ports["modbus"]),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{ports['http']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"demo exited early ({proc.returncode}):\n{output}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Demo(proc, url, data_dir, ports)
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("demo did not become healthy in time")


@contextlib.contextmanager
def running_demo(data_dir: Path, *extra: str) -> Iterator[Demo]:
    demo = start_demo(data_dir, *extra)
    try:
        yield demo
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
