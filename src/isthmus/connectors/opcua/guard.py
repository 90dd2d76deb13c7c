"""A frame guard for asyncua's client socket: bounded memory against hostile servers.

asyncua's ``UASocketProtocol`` trusts the message size in each OPC UA TCP header: it
buffers until that many bytes have arrived (up to 4 GiB), re-concatenating the buffer
on every read, and it announces a 2 GiB receive buffer in its Hello.  A server that
sends a huge size and then streams bytes, or plain garbage whose first bytes read as a
huge size, makes the client's memory grow until the request times out.

:func:`install` wraps the ``data_received`` of every protocol the client creates.
Before asyncua sees the bytes, every message header in the stream is checked:

* the message type must be one a server sends (``ACK``, ``ERR``, ``OPN``, ``MSG``,
  ``CLO``), the chunk type ``F``, ``C`` or ``A``, the size at least a header;
* one chunk must not exceed ``max_chunk`` bytes, and the chunks of one message
  (``C`` ... ``F``) not ``max_message`` bytes.

A violation aborts the connection at once (``FrameRejected``, a ``ConnectionError``,
is what the pending request raises) and calls ``on_reject(kind, text)``, so the source
counts and logs it once per burst.  Buffered data is thus bounded by ``max_chunk``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_CHUNK = 16 * 1024 * 1024
"""Largest chunk accepted (servers use 8-64 KiB; a 16 MiB chunk is already unusual)."""
MAX_MESSAGE = 64 * 1024 * 1024
"""Largest message (all its chunks) accepted."""
_HEADER = 8
_SERVER_TYPES = frozenset({b"ACK", b"ERR", b"OPN", b"MSG", b"CLO"})
_CHUNK_TYPES = frozenset({b"F", b"C", b"A"})

Reject = Callable[[str, str], None]
"""``on_reject(kind, text)``: kind is ``garbage`` or ``oversized``."""


class FrameRejected(ConnectionError):
    """The server sent bytes that are not OPC UA TCP, or a message above our limits."""


class FrameGuard:
    """The header walk over one connection's byte stream (pure, no I/O)."""

    def __init__(self, max_chunk: int = MAX_CHUNK, max_message: int = MAX_MESSAGE) -> None:
        self.max_chunk = max_chunk
        self.max_message = max_message
        self._partial = b""  # the start of a header split between two reads
        self._skip = 0  # bytes of the current chunk's body still to come
        self._message = 0  # bytes of the current message's chunks so far

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[str, str] | None:
        """Check the headers ``data`` contains; ``(kind, text)`` on the first violation."""
        view = memoryview(data)
        pos = 0
        n = len(view)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            need = _HEADER - len(self._partial)
            self._partial += bytes(view[pos : pos + need])
            pos += min(need, n - pos)
            if len(self._partial) < _HEADER:
                return None
            verdict = self._header(self._partial)
            self._partial = b""
            if verdict is not None:
                return verdict
        return None

    def _header(self, head: bytes) -> tuple[str, str] | None:
        mtype, chunk = head[:3], head[3:4]
        size = int.from_bytes(head[4:8], "little")
        if mtype not in _SERVER_TYPES or chunk not in _CHUNK_TYPES or size < _HEADER:
            return "garbage", f"not an OPC UA message (header {head.hex()})"
        if size > self.max_chunk:
            return (
                "oversized",
                f"a {size}-byte {mtype.decode()} chunk, above the {self.max_chunk}-byte limit",
            )
        self._message += size
        if self._message > self.max_message:
            return (
                "oversized",
                f"a message of more than {self.max_message} bytes in {mtype.decode()} chunks",
            )
        if chunk != b"C":
            self._message = 0
        self._skip = size - _HEADER
        return None


def install(
    client: Any,
    on_reject: Reject,
    *,
    max_chunk: int = MAX_CHUNK,
    max_message: int = MAX_MESSAGE,
) -> None:
    """Guard every socket protocol the asyncua ``Client`` creates from now on."""
    uaclient = client.uaclient
    make = uaclient._make_protocol

    def make_guarded() -> Any:
        protocol = make()
        guard = FrameGuard(max_chunk, max_message)
        received = protocol.data_received

        def data_received(data: bytes) -> None:
            if protocol.transport is None:
                return  # aborted: drop what was already read
            verdict = guard.feed(data)
            if verdict is None:
                received(data)
                return
            kind, text = verdict
            protocol.receive_buffer = None
            transport = protocol.transport
            protocol._fail_all_pending(FrameRejected(f"server sent {text}"))
            if transport is not None:
                transport.abort()
            on_reject(kind, text)

        protocol.data_received = data_received
        return protocol

    uaclient._make_protocol = make_guarded
