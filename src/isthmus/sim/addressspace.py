"""What the simulator serves, as data: OPC UA variables and the Modbus register map.

The servers are built from these tables and the demo configuration is tested against
them, so a node id or a register address cannot silently drift.  Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from isthmus.model.config import DataType
from isthmus.sim.model import (
    FILL_VOLUME_LIMITS,
    LINE_SPEED_LIMITS,
    PUMP_SPEED_LIMITS,
    DownReason,
    SignalValue,
)

OPCUA_NAMESPACE_URI = "urn:isthmus:sim"
OPCUA_NAMESPACE_INDEX = 2
"""asyncua puts the server's own application URI at index 1, so ours is 2 (checked at
start-up by the runner)."""

MODBUS_UNIT_ID = 1


@dataclass(frozen=True)
class OpcUaVariable:
    """One variable: string NodeId ``ns=2;s=<node>`` inside folder ``<folder>``."""

    node: str
    signal: str
    data_type: DataType
    unit: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    description: str = ""

    @property
    def node_id(self) -> str:
        return f"ns={OPCUA_NAMESPACE_INDEX};s={self.node}"

    @property
    def folder(self) -> str:
        return self.node.rsplit(".", 1)[0]

    @property
    def browse_name(self) -> str:
        return self.node.rsplit(".", 1)[1]


STATE_DOC = "0 idle, 1 running, 2 starved, 3 blocked, 4 down"
REASON_DOC = "0 none, 101 jam, 102 motor overload, 103 material shortage, 104 sensor, 105 safety"


def _machine(folder: str, name: str, speed_unit: str = "bottles/min") -> list[OpcUaVariable]:
    d = DataType
    return [
        OpcUaVariable(f"{folder}.State", f"{name}.state", d.INT32, "", (0, 4), False, STATE_DOC),
        OpcUaVariable(
            f"{folder}.DownReason", f"{name}.down_reason", d.INT32, "", (0, 199), False, REASON_DOC
        ),
        OpcUaVariable(
            f"{folder}.Speed", f"{name}.speed", d.FLOAT64, speed_unit, (0, 720), False, "actual"
        ),
        OpcUaVariable(f"{folder}.TotalCount", f"{name}.total", d.UINT32, "bottles"),
        OpcUaVariable(f"{folder}.GoodCount", f"{name}.good", d.UINT32, "bottles"),
        OpcUaVariable(f"{folder}.RejectCount", f"{name}.reject", d.UINT32, "bottles"),
    ]


OPCUA_VARIABLES: tuple[OpcUaVariable, ...] = (
    OpcUaVariable(
        "Line1.Setpoints.LineSpeed",
        "line.line_speed_sp",
        DataType.FLOAT64,
        "bottles/min",
        LINE_SPEED_LIMITS,
        True,
        "line speed setpoint (Double); every machine follows it",
    ),
    OpcUaVariable(
        "Line1.Setpoints.FillVolume",
        "line.fill_volume_sp",
        DataType.FLOAT64,
        "ml",
        FILL_VOLUME_LIMITS,
        True,
        "filler volume setpoint (Double)",
    ),
    *_machine("Line1.Filler", "filler"),
    OpcUaVariable(
        "Line1.Filler.ProductTemperature",
        "filler.product_temp",
        DataType.FLOAT64,
        "°C",
        (0, 20),
        description="chilled product at the filler bowl",
    ),
    OpcUaVariable(
        "Line1.Filler.FillVolume",
        "filler.fill_volume",
        DataType.FLOAT64,
        "ml",
        (0, 1100),
        description="measured volume of the last bottle (checkweigher)",
    ),
    *_machine("Line1.Capper", "capper"),
    OpcUaVariable(
        "Line1.Capper.MotorTemperature",
        "capper.motor_temp",
        DataType.FLOAT64,
        "°C",
        (0, 120),
        description="capping head motor winding",
    ),
    OpcUaVariable(
        "Line1.Capper.Torque",
        "capper.torque",
        DataType.FLOAT64,
        "N.m",
        (0, 5),
        description="application torque of the last cap",
    ),
    *_machine("Line1.Labeller", "labeller"),
    OpcUaVariable(
        "Line1.Labeller.GlueTemperature",
        "labeller.glue_temp",
        DataType.FLOAT64,
        "°C",
        (100, 200),
        description="hot-melt glue tank",
    ),
    *_machine("Line1.Conveyor", "conveyor"),
    OpcUaVariable(
        "Line1.Conveyor.BeltSpeed",
        "conveyor.belt_speed",
        DataType.FLOAT64,
        "m/min",
        (0, 80),
    ),
    OpcUaVariable(
        "Line1.Conveyor.MotorCurrent",
        "conveyor.motor_current",
        DataType.FLOAT64,
        "A",
        (0, 10),
    ),
)

OPCUA_BY_NODE_ID: dict[str, OpcUaVariable] = {v.node_id: v for v in OPCUA_VARIABLES}
OPCUA_SETPOINTS: dict[str, str] = {
    "line.line_speed_sp": "line_speed",
    "line.fill_volume_sp": "fill_volume",
}
"""Writable OPC UA signals → model setpoint names."""


def opcua_folders() -> list[str]:
    """Every folder path (``Line1``, ``Line1.Filler`` ...), parents before children."""
    folders: list[str] = []
    for var in OPCUA_VARIABLES:
        parts = var.folder.split(".")
        for depth in range(1, len(parts) + 1):
            path = ".".join(parts[:depth])
            if path not in folders:
                folders.append(path)
    return folders


class Kind(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


WIDTH = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}
_STRUCT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT64: "d",
}


@dataclass(frozen=True)
class ModbusPoint:
    """One value in the register map.  Engineering value = raw * ``scale``.

    Bytes within a register are always big-endian; ``word_order`` is the order of the
    16-bit words of 32/64-bit values (``big``: most significant word first).
    """

    name: str
    signal: str
    kind: Kind
    address: int
    data_type: DataType
    scale: float = 1.0
    unit: str = ""
    range: tuple[float, float] | None = None
    word_order: str = "big"
    writable: bool = False
    description: str = ""
    length: int = 0
    """Strings only: registers, two ASCII characters each (high byte first), NUL padded."""

    @property
    def width(self) -> int:
        if self.data_type == DataType.STRING:
            return self.length
        return WIDTH[self.data_type]

    @property
    def addresses(self) -> list[int]:
        return list(range(self.address, self.address + self.width))


def _ir(
    addr: int,
    name: str,
    signal: str,
    dtype: DataType,
    unit: str,
    rng: tuple[float, float] | None,
    scale: float = 1.0,
    word_order: str = "big",
    desc: str = "",
) -> ModbusPoint:
    return ModbusPoint(
        name, signal, Kind.INPUT, addr, dtype, scale, unit, rng, word_order, False, desc
    )


F32 = DataType.FLOAT32

MODBUS_POINTS: tuple[ModbusPoint, ...] = (
    # --- pump measurements (input registers) ---
    _ir(0, "Pump.Flow", "pump.flow", F32, "m3/h", (0, 150)),
    _ir(2, "Pump.DischargePressure", "pump.pressure", F32, "bar", (0, 6)),
    _ir(4, "Pump.MotorCurrent", "pump.current", F32, "A", (0, 50)),
    _ir(6, "Pump.Vibration", "pump.vibration", F32, "mm/s", (0, 20), desc="bearing, RMS"),
    _ir(8, "Pump.Speed", "pump.speed", F32, "%", (0, 100), desc="actual drive speed"),
    _ir(10, "Pump.BearingTemperature", "pump.bearing_temp", DataType.INT16, "°C", (-20, 120), 0.1),
    _ir(11, "Pump.MotorSpeed", "pump.rpm", DataType.UINT16, "rpm", (0, 1600)),
    _ir(12, "Pump.FaultCode", "pump.fault_code", DataType.UINT16, "", (0, 299),
        desc="0 none, 201 overload trip, 202 high vibration trip, 203 dry running"),
    _ir(14, "Pump.RunSeconds", "pump.run_seconds", DataType.UINT32, "s", None),
    _ir(16, "Pump.TotalVolume", "pump.total_volume", DataType.FLOAT64, "m3", None),
    # --- energy meter (input registers) ---
    _ir(20, "Energy.ActivePower", "energy.kw", F32, "kW", (0, 100)),
    _ir(22, "Energy.ActiveEnergy", "energy.kwh", DataType.UINT32, "kWh", None, 0.1,
        desc="raw is 0.1 kWh units"),
    _ir(24, "Energy.Voltage", "energy.voltage", DataType.UINT16, "V", (360, 440), 0.1),
    _ir(25, "Energy.Frequency", "energy.frequency", DataType.UINT16, "Hz", (49, 51), 0.01),
    _ir(26, "Energy.PowerFactor", "energy.power_factor", DataType.INT16, "", (-1, 1), 0.001),
    _ir(28, "Energy.ReactivePower", "energy.kvar", F32, "kvar", (0, 100), word_order="little",
        desc="word-swapped float32 (least significant word first), as many meters do"),
    # --- setpoints (holding registers) ---
    ModbusPoint("Pump.SpeedSetpoint", "pump.speed_sp", Kind.HOLDING, 0, F32, 1.0, "%",
                PUMP_SPEED_LIMITS, "big", True, "pump speed setpoint, read back clamped"),
    # --- bits ---
    ModbusPoint("Pump.Enable", "pump.enable", Kind.COIL, 0, DataType.BOOL, writable=True,
                description="run command (true = run)"),
    ModbusPoint("Pump.Running", "pump.running", Kind.DISCRETE, 0, DataType.BOOL),
    ModbusPoint("Pump.Fault", "pump.fault", Kind.DISCRETE, 1, DataType.BOOL),
    ModbusPoint("Pump.VibrationWarning", "pump.vibration_warning", Kind.DISCRETE, 2,
                DataType.BOOL, description="vibration above 7.1 mm/s (ISO 10816 zone C)"),
    # --- a string (input registers): ASCII, 2 characters per register, NUL padded ---
    ModbusPoint("Pump.StatusText", "pump.status_text", Kind.INPUT, 32, DataType.STRING,
                description="RUNNING, STOPPED or the trip (e.g. TRIP OVERLOAD)", length=8),
)  # fmt: skip

PUMP_TRIP_TEXT: dict[int, str] = {
    DownReason.PUMP_OVERLOAD_TRIP: "TRIP OVERLOAD",
    DownReason.PUMP_HIGH_VIBRATION_TRIP: "TRIP VIBRATION",
    DownReason.PUMP_DRY_RUNNING: "TRIP DRY RUNNING",
}


def pump_status_text(values: dict[str, SignalValue]) -> str:
    """The pump drive's status string, derived from the model's fault code and state."""
    code = int(values["pump.fault_code"])
    if code:
        return PUMP_TRIP_TEXT.get(code, f"FAULT {code}")
    return "RUNNING" if values["pump.running"] else "STOPPED"


def modbus_value(point: ModbusPoint, values: dict[str, SignalValue]) -> SignalValue | str:
    """The value a point serves: a model signal, or a string derived from them."""
    if point.signal == "pump.status_text":
        return pump_status_text(values)
    return values[point.signal]


MODBUS_TABLE_SIZE: dict[Kind, int] = {
    Kind.INPUT: 40,
    Kind.HOLDING: 8,
    Kind.COIL: 16,
    Kind.DISCRETE: 16,
}
"""Registers/bits served per table, from address 0; unmapped ones read as 0."""

MODBUS_SETPOINTS: dict[str, str] = {"pump.speed_sp": "pump_speed", "pump.enable": "pump_enable"}


def modbus_point(kind: Kind | str, address: int) -> ModbusPoint | None:
    for p in MODBUS_POINTS:
        if p.kind == kind and p.address == address:
            return p
    return None


def encode(point: ModbusPoint, value: SignalValue | str) -> list[int]:
    """Engineering value → registers (bits: ``[0 or 1]``; strings: ASCII, NUL padded)."""
    if point.data_type == DataType.STRING:
        data = str(value).encode("ascii", "replace")[: 2 * point.length]
        data = data.ljust(2 * point.length, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if isinstance(value, str):
        raise TypeError(f"{point.name} holds numbers, not {value!r}")
    if point.data_type == DataType.BOOL:
        return [1 if value else 0]
    raw: float | int = float(value) / point.scale
    code = _STRUCT[point.data_type]
    if code not in "fd":
        raw = round(raw)
        bits = 16 * point.width
        if code.isupper():
            raw = min(max(raw, 0), (1 << bits) - 1)
        else:
            raw = min(max(raw, -(1 << (bits - 1))), (1 << (bits - 1)) - 1)
    data = struct.pack(">" + code, raw)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if point.word_order == "little" else words


def decode(point: ModbusPoint, registers: list[int]) -> float:
    """Registers → engineering value (NaN stays NaN)."""
    if point.data_type == DataType.BOOL:
        return 1.0 if registers[0] else 0.0
    words = registers[: point.width]
    if point.word_order == "little":
        words = words[::-1]
    data = b"".join(int(w & 0xFFFF).to_bytes(2, "big") for w in words)
    raw = struct.unpack(">" + _STRUCT[point.data_type], data)[0]
    return float(raw) * point.scale
