"""Errors of S7 writes (the command path): raised by :meth:`S7Source.write`."""

from __future__ import annotations

from isthmus.model.errors import IsthmusError


class S7WriteError(IsthmusError):
    """A write to an S7 PLC did not happen, or did not take effect."""


class WriteRefused(S7WriteError):
    """Refused before anything was sent: unknown or non-writable tag, an input (I area),
    a value that does not fit the tag's data type."""


class WriteFailed(S7WriteError):
    """Sent, but the PLC refused it (``code``: the S7 item return code or header error),
    did not answer in time, or the connection is down."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class WriteNotConfirmed(WriteFailed):
    """The PLC accepted the write but reading it back gave another value (its program
    overwrote it).  ``read_back`` is the engineering value read."""

    def __init__(self, message: str, read_back: float | str) -> None:
        super().__init__(message)
        self.read_back = read_back
