"""Errors of Modbus writes (the command path): raised by :meth:`ModbusSource.write`.

Each is a :class:`~isthmus.connectors.base.CommandWriteError`; its ``outcome`` says
whether the device may have applied the write (see the README's "Commands")."""

from __future__ import annotations

from isthmus.connectors.base import CommandWriteError, Outcome


class ModbusWriteError(CommandWriteError):
    """A write to a Modbus device did not succeed."""


class WriteRefused(ModbusWriteError):
    """Refused before anything was sent (outcome ``failed``): unknown or read-only tag,
    a value that does not fit the tag's data type, a read-only register kind."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "failed")


class WriteFailed(ModbusWriteError):
    """Not connected (``failed``), the device answered with an exception (``failed``;
    ``code`` is the Modbus exception code), or the request was sent and then the
    connection dropped or no answer came in time (``uncertain``; ``code`` None)."""

    def __init__(self, message: str, code: int | None = None, outcome: Outcome = "failed") -> None:
        super().__init__(message, outcome)
        self.code = code
