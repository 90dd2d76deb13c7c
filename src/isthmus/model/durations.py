"""Durations and time expressions as people write them in configs and queries.

``500ms``, ``10s``, ``5m``, ``1h``, ``30d`` or a bare number of seconds.
Absolute times are ISO 8601 (``2026-11-22T10:00:00Z``); relative ones are ``-10m``
(ten minutes before *now*) or ``now``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 7 * 86_400_000_000_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|min|m|h|d|w)?\s*$")


def parse_duration_ns(text: str | float | int) -> int:
    """Nanoseconds in a duration; raises ``ValueError`` with a readable message."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or a string like '10s'")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return round(float(text) * 1e9)
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 10s, 5m, 1h, 30d)")
    number, unit = match.groups()
    return round(float(number) * _UNITS_NS[unit or "s"])


def parse_duration_s(text: str | float | int) -> float:
    return parse_duration_ns(text) / 1e9


def _duration_validator(value: object) -> float:
    if isinstance(value, str | int | float):
        return parse_duration_s(value)
    raise ValueError("a duration is a number of seconds or a string like '10s'")


Duration = Annotated[float, BeforeValidator(_duration_validator)]
"""A pydantic field type: accepts ``'10s'`` etc., stores float seconds."""


_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def _time_of_day_validator(value: object) -> float:
    # YAML 1.1 reads an unquoted 00:30 as the number 30 (base 60): refuse numbers.
    if not isinstance(value, str):
        raise ValueError('a time of day is a quoted "HH:MM" (UTC), e.g. "00:30"')
    match = _TIME_OF_DAY.match(value.strip())
    if match is None:
        raise ValueError(f'{value!r} is not a time of day: use "HH:MM" (UTC), e.g. "00:30"')
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600.0 + int(minutes) * 60.0 + int(seconds or 0)


TimeOfDay = Annotated[float, BeforeValidator(_time_of_day_validator)]
"""A pydantic field type: ``"HH:MM[:SS]"`` (UTC), stored as seconds after midnight."""


def parse_time_ns(text: str, now_ns: int) -> int:
    """An absolute (ISO 8601) or relative (``-10m``, ``now``) time in ns since epoch."""
    text = text.strip()
    if text == "now":
        return now_ns
    if text.startswith("-"):
        return now_ns - parse_duration_ns(text[1:])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time nor a relative time like -10m"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000) * 1_000


def format_ns(ts_ns: int) -> str:
    """ISO 8601 UTC with millisecond precision."""
    dt = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
