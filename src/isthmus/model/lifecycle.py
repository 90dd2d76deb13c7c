"""The one lifecycle every long-running part shares, so the composition root is a list of
parts: a new capability adds a part, not code in :mod:`isthmus.app`.

Parts start in list order and stop in reverse order (consumers of live data start before
the sources that feed them and stop after them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("isthmus.parts")


@runtime_checkable
class Part(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Begin work (create tasks, subscribe); return quickly."""

    async def stop(self, grace: float) -> None:
        """Finish what is queued within ``grace`` seconds, then release resources."""

    def health(self) -> Mapping[str, bool]:
        """Named links or components → up (e.g. ``{"nats-publisher": True}``); may be empty."""


class TaskPart:
    """A part that is one coroutine run as a task, cancelled on stop."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, Any]],
        health: Callable[[], Mapping[str, bool]] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._health = health
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("task %s did not stop within %.0f s", self.name, grace)
        elif not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %s", self.name, task.exception())

    def health(self) -> Mapping[str, bool]:
        if self._health is not None:
            return self._health()
        return {} if self.task is None or not self.task.done() else {self.name: False}


class PartGroup:
    """Parts stopped together (cancelled at once, awaited together): the sources."""

    def __init__(self, name: str, parts: list[Part]) -> None:
        self.name = name
        self.parts = parts

    async def start(self) -> None:
        for part in self.parts:
            await part.start()

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(p.stop(grace) for p in self.parts))

    def health(self) -> Mapping[str, bool]:
        out: dict[str, bool] = {}
        for part in self.parts:
            out.update(part.health())
        return out


async def start_parts(parts: list[Part]) -> None:
    for part in parts:
        await part.start()


async def stop_parts(parts: list[Part], grace: float) -> None:
    """Reverse order; a part that fails to stop is logged and the others still stop."""
    for part in reversed(parts):
        try:
            await part.stop(grace)
        except Exception:
            log.exception("part %s failed to stop", part.name)
