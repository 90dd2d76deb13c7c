"""The shape of the in-process bus, for consumers below the transport layer.

:class:`isthmus.transport.local.LocalTransport` implements :class:`Bus`; a consumer that
lives beside the connectors (the Sparkplug edge node) types against these protocols so it
never imports the transport package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from isthmus.model.batch import Batch

Policy = Literal["block", "drop_oldest"]


class Feed(Protocol):
    """One subscriber's queue of batches."""

    def __aiter__(self) -> AsyncIterator[Batch]: ...

    def close(self) -> None: ...


class Bus(Protocol):
    def subscribe(self, name: str, maxsize: int = 256, policy: Policy = "drop_oldest") -> Feed: ...
