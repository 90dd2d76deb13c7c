"""The in-process event log: bounded in memory, optionally appended to a JSON-lines file.

Thread-safe (the historian writer and the spool raise events from worker threads).
Readers poll with a cursor (``after=<last id seen>``); the API serves ``/api/events``.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from isthmus.model.clock import Clock, SystemClock
from isthmus.model.events import Event, Severity

log = logging.getLogger("isthmus.events")

DEFAULT_CAPACITY = 10_000
FILE_LIMIT_BYTES = 16 * 1024 * 1024
"""The JSON-lines file is rotated to ``<name>.1`` past this size (one old file kept)."""


class Burst(Protocol):
    """What the log reports the tail of (a :class:`~isthmus.observe.metrics.BurstLog`)."""

    def flush(self, *, force: bool = False) -> None: ...


class EventLog:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        path: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._next_id = 1
        self._path = path
        self._clock = clock or SystemClock()
        self._bursts: weakref.WeakSet[Burst] = weakref.WeakSet()
        self._listeners: list[Callable[[Event], None]] = []
        self.raised = 0

    def raise_event(
        self,
        kind: str,
        source: str,
        message: str,
        *,
        severity: Severity = Severity.WARNING,
        count: int = 1,
        **details: Any,
    ) -> Event:
        with self._lock:
            event = Event(
                self._next_id,
                self._clock.now_ns(),
                kind,
                source,
                severity,
                message,
                count,
                details,
            )
            self._next_id += 1
            self._events.append(event)
            self.raised += 1
            if self._path is not None:
                self._append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def _append(self, event: Event) -> None:
        assert self._path is not None
        try:
            if self._path.exists() and self._path.stat().st_size > FILE_LIMIT_BYTES:
                self._path.replace(self._path.with_name(self._path.name + ".1"))
            with self._path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(event.to_dict(), default=str) + "\n")
        except OSError as exc:  # the in-memory log still has it
            log.warning("cannot append to event file %s: %s", self._path, exc)
            self._path = None

    def recent(
        self,
        *,
        after: int = 0,
        kind: str | None = None,
        source: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events with id > ``after``, oldest first, at most ``limit``; ``kind`` matches
        the kind or any kind below it (``frame`` matches ``frame.rejected``)."""
        with self._lock:
            snapshot = list(self._events)
        out: list[Event] = []
        for event in snapshot:
            if event.id <= after:
                continue
            if kind is not None and not (event.kind == kind or event.kind.startswith(kind + ".")):
                continue
            if source is not None and event.source != source:
                continue
            out.append(event)
            if len(out) >= limit:
                break
        return out

    def __iter__(self) -> Iterator[Event]:
        with self._lock:
            return iter(list(self._events))

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def track(self, burst: Burst) -> None:
        """Let :meth:`tick` report what ``burst`` suppressed once its window has passed."""
        self._bursts.add(burst)

    def tick(self, *, force: bool = False) -> None:
        """Report the tail of every finished burst (call every few seconds; ``force``
        reports unfinished ones too, when stopping)."""
        for burst in list(self._bursts):
            burst.flush(force=force)
