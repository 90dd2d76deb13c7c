"""Errors of Modbus writes (the command path): raised by :meth:`ModbusSource.write`."""

from __future__ import annotations

from isthmus.model.errors import IsthmusError


class ModbusWriteError(IsthmusError):
    """A write to a Modbus device did not happen, or did not take effect."""


class WriteRefused(ModbusWriteError):
    """Refused before anything was sent: unknown or read-only tag, a value that does
    not fit the tag's data type, a read-only register kind."""


class WriteFailed(ModbusWriteError):
    """Sent, but the device answered with an exception, did not answer in time, or the
    connection is down.  ``code`` is the Modbus exception code (``None``: no answer)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class WriteNotConfirmed(WriteFailed):
    """The device accepted the write but reading it back gave another value (the device
    clamped it, or its program overwrote it).  ``read_back`` is the engineering value read
    (the text, for a string tag)."""

    def __init__(self, message: str, read_back: float | str) -> None:
        super().__init__(message)
        self.read_back = read_back
