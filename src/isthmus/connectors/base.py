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

A source whose protocol can write is also a :class:`Commander` (``write`` and
``read_back``); the command gate is its only caller.  Contract of a command:

* ``value`` is an engineering value: the tag's scale/offset are applied inversely on
  write (``raw = (value - offset) / scale``) and forward on read back;
* an integer target takes the raw value rounded half away from zero
  (:func:`round_half_away`); a raw value outside the target type is refused before
  anything is sent (outcome ``failed``);
* ``write`` sends exactly one request and never retries it, never reads back;
* every failure raises :class:`CommandWriteError` whose ``outcome`` says what the
  device may have done: ``failed`` (nothing reached it, or it answered with a refusal)
  or ``uncertain`` (the request may have reached it: the connection dropped after
  sending, or no answer came in time).  Never a success when in doubt;
* ``read_back`` reads the device again (not the last polled or subscribed sample) and
  returns ``None`` when it cannot, so the result stays ``uncertain``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.clock import Clock, SystemClock
from isthmus.model.config import DataType, SourceConfig, TagConfig
from isthmus.model.errors import IsthmusError
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

Value = float | int | bool | str
"""A command's value (engineering units) and a read back."""

Outcome = Literal["failed", "uncertain"]


class CommandWriteError(IsthmusError):
    """A command's write did not succeed.  ``outcome``: ``"failed"`` when nothing reached
    the device or the device answered with a refusal (unknown or read-only tag, a value
    that does not fit, not connected, an exception or Bad status answer); ``"uncertain"``
    when the request may have reached the device (the connection dropped after it was
    sent, or the answer did not come in time): it may have been applied."""

    def __init__(self, message: str, outcome: Outcome = "failed") -> None:
        super().__init__(message)
        self.outcome: Outcome = outcome


@runtime_checkable
class Commander(Protocol):
    """A source that can write (see the module docstring for the contract).  ``tag``: a
    tag id, full UNS path or tag-map path (:func:`tag_index`)."""

    name: str

    async def write(self, tag: str | int, value: Value) -> None: ...

    async def read_back(self, tag: str | int, timeout: float) -> Value | None: ...  # noqa: ASYNC109


INTEGER_TYPES = frozenset(
    {
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.INT64,
        DataType.UINT64,
    }
)
INT_LIMITS: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
FLOAT32_MAX = 3.4028234663852886e38


def round_half_away(raw: float) -> int:
    """``raw`` rounded to the nearest integer, halves away from zero (2.5 → 3, -2.5 → -3):
    how every connector turns a raw value into an integer register."""
    return int(math.copysign(math.floor(abs(raw) + 0.5), raw))


def scaled(config: TagConfig) -> bool:
    """Whether the tag has a scale or an offset (engineering ≠ raw)."""
    return config.scale != 1 or config.offset != 0


def raw_number(config: TagConfig, value: Value) -> float | int:
    """The raw number of engineering ``value`` (inverse scale/offset): exact for an int
    when the tag is not scaled (64-bit integers stay exact), a float otherwise.  Raises
    ``ValueError`` for text, a non-finite number or a zero scale."""
    if isinstance(value, str):
        raise ValueError(f"{value!r} is text, not a number")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    if not scaled(config):
        return value
    if config.scale == 0:
        raise ValueError(f"scale is 0: no raw value gives {value!r}")
    raw = (float(value) - config.offset) / config.scale
    if not math.isfinite(raw):
        raise ValueError(f"{value!r} gives a raw value that is not finite")
    return raw


def raw_integer(config: TagConfig, value: Value, data_type: DataType) -> int:
    """The raw integer of engineering ``value`` for an integer target ``data_type``:
    inverse scale/offset, rounded half away from zero; ``ValueError`` outside the type."""
    raw = raw_number(config, value)
    as_int = raw if isinstance(raw, int) else round_half_away(raw)
    low, high = INT_LIMITS[data_type]
    if not low <= as_int <= high:
        shown = f"{value!r}" if as_int == value else f"{value!r} (raw {as_int})"
        raise ValueError(f"{shown} is outside the {data_type.value} range [{low}, {high}]")
    return as_int


def engineering(config: TagConfig, raw: float | int | bool | str) -> Value:
    """The engineering value of a raw value read back: forward scale/offset; typed by the
    tag (a bool tag gives a bool, an unscaled integer tag an int, a string tag text)."""
    if isinstance(raw, str):
        return raw
    if config.data_type is DataType.BOOL:
        return bool(raw)
    if scaled(config):
        return float(raw) * config.scale + config.offset
    if config.data_type in INTEGER_TYPES:
        if isinstance(raw, bool):
            return int(raw)
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw
    return float(raw)


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
