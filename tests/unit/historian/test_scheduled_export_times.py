"""When the scheduled export runs and which days it writes (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from isthmus.historian.scheduled_export import DAY_NS, days_to_export, next_run_ns
from isthmus.model.config import ExportConfig

S = 1_000_000_000
D0 = 20_414 * DAY_NS  # 2025-11-22T00:00:00Z


def test_next_run_is_later_today_or_tomorrow() -> None:
    at = 30 * 60.0  # 00:30
    assert next_run_ns(D0, at) == D0 + 1800 * S
    assert next_run_ns(D0 + 1799 * S, at) == D0 + 1800 * S
    assert next_run_ns(D0 + 1800 * S, at) == D0 + DAY_NS + 1800 * S  # strictly after now
    assert next_run_ns(D0 + 23 * 3600 * S, at) == D0 + DAY_NS + 1800 * S


def test_days_are_whole_utc_days_before_today() -> None:
    now = D0 + 1800 * S
    assert days_to_export(now, 1) == (D0 - DAY_NS, D0)
    assert days_to_export(now, 3) == (D0 - 3 * DAY_NS, D0)


def test_time_of_day_is_a_quoted_hh_mm() -> None:
    assert ExportConfig(dest="lake").at == 1800.0
    assert ExportConfig(dest="lake", at="23:59:30").at == 86_370.0
    assert ExportConfig(dest="lake", at="7:05").at == 25_500.0
    for bad in (30, "24:00", "12:60", "noon", ""):
        with pytest.raises(ValidationError, match="time of day"):
            ExportConfig(dest="lake", at=bad)  # type: ignore[arg-type]
