"""Modbus TCP source: polls a compiled read plan at a fixed rate, one batch per cycle.

Qualities produced (see README.md):

* Good — the block holding the tag was read and decoded;
* ``BAD_COMMUNICATION_ERROR`` — the request timed out, the connection was lost or the
  device is unreachable (also for gateway exception codes 0x0A/0x0B);
* ``BAD_CONFIGURATION_ERROR`` — the device refused the request as wrong for it
  (exception codes 1 illegal function, 2 illegal data address, 3 illegal data value):
  fix the tag map (or set ``max_gap: 0`` if a bridged gap holds unmapped addresses);
* ``BAD_DEVICE_FAILURE`` — the device reported a failure or is busy (codes 4 to 8);
* ``BAD_DECODING_ERROR`` — the response was too short or malformed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from isthmus.connectors.base import Backoff, BoundTag, Link, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig, RegisterKind
from isthmus.connectors.modbus.decode import ReadBlock, ReadPlan, plan_for
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality
from isthmus.pipeline.metrics import BurstLog

_CONFIG_CODES = frozenset({0x01, 0x02, 0x03})
_GATEWAY_CODES = frozenset({0x0A, 0x0B})


def exception_quality(code: int) -> Quality:
    """The quality of a block's tags when the device answers with exception ``code``."""
    if code in _CONFIG_CODES:
        return Quality.BAD_CONFIGURATION_ERROR
    if code in _GATEWAY_CODES:
        return Quality.BAD_COMMUNICATION_ERROR
    return Quality.BAD_DEVICE_FAILURE


class _ConnectionLost(Exception):
    pass


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
        self.plan: ReadPlan = plan_for(config, tags)
        self._tag_ids = self.plan.tag_ids
        self._client: Any = None
        self._link = Link("modbus", self.name, f"{config.host}:{config.port}", self._tag_ids, ctx)
        self._burst = BurstLog(ctx.log)
        prefix = f"source.{self.name}"
        self._m_requests = f"{prefix}.requests"
        self._m_values = f"{prefix}.values"
        self._m_errors = f"{prefix}.errors"
        self._m_overruns = f"{prefix}.overruns"
        self._m_cycle = f"{prefix}.cycle_seconds"
        self._readers = {
            RegisterKind.HOLDING: "read_holding_registers",
            RegisterKind.INPUT: "read_input_registers",
            RegisterKind.COIL: "read_coils",
            RegisterKind.DISCRETE: "read_discrete_inputs",
        }

    @property
    def connected(self) -> bool:
        return self._link.connected

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; reconnects with capped backoff; never raises otherwise."""
        backoff = Backoff(
            initial=min(0.5, self.config.reconnect_max), cap=self.config.reconnect_max
        )
        try:
            while True:
                try:
                    client = self._new_client()
                    self._client = client
                    if not await client.connect() or not client.connected:
                        raise _ConnectionLost(
                            f"cannot connect to {self.config.host}:{self.config.port}"
                        )
                    self._link.up()
                    backoff.reset()
                    await self._poll_loop(client)
                except _ConnectionLost as exc:
                    await self._link.down(str(exc))
                except (ModbusException, OSError) as exc:
                    await self._link.down(f"{type(exc).__name__}: {exc}")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must not kill the source: log and retry
                    self.ctx.log.exception("modbus source %s: unexpected error", self.name)
                    await self._link.down(f"unexpected {type(exc).__name__}: {exc}")
                self._close_client()
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._close_client()

    def _new_client(self) -> Any:
        client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            name=f"isthmus-{self.name}",
            timeout=self.config.timeout,
            retries=0,
            reconnect_delay=0,  # we reconnect ourselves, with our backoff
            trace_connect=self._trace_connect,
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

    async def _poll_loop(self, client: Any) -> None:
        """Poll at a fixed rate until the connection is lost (raises _ConnectionLost)."""
        if not self.plan.blocks:
            await asyncio.Event().wait()  # nothing to read: idle until cancelled
        loop = asyncio.get_running_loop()
        interval = self.config.poll_interval
        next_at = loop.time()
        while True:
            started = loop.time()
            await self.poll_once(client)
            now = loop.time()
            self.ctx.metrics.set(self._m_cycle, now - started)
            if interval <= 0:  # as fast as possible (benchmarks): just yield
                await asyncio.sleep(0)
                continue
            next_at += interval
            if next_at < now:  # overran: skip the missed slots, keep the phase
                missed = int((now - next_at) // interval) + 1
                next_at += missed * interval
                self.ctx.metrics.inc(self._m_overruns, missed)
            await asyncio.sleep(next_at - now)

    async def poll_once(self, client: Any) -> None:
        """Read every block once and emit one batch (raises _ConnectionLost)."""
        plan = self.plan
        n = len(plan)
        values = np.empty(n, dtype=np.float64)
        quality = np.empty(n, dtype=np.uint32)
        good = 0
        errors = 0
        unit = self.config.unit_id
        task = asyncio.current_task()
        for block in plan.blocks:
            if not self._link.connected or not client.connected:
                raise _ConnectionLost("connection lost")
            read = getattr(client, self._readers[block.kind])
            try:
                response = await read(block.address, count=block.count, device_id=unit)
            except ConnectionException as exc:
                raise _ConnectionLost(f"connection lost: {exc}") from None
            except ModbusIOException as exc:  # no answer within timeout
                if not client.connected:
                    raise _ConnectionLost(f"connection lost: {exc}") from None
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
                    "modbus source %s: device refused %s %d..%d (exception code %d)",
                    self.name,
                    block.kind.value,
                    block.address,
                    block.end - 1,
                    code,
                )
                continue
            good += self._decode(block, response, values, quality)
        ts = self.ctx.clock.now_ns()
        metrics = self.ctx.metrics
        metrics.inc(self._m_requests, len(plan.blocks))
        metrics.inc(self._m_values, good)
        if errors:
            metrics.inc(self._m_errors, errors)
        await self.ctx.emit(
            Batch(self._tag_ids.copy(), np.full(n, ts, dtype=np.int64), values, quality)
        )

    def _decode(
        self,
        block: ReadBlock,
        response: Any,
        values: np.ndarray[Any, Any],
        quality: np.ndarray[Any, Any],
    ) -> int:
        data = getattr(response, "payload", None)
        if data is None:
            data = response.bits if block.is_bits else response.registers
        good = block.decode_into(data, values, quality)
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
