"""A hostile TCP peer for connector tests: a "device" that sends garbage, never answers,
or floods (``mqtt-oversize``: a "broker" announcing a 200 MB packet, then sending it).
It runs in its own process (a real device is another machine: its CPU is not ours) on
127.0.0.1 and reports what it did when stopped.

    python tests/integration/hostile_peer.py garbage|silent|flood|mqtt-oversize
prints its port on the first line; on SIGTERM it prints ``connections received sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Mode = Literal["garbage", "silent", "flood", "mqtt-oversize"]
CHUNK = 64 * 1024


@dataclass
class PeerStats:
    connections: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


async def _serve_forever(mode: Mode) -> None:
    stats = PeerStats()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats.connections += 1
        try:
            if mode == "mqtt-oversize":
                # An MQTT PUBLISH header announcing 200 MB, then its "payload", forever.
                await reader.read(4096)  # the client's CONNECT
                writer.write(bytes([0x30]) + _remaining_length(200_000_000))
                mode_flood = True
            else:
                mode_flood = mode == "flood"
            if mode_flood:
                # Ignore requests; push bytes as fast as the client takes them.
                junk = os.urandom(CHUNK)
                while True:
                    writer.write(junk)
                    await writer.drain()
                    stats.bytes_sent += CHUNK
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                stats.bytes_received += len(data)
                if mode == "garbage":
                    # The right size for a response, the wrong content.
                    reply = os.urandom(max(9, len(data)))
                    writer.write(reply)
                    await writer.drain()
                    stats.bytes_sent += len(reply)
                # silent: read and never answer
        except ConnectionError:
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(stats.connections, stats.bytes_received, stats.bytes_sent, flush=True)


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class HostilePeer:
    mode: Mode
    port: int = 0
    stats: PeerStats | None = None
    """Filled in when the peer has stopped."""

    @contextlib.contextmanager
    def running(self) -> Iterator[HostilePeer]:
        proc = subprocess.Popen(
            [sys.executable, __file__, self.mode], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            self.port = int(proc.stdout.readline())
            yield self
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
            with contextlib.suppress(ValueError):
                c, r, s = (int(x) for x in out.split())
                self.stats = PeerStats(c, r, s)


if __name__ == "__main__":
    asyncio.run(_serve_forever(sys.argv[1]))  # type: ignore[arg-type]
