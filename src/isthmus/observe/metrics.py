"""Self-metrics: every place that can drop or reject data counts it here."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from isthmus.model.events import Severity
from isthmus.observe.events import EventLog


class Metrics:
    """Named counters and gauges.  Cheap enough to call once per batch."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.counters)
        out.update(self.gauges)
        return out


@dataclass(eq=False)
class BurstLog:
    """Logs the first occurrence of a problem, then at most one summary per ``window``
    seconds with the number of repeats: a flood of bad frames yields a few lines.

    With an :class:`~isthmus.observe.events.EventLog`, every logged line is also an
    event ``<prefix>.<key>`` whose ``count`` is the number of occurrences it stands for;
    the log's ``tick`` reports the tail of a burst (:meth:`flush`), so the counts of the
    events of a key add up to the number of ``warning`` calls.
    """

    logger: logging.Logger
    window: float = 10.0
    events: EventLog | None = None
    source: str = ""
    prefix: str = "problem"
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _last_message: dict[str, tuple[str, tuple[object, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events is not None:
            self.events.track(self)

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._suppressed[key] += 1
            self._last_message[key] = (message, args)  # formatted only when reported
            return
        repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} similar suppressed)" if repeats else ""
        self._last[key] = now
        self.logger.warning(message + suffix, *args)
        if self.events is not None:
            self._raise(key, _format(message, args), 1 + repeats)

    def flush(self, *, force: bool = False) -> None:
        """Report repeats whose window has passed without a new logged line (all of them
        with ``force``, e.g. when stopping)."""
        now = time.monotonic()
        for key in list(self._suppressed):
            if force or now - self._last.get(key, 0.0) >= self.window:
                repeats = self._suppressed.pop(key)
                message = _format(*self._last_message.pop(key, (key, ())))
                self.logger.warning("%s (%d similar in the last burst)", message, repeats)
                if self.events is not None:
                    self._raise(key, message, repeats)

    def _raise(self, key: str, message: str, count: int) -> None:
        assert self.events is not None
        # "rejected:3" (a problem of route 3) is kind "<prefix>.rejected", key in details.
        kind = f"{self.prefix}.{key.split(':', 1)[0]}"
        self.events.raise_event(
            kind, self.source, message, severity=Severity.WARNING, count=count, key=key
        )


def _format(message: str, args: tuple[object, ...]) -> str:
    try:
        return message % args if args else message
    except (TypeError, ValueError):
        return f"{message} {args!r}"
