"""Siemens S7 source (python-snap7): polls one compiled read plan per poll group at a
fixed rate, one batch per group cycle; writes tags and reads them back (commands).

Commands (:meth:`S7Source.write`, :meth:`S7Source.read_back`: the
:class:`~isthmus.connectors.base.Commander` interface) raise the errors of :mod:`.errors`.

python-snap7's :class:`snap7.Client` is blocking: every call runs in this source's own
single worker thread (one client per source, calls serialised), so the event loop never
blocks.  Cancelling :meth:`S7Source.run` returns at once: the socket is shut down, which
ends a call still waiting in the worker.

Reads go out as S7 "read var" requests carrying several items each (packed to the
negotiated PDU by :mod:`.decode`); each item's return code is checked separately, so a
missing DB only makes its own tags Bad.  String tags (``STRING[n]``) fill the batch's
text column, present only when the group has a string tag.  Qualities produced:

* Good — the block holding the tag was read and decoded;
* ``BAD_CONFIGURATION_ERROR`` — the PLC refused the item as wrong: object does not exist
  (DB missing), address out of range, access denied (PUT/GET off), type not supported;
* ``BAD_DEVICE_FAILURE`` — hardware fault or another item error, or a header error;
* ``BAD_DECODING_ERROR`` — a malformed or short answer; a ``STRING[n]`` whose actual
  length exceeds its maximum or ``n`` (a wrong address or length);
* ``BAD_COMMUNICATION_ERROR`` — unreachable / connection lost / timeout (via :class:`Link`:
  once per outage, then reconnects with capped backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from snap7 import Area as Snap7Area
from snap7 import Client, WordLen
from snap7.error import (
    S7ConnectionError,
    S7Error,
    S7PacketLostError,
    S7ProtocolError,
    S7StalePacketError,
    S7TimeoutError,
)

from isthmus.connectors.base import (
    FLOAT32_MAX,
    BoundTag,
    Link,
    SourceContext,
    Value,
    engineering,
    raw_number,
    round_half_away,
    tag_index,
)
from isthmus.connectors.polling import PollGroup, group_tag_ids, poll_groups
from isthmus.connectors.s7.config import (
    AREA_CODE,
    CONNECTION_CODE,
    MIN_PDU,
    Area,
    BitWrite,
    S7Address,
    S7SourceConfig,
    S7TagConfig,
    Size,
)
from isthmus.connectors.s7.decode import (
    ReadPlan,
    ReadRequest,
    decode_raw,
    encode_string,
    encode_value,
    plans_for,
)
from isthmus.connectors.s7.errors import WriteFailed, WriteRefused
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.quality import Quality
from isthmus.net.link import LinkLost

T = TypeVar("T")

ITEM_RETURN_CODES = {
    0x01: "hardware fault",
    0x03: "access denied (PUT/GET access off, or protection level)",
    0x05: "address out of range",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "object does not exist",
}
_CONFIG_CODES = frozenset({0x03, 0x05, 0x06, 0x07, 0x0A})
_OK = 0xFF
_INT_RANGE: dict[tuple[Size, DataType], tuple[int, int]] = {
    (Size.B, DataType.UINT16): (0, 0xFF),
    (Size.B, DataType.INT16): (-0x80, 0x7F),
    (Size.W, DataType.INT16): (-0x8000, 0x7FFF),
    (Size.W, DataType.UINT16): (0, 0xFFFF),
    (Size.D, DataType.INT32): (-(2**31), 2**31 - 1),
    (Size.D, DataType.UINT32): (0, 2**32 - 1),
    (Size.L, DataType.INT64): (-(2**63), 2**63 - 1),
    (Size.L, DataType.UINT64): (0, 2**64 - 1),
}


def item_text(code: int) -> str:
    name = ITEM_RETURN_CODES.get(code)
    return f"return code 0x{code:02X} ({name})" if name else f"return code 0x{code:02X}"


def item_quality(code: int) -> Quality:
    """The quality of a block's tags when the PLC answers its item with ``code``."""
    return Quality.BAD_CONFIGURATION_ERROR if code in _CONFIG_CODES else Quality.BAD_DEVICE_FAILURE


def parse_items(raw: bytes, count: int) -> list[bytes | int]:
    """Split the data section of a read-var response into ``count`` items: the data of
    each item (bytes), or its return code (int) when not successful.  Raises
    ``ValueError`` if the section is malformed."""
    items: list[bytes | int] = []
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ValueError(f"response truncated at item {i}")
        code, transport, length = struct.unpack_from(">BBH", raw, offset)
        offset += 4
        if code != _OK:
            items.append(code)
            continue
        # BIT, BYTE/WORD/DWORD and INTEGER give the length in bits; others in bytes.
        size = (length + 7) // 8 if transport in (0x03, 0x04, 0x05) else length
        if offset + size > len(raw):
            raise ValueError(f"item {i} truncated")
        items.append(bytes(raw[offset : offset + size]))
        offset += size + (size % 2 if i < count - 1 else 0)
    return items


CONNECT_ROUND_TRIPS = 2
"""A connection is two exchanges (ISO connection request, S7 setup communication)."""


class S7Source:
    """Polls one S7 PLC (one connection) and emits a batch per poll group cycle."""

    def __init__(
        self, config: S7SourceConfig, tags: Sequence[BoundTag[S7TagConfig]], ctx: SourceContext
    ) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self._tags = list(tags)
        self.pdu = MIN_PDU
        """The PDU size the plans are packed for: the one the PLC granted once connected."""
        self.groups = self._groups(self.pdu)
        self._tag_ids = group_tag_ids(self.groups)
        self._by_key = tag_index(tags)
        self._client: Client | None = None
        self._executor = self._new_executor()
        self._link = Link("s7", self.name, config.target, self._tag_ids, ctx)
        self._burst = ctx.burst_log(self.name)
        prefix = f"source.{self.name}"
        self._m_requests = f"{prefix}.requests"
        self._m_values = f"{prefix}.values"
        self._m_errors = f"{prefix}.errors"
        self._m_overruns = f"{prefix}.overruns"
        self._m_cycle = f"{prefix}.cycle_seconds"
        self._m_writes = f"{prefix}.writes"
        self._m_write_errors = f"{prefix}.write_errors"

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"s7-{self.name}")

    def _groups(self, pdu: int) -> tuple[PollGroup[ReadPlan], ...]:
        return tuple(
            PollGroup(group, self.config.group_interval(group), plan)
            for group, plan in plans_for(self.config, self._tags, pdu).items()
        )

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking snap7 call in this source's worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; reconnects with capped backoff; never raises otherwise."""
        old, self._executor = self._executor, self._new_executor()  # fresh for each run
        old.shutdown(wait=False)
        try:
            await self._link.supervise(
                self._session,
                errors=(S7Error, OSError),
                close=self._close_client,
                reconnect_max=self.config.reconnect_max,
            )
        finally:
            self._close_client()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _session(self) -> None:
        client = Client()
        self._client = client
        # snap7 waits 5 s for each step of the connection; a PLC (or something posing as
        # one) that accepts TCP and never answers must cost no more than our timeout.
        # On expiry ``supervise`` closes the client, which unblocks the worker thread.
        limit = CONNECT_ROUND_TRIPS * self.config.timeout
        try:
            await asyncio.wait_for(self._call(self._connect_sync, client), limit)
        except TimeoutError:
            raise LinkLost(f"no answer to the connection request within {limit:.1f} s") from None
        self._link.up()
        pdu = max(64, min(int(client.pdu_length), self.config.max_pdu))
        if pdu != self.pdu:
            self.pdu = pdu
            self.groups = self._groups(pdu)
        await self._poll_loop()

    def _connect_sync(self, client: Client) -> None:
        cfg = self.config
        client.set_connection_type(CONNECTION_CODE[cfg.connection_type])
        client.pdu_length = cfg.max_pdu
        if cfg.local_tsap is not None and cfg.remote_tsap is not None:
            client.set_connection_params(cfg.host, cfg.local_tsap, cfg.remote_tsap)
            client._connect(cfg.host, cfg.rack, cfg.slot, cfg.port)  # keeps the given TSAPs
        else:
            client.connect(cfg.host, cfg.rack, cfg.slot, cfg.port)
        conn = client.connection
        if conn is not None and conn.socket is not None:
            conn.timeout = cfg.timeout
            conn.socket.settimeout(cfg.timeout)

    def _close_client(self) -> None:
        """Drop the connection without blocking: shutting the socket down ends a call
        still waiting in the worker; the worker then closes the client."""
        client, self._client = self._client, None
        self._link.connected = False
        if client is None:
            return
        conn = client.connection
        sock = conn.socket if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._executor.submit(_quiet_disconnect, client)

    # -- polling ------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        groups = [g for g in self.groups if g.plan.requests]
        await poll_groups(groups, self.poll_once, self.ctx.metrics, f"source.{self.name}")

    async def poll_once(self, group: PollGroup[ReadPlan]) -> None:
        """Read every request of ``group`` once and emit one batch (raises LinkLost)."""
        plan = group.plan
        n = len(plan)
        values = np.empty(n, dtype=np.float64)
        quality = np.empty(n, dtype=np.uint32)
        texts = np.full(n, None, dtype=object) if plan.has_text else None
        good = 0
        errors = 0
        for request in plan.requests:
            client = self._client
            if client is None or not self._link.connected:
                raise LinkLost("connection lost")
            try:
                items = await self._call(_read_request, client, request)
            except (
                S7ConnectionError,
                S7TimeoutError,
                S7PacketLostError,  # answers out of step: start over on a new connection
                S7StalePacketError,
                OSError,
            ) as exc:
                raise LinkLost(f"{type(exc).__name__}: {exc}") from None
            except (S7ProtocolError, ValueError) as exc:
                header = getattr(exc, "error_code", None)
                code = Quality.BAD_DEVICE_FAILURE if header else Quality.BAD_DECODING_ERROR
                for block in request.blocks:
                    errors += 1
                    block.fail_into(quality, values, code)
                self._burst.warning(
                    f"request:{request.blocks[0].label}",
                    "s7 source %s: request for %s refused or malformed: %s",
                    self.name,
                    ", ".join(b.label for b in request.blocks),
                    exc,
                )
                continue
            for block, item in zip(request.blocks, items, strict=True):
                if isinstance(item, int):
                    errors += 1
                    block.fail_into(quality, values, item_quality(item))
                    hint = " (is PUT/GET access enabled?)" if item == 0x03 else ""
                    self._burst.warning(
                        f"item:{block.label}:{item}",
                        "s7 source %s: PLC refused %s: %s%s",
                        self.name,
                        block.label,
                        item_text(item),
                        hint,
                    )
                    continue
                got = block.decode_into(item, values, quality, texts)
                good += got
                if got < len(block) and len(item) != block.size:
                    errors += 1
                    self._burst.warning(
                        f"decode:{block.label}",
                        "s7 source %s: short answer for %s (%d bytes)",
                        self.name,
                        block.label,
                        len(item),
                    )
                elif got < len(block):
                    errors += 1
                    self._burst.warning(
                        f"string:{block.label}",
                        "s7 source %s: a STRING in %s has an actual length above its "
                        "maximum or its configured length (check address and length)",
                        self.name,
                        block.label,
                    )
        metrics = self.ctx.metrics
        metrics.inc(self._m_requests, len(plan.requests))
        metrics.inc(self._m_values, good)
        if errors:
            metrics.inc(self._m_errors, errors)
        ts = self.ctx.clock.now_ns()
        await self.ctx.emit(
            Batch(plan.tag_ids.copy(), np.full(n, ts, dtype=np.int64), values, quality, text=texts)
        )

    # -- commands ---------------------------------------------------------------------

    def tag(self, key: str | int) -> BoundTag[S7TagConfig]:
        bound = self._by_key.get(key)
        if bound is None:
            raise WriteRefused(f"s7 source {self.name}: no tag {key!r}")
        return bound

    async def write(self, tag: str | int, value: float | int | bool | str) -> None:
        """Write the engineering ``value`` to a tag (id, UNS path or tag map path): one
        write request, never retried, not read back (:meth:`read_back` does that).

        A string tag takes text (Latin-1, at most n characters of its STRING[n]): the
        actual length and the characters are written, the PLC's maximum length byte
        is left as it is.

        Bits are written with the S7 BIT transport size (atomic in the PLC) unless
        ``bit_writes: byte``, which reads the byte, changes the bit and writes the byte
        back (another bit of that byte changed by the PLC in between would be lost).

        Raises :class:`WriteRefused` (nothing sent) or :class:`WriteFailed`: not
        connected or refused by the PLC (``outcome`` ``failed``), or sent and then the
        connection dropped or no answer came in time (``uncertain``).
        """
        bound = self.tag(tag)
        cfg = bound.config
        addr = cfg.parsed
        if not cfg.writable:
            raise WriteRefused(f"{cfg.path}: not writable (set writable: true)")
        if addr.area is Area.I:
            raise WriteRefused(f"{cfg.path}: {addr} is an input and cannot be written")
        payload = raw_payload(cfg, addr, value)
        if cfg.data_type is DataType.STRING:  # from the actual-length byte on
            addr = S7Address(addr.area, addr.db, addr.byte + 1, addr.size)
        client = self._client
        if client is None or not self._link.connected:
            self.ctx.metrics.inc(self._m_write_errors)
            raise WriteFailed(f"{cfg.path}: s7 source {self.name} is not connected")
        progress = _Progress()
        try:
            await self._call(_write_sync, client, addr, payload, self.config.bit_writes, progress)
        except S7ProtocolError as exc:
            self.ctx.metrics.inc(self._m_write_errors)
            if plc_refused(exc) or not progress.sent:
                raise WriteFailed(
                    f"{cfg.path}: the PLC refused the write of {addr}: {exc}",
                    getattr(exc, "error_code", None),
                ) from None
            raise WriteFailed(
                f"{cfg.path}: the write of {addr} was sent, then the answer was unusable "
                f"({exc}): it may have been applied",
                outcome="uncertain",
            ) from None
        except (S7Error, OSError) as exc:
            self.ctx.metrics.inc(self._m_write_errors)
            self._link.connected = False  # the poll loop reconnects at once
            if progress.sent:
                raise WriteFailed(
                    f"{cfg.path}: the write of {addr} was sent, then {type(exc).__name__}: "
                    f"{exc}: it may have been applied",
                    outcome="uncertain",
                ) from None
            raise WriteFailed(f"{cfg.path}: write of {addr} not sent: {exc}") from None
        self.ctx.metrics.inc(self._m_writes)
        self.ctx.log.info(
            "s7 source %s: wrote %s = %r (%s)", self.name, cfg.path, value, cfg.address
        )

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        """The tag's engineering value read from the PLC now (one read of its bytes,
        decoded and scaled like a poll); ``None`` if the tag is unknown, the PLC is not
        connected, refuses the read or does not answer within ``timeout`` seconds."""
        bound = self._by_key.get(tag)
        client = self._client
        if bound is None or client is None or not self._link.connected:
            return None
        cfg = bound.config
        addr = cfg.parsed
        try:
            data = await asyncio.wait_for(self._call(_read_sync, client, addr, cfg.width), timeout)
        except (S7Error, OSError, TimeoutError) as exc:
            self.ctx.log.info("s7 source %s: read back of %s failed: %s", self.name, cfg.path, exc)
            return None
        try:
            return engineering(cfg, _raw(cfg, addr, data))
        except (ValueError, IndexError, struct.error):
            return None


def raw_payload(cfg: S7TagConfig, addr: S7Address, value: float | int | bool | str) -> bytes:
    """The bytes to write for engineering ``value`` (inverse scale/offset; an integer
    rounded half away from zero, then range checked); a bit gives one byte 0/1; a string
    its actual-length byte and characters.  Raises :class:`WriteRefused`."""
    if cfg.data_type is DataType.STRING:
        if not isinstance(value, str):
            raise WriteRefused(f"{cfg.path}: {addr} holds a STRING: write text, not {value!r}")
        try:
            return encode_string(value, cfg.length or 0)
        except ValueError as exc:
            raise WriteRefused(f"{cfg.path}: {exc}") from None
    if isinstance(value, str):
        raise WriteRefused(f"{cfg.path}: {addr} holds {cfg.data_type.value}, not text")
    if isinstance(value, bool) or addr.size is Size.X:
        if addr.size is not Size.X:
            raise WriteRefused(f"{cfg.path}: {addr} holds {cfg.data_type.value}, not a bool")
        if isinstance(value, bool) or value in (0, 1):
            return bytes([1 if value else 0])
        raise WriteRefused(f"{cfg.path}: a bool takes true/false (0/1), not {value!r}")
    try:
        raw = raw_number(cfg, value)  # exact for an unscaled int, also beyond 2**53
    except ValueError as exc:
        raise WriteRefused(f"{cfg.path}: {exc}") from None
    key = (addr.size, cfg.data_type)
    if key in _INT_RANGE:
        low, high = _INT_RANGE[key]
        as_int = raw if isinstance(raw, int) else round_half_away(raw)
        if not low <= as_int <= high:
            raise WriteRefused(
                f"{cfg.path}: {value!r} (raw {as_int}) is outside {cfg.data_type.value} "
                f"at {addr} ({low}..{high})"
            )
        return encode_value(addr.size, cfg.data_type, as_int)
    if cfg.data_type is DataType.FLOAT32 and abs(raw) > FLOAT32_MAX:
        raise WriteRefused(f"{cfg.path}: {value!r} does not fit a REAL")
    return encode_value(addr.size, cfg.data_type, float(raw))


def plc_refused(exc: S7ProtocolError) -> bool:
    """Whether the PLC answered the request with an error (an error class in the S7
    header, or an item return code): it did not apply the write.  Other protocol errors
    (an answer out of step, malformed or lost) leave the outcome uncertain."""
    if isinstance(exc, S7StalePacketError | S7PacketLostError):
        return False
    return bool(getattr(exc, "error_code", None)) or str(exc).startswith("Write operation failed")


class _Progress:
    """Set by the worker thread just before the write request goes out."""

    sent = False


def _raw(cfg: S7TagConfig, addr: S7Address, data: bytes) -> float | int | bool | str:
    """The raw value of a tag's bytes as read (from its first byte: a STRING's maximum
    length byte)."""
    if cfg.data_type is DataType.STRING:
        actual = data[1]
        if actual > data[0] or actual > (cfg.length or 0):
            raise ValueError("STRING actual length above its maximum")
        return data[2 : 2 + actual].decode("latin-1")
    if addr.size is Size.X:
        return bool((data[0] >> (addr.bit or 0)) & 1)
    return decode_raw(addr.size, cfg.data_type, data[: addr.width])


def _snap7_area(area: Area) -> Snap7Area:
    return Snap7Area(AREA_CODE[area])


# -- blocking calls, run in the worker thread -------------------------------------------


def _read_request(client: Client, request: ReadRequest) -> list[bytes | int]:
    """One read-var exchange for all blocks of ``request``; per-item results."""
    specs = [(b.area_code, b.db, b.byte, b.size) for b in request.blocks]
    pdu = client.protocol.build_multi_read_request(specs)
    response = client._send_receive(pdu)
    params = response.get("parameters") or {}
    if params.get("item_count") != len(specs):
        raise ValueError(f"answer has {params.get('item_count')} items, asked {len(specs)}")
    return parse_items(bytes(response.get("raw_data", b"")), len(specs))


def _read_sync(client: Client, addr: S7Address, size: int | None = None) -> bytes:
    area = _snap7_area(addr.area)
    return bytes(client.read_area(area, addr.db, addr.byte, size or addr.width))


def _write_sync(
    client: Client,
    addr: S7Address,
    payload: bytes,
    bit_writes: BitWrite,
    progress: _Progress | None = None,
) -> None:
    """One write (a bit by ``bit_writes``); ``progress.sent`` is set just before the
    write request goes out."""
    progress = progress or _Progress()
    area = _snap7_area(addr.area)
    if addr.size is not Size.X:
        progress.sent = _open(client)
        client.write_area(area, addr.db, addr.byte, bytearray(payload))
        return
    bit = addr.bit or 0
    if bit_writes is BitWrite.BIT:
        progress.sent = _open(client)
        client.write_area(area, addr.db, addr.byte * 8 + bit, bytearray(payload), WordLen.Bit)
        return
    current = client.read_area(area, addr.db, addr.byte, 1)[0]  # nothing written yet
    new = (current | (1 << bit)) if payload[0] else (current & ~(1 << bit) & 0xFF)
    progress.sent = _open(client)
    client.write_area(area, addr.db, addr.byte, bytearray([new]))


def _open(client: Client) -> bool:
    """Whether a request can leave now (else snap7 raises "Not connected" unsent)."""
    return (
        bool(getattr(client, "connected", False))
        and getattr(client, "connection", None) is not None
    )


def _quiet_disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        client.disconnect()
