"""Helpers shared by integration and e2e tests: free ports, a running demo process, a
source run as a task."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from isthmus.connectors.base import Source
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality

ADMIN_PASSWORD = "Tower-Test-Secret-4711"


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, log_level: str = "warning", stop_within: float = 5.0
) -> AsyncIterator[str]:
    """A real uvicorn server for the ASGI ``app`` on a free port, in this event loop;
    yields its ``127.0.0.1:<port>``."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, stop_within)


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


class Collector:
    """A source's ``emit`` target for tests: keeps every batch; ``wait_for`` scans forward
    from its previous match, so consecutive waits see consecutive events."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._changed = asyncio.Event()
        self._cursor = 0

    async def emit(self, batch: Batch) -> None:
        self.batches.append(batch)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Batch], bool], limit: float = 8.0) -> Batch:
        async def scan() -> Batch:
            while True:
                while self._cursor < len(self.batches):
                    batch = self.batches[self._cursor]
                    self._cursor += 1
                    if predicate(batch):
                        return batch
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), limit)

    def all(self) -> Batch:
        return Batch.concat(self.batches)

    def rows(self) -> list[tuple[int, float, int]]:
        """Every (tag id, value, quality) received, in order."""
        b = self.all()
        return list(zip(b.tag_id.tolist(), b.value.tolist(), b.quality.tolist(), strict=True))

    def latest(self) -> dict[int, tuple[float, int]]:
        """The newest (value, quality) per tag."""
        return {t: (v, q) for t, v, q in self.rows()}

    def qualities(self, tag: int) -> list[int]:
        return [q for t, _, q in self.rows() if t == tag]

    def good(self) -> bool:
        return any(bool((b.quality == Quality.GOOD).any()) for b in self.batches)


@contextlib.asynccontextmanager
async def running_task(
    run: Callable[[], Coroutine[Any, Any, Any]],
    ready: Callable[[], bool] | None = None,
    within: float = 5.0,
    what: str = "task",
    reraise: bool = True,
) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``run()`` as a task (optionally until ``ready()``, failing after ``within``
    seconds); on exit cancel it — again each second if a cancellation was swallowed
    (asyncua on Python 3.11 can lose one racing with a reply) — for at most 10 s; with
    ``reraise``, an exception the task ended with is raised."""
    task = asyncio.create_task(run())
    try:
        if ready is not None:
            for _ in range(max(1, int(within / 0.05))):
                if ready():
                    break
                await asyncio.sleep(0.05)
            assert ready(), f"{what} not ready within {within} s"
        yield task
    finally:
        for _ in range(10):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=1.0)
            if done:
                break
        assert task.done(), f"{what} did not stop within 10 s of being cancelled"
        if reraise and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def running_source(
    source: Source, *, connected_within: float | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``source`` (see :func:`running_task`), optionally until it is connected."""
    ready = None if connected_within is None else (lambda: source.connected)
    async with running_task(
        source.run, ready, connected_within or 0.0, f"source {source.name}", reraise=False
    ) as task:
        yield task
