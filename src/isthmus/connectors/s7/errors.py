"""Errors of S7 writes (the command path): raised by :meth:`S7Source.write`.

Each is a :class:`~isthmus.connectors.base.CommandWriteError`; its ``outcome`` says
whether the PLC may have applied the write (see the README's "Commands")."""

from __future__ import annotations

from isthmus.connectors.base import CommandWriteError, Outcome


class S7WriteError(CommandWriteError):
    """A write to an S7 PLC did not succeed."""


class WriteRefused(S7WriteError):
    """Refused before anything was sent (outcome ``failed``): unknown or non-writable
    tag, an input (I area), a value that does not fit the tag's data type."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "failed")


class WriteFailed(S7WriteError):
    """Not connected (``failed``), the PLC refused the write (``failed``; ``code``: the
    S7 item return code or header error), or the request was sent and then the
    connection dropped or no answer came in time (``uncertain``)."""

    def __init__(self, message: str, code: int | None = None, outcome: Outcome = "failed") -> None:
        super().__init__(message, outcome)
        self.code = code
