"""Modbus TCP source: polls one compiled read plan per poll group, each at its own fixed
rate, one batch per group cycle; identifies the device (function 43/14); writes tags.

Qualities produced (see README.md):

* Good — the block holding the tag was read and decoded;
* ``BAD_COMMUNICATION_ERROR`` — the request timed out, the connection was lost or the
  device is unreachable (also for gateway exception codes 0x0A/0x0B);
* ``BAD_CONFIGURATION_ERROR`` — the device refused the request as wrong for it
  (exception codes 1 illegal function, 2 illegal data address, 3 illegal data value):
  fix the tag map (or set ``max_gap: 0`` if a bridged gap holds unmapped addresses);
* ``BAD_DEVICE_FAILURE`` — the device reported a failure or is busy (codes 4 to 8);
* ``BAD_DECODING_ERROR`` — the response was too short or malformed.

Commands (:meth:`ModbusSource.write`, :meth:`ModbusSource.read_back`: the
:class:`~isthmus.connectors.base.Commander` interface) are encoded by :mod:`.writes`
and raise the errors of :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import DeviceInformation
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from isthmus.connectors.base import BoundTag, Link, SourceContext, Value, engineering, tag_index
from isthmus.connectors.modbus.config import (
    ModbusSourceConfig,
    ModbusTagConfig,
    Order,
    RegisterKind,
)
from isthmus.connectors.modbus.decode import (
    ReadBlock,
    ReadPlan,
    decode_string,
    decode_value,
    plans_for,
)
from isthmus.connectors.modbus.errors import WriteFailed, WriteRefused
from isthmus.connectors.modbus.writes import WriteFunction, write_request
from isthmus.connectors.polling import PollGroup, group_tag_ids, poll_groups
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.quality import Quality
from isthmus.net.link import LinkLost

_CONFIG_CODES = frozenset({0x01, 0x02, 0x03})
_GATEWAY_CODES = frozenset({0x0A, 0x0B})

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

DEVICE_OBJECTS = {
    0x00: "VendorName",
    0x01: "ProductCode",
    0x02: "MajorMinorRevision",
    0x03: "VendorUrl",
    0x04: "ProductName",
    0x05: "ModelName",
    0x06: "UserApplicationName",
}
"""Basic (0-2) and regular (3-6) objects of Read Device Identification."""
_MAX_ID_FOLLOWS = 8  # continuation requests of one identification read (bounded)


def exception_text(code: int) -> str:
    """``"exception 2 (illegal data address)"``."""
    name = EXCEPTION_NAMES.get(code)
    return f"exception {code} ({name})" if name else f"exception {code}"


def exception_quality(code: int) -> Quality:
    """The quality of a block's tags when the device answers with exception ``code``."""
    if code in _CONFIG_CODES:
        return Quality.BAD_CONFIGURATION_ERROR
    if code in _GATEWAY_CODES:
        return Quality.BAD_COMMUNICATION_ERROR
    return Quality.BAD_DEVICE_FAILURE


class _PayloadMixin:
    """Keeps a read response's payload as bytes instead of a list of Python ints
    (pymodbus unpacks every register with its own ``struct.unpack`` call); the read
    plan decodes the bytes with NumPy.  Registered per client for FC 1-4."""

    function_code: int
    payload: bytes = b""

    def decode(self, data: bytes) -> None:
        count = int(data[0]) if data else 0
        if count >= len(data):
            raise ModbusIOException(
                f"byte_count {count} > length of packet {len(data)}",
                function_code=self.function_code,
            )
        self.payload = bytes(data[1 : 1 + count])

    def __str__(self) -> str:  # pymodbus formats every decoded PDU for its debug log
        return f"{type(self).__name__}({len(self.payload)} bytes)"


class _HoldingPayload(_PayloadMixin, ReadHoldingRegistersResponse):
    pass


class _InputPayload(_PayloadMixin, ReadInputRegistersResponse):
    pass


class _CoilsPayload(_PayloadMixin, ReadCoilsResponse):
    pass


class _DiscretePayload(_PayloadMixin, ReadDiscreteInputsResponse):
    pass


_PAYLOAD_RESPONSES = (_HoldingPayload, _InputPayload, _CoilsPayload, _DiscretePayload)


def _words(response: Any) -> npt.NDArray[np.uint16]:
    payload = getattr(response, "payload", None)
    if isinstance(payload, bytes):
        return np.frombuffer(payload[: len(payload) // 2 * 2], dtype=">u2").astype(np.uint16)
    return np.asarray(getattr(response, "registers", []), dtype=np.uint16)


def _bits(response: Any) -> npt.NDArray[np.bool_]:
    payload = getattr(response, "payload", None)
    if isinstance(payload, bytes):
        packed = np.frombuffer(payload, dtype=np.uint8)
        return np.unpackbits(packed, bitorder="little").view(np.bool_)
    return np.asarray(getattr(response, "bits", []), dtype=np.bool_)


def _text(data: Any) -> str:
    parts = data if isinstance(data, list) else [data]
    texts = []
    for part in parts:
        raw = part if isinstance(part, bytes | bytearray) else str(part).encode()
        texts.append(bytes(raw).decode("utf-8", errors="replace").strip("\x00 \t\r\n"))
    return " ".join(t for t in texts if t)


class ModbusSource:
    """Polls one Modbus TCP device (one ``unit_id``) and emits a batch per poll cycle."""

    def __init__(
        self,
        config: ModbusSourceConfig,
        tags: Sequence[BoundTag[ModbusTagConfig]],
        ctx: SourceContext,
    ) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self.groups: tuple[PollGroup[ReadPlan], ...] = tuple(
            PollGroup(group, config.group_interval(group), plan)
            for group, plan in plans_for(config, tags).items()
        )
        self._tag_ids = group_tag_ids(self.groups)
        self._by_key = tag_index(tags)
        self.device_info: dict[str, str] = {}
        """Read Device Identification objects (VendorName, ProductCode...); empty when the
        device does not support function 43/14 or ``device_identification`` is off."""
        self._logged_info: dict[str, str] | None = None
        self._client: Any = None
        self._link = Link("modbus", self.name, f"{config.host}:{config.port}", self._tag_ids, ctx)
        self._burst = ctx.burst_log(self.name)
        prefix = f"source.{self.name}"
        self._m_requests = f"{prefix}.requests"
        self._m_values = f"{prefix}.values"
        self._m_errors = f"{prefix}.errors"
        self._m_overruns = f"{prefix}.overruns"
        self._m_cycle = f"{prefix}.cycle_seconds"
        self._m_writes = f"{prefix}.writes"
        self._m_write_errors = f"{prefix}.write_errors"
        self._write_lock = asyncio.Lock()
        self._writing = False
        self._write_sent = False
        self._readers = {
            RegisterKind.HOLDING: "read_holding_registers",
            RegisterKind.INPUT: "read_input_registers",
            RegisterKind.COIL: "read_coils",
            RegisterKind.DISCRETE: "read_discrete_inputs",
        }

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def plan(self) -> ReadPlan:
        """The read plan of the default poll group (the only one without ``poll_groups``)."""
        for group in self.groups:
            if group.name is None:
                return group.plan
        return ReadPlan((), np.empty(0, dtype=np.int32))

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; reconnects with capped backoff; never raises otherwise."""
        try:
            await self._link.supervise(
                self._session,
                errors=(ModbusException, OSError),
                close=self._close_client,
                reconnect_max=self.config.reconnect_max,
            )
        finally:
            self._close_client()

    async def _session(self) -> None:
        client = self._new_client()
        self._client = client
        if not await client.connect() or not client.connected:
            raise LinkLost(f"cannot connect to {self.config.host}:{self.config.port}")
        self._link.up()
        if self.config.device_identification:
            await self._identify(client)
        await self._poll_loop(client)

    def _new_client(self) -> Any:
        client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            name=f"isthmus-{self.name}",
            timeout=self.config.timeout,
            retries=0,
            reconnect_delay=0,  # we reconnect ourselves, with our backoff
            trace_connect=self._trace_connect,
            trace_packet=self._trace_packet,
        )
        for response_class in _PAYLOAD_RESPONSES:
            client.register(response_class)
        return client

    def _trace_connect(self, connected: bool) -> None:
        """Called by pymodbus on (dis)connection: fail a pending request at once
        instead of letting it wait for its timeout."""
        if connected:
            return
        self._link.connected = False
        client = self._client
        future = getattr(getattr(client, "ctx", None), "response_future", None)
        if isinstance(future, asyncio.Future) and not future.done():
            future.set_exception(ConnectionException("connection lost"))

    def _close_client(self) -> None:
        client, self._client = self._client, None
        self._link.connected = False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # -- polling ------------------------------------------------------------------------

    async def _identify(self, client: Any) -> None:
        """Read Device Identification (43/14), regular objects then basic ones; a device
        that answers with an exception or not at all leaves ``device_info`` empty."""
        info: dict[str, str] = {}
        unit = self.config.unit_id
        try:
            for read_code in (DeviceInformation.REGULAR, DeviceInformation.BASIC):
                refused = False
                object_id = 0
                for _ in range(_MAX_ID_FOLLOWS):
                    response = await client.read_device_information(
                        read_code=read_code, object_id=object_id, device_id=unit
                    )
                    if response.isError():
                        refused = True
                        break
                    for oid, data in dict(getattr(response, "information", {})).items():
                        name = DEVICE_OBJECTS.get(int(oid))
                        text = _text(data)
                        if name is not None and text:
                            info[name] = text
                    next_id = int(getattr(response, "next_object_id", 0))
                    if not getattr(response, "more_follows", 0) or next_id <= object_id:
                        break
                    object_id = next_id
                if not refused:
                    break
        except asyncio.CancelledError:
            raise
        except ConnectionException as exc:
            raise LinkLost(f"connection lost: {exc}") from None
        except Exception as exc:  # timeout or a malformed answer: no identification
            if not client.connected:
                raise LinkLost(f"connection lost: {exc}") from None
            self.ctx.log.debug("modbus source %s: no device identification (%s)", self.name, exc)
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # see poll_once
            raise asyncio.CancelledError
        self.device_info = info
        if info != self._logged_info:
            self._logged_info = dict(info)
            if info:
                self.ctx.log.info(
                    "modbus source %s: device %s",
                    self.name,
                    ", ".join(f"{k}={v!r}" for k, v in info.items()),
                )

    async def _poll_loop(self, client: Any) -> None:
        """Poll every group at its own rate until the connection is lost (raises
        LinkLost); the requests of all groups share the one connection."""
        groups = [g for g in self.groups if g.plan.blocks]

        async def once(group: PollGroup[ReadPlan]) -> None:
            await self.poll_once(client, group)

        await poll_groups(groups, once, self.ctx.metrics, f"source.{self.name}")

    async def poll_once(self, client: Any, group: PollGroup[ReadPlan] | None = None) -> None:
        """Read every block of ``group`` (default: the default group) once and emit one
        batch (raises LinkLost)."""
        plan = self.plan if group is None else group.plan
        n = len(plan)
        values = np.empty(n, dtype=np.float64)
        quality = np.empty(n, dtype=np.uint32)
        texts = np.full(n, None, dtype=object) if plan.has_text else None
        good = 0
        errors = 0
        unit = self.config.unit_id
        task = asyncio.current_task()
        for block in plan.blocks:
            if not self._link.connected or not client.connected:
                raise LinkLost("connection lost")
            read = getattr(client, self._readers[block.kind])
            try:
                response = await read(block.address, count=block.count, device_id=unit)
            except ConnectionException as exc:
                raise LinkLost(f"connection lost: {exc}") from None
            except ModbusIOException as exc:  # no answer within timeout
                if not client.connected:
                    raise LinkLost(f"connection lost: {exc}") from None
                errors += 1
                block.fail_into(quality, values, Quality.BAD_COMMUNICATION_ERROR)
                self._burst.warning(
                    f"timeout:{block.address}",
                    "modbus source %s: no answer for %s %d..%d within %.1f s",
                    self.name,
                    block.kind.value,
                    block.address,
                    block.end - 1,
                    self.config.timeout,
                )
                continue
            # Python 3.11's wait_for (used inside pymodbus) can swallow a cancellation
            # that races with a response: honour it here so cancel stays prompt.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            if response.isError():
                errors += 1
                code = int(getattr(response, "exception_code", 0))
                block.fail_into(quality, values, exception_quality(code))
                self._burst.warning(
                    f"exc:{block.kind.value}:{block.address}:{code}",
                    "modbus source %s: device refused %s %d..%d: %s",
                    self.name,
                    block.kind.value,
                    block.address,
                    block.end - 1,
                    exception_text(code),
                )
                continue
            good += self._decode(block, response, values, quality, texts)
        ts = self.ctx.clock.now_ns()
        metrics = self.ctx.metrics
        metrics.inc(self._m_requests, len(plan.blocks))
        metrics.inc(self._m_values, good)
        if errors:
            metrics.inc(self._m_errors, errors)
        await self.ctx.emit(
            Batch(plan.tag_ids.copy(), np.full(n, ts, dtype=np.int64), values, quality, text=texts)
        )

    def _decode(
        self,
        block: ReadBlock,
        response: Any,
        values: np.ndarray[Any, Any],
        quality: np.ndarray[Any, Any],
        texts: np.ndarray[Any, Any] | None = None,
    ) -> int:
        data = getattr(response, "payload", None)
        if data is None:
            data = response.bits if block.is_bits else response.registers
        good = block.decode_into(data, values, quality, texts)
        if good < len(block):
            self.ctx.metrics.inc(self._m_errors)
            self._burst.warning(
                f"decode:{block.address}",
                "modbus source %s: short or malformed response for %s %d..%d",
                self.name,
                block.kind.value,
                block.address,
                block.end - 1,
            )
        return good

    # -- commands ---------------------------------------------------------------------

    def tag(self, key: str | int) -> BoundTag[ModbusTagConfig]:
        """A tag of this source by id, full UNS path or tag map path."""
        bound = self._by_key.get(key)
        if bound is None:
            raise WriteRefused(f"modbus source {self.name}: no tag {key!r}")
        return bound

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus hands us every frame just before it goes to the socket: note when the
        frame of the write in progress leaves (a write function code, a live transport),
        so a failure after that point is ``uncertain`` and before it ``failed``."""
        if sending and self._writing and len(packet) > 7 and packet[7] in _WRITE_FUNCTIONS:
            transport = getattr(getattr(self._client, "ctx", None), "transport", None)
            if transport is not None:
                self._write_sent = True
        return packet

    async def write(self, tag: str | int, value: float | int | bool | str) -> None:
        """Write the engineering ``value`` to a tag (id, UNS path or tag map path): one
        request, never retried, not read back (:meth:`read_back` does that).

        Raises :class:`WriteRefused` (nothing sent: unknown, read-only or non-writable
        tag, value out of the data type's range, text for a number or the reverse, a
        string too long for its registers) or :class:`WriteFailed`: not connected or an
        exception answer (``outcome`` ``failed``), or the connection dropped / no answer
        came after the request was sent (``uncertain``).
        """
        bound = self.tag(tag)
        cfg = bound.config
        request = write_request(
            cfg,
            value,
            cfg.word_order or self.config.word_order,
            cfg.byte_order or self.config.byte_order,
        )
        async with self._write_lock:  # one write at a time: "sent" is about this one
            client = self._client
            if client is None or not self._link.connected or not client.connected:
                self.ctx.metrics.inc(self._m_write_errors)
                raise WriteFailed(f"{cfg.path}: modbus source {self.name} is not connected")
            unit = self.config.unit_id
            call: Any
            if request.function == WriteFunction.COIL:
                call = client.write_coil(request.address, bool(request.words[0]), device_id=unit)
            elif request.function == WriteFunction.REGISTER:
                call = client.write_register(request.address, request.words[0], device_id=unit)
            elif request.function == WriteFunction.REGISTERS:
                call = client.write_registers(request.address, list(request.words), device_id=unit)
            else:
                call = client.mask_write_register(
                    address=request.address,
                    and_mask=request.and_mask,
                    or_mask=request.or_mask,
                    device_id=unit,
                )
            self._writing, self._write_sent = True, False
            try:
                await self._checked(cfg, call)
            finally:
                self._writing = False
        self.ctx.metrics.inc(self._m_writes)
        self.ctx.log.info(
            "modbus source %s: wrote %s = %r (%s %s %d)",
            self.name,
            cfg.path,
            value,
            cfg.kind.value,
            request.function.value,
            request.address,
        )

    async def _checked(self, cfg: ModbusTagConfig, call: Any) -> Any:
        try:
            response = await call
        except (ModbusException, OSError) as exc:
            self.ctx.metrics.inc(self._m_write_errors)
            sent = self._write_sent
            if isinstance(exc, ConnectionException) or not client_connected(self._client):
                what = f"connection lost ({exc})"
            else:
                what = f"no answer within {self.config.timeout:g} s ({exc})"
            if sent:
                raise WriteFailed(
                    f"{cfg.path}: the write was sent, then {what}: it may have been applied",
                    outcome="uncertain",
                ) from None
            raise WriteFailed(f"{cfg.path}: the write was not sent: {what}") from None
        if response.isError():
            self.ctx.metrics.inc(self._m_write_errors)
            code = int(getattr(response, "exception_code", 0))
            raise WriteFailed(
                f"{cfg.path}: the device refused the write of {cfg.kind.value} "
                f"{cfg.address}: {exception_text(code)}",
                code,
            )
        return response

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        """The tag's engineering value read from the device now: one fresh read of its
        registers (or coil, or bit), decoded and scaled like a poll; ``None`` if the tag
        is unknown, the device is not connected, answers with an exception or not within
        ``timeout`` seconds."""
        bound = self._by_key.get(tag)
        client = self._client
        if bound is None or client is None or not self._link.connected or not client.connected:
            return None
        cfg = bound.config
        read = getattr(client, self._readers[cfg.kind])
        try:
            async with asyncio.timeout(timeout):
                response = await read(cfg.address, count=cfg.width, device_id=self.config.unit_id)
        except (ModbusException, OSError, TimeoutError) as exc:
            self.ctx.log.info(
                "modbus source %s: read back of %s failed: %s", self.name, cfg.path, exc
            )
            return None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            self.ctx.log.info(
                "modbus source %s: read back of %s refused: %s",
                self.name,
                cfg.path,
                exception_text(code),
            )
            return None
        return self._engineering(cfg, response)

    def _engineering(self, cfg: ModbusTagConfig, response: Any) -> Value | None:
        """The engineering value of a read back response (None when too short)."""
        if cfg.kind in (RegisterKind.COIL, RegisterKind.DISCRETE):
            bits = _bits(response)
            return engineering(cfg, bool(bits[0])) if len(bits) else None
        words = [int(w) for w in _words(response)]
        byte_order = cfg.byte_order or self.config.byte_order
        if cfg.data_type == DataType.STRING:
            return decode_string(words, byte_order) if len(words) >= cfg.width else None
        if cfg.bit is not None:
            if not words:
                return None
            wire_bit = cfg.bit if byte_order == Order.BIG else (cfg.bit + 8) % 16
            return engineering(cfg, bool((words[0] >> wire_bit) & 1))
        try:
            raw = decode_value(
                cfg.data_type, words, cfg.word_order or self.config.word_order, byte_order
            )
        except ValueError:
            return None
        return engineering(cfg, raw)


_WRITE_FUNCTIONS = frozenset({5, 6, 15, 16, 22, 23})
"""Modbus function codes that change the device (a frame's byte 7 after the MBAP header)."""


def client_connected(client: Any) -> bool:
    return client is not None and bool(getattr(client, "connected", False))
