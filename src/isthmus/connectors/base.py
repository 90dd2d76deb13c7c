"""The contract every connector implements.

A connector folder (``connectors/<protocol>/``) holds ``config.py`` (a pure pydantic
model extending :class:`~isthmus.model.config.SourceConfig`), ``source.py`` (the
:class:`Source`), a ``README.md`` and a ``sample.yaml``.  Its ``spec()`` function
returns a :class:`ConnectorSpec`; the registry is built in :mod:`isthmus.connectors.registry`.

Contract of :meth:`Source.run`:

* runs until cancelled; never raises for device or network problems;
* emits one :class:`~isthmus.model.batch.Batch` per poll or per publish response,
  with *raw* values (qualify applies scale/offset, range, deadband afterwards);
* while the device is unreachable, emits its tags once with a Bad quality
  (``BAD_COMMUNICATION_ERROR``) and the time of the failure, logs one event, and
  reconnects with capped exponential backoff;
* counts what it reads and rejects in ``ctx.metrics`` under ``source.<name>.*``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.clock import Clock, SystemClock
from isthmus.model.config import SourceConfig, TagConfig
from isthmus.model.events import Severity
from isthmus.model.quality import Quality
from isthmus.net.backoff import Backoff
from isthmus.net.link import LinkLost
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics

TagT = TypeVar("TagT", bound=TagConfig)

Emit = Callable[[Batch], Awaitable[None]]
DeclareTags = Callable[[Sequence[TagConfig]], dict[str, int]]


@dataclass(frozen=True, slots=True)
class BoundTag(Generic[TagT]):
    """A configured tag with its runtime id and full UNS path."""

    tag_id: int
    uns_path: str
    config: TagT


@dataclass
class SourceContext:
    emit: Emit
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("isthmus.source"))
    data_dir: Path | None = None
    """Where the running system keeps its state (certificates, keys); None in tests."""
    events: EventLog = field(default_factory=EventLog)
    """Where rejected frames, outages and overflows are reported (once per burst)."""
    declare_tags: DeclareTags | None = None
    """Creates tags a source discovers at run time (Sparkplug births): takes their
    configs (paths below the site), returns path → tag id for those it created or that
    already existed.  None where the running system does not allow it (tests)."""

    def burst_log(self, source: str) -> BurstLog:
        """The source's once-per-burst logger; every line is also an event ``source.<key>``."""
        return BurstLog(self.log, events=self.events, source=source, prefix="source")


class Source(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    async def run(self) -> None: ...


SourceFactory = Callable[[SourceConfig, Sequence[BoundTag[TagConfig]], SourceContext], Source]


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    """The ``type:`` that selects this connector in a config."""
    summary: str
    config_model: type[SourceConfig]
    factory: SourceFactory


def tag_index(tags: Sequence[BoundTag[TagT]]) -> dict[str | int, BoundTag[TagT]]:
    """Tags by id, full UNS path and tag-map path: how ``write()`` callers name a tag."""
    index: dict[str | int, BoundTag[TagT]] = {}
    for tag in tags:
        index[tag.tag_id] = tag
        index[tag.uns_path] = tag
        index[tag.config.path] = tag
    return index


Session = Callable[[], Awaitable[None]]


class Link:
    """A source's connection state, with the contract's outage behaviour in one place:
    on the first failure of an outage its tags are emitted Bad once
    (``BAD_COMMUNICATION_ERROR``) and one warning is logged; when the link comes back one
    info line says how long it was down.  Counts ``source.<name>.errors`` (every failure)
    and ``source.<name>.reconnects``."""

    def __init__(
        self, kind: str, name: str, target: str, tag_ids: npt.NDArray[np.int32], ctx: SourceContext
    ) -> None:
        self.connected = False
        self._label = f"{kind} source {name}"
        self._name = name
        self._target = target
        self._tag_ids = tag_ids
        self._ctx = ctx
        self._since: float | None = None
        self._backoff: Backoff | None = None
        self._m_errors = f"source.{name}.errors"
        self._m_reconnects = f"source.{name}.reconnects"

    async def supervise(
        self,
        session: Session,
        *,
        errors: tuple[type[BaseException], ...],
        close: Callable[[], None],
        reconnect_max: float,
    ) -> None:
        """Run ``session`` (connect, call :meth:`up`, serve until the link breaks) until
        cancelled.  :class:`LinkLost` and the library's ``errors`` mark the link down; any
        other exception is a bug, logged with its traceback, and retried all the same: a
        source never dies.  Between sessions: ``close`` and a capped backoff."""
        self._backoff = Backoff(initial=min(0.5, reconnect_max), cap=reconnect_max)
        while True:
            try:
                await session()
            except LinkLost as exc:
                await self.down(str(exc))
            except errors as exc:
                await self.down(f"{type(exc).__name__}: {exc}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._ctx.log.exception("%s: unexpected error", self._label)
                await self.down(f"unexpected {type(exc).__name__}: {exc}")
            close()
            await asyncio.sleep(self._backoff.next_delay())

    def add_tags(self, tag_ids: Sequence[int]) -> None:
        """Tags created at run time: they go Bad with the others on the next outage."""
        self._tag_ids = np.concatenate([self._tag_ids, np.asarray(tag_ids, dtype=np.int32)])

    def up(self) -> None:
        if self._backoff is not None:
            self._backoff.reset()
        self.connected = True
        if self._since is not None:
            down = time.monotonic() - self._since
            self._since = None
            self._ctx.metrics.inc(self._m_reconnects)
            self._ctx.log.info(
                "%s: connected again to %s after %.1f s", self._label, self._target, down
            )
            self._ctx.events.raise_event(
                "link.restored",
                self._name,
                f"{self._label}: connected again to {self._target} after {down:.1f} s",
                severity=Severity.INFO,
                down_s=round(down, 3),
            )

    async def down(self, reason: str) -> None:
        self.connected = False
        self._ctx.metrics.inc(self._m_errors)
        if self._since is not None:
            return
        self._since = time.monotonic()
        self._ctx.log.warning(
            "%s: %s unreachable (%s); tags Bad, reconnecting", self._label, self._target, reason
        )
        self._ctx.events.raise_event(
            "link.lost",
            self._name,
            f"{self._label}: {self._target} unreachable ({reason})",
            target=self._target,
            tags=len(self._tag_ids),
        )
        n = len(self._tag_ids)
        if n:
            await self._ctx.emit(
                Batch(
                    self._tag_ids.copy(),
                    np.full(n, self._ctx.clock.now_ns(), dtype=np.int64),
                    np.full(n, np.nan, dtype=np.float64),
                    np.full(n, Quality.BAD_COMMUNICATION_ERROR, dtype=np.uint32),
                )
            )
