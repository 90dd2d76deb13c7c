"""Siemens S7 source configuration (pure): absolute addresses in the usual S7 syntax.

Addresses (case-insensitive; German mnemonics ``E``/``A`` accepted for ``I``/``Q``)::

    DB10.DBX4.3   bit 3 of byte 4 of DB10        I0.1 / E0.1   input bit
    DB10.DBB5     byte 5                         Q0.0 / A0.0   output bit
    DB10.DBW6     word (2 bytes) at 6            M10.2         marker (flag) bit
    DB10.DBD8     double word (4 bytes) at 8     MB4 MW20 MD24 IW64 QD8 ...
    DB10.DBL16    8 bytes at 16 (Isthmus extension for LREAL/LINT: S7 has no letter)

The size letter fixes the width; ``data_type`` says how to read it (``X``: bool;
``B``: uint16 = BYTE/USINT 0..255, int16 = SINT; ``W``: int16 = INT, uint16 = WORD;
``D``: int32 = DINT, uint32 = DWORD, float32 = REAL; ``L``: float64 = LREAL,
int64 = LINT, uint64 = ULINT).  Without ``data_type`` the letter's default applies
(X bool, B uint16, W int16, D float32, L float64).

Strings: an S7 ``STRING[n]`` is ``data_type: string`` at the byte where it starts
(``DB10.DBB20``) with ``length: n``; it occupies ``n + 2`` bytes (maximum length,
actual length, then ``n`` characters, one byte each).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from isthmus.connectors.polling import PolledSourceConfig, PolledTagConfig
from isthmus.model.config import DataType
from isthmus.model.durations import Duration

MAX_DB = 65535
MAX_BYTE = 65535
MIN_PDU = 240
MAX_PDU = 960
MAX_STRING = MIN_PDU - 12 - 2 - 4 - 2
"""Longest STRING[n] read: its n + 2 bytes fit one item of the smallest PDU (240)."""


class Area(StrEnum):
    DB = "DB"
    I = "I"  # noqa: E741 - the S7 mnemonic
    Q = "Q"
    M = "M"


AREA_CODE = {Area.I: 0x81, Area.Q: 0x82, Area.M: 0x83, Area.DB: 0x84}
"""S7 protocol area codes (snap7 ``Area.PE``, ``PA``, ``MK``, ``DB``)."""


class ConnectionType(StrEnum):
    PG = "pg"
    OP = "op"
    BASIC = "s7_basic"


CONNECTION_CODE = {ConnectionType.PG: 1, ConnectionType.OP: 2, ConnectionType.BASIC: 3}


class BitWrite(StrEnum):
    BIT = "bit"
    BYTE = "byte"


class Size(IntEnum):
    X = 0
    B = 1
    W = 2
    D = 4
    L = 8


ALLOWED_TYPES: dict[Size, tuple[DataType, ...]] = {
    Size.X: (DataType.BOOL,),
    Size.B: (DataType.UINT16, DataType.INT16, DataType.STRING),
    Size.W: (DataType.INT16, DataType.UINT16),
    Size.D: (DataType.FLOAT32, DataType.INT32, DataType.UINT32),
    Size.L: (DataType.FLOAT64, DataType.INT64, DataType.UINT64),
}
"""Data types each size letter can hold; the first one is the default."""

_DB_RE = re.compile(r"^DB(\d+)\s*[.,]\s*DB?([XBWDL])(\d+)(?:\.(\d+))?$")
_AREA_RE = re.compile(r"^([IEQAM])([XBWDL]?)(\d+)(?:\.(\d+))?$")
_AREA_ALIAS = {"I": Area.I, "E": Area.I, "Q": Area.Q, "A": Area.Q, "M": Area.M}


@dataclass(frozen=True, slots=True)
class S7Address:
    """A parsed absolute address."""

    area: Area
    db: int
    """DB number (0 outside the DB area)."""
    byte: int
    size: Size
    bit: int | None = None

    @property
    def width(self) -> int:
        """Bytes occupied (1 for a bit)."""
        return max(1, int(self.size))

    def __str__(self) -> str:
        letter = self.size.name
        if self.area is Area.DB:
            text = f"DB{self.db}.DB{letter}{self.byte}"
        else:
            text = f"{self.area.value}{'' if self.size is Size.X else letter}{self.byte}"
        return f"{text}.{self.bit}" if self.bit is not None else text


def parse_address(text: str) -> S7Address:
    """Parse an S7 absolute address; raises ``ValueError`` with a readable message."""
    raw = text.strip().upper().replace(" ", "")
    match = _DB_RE.match(raw)
    if match:
        area, db = Area.DB, int(match.group(1))
        letter, byte_text, bit_text = match.group(2), match.group(3), match.group(4)
        if not 1 <= db <= MAX_DB:
            raise ValueError(f"{text!r}: DB number must be 1..{MAX_DB}")
    else:
        match = _AREA_RE.match(raw)
        if not match:
            raise ValueError(
                f"{text!r} is not an S7 address: use e.g. DB10.DBX4.3, DB10.DBW6, "
                "DB10.DBD8, I0.1, Q0.0, M10.2, MB4, MW20, MD24"
            )
        area, db = _AREA_ALIAS[match.group(1)], 0
        letter, byte_text, bit_text = match.group(2) or "X", match.group(3), match.group(4)
    size = Size[letter]
    byte = int(byte_text)
    if byte > MAX_BYTE:
        raise ValueError(f"{text!r}: byte offset must be 0..{MAX_BYTE}")
    bit: int | None = None
    if size is Size.X:
        if bit_text is None:
            raise ValueError(f"{text!r}: a bit address needs .bit (0..7), e.g. {byte}.0")
        bit = int(bit_text)
        if bit > 7:
            raise ValueError(f"{text!r}: bit must be 0..7")
    elif bit_text is not None:
        raise ValueError(f"{text!r}: only bit addresses (X) take .bit")
    if byte + max(1, int(size)) - 1 > MAX_BYTE:
        raise ValueError(f"{text!r}: the value runs past byte {MAX_BYTE}")
    return S7Address(area, db, byte, size, bit)


class S7TagConfig(PolledTagConfig):
    address: str = Field(description="S7 absolute address: DB10.DBX4.3, DB10.DBW6, MW20, I0.1...")
    length: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STRING,
        description=f"data_type string: n of the PLC's STRING[n] (1..{MAX_STRING}); "
        "the tag occupies n + 2 bytes from its byte address",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(parse_address(value))

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "data_type" not in data and "address" in data:
            try:
                size = parse_address(str(data["address"])).size
            except ValueError:
                return data  # the field validator reports it
            return {**data, "data_type": ALLOWED_TYPES[size][0]}
        return data

    @model_validator(mode="after")
    def _type_fits(self) -> S7TagConfig:
        addr = self.parsed
        allowed = ALLOWED_TYPES[addr.size]
        if self.data_type is DataType.STRING and addr.size is not Size.B:
            raise ValueError(
                f"{addr}: a STRING is addressed by its first byte (e.g. DB10.DBB20, MB4), "
                "with length: n"
            )
        if self.data_type not in allowed:
            names = ", ".join(t.value for t in allowed)
            raise ValueError(
                f"{addr} ({addr.size.name}, {addr.width} byte(s)) cannot hold "
                f"{self.data_type.value}: use data_type {names}"
            )
        if self.writable and addr.area is Area.I:
            raise ValueError(f"{addr} is an input (I/E area): inputs cannot be written")
        if self.data_type is DataType.STRING:
            if self.length is None:
                raise ValueError(
                    f"a string at {addr} needs length: n (the n of the PLC's STRING[n])"
                )
            if addr.byte + self.length + 1 > MAX_BYTE:
                raise ValueError(f"{addr}: STRING[{self.length}] runs past byte {MAX_BYTE}")
        elif self.length is not None:
            raise ValueError("length is for data_type string only")
        return self

    @property
    def width(self) -> int:
        """Bytes occupied: the address's size, or n + 2 for a STRING[n]."""
        if self.data_type is DataType.STRING and self.length is not None:
            return self.length + 2
        return self.parsed.width

    @property
    def parsed(self) -> S7Address:
        return parse_address(self.address)


class S7SourceConfig(PolledSourceConfig):
    can_command: ClassVar[bool] = True  # the source is a Commander
    type: Literal["s7"] = "s7"
    host: str = Field(description="the PLC or CP (name or IP address)")
    port: int = Field(default=102, ge=1, le=65535, description="ISO-on-TCP port")
    rack: int = Field(default=0, ge=0, le=7, description="CPU rack (0 on S7-1200/1500)")
    slot: int = Field(
        default=1, ge=0, le=31, description="CPU slot: S7-300 2, S7-400 per hardware, 1200/1500 1"
    )
    local_tsap: int | None = Field(
        default=None, ge=0, le=0xFFFF, description="explicit local TSAP (e.g. 0x0100); overrides"
    )
    remote_tsap: int | None = Field(
        default=None,
        ge=0,
        le=0xFFFF,
        description="explicit remote TSAP (e.g. 0x0200 for LOGO!); with local_tsap, "
        "replaces rack/slot/connection_type",
    )
    connection_type: ConnectionType = Field(
        default=ConnectionType.PG, description="pg, op or s7_basic (connection resource used)"
    )
    timeout: Duration = Field(
        default=2.0,
        description="per request (a connection: twice this); a timeout drops the connection "
        "(reconnects)",
    )
    reconnect_max: Duration = Field(default=30.0, description="cap of the reconnect backoff")
    max_pdu: int = Field(
        default=MAX_PDU,
        ge=MIN_PDU,
        le=MAX_PDU,
        description="PDU size to ask for; requests are packed to the size the PLC grants",
    )
    max_gap: int = Field(default=16, ge=0, description="unused bytes read to coalesce ranges")
    max_items: int = Field(
        default=20, ge=1, le=20, description="items per multi-variable read request"
    )
    bit_writes: BitWrite = Field(
        default=BitWrite.BIT,
        description="bit: atomic single-bit write (S7 BIT transport); byte: read-modify-write "
        "of the byte (for servers without bit writes)",
    )
    verify_writes: bool = Field(
        default=True,
        description="ignored (kept so older files load): the command gate reads every "
        "command back (read_back) and compares",
    )
    tags: list[S7TagConfig] = Field(  # type: ignore[assignment]
        default_factory=list, description="the address map"
    )

    @model_validator(mode="after")
    def _checks(self) -> S7SourceConfig:
        if (self.local_tsap is None) != (self.remote_tsap is None):
            raise ValueError("set both local_tsap and remote_tsap, or neither (rack/slot)")
        errors = self.poll_group_errors()
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"
