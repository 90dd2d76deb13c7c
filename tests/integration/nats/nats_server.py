"""Throw-away nats-server processes with JetStream (one server or a 3-node cluster).

No pytest here: the integration tests, the fault tests, ``bench/edge_hub.py`` and
``scripts/two-sites`` use it.  Each server listens on 127.0.0.1 on its own ports, keeps
its JetStream store under the given directory and can be stopped, killed (SIGKILL) and
restarted on the same ports and store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _die_with_parent() -> None:
    """Linux: the server is killed when the process that started it dies (a test killed
    by its timeout never reaches its ``finally``; one such server outlived its run)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


class NatsServer:
    def __init__(
        self,
        root: Path,
        name: str = "n1",
        *,
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
    ) -> None:
        self.root = root
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._held: list[socket.socket] = []
        self._hold_ports()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        store = self.root / self.name
        store.mkdir(parents=True, exist_ok=True)
        cmd = [
            NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store),
            "--server_name", self.name, "-l", str(self.root / f"{self.name}.log"),
        ]  # fmt: skip
        if self.cluster_port is not None:
            cmd += [
                "--cluster_name",
                "isthmus",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
            ]
            if self.routes:
                cmd += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return cmd

    def _hold_ports(self) -> None:
        """Keep this server's ports bound (not listening) while it is not running: a
        client's connection is refused as if it were down, and the kernel does not hand
        the port to an outgoing connection as its source port — which would make the
        restart on the same port fail (seen once in a busy fault-test run)."""
        for port in (self.port, self.cluster_port):
            if port is None:
                continue
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()  # taken already: start() will report it
                continue
            self._held.append(s)

    def _release_ports(self) -> None:
        for s in self._held:
            s.close()
        self._held.clear()

    def start(self, timeout: float = 10.0) -> NatsServer:
        self._release_ports()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        if not wait_port(self.port, timeout):
            self.kill()
            log = self.root / f"{self.name}.log"
            raise RuntimeError(f"nats-server {self.name} did not listen: {log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self._hold_ports()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
        self._hold_ports()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start_cluster(root: Path, n: int = 3) -> list[NatsServer]:
    """``n`` clustered servers (full mesh of routes), all started."""
    cports = [free_port() for _ in range(n)]
    servers = [
        NatsServer(
            root,
            f"n{i + 1}",
            cluster_port=cports[i],
            routes=[p for j, p in enumerate(cports) if j != i],
        )
        for i in range(n)
    ]
    for server in servers:
        server.start()
    return servers


def wait_jetstream(urls: list[str], timeout: float = 30.0, replicas: int = 1) -> None:
    """Block until JetStream answers (a cluster has elected its meta leader) and, for
    ``replicas`` > 1, a replicated stream can be created."""
    import asyncio

    asyncio.run(wait_jetstream_async(urls, timeout, replicas))


async def wait_jetstream_async(urls: list[str], within: float = 30.0, replicas: int = 1) -> None:
    """:func:`wait_jetstream` from a running event loop."""
    import asyncio

    import nats

    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        nc = None
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, max_reconnect_attempts=1)
            js = nc.jetstream(timeout=2)
            await js.account_info()
            if replicas > 1:
                await js.add_stream(name="PROBE", subjects=["probe"], num_replicas=replicas)
                await js.delete_stream("PROBE")
            return
        except Exception as exc:  # not ready yet: no meta leader, no quorum
            last = exc
            await asyncio.sleep(0.3)
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
    raise RuntimeError(f"JetStream not ready after {within} s: {last!r}")
