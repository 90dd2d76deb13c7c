"""Encoding a write from an engineering value (pure): which request, which registers.

``raw = (engineering - offset) / scale`` (the inverse of the pipeline's qualify step),
rounded half away from zero for integer types (an unscaled int is taken exactly, also
beyond 2**53), and refused if it does not fit the tag's data type.  The request
follows from the tag:

* coil → function 5 (write single coil);
* a one-register value (int16, uint16) → function 6 (write single register);
* a wider value → function 16 (write multiple registers), all words in one request,
  so a device never sees half a float;
* a string → function 16 with all its ``length`` registers: the text as UTF-8, padded
  with NULs (refused if longer than ``2 * length`` bytes or holding a NUL);
* a bit in a holding register → function 22 (mask write register): the device changes
  that one bit atomically, never the 15 others (which its own program may be changing).
  A device without function 22 answers exception 1 and the write fails: Isthmus does
  not fall back to a read-modify-write that could overwrite a bit set in between;
* input registers and discrete inputs are read-only (refused).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from isthmus.connectors.base import INT_LIMITS, raw_integer, raw_number
from isthmus.connectors.modbus.config import ModbusTagConfig, Order, RegisterKind
from isthmus.connectors.modbus.decode import encode_string, encode_value
from isthmus.connectors.modbus.errors import WriteRefused
from isthmus.model.config import DataType

_FLOAT32_MAX = float(struct.unpack(">f", bytes.fromhex("7f7fffff"))[0])


class WriteFunction(StrEnum):
    COIL = "write_coil"  # FC 5
    REGISTER = "write_register"  # FC 6
    REGISTERS = "write_registers"  # FC 16
    MASK = "mask_write_register"  # FC 22


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One write: the function, the address and what to send."""

    function: WriteFunction
    address: int
    words: tuple[int, ...] = ()
    """Registers for FC 6/16 (in wire order); ``(0,)``/``(1,)`` for a coil."""
    and_mask: int = 0xFFFF
    or_mask: int = 0x0000
    bit: int | None = None
    """For FC 22: the bit of the register on the wire (after the byte order)."""

    @property
    def count(self) -> int:
        """Registers (or bits) to read back."""
        return max(1, len(self.words))


def to_raw(tag: ModbusTagConfig, value: float | int | bool | str) -> float | int:
    """The raw register value of an engineering value, or :class:`WriteRefused`."""
    if isinstance(value, str) or tag.data_type == DataType.STRING:
        raise WriteRefused(f"{tag.path}: {value!r}: strings go to string tags only")
    if tag.data_type == DataType.BOOL:
        if isinstance(value, bool) or (
            isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1)
        ):
            return int(value)
        raise WriteRefused(f"{tag.path}: a bool takes 0/1 or false/true, not {value!r}")
    try:
        if tag.data_type in INT_LIMITS:
            return raw_integer(tag, value, tag.data_type)
        raw = float(raw_number(tag, value))
    except ValueError as exc:
        raise WriteRefused(f"{tag.path}: {exc}") from None
    if tag.data_type == DataType.FLOAT32 and abs(raw) > _FLOAT32_MAX:
        raise WriteRefused(f"{tag.path}: {value!r} (raw {raw:g}) does not fit a float32")
    return raw


def write_request(
    tag: ModbusTagConfig,
    value: float | int | bool | str,
    word_order: Order,
    byte_order: Order,
) -> WriteRequest:
    """The request that writes engineering ``value`` to ``tag`` (orders already resolved
    against the device defaults).  Raises :class:`WriteRefused`."""
    if not tag.writable:
        raise WriteRefused(f"{tag.path}: not writable (set writable: true in its tag map)")
    if tag.kind in (RegisterKind.INPUT, RegisterKind.DISCRETE):
        raise WriteRefused(f"{tag.path}: {tag.kind.value} is read-only in Modbus")
    if tag.data_type == DataType.STRING:
        if not isinstance(value, str):
            raise WriteRefused(f"{tag.path}: a string tag takes text, not {value!r}")
        try:
            words = tuple(encode_string(value, tag.width, byte_order))
        except ValueError as exc:
            raise WriteRefused(f"{tag.path}: {value!r}: {exc}") from None
        return WriteRequest(WriteFunction.REGISTERS, tag.address, words)
    raw = to_raw(tag, value)
    if tag.kind == RegisterKind.COIL:
        return WriteRequest(WriteFunction.COIL, tag.address, (int(raw),))
    if tag.bit is not None:
        wire_bit = tag.bit if byte_order == Order.BIG else (tag.bit + 8) % 16
        mask = 1 << wire_bit
        return WriteRequest(
            WriteFunction.MASK,
            tag.address,
            and_mask=~mask & 0xFFFF,
            or_mask=mask if raw else 0,
            bit=wire_bit,
        )
    words = tuple(encode_value(tag.data_type, raw, word_order, byte_order))
    if len(words) == 1:
        return WriteRequest(WriteFunction.REGISTER, tag.address, words)
    return WriteRequest(WriteFunction.REGISTERS, tag.address, words)
