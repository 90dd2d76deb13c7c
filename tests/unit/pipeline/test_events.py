"""The event log and the once-per-burst logger that feeds it."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from isthmus.model.clock import ManualClock
from isthmus.model.events import Severity
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog


def test_ids_increase_and_cursor_reads_what_follows() -> None:
    log = EventLog(clock=ManualClock(start_ns=5))
    a = log.raise_event("link.lost", "plc1", "down")
    b = log.raise_event("source.malformed", "plc1", "bad frame", count=7)
    assert (a.id, b.id) == (1, 2)
    assert a.ts_ns == 5
    assert [e.id for e in log.recent(after=1)] == [2]
    assert log.recent(after=2) == []
    assert b.count == 7 and b.severity is Severity.WARNING


def test_kind_matches_itself_and_what_is_below_it_only() -> None:
    log = EventLog()
    log.raise_event("source.malformed", "a", "m")
    log.raise_event("source.rejected", "a", "r")
    log.raise_event("sourcex.other", "a", "o")
    log.raise_event("link.lost", "b", "l")
    assert [e.kind for e in log.recent(kind="source")] == ["source.malformed", "source.rejected"]
    assert [e.kind for e in log.recent(kind="link.lost")] == ["link.lost"]
    assert [e.kind for e in log.recent(source="b")] == ["link.lost"]
    assert len(log.recent(limit=2)) == 2


def test_capacity_bounds_memory_but_ids_keep_counting() -> None:
    log = EventLog(capacity=3)
    for i in range(10):
        log.raise_event("k", "s", str(i))
    kept = log.recent()
    assert [e.message for e in kept] == ["7", "8", "9"]
    assert kept[-1].id == 10 and log.raised == 10


def test_file_sink_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path=path)
    log.raise_event("spool.overflow", "spool", "dropped", count=3, samples=1200)
    log.raise_event("link.lost", "plc", "down", severity=Severity.CRITICAL)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["kind"] for d in lines] == ["spool.overflow", "link.lost"]
    assert lines[0]["details"] == {"samples": 1200} and lines[0]["count"] == 3
    assert lines[1]["severity"] == "critical"


def test_unwritable_file_does_not_lose_the_event(tmp_path: Path) -> None:
    log = EventLog(path=tmp_path / "missing-dir" / "events.jsonl")
    log.raise_event("k", "s", "kept in memory")
    assert [e.message for e in log.recent()] == ["kept in memory"]


def test_listeners_see_every_event() -> None:
    log = EventLog()
    seen: list[str] = []
    log.subscribe(lambda e: seen.append(e.kind))
    log.raise_event("a", "s", "x")
    log.raise_event("b", "s", "y")
    assert seen == ["a", "b"]


def test_concurrent_raisers_get_unique_ids() -> None:
    log = EventLog(capacity=100_000)

    def raise_many() -> None:
        for _ in range(2000):
            log.raise_event("k", "s", "m")

    threads = [threading.Thread(target=raise_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.id for e in log.recent(limit=100_000)]
    assert len(ids) == len(set(ids)) == 8000


def test_burst_counts_add_up_to_every_occurrence(caplog: pytest.LogCaptureFixture) -> None:
    events = EventLog()
    burst = BurstLog(
        logging.getLogger("t"), window=3600, events=events, source="plc", prefix="source"
    )
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(500):
            burst.warning("malformed:2", "bad frame %d", i)
        burst.warning("timeout", "no answer")
    # One line and one event per key so far; the 499 repeats are pending.
    assert len(caplog.records) == 2
    assert [(e.kind, e.count) for e in events.recent()] == [
        ("source.malformed", 1),
        ("source.timeout", 1),
    ]
    events.tick()  # the window has not passed: nothing yet
    assert len(events.recent()) == 2
    events.tick(force=True)
    tail = events.recent(after=2)
    assert [(e.kind, e.count, e.details["key"]) for e in tail] == [
        ("source.malformed", 499, "malformed:2")
    ]
    assert tail[0].message == "bad frame 499"  # the last one seen
    assert sum(e.count for e in events.recent(kind="source.malformed")) == 500
    events.tick(force=True)
    assert len(events.recent()) == 3  # nothing reported twice


def test_burst_summary_line_after_the_window_counts_the_repeats() -> None:
    events = EventLog()
    burst = BurstLog(logging.getLogger("t"), window=0.0, events=events, source="s")
    burst.warning("k", "first")
    burst.warning("k", "second")
    assert [e.count for e in events.recent()] == [1, 1]


def test_burst_without_events_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    burst = BurstLog(logging.getLogger("t2"), window=3600)
    with caplog.at_level(logging.WARNING, logger="t2"):
        for _ in range(10):
            burst.warning("k", "x")
        burst.flush(force=True)
    assert [r.getMessage() for r in caplog.records] == ["x", "x (9 similar in the last burst)"]
