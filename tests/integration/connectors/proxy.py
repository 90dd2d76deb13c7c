"""A TCP proxy for command tests that drops a connection at a chosen point of a request.

``DroppingProxy(target_host, target_port, framing=MODBUS)`` listens on a free port of
127.0.0.1 and forwards every connection to the target.  With a framing it cuts the
byte streams into protocol frames (a Modbus ADU, an OPC UA message chunk, a TPKT packet
of S7, an MQTT packet; without one, every chunk read is a frame), counts them, and can
drop the connection once, at the next request that matches a predicate:

* ``drop_next(after="request")`` — the request is forwarded to the device (or only its
  first ``forward_bytes`` bytes: 0 drops it before the device sees anything), then both
  sides are closed at once: the client never gets an answer;
* ``drop_next(after="response")`` — the request is forwarded, the device's answer to it
  (the first frame with the request's key: Modbus transaction id, OPC UA request id, S7
  PDU reference, MQTT packet id; any next frame when the framing has no keys) is read
  and thrown away, then both sides are closed: the device has surely applied the write
  and the client does not know it.  ``close=False`` keeps the connection open (the
  answer simply never arrives: the client times out).

``requests`` counts the requests forwarded whole to the device, ``matched`` those of
them the ``watch`` predicate selects (e.g. the writes), ``answers`` the frames sent back,
``drops`` the connections dropped, ``connections`` those accepted; ``await
proxy.dropped()`` waits for the drop asked, ``await proxy.reconnected(source)`` for
the source to be connected again through a connection opened after the drop.

Shared by the Commander tests and the command gate's fault test;
:func:`write_through_drops` is the Commanders' drop test.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import pytest

from isthmus.connectors.base import Commander, CommandWriteError, Value

Predicate = Callable[[bytes], bool]


class Connected(Protocol):
    @property
    def connected(self) -> bool: ...


After = Literal["request", "response"]


@dataclass(frozen=True)
class Framing:
    """How a protocol's byte stream splits into frames, and what pairs an answer with
    its request."""

    name: str
    length: Callable[[bytes], int | None]
    """Length of the first frame of the buffer, or None until enough bytes arrived."""
    key: Callable[[bytes], bytes | None] = lambda _frame: None
    """The request/answer pairing key of a frame (None: no pairing)."""


def _mbap_length(buf: bytes) -> int | None:
    if len(buf) < 6:
        return None
    return 6 + int(struct.unpack_from(">H", buf, 4)[0])


def _ua_length(buf: bytes) -> int | None:
    if len(buf) < 8:
        return None
    return int(struct.unpack_from("<I", buf, 4)[0])


def _ua_key(frame: bytes) -> bytes | None:
    # MSG chunk: header (8), secure channel id (4), token id (4), sequence number (4),
    # request id (4); a response carries the request's id.
    return frame[20:24] if frame[:3] == b"MSG" and len(frame) >= 24 else None


def _tpkt_length(buf: bytes) -> int | None:
    if len(buf) < 4:
        return None
    return int(struct.unpack_from(">H", buf, 2)[0])


def _s7_key(frame: bytes) -> bytes | None:
    # TPKT (4) + COTP data (3) + S7 header: 0x32, ROSCTR, reserved (2), PDU reference (2)
    return frame[11:13] if len(frame) >= 13 and frame[7] == 0x32 else None


def _mqtt_length(buf: bytes) -> int | None:
    multiplier, value = 1, 0
    for i in range(1, 5):
        if len(buf) <= i:
            return None
        byte = buf[i]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return 1 + i + value
        multiplier *= 128
    raise ValueError("malformed MQTT remaining length")


def _mqtt_key(frame: bytes) -> bytes | None:
    kind = frame[0] >> 4
    start = 2
    while frame[start - 1] & 0x80:  # the remaining length is 1-4 bytes
        start += 1
    if kind == 3 and (frame[0] >> 1) & 3:  # PUBLISH with QoS 1/2: the id follows the topic
        at = start + 2 + int(struct.unpack_from(">H", frame, start)[0])
        return frame[at : at + 2]
    if kind in (4, 5, 6, 7):  # PUBACK, PUBREC, PUBREL, PUBCOMP
        return frame[start : start + 2]
    return None


MODBUS = Framing("modbus", _mbap_length, lambda frame: frame[:2])
OPCUA = Framing("opcua", _ua_length, _ua_key)
S7 = Framing("s7", _tpkt_length, _s7_key)
MQTT = Framing("mqtt", _mqtt_length, _mqtt_key)

_MODBUS_WRITES = frozenset({5, 6, 15, 16, 22, 23})
_UA_WRITE_REQUEST = b"\x01\x00\xa1\x02"  # four-byte NodeId i=673 (WriteRequest encoding)


def modbus_write(frame: bytes) -> bool:
    """A Modbus request that changes the device (function 5, 6, 15, 16, 22 or 23)."""
    return len(frame) > 7 and frame[7] in _MODBUS_WRITES


def opcua_write(frame: bytes) -> bool:
    """An OPC UA Write service request (unencrypted MSG chunk)."""
    return frame[:3] == b"MSG" and frame[24:28] == _UA_WRITE_REQUEST


def s7_write(frame: bytes) -> bool:
    """An S7 job whose function is 0x05 (write var)."""
    return len(frame) > 17 and frame[7] == 0x32 and frame[8] == 0x01 and frame[17] == 0x05


def mqtt_publish(frame: bytes) -> bool:
    """An MQTT PUBLISH packet."""
    return bool(frame) and frame[0] >> 4 == 3


@dataclass
class _Drop:
    after: After
    when: Predicate | None
    forward_bytes: int | None
    close: bool


class _Dropped(Exception):
    pass


class DroppingProxy:
    """See the module docstring.  Use as ``async with DroppingProxy(host, port) as p``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        framing: Framing | None = None,
        watch: Predicate | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.framing = framing
        self.watch = watch
        self.requests = 0
        self.matched = 0
        self.answers = 0
        self.drops = 0
        self.connections = 0
        self._last_drop_at = 0
        self._drop: _Drop | None = None
        self._dropped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> DroppingProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def drop_next(
        self,
        after: After = "response",
        *,
        when: Predicate | None = None,
        forward_bytes: int | None = None,
        close: bool = True,
    ) -> None:
        """Drop at the next request ``when`` selects (any request without it); see the
        module docstring for ``after``, ``forward_bytes`` and ``close``."""
        if forward_bytes is not None and after != "request":
            raise ValueError("forward_bytes goes with after='request'")
        self._dropped.clear()
        self._drop = _Drop(after, when, forward_bytes, close)

    @property
    def armed(self) -> bool:
        """A drop is asked and has not happened yet."""
        return self._drop is not None

    async def reconnected(self, source: Connected) -> None:
        """Until ``source`` is connected through a connection opened after the last
        drop (bound it with ``asyncio.timeout``)."""
        while self.connections <= self._last_drop_at or not source.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def dropped(self) -> None:
        """Wait until the drop asked with :meth:`drop_next` happened (bound it with
        ``asyncio.timeout``)."""
        await self._dropped.wait()

    # -------------------------------------------------------------------- internals

    async def _read_frames(
        self, reader: asyncio.StreamReader, cut: asyncio.Event | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The frames ``reader`` brings, until it ends (or, after ``cut`` is set, the
        next read)."""
        buf = bytearray()
        while True:
            data = await reader.read(65536)
            if not data or (cut is not None and cut.is_set()):
                return
            buf += data
            for frame in self._frames(buf):
                yield frame

    def _frames(self, buf: bytearray) -> list[bytes]:
        if self.framing is None:
            frames = [bytes(buf)] if buf else []
            buf.clear()
            return frames
        out: list[bytes] = []
        while True:
            size = self.framing.length(bytes(buf[:8]))
            if size is None or len(buf) < size:
                return out
            out.append(bytes(buf[:size]))
            del buf[:size]

    def _key(self, frame: bytes) -> bytes | None:
        return None if self.framing is None else self.framing.key(frame)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}
        # (key of the request whose answer must be swallowed, close after it?)
        swallow: list[tuple[bytes | None, bool]] = []
        cut = asyncio.Event()  # set when the connection is being dropped: forward nothing
        up = asyncio.create_task(self._upstream(client_r, server_w, swallow, cut))
        down = asyncio.create_task(self._downstream(server_r, client_w, swallow, cut))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._tasks -= {up, down}
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        swallow: list[tuple[bytes | None, bool]],
        cut: asyncio.Event,
    ) -> None:
        async with contextlib.aclosing(self._read_frames(reader)) as frames:
            async for frame in frames:
                drop = self._drop
                if drop is not None and (drop.when is None or drop.when(frame)):
                    self._drop = None
                    if drop.after == "request":
                        cut.set()
                        part = frame if drop.forward_bytes is None else frame[: drop.forward_bytes]
                        if part:
                            writer.write(part)
                            await writer.drain()
                        if drop.forward_bytes is None:
                            self._count(frame)
                        self._note_drop()
                        return  # both sides closed by _serve
                    swallow.append((self._key(frame), drop.close))
                writer.write(frame)
                await writer.drain()
                self._count(frame)

    async def _downstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        swallow: list[tuple[bytes | None, bool]],
        cut: asyncio.Event,
    ) -> None:
        async with contextlib.aclosing(self._read_frames(reader, cut)) as frames:
            async for frame in frames:
                if swallow:
                    key, close = swallow[0]
                    if key is None or key == self._key(frame):
                        swallow.pop(0)
                        self._note_drop(closed=close)
                        if close:
                            cut.set()
                            return
                        continue
                writer.write(frame)
                await writer.drain()
                self.answers += 1

    def _count(self, frame: bytes) -> None:
        self.requests += 1
        if self.watch is not None and self.watch(frame):
            self.matched += 1

    def _note_drop(self, closed: bool = True) -> None:
        if closed:
            self.drops += 1
            self._last_drop_at = self.connections
        self._dropped.set()


class _DroppedSource(Connected, Commander, Protocol):
    pass


async def write_through_drops(
    proxy: DroppingProxy,
    source: _DroppedSource,
    tag: str,
    device: Callable[[], Awaitable[object]],
    values: Sequence[Value],
    *,
    watch: Predicate,
    where: str = "device",
    read_back_within: float = 1.0,
    applied_first: bool = False,
    no_answer: str | None = None,
) -> dict[str, str]:
    """Write ``values`` (five) to ``tag`` through the proxy, dropping the connection at
    each write of the first four, then writing the last normally; returns each drop's
    outcome.  Asserts what ``device`` (the device's value of the tag) holds after each
    drop and that the last write reads back.

    The drops: the device gets the request, the connection drops before any answer
    (``applied_first``: wait until the device holds it); the device answers, the answer
    is thrown away; nothing of the request reaches the device (``before the {where}``);
    the answer never comes, the connection is kept (``no_answer``: the error's match).
    """
    first, second, third, fourth, last = values
    outcomes: dict[str, str] = {}
    proxy.drop_next("request", when=watch)
    with pytest.raises(CommandWriteError, match="may have been applied") as info:
        await source.write(tag, first)
    outcomes["after request"] = info.value.outcome
    if applied_first:
        async with asyncio.timeout(3):
            while await device() != first:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    steps: list[tuple[str, After, int | None, bool, str | None, Value, Value]] = [
        ("after response", "response", None, True, None, second, second),
        (f"before the {where}", "request", 0, True, None, third, second),
        ("no answer", "response", None, False, no_answer, fourth, fourth),
    ]
    for label, after, forward_bytes, close, match, value, held in steps:
        async with asyncio.timeout(10):
            await proxy.reconnected(source)
        proxy.drop_next(after, when=watch, forward_bytes=forward_bytes, close=close)
        with pytest.raises(CommandWriteError, match=match) as info:
            await source.write(tag, value)
        outcomes[label] = info.value.outcome
        assert await device() == held, label

    async with asyncio.timeout(10):
        await proxy.reconnected(source)
    await source.write(tag, last)
    assert await source.read_back(tag, read_back_within) == last
    return outcomes
