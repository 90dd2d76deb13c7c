"""Capped exponential backoff with jitter, for every reconnecting link."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to ``cap``."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.initial = initial
        self.cap = cap
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * float(2**self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return delay * (0.8 + 0.4 * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0
