"""Modbus TCP source configuration (pure)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from isthmus.connectors.polling import PolledSourceConfig, PolledTagConfig
from isthmus.model.config import DataType
from isthmus.model.durations import Duration


class RegisterKind(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


class Order(StrEnum):
    BIG = "big"
    LITTLE = "little"


REGISTER_WIDTH = {
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

MAX_STRING_REGISTERS = 125
"""A string is read in one request: at most 125 registers (250 characters)."""

REGISTER_KINDS = frozenset({RegisterKind.HOLDING, RegisterKind.INPUT})
BIT_KINDS = frozenset({RegisterKind.COIL, RegisterKind.DISCRETE})


class ModbusTagConfig(PolledTagConfig):
    kind: RegisterKind = Field(
        default=RegisterKind.HOLDING, description="holding, input, coil or discrete"
    )
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    bit: int | None = Field(
        default=None,
        ge=0,
        le=15,
        description="bool in a holding/input register: bit 0 (least significant) .. 15",
    )
    word_order: Order | None = Field(
        default=None, description="order of 16-bit words in 32/64-bit values; device default"
    )
    byte_order: Order | None = Field(
        default=None,
        description="bytes in a word; device default.  Strings: big puts the first "
        "character in the high byte (usual), little swaps each register's two characters",
    )
    length: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STRING_REGISTERS,
        description="data_type string only: registers the string occupies (2 characters "
        "each, UTF-8/ASCII; trailing NULs and spaces stripped)",
    )

    @property
    def width(self) -> int:
        """Registers (or bits) the value occupies."""
        if self.data_type == DataType.STRING:
            return self.length or 1
        return REGISTER_WIDTH[self.data_type]

    @model_validator(mode="after")
    def _kind_type(self) -> ModbusTagConfig:
        bits = self.kind in BIT_KINDS
        if self.data_type == DataType.STRING:
            if bits:
                raise ValueError(f"{self.kind.value} tags hold booleans: set data_type: bool")
            if self.length is None:
                raise ValueError("a string needs length: the registers it occupies (2 chars each)")
            if self.bit is not None:
                raise ValueError("bit: needs data_type: bool (one bit of a register)")
        elif self.length is not None:
            raise ValueError("length: applies to data_type: string only")
        if bits and self.data_type != DataType.BOOL:
            raise ValueError(f"{self.kind.value} tags hold booleans: set data_type: bool")
        if self.bit is not None:
            if bits:
                raise ValueError(f"bit: applies to holding/input registers, not {self.kind.value}")
            if self.data_type != DataType.BOOL:
                raise ValueError("bit: needs data_type: bool (one bit of a register)")
        elif not bits and self.data_type == DataType.BOOL:
            raise ValueError("a bool in a register needs bit: 0..15, or kind: coil or discrete")
        if self.writable and self.kind in (RegisterKind.INPUT, RegisterKind.DISCRETE):
            raise ValueError(
                f"{self.kind.value} is read-only in Modbus: writable needs holding or coil"
            )
        if self.address + self.width > 65536:
            raise ValueError("the value runs past register 65535")
        return self


class ModbusSourceConfig(PolledSourceConfig):
    can_command: ClassVar[bool] = True  # the source is a Commander
    type: Literal["modbus"] = "modbus"
    host: str = Field(description="the device or gateway (name or IP address)")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port")
    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout: Duration = Field(default=2.0, description="per request; no retry in a cycle")
    word_order: Order = Field(default=Order.BIG, description="big: high word first")
    byte_order: Order = Field(default=Order.BIG, description="big: normal Modbus byte order")
    max_registers: int = Field(default=125, ge=1, le=125, description="per read request")
    max_bits: int = Field(default=2000, ge=1, le=2000, description="per coil/discrete read")
    max_gap: int = Field(default=8, ge=0, description="unused registers read to coalesce")
    device_identification: bool = Field(
        default=True, description="read function 43/14 (device identification) on connect"
    )
    verify_writes: bool = Field(
        default=True,
        description="ignored (kept so older files load): the command gate reads every "
        "command back (read_back) and compares",
    )
    reconnect_max: Duration = Field(default=30.0, description="cap of the reconnect backoff")
    tags: list[ModbusTagConfig] = Field(  # type: ignore[assignment]
        default_factory=list, description="the register map"
    )

    @model_validator(mode="after")
    def _fits_requests(self) -> ModbusSourceConfig:
        for i, tag in enumerate(self.tags):
            if tag.kind in REGISTER_KINDS:
                width = tag.width
                if width > self.max_registers:
                    raise ValueError(
                        f"tags[{i}] ({tag.path}): a {tag.data_type.value} needs {width} "
                        f"registers, more than max_registers={self.max_registers}"
                    )
        errors = self.poll_group_errors()
        if errors:
            # Raised as a ValidationError so the error names tags.N.poll_group itself.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self
