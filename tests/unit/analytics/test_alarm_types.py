"""Each alarm type trips and clears on sample values, with its deadband."""

from __future__ import annotations

from isthmus.analytics.alarms.state import State
from isthmus.model.clock import ManualClock

from .alarm_support import (
    FILL,
    FILL_SP,
    FLOW1,
    RUN1,
    SPEED,
    STATE,
    T0,
    VIB1,
    at,
    batch,
    evaluator,
    events,
    feed,
)

ACT = ("activate", "normal", "active_unacked")
RTN = ("clear", "active_unacked", "rtn_unacked")


def test_high_trips_above_the_limit_and_clears_below_limit_minus_deadband() -> None:
    ev = evaluator([{"name": "h", "tag": FLOW1, "type": "high", "limit": 120, "deadband": 2}])
    assert feed(ev, FLOW1, 1, 120) == []  # at the limit: not above it
    (entry,) = feed(ev, FLOW1, 2, 120.5)
    assert events([entry]) == [ACT]
    assert entry.ts == at(2) and entry.value == 120.5 and entry.alarm == "h"
    assert feed(ev, FLOW1, 3, 118.5) == []  # inside the deadband: still active
    assert ev.state("h").state is State.ACTIVE_UNACKED
    assert events(feed(ev, FLOW1, 4, 117.9)) == [RTN]
    assert feed(ev, FLOW1, 5, 119.9) == []  # below the trip limit again
    assert events(feed(ev, FLOW1, 6, 121)) == [("activate", "rtn_unacked", "active_unacked")]


def test_high_high_and_low_low_share_the_limit_logic() -> None:
    ev = evaluator(
        [
            {"name": "hh", "tag": FLOW1, "type": "high_high", "limit": 150},
            {"name": "ll", "tag": FLOW1, "type": "low_low", "limit": 5, "deadband": 1},
            {"name": "l", "tag": FLOW1, "type": "low", "limit": 20},
        ]
    )
    got = ev.process(batch([(FLOW1, 1, 151), (FLOW1, 2, 4), (FLOW1, 3, 5.5), (FLOW1, 4, 6.5)]))
    assert [(e.alarm, e.event.value, e.ts) for e in got] == [
        ("hh", "activate", at(1)),
        ("hh", "clear", at(2)),
        ("ll", "activate", at(2)),
        ("l", "activate", at(2)),
        ("ll", "clear", at(4)),  # 5.5 is within the deadband of 5 + 1
    ]
    assert ev.state("l").state is State.ACTIVE_UNACKED


def test_deviation_from_a_setpoint_tag() -> None:
    ev = evaluator(
        [
            {
                "name": "dev",
                "tag": FILL,
                "setpoint": FILL_SP,
                "type": "deviation",
                "limit": 5,
                "deadband": 1,
            }
        ]
    )
    assert feed(ev, FILL, 1, 520) == []  # no setpoint yet: nothing to compare
    assert events(feed(ev, FILL_SP, 2, 500)) == [ACT]  # the setpoint arrives: 20 off
    assert feed(ev, FILL, 3, 504.5) == []  # 4.5 off: within the deadband
    assert events(feed(ev, FILL, 4, 496.5)) == [RTN]  # 3.5 below
    assert events(feed(ev, FILL_SP, 5, 490)) == [("activate", "rtn_unacked", "active_unacked")]


def test_rate_of_change_per_second() -> None:
    ev = evaluator(
        [
            {"name": "up", "tag": SPEED, "type": "rate", "limit": 10, "direction": "rising"},
            {"name": "any", "tag": SPEED, "type": "rate", "limit": 10, "deadband": 2},
        ]
    )
    assert feed(ev, SPEED, 0, 100) == []  # the first sample gives no rate
    got = feed(ev, SPEED, 2, 125)  # +12.5/s
    assert [(e.alarm, e.event.value, e.value) for e in got] == [
        ("up", "activate", 12.5),
        ("any", "activate", 12.5),
    ]
    got = feed(ev, SPEED, 4, 107)  # -9/s: inside "any"'s deadband (clears below 8/s)
    assert [(e.alarm, e.event.value) for e in got] == [("up", "clear")]
    got = feed(ev, SPEED, 5, 85)  # -22/s
    assert [(e.alarm, e.event.value) for e in got] == []  # "any" still active; "up" falling
    assert [(e.alarm, e.event.value) for e in feed(ev, SPEED, 10, 85)] == [("any", "clear")]


def test_discrete_states_and_bools() -> None:
    ev = evaluator(
        [
            {"name": "down", "tag": STATE, "type": "discrete", "state": [3, 4]},
            {"name": "stopped", "tag": RUN1, "type": "discrete", "state": False},
        ]
    )
    assert feed(ev, STATE, 1, 1) == []
    assert events(feed(ev, STATE, 2, 4)) == [ACT]
    assert feed(ev, STATE, 3, 3) == []
    assert events(feed(ev, STATE, 4, 1)) == [RTN]
    assert events(feed(ev, RUN1, 5, 0)) == [ACT]
    assert events(feed(ev, RUN1, 6, 1)) == [RTN]


def test_stale_on_the_clock_and_on_sample_time() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{"name": "st", "tag": VIB1, "type": "stale", "duration": "30s"}], clock)
    assert feed(ev, VIB1, 10, 1.0) == []
    clock.advance(39)
    assert ev.tick() == []  # 29 s since the last Good update
    clock.advance(2)
    (entry,) = ev.tick()
    assert events([entry]) == [ACT]
    assert entry.ts == at(40)  # stamped when it became stale, not at the tick
    assert ev.tick() == []  # once
    assert events(feed(ev, VIB1, 45, 1.0)) == [RTN]
    # Bad updates do not count: a Bad sample after the duration shows it stale
    got = feed(ev, VIB1, 80, 0.0, 0x80050000)
    assert [(e.event.value, e.ts) for e in got] == [("activate", at(75))]
    assert events(feed(ev, VIB1, 81, 1.0)) == [RTN]


def test_expression_over_several_tags() -> None:
    ev = evaluator(
        [
            {
                "name": "dry_run",
                "type": "expression",
                "tag": FLOW1,
                "expression": "running and flow < 5",
            }
        ]
    )
    assert feed(ev, FLOW1, 1, 2) == []  # 'running' has no value yet
    assert events(feed(ev, RUN1, 2, 1)) == [ACT]
    assert ev.state("dry_run").value == 1.0
    assert events(feed(ev, FLOW1, 3, 50)) == [RTN]
    assert events(feed(ev, FLOW1, 4, 3)) == [("activate", "rtn_unacked", "active_unacked")]
    assert events(feed(ev, RUN1, 5, 0)) == [RTN]


def test_samples_of_unwatched_tags_and_repeats_change_nothing() -> None:
    ev = evaluator([{"name": "h", "tag": FLOW1, "type": "high", "limit": 1}])
    assert feed(ev, VIB1, 1, 99) == []
    assert events(feed(ev, FLOW1, 2, 5)) == [ACT]
    assert feed(ev, FLOW1, 2, 5) == []  # the same sample again
    assert feed(ev, FLOW1, 1, 0) == []  # older than the last one of its tag: ignored
    assert ev.out_of_order == 1
    assert ev.state("h").state is State.ACTIVE_UNACKED
