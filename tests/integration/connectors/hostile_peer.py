"""A hostile TCP peer for the OPC UA client tests, run as its own process:

    python -m tests.integration.connectors.hostile_peer MODE

prints ``PORT <n>`` once listening on 127.0.0.1, then serves every connection by MODE:

* ``garbage``: after accept, sends bytes that are not OPC UA (an SSH banner and noise)
  and keeps the connection open;
* ``silent``: accepts, reads and discards, never answers;
* ``flood``: reads the Hello, then streams without end: odd connections announce a
  2 GiB acknowledge, even ones an 8 MiB one (plausible, under the client's limit),
  followed by noise until the client goes away.

A separate process, so its CPU and memory do not count as the client's.
"""

from __future__ import annotations

import asyncio
import os
import sys

BLOCK = os.urandom(64 * 1024)


async def serve(mode: str) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        n = connections
        try:
            if mode == "garbage":
                writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + BLOCK[:4096])
                await writer.drain()
                while await reader.read(65536):
                    pass
            elif mode == "silent":
                while await reader.read(65536):
                    pass
            elif mode == "flood":
                await reader.read(65536)  # the client's Hello
                size = 0x7FFFFFFF if n % 2 else 8 * 1024 * 1024
                writer.write(b"ACKF" + size.to_bytes(4, "little"))
                while True:
                    writer.write(BLOCK)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
