"""Modbus TCP source configuration (pure)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from isthmus.model.config import DataType, SourceConfig, TagConfig
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


class ModbusTagConfig(TagConfig):
    kind: RegisterKind = RegisterKind.HOLDING
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    word_order: Order | None = Field(
        default=None, description="order of 16-bit words in 32/64-bit values; device default"
    )
    byte_order: Order | None = Field(default=None, description="bytes in a word; device default")

    @model_validator(mode="after")
    def _kind_type(self) -> ModbusTagConfig:
        bits = self.kind in (RegisterKind.COIL, RegisterKind.DISCRETE)
        if bits and self.data_type != DataType.BOOL:
            raise ValueError(f"{self.kind.value} tags hold booleans: set data_type: bool")
        if not bits and self.data_type == DataType.BOOL:
            raise ValueError("a bool in a register needs kind: coil or discrete")
        if self.address + REGISTER_WIDTH[self.data_type] > 65536:
            raise ValueError("the value runs past register 65535")
        return self


class ModbusSourceConfig(SourceConfig):
    type: Literal["modbus"] = "modbus"
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval: Duration = 1.0
    timeout: Duration = 2.0
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    max_registers: int = Field(default=125, ge=1, le=125, description="per read request")
    max_bits: int = Field(default=2000, ge=1, le=2000, description="per coil/discrete read")
    max_gap: int = Field(default=8, ge=0, description="unused registers read to coalesce")
    reconnect_max: Duration = 30.0
    tags: list[ModbusTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _fits_requests(self) -> ModbusSourceConfig:
        for i, tag in enumerate(self.tags):
            if tag.kind in (RegisterKind.HOLDING, RegisterKind.INPUT):
                width = REGISTER_WIDTH[tag.data_type]
                if width > self.max_registers:
                    raise ValueError(
                        f"tags[{i}] ({tag.path}): a {tag.data_type.value} needs {width} "
                        f"registers, more than max_registers={self.max_registers}"
                    )
        return self
