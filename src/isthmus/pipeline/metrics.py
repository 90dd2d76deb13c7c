"""Self-metrics: every place that can drop or reject data counts it here."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field


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


@dataclass
class BurstLog:
    """Logs the first occurrence of a problem, then at most one summary per ``window``
    seconds with the number of repeats: a flood of bad frames yields a few lines."""

    logger: logging.Logger
    window: float = 10.0
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._suppressed[key] += 1
            return
        repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} similar suppressed)" if repeats else ""
        self._last[key] = now
        self.logger.warning(message + suffix, *args)
