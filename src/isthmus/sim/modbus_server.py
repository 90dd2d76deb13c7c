"""The pump and the energy meter served over Modbus TCP (pymodbus), per
:data:`MODBUS_POINTS`.

Uses pymodbus' ``SimDevice``/``SimData`` datastore (the ``ModbusDeviceContext`` family
is deprecated in 3.x and removed in 4).  Each table is one contiguous block from
address 0, so reads that span unmapped registers (a client coalescing requests) succeed.
"""

from __future__ import annotations

import logging
import math

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from isthmus.model.config import DataType
from isthmus.sim.addressspace import (
    MODBUS_POINTS,
    MODBUS_SETPOINTS,
    MODBUS_TABLE_SIZE,
    MODBUS_UNIT_ID,
    Kind,
    ModbusPoint,
    decode,
    encode,
    modbus_value,
)
from isthmus.sim.model import SignalValue

log = logging.getLogger("isthmus.sim.modbus")

# Function codes used to reach each table through the server's datastore.
_READ_FC = {Kind.COIL: 1, Kind.DISCRETE: 2, Kind.HOLDING: 3, Kind.INPUT: 4}


def build_device() -> SimDevice:
    def bits(kind: Kind) -> list[SimData]:
        return [SimData(0, count=MODBUS_TABLE_SIZE[kind], values=False, datatype=SimType.BITS)]

    def regs(kind: Kind) -> list[SimData]:
        return [SimData(0, count=MODBUS_TABLE_SIZE[kind], values=0, datatype=SimType.REGISTERS)]

    # (coils, discrete inputs, holding registers, input registers), separate tables
    return SimDevice(
        MODBUS_UNIT_ID,
        simdata=(bits(Kind.COIL), bits(Kind.DISCRETE), regs(Kind.HOLDING), regs(Kind.INPUT)),
    )


class SimModbusServer:
    """A Modbus TCP server for unit :data:`MODBUS_UNIT_ID`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.server: ModbusTcpServer | None = None
        self._last: dict[str, SignalValue | str] = {}

    async def start(self, initial: dict[str, SignalValue]) -> None:
        self.server = ModbusTcpServer(build_device(), address=(self.host, self.port))
        await self.server.serve_forever(background=True)
        await self.push(initial)
        log.info(
            "Modbus simulator listening on %s:%d (unit %d)", self.host, self.port, MODBUS_UNIT_ID
        )

    async def _write(self, point: ModbusPoint, value: SignalValue | str) -> None:
        assert self.server is not None
        words = encode(point, value)
        data: list[int] | list[bool] = (
            [bool(w) for w in words] if point.data_type == DataType.BOOL else words
        )
        await self.server.async_setValues(MODBUS_UNIT_ID, _READ_FC[point.kind], point.address, data)

    async def _read(self, point: ModbusPoint) -> list[int]:
        assert self.server is not None
        raw = await self.server.async_getValues(
            MODBUS_UNIT_ID, _READ_FC[point.kind], point.address, point.width
        )
        return [int(v) for v in raw]

    async def read_setpoints(self) -> dict[str, float]:
        """Setpoints written by clients since the last push: model name → value."""
        changed: dict[str, float] = {}
        for point in MODBUS_POINTS:
            name = MODBUS_SETPOINTS.get(point.signal)
            if name is None:
                continue
            value = decode(point, await self._read(point))
            last = self._last.get(point.signal)
            if last is not None and value == float(last):
                continue
            self._last.pop(point.signal, None)  # the next push writes back the applied value
            if math.isfinite(value):
                changed[name] = value
        return changed

    async def push(self, values: dict[str, SignalValue]) -> int:
        """Write the values that changed since the last push; returns how many."""
        written = 0
        for point in MODBUS_POINTS:
            value = modbus_value(point, values)
            if self._last.get(point.signal) == value:
                continue
            await self._write(point, value)
            self._last[point.signal] = value
            written += 1
        return written

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
            self.server = None
