"""The read back of a source that has no read request (MQTT, Sparkplug B): after a
command, the tag's next value the device reports is its read back.

A :class:`ReadBacks` is armed for a tag *before* the command is published (so an
answer arriving at once is not missed); the source hands it every Good value it
receives for an armed tag (:meth:`ReadBacks.deliver`, the first one counts) and
:meth:`ReadBacks.next_value` waits for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from isthmus.connectors.base import Value, engineering
from isthmus.model.config import TagConfig


@dataclass(slots=True)
class _Awaited:
    config: TagConfig
    event: asyncio.Event = field(default_factory=asyncio.Event)
    value: Value | None = None


class ReadBacks:
    """The read backs a source waits for, by tag id."""

    def __init__(self) -> None:
        self._waiting: dict[int, _Awaited] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __contains__(self, tag_id: int) -> bool:
        return tag_id in self._waiting

    def arm(self, tag_id: int, config: TagConfig) -> None:
        """Wait for the tag's next value from now on (call it before publishing)."""
        self._waiting[tag_id] = _Awaited(config)

    def disarm(self, tag_id: int) -> None:
        """Nothing was published after all."""
        self._waiting.pop(tag_id, None)

    def deliver(self, tag_id: int, raw: float | int | bool | str) -> None:
        """A Good raw value received for the tag: the first one after :meth:`arm` is
        its read back (in engineering units); later ones and unarmed tags are ignored."""
        awaited = self._waiting.get(tag_id)
        if awaited is None or awaited.event.is_set():
            return
        awaited.value = engineering(awaited.config, raw)
        awaited.event.set()

    async def next_value(
        self,
        tag_id: int,
        config: TagConfig,
        timeout: float,  # noqa: ASYNC109
    ) -> Value | None:
        """The value delivered since :meth:`arm` (not armed: from now on), waited for at
        most ``timeout`` seconds; ``None`` if none came.  Disarms the tag."""
        awaited = self._waiting.get(tag_id)
        if awaited is None:
            awaited = self._waiting[tag_id] = _Awaited(config)
        try:
            async with asyncio.timeout(timeout):
                await awaited.event.wait()
        except TimeoutError:
            return None
        finally:
            if self._waiting.get(tag_id) is awaited:
                del self._waiting[tag_id]
        return awaited.value
