"""The life cycle through the evaluator: delays on sample time, latching, acknowledgement,
shelving on a manual clock, suppression by design, out of service, bad inputs."""

from __future__ import annotations

import pytest

from isthmus.analytics.alarms.model import AlarmSettings
from isthmus.analytics.alarms.state import ActionRefused, State
from isthmus.model.clock import ManualClock
from isthmus.model.quality import Quality

from .alarm_support import FLOW1, RUN1, T0, VIB1, at, evaluator, events, feed

HIGH = {"name": "h", "tag": FLOW1, "type": "high", "limit": 100}


def test_on_delay_runs_on_sample_time_and_is_stamped_when_it_elapsed() -> None:
    ev = evaluator([{**HIGH, "on_delay": "5s", "off_delay": "3s"}])
    assert feed(ev, FLOW1, 10, 101) == []
    assert feed(ev, FLOW1, 12, 99) == []  # back under before 5 s: cancelled
    assert feed(ev, FLOW1, 13, 101) == []
    assert feed(ev, FLOW1, 17, 102) == []  # 4 s
    (entry,) = feed(ev, FLOW1, 20, 103)  # the next sample shows 5 s elapsed at 18
    assert events([entry]) == [("activate", "normal", "active_unacked")]
    assert entry.ts == at(18) and entry.value == 102  # the value when the delay elapsed
    assert feed(ev, FLOW1, 21, 50) == []
    assert feed(ev, FLOW1, 23.5, 50) == []
    (entry,) = feed(ev, FLOW1, 24, 50)  # exactly 3 s: the sample itself clears it
    assert events([entry]) == [("clear", "active_unacked", "rtn_unacked")]
    assert entry.ts == at(24)


def test_a_delay_elapsing_without_a_sample_is_fired_by_the_clock_late_by_the_allowance() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{**HIGH, "on_delay": "5s"}], clock, lateness=2.0)
    feed(ev, FLOW1, 10, 150)  # then the tag stays constant: no more samples
    clock.advance(16)
    assert ev.tick() == []  # due at 15, but a sample up to 2 s late could still cancel it
    clock.advance(1.5)
    (entry,) = ev.tick()
    assert entry.ts == at(15) and entry.value == 150
    # a sample later than the allowance is applied at the alarm's latest time, never before
    (late,) = feed(ev, FLOW1, 14, 10)
    assert events([late]) == [("clear", "active_unacked", "rtn_unacked")]
    assert late.ts == at(15)


def test_acknowledge_with_user_and_comment_and_repeats_are_no_ops() -> None:
    ev = evaluator([HIGH])
    feed(ev, FLOW1, 1, 150)
    (ack,) = ev.acknowledge("h", "olivia", "valve throttled", ts=at(2))
    assert (ack.user, ack.comment, ack.ts, ack.value) == ("olivia", "valve throttled", at(2), 150)
    assert events([ack]) == [("acknowledge", "active_unacked", "active_acked")]
    assert ev.acknowledge("h", "olivia", ts=at(3)) == []
    assert events(feed(ev, FLOW1, 4, 50)) == [("clear", "active_acked", "normal")]
    # returned to normal unacknowledged: the acknowledgement completes it
    feed(ev, FLOW1, 5, 150)
    feed(ev, FLOW1, 6, 50)
    assert events(ev.acknowledge("h", "olivia", ts=at(7))) == [
        ("acknowledge", "rtn_unacked", "normal")
    ]


def test_a_latching_alarm_holds_until_acknowledged() -> None:
    ev = evaluator([{**HIGH, "latching": True}])
    feed(ev, FLOW1, 1, 150)
    assert events(feed(ev, FLOW1, 2, 50)) == [("clear", "active_unacked", "latched")]
    assert events(feed(ev, FLOW1, 3, 150)) == [("activate", "latched", "active_unacked")]
    ev.acknowledge("h", "olivia", ts=at(4))
    assert events(feed(ev, FLOW1, 5, 50)) == [("clear", "active_acked", "latched")]
    assert ev.state("h").state is State.LATCHED  # acknowledged before: still latched
    assert events(ev.acknowledge("h", "olivia", "reset", ts=at(6))) == [
        ("acknowledge", "latched", "normal")
    ]


def test_shelving_hides_the_alarm_until_its_expiry_on_the_clock() -> None:
    clock = ManualClock(T0)
    ev = evaluator([{**HIGH, "priority": "high"}], clock)
    feed(ev, FLOW1, 0, 150)
    with pytest.raises(ActionRefused, match="maximum"):
        ev.shelve("h", "olivia", "sensor being replaced", 5 * 3600)  # high: 4 h at most
    with pytest.raises(ActionRefused, match="reason"):
        ev.shelve("h", "olivia", " ", 600)
    (entry,) = ev.shelve("h", "olivia", "sensor being replaced", 600)
    assert events([entry]) == [("shelve", "active_unacked", "shelved")]
    assert entry.comment == "sensor being replaced" and entry.user == "olivia"
    assert ev.shelve("h", "olivia", "sensor being replaced", 600) == []  # the same again
    assert feed(ev, FLOW1, 10, 50) == []  # the condition clears, silently while shelved
    assert feed(ev, FLOW1, 20, 160) == []
    clock.advance(599)
    assert ev.tick() == []
    clock.advance(1)
    (expired,) = ev.tick()
    assert events([expired]) == [("shelf_expired", "shelved", "active_unacked")]
    assert expired.ts == T0 + 600 * 10**9 and expired.user is None
    assert ev.state("h").shelf is None


def test_unshelve_shows_the_condition_as_it_is_now() -> None:
    ev = evaluator([HIGH], settings=AlarmSettings.model_validate({"max_shelve": {"medium": 60}}))
    feed(ev, FLOW1, 0, 150)
    ev.shelve("h", "olivia", "nuisance", 60, ts=at(1))
    feed(ev, FLOW1, 2, 50)
    assert events(ev.unshelve("h", "olivia", ts=at(3))) == [("unshelve", "shelved", "normal")]
    assert ev.unshelve("h", "olivia", ts=at(4)) == []


def test_suppression_by_design_while_its_condition_holds() -> None:
    ev = evaluator([{**HIGH, "suppress_when": "not running"}])
    feed(ev, RUN1, 0, 1)
    feed(ev, FLOW1, 1, 150)
    assert events(feed(ev, RUN1, 2, 0)) == [("suppress", "active_unacked", "suppressed")]
    assert feed(ev, FLOW1, 3, 50) == []  # changes while suppressed are not annunciated
    assert feed(ev, FLOW1, 4, 160) == []
    assert events(feed(ev, RUN1, 5, 1)) == [("unsuppress", "suppressed", "active_unacked")]
    # a Bad input of the suppression condition never suppresses (fail-safe)
    assert feed(ev, RUN1, 6, 0, Quality.BAD_NO_COMMUNICATION) == []
    assert ev.state("h").state is State.ACTIVE_UNACKED


def test_out_of_service_before_ever_active_and_back() -> None:
    ev = evaluator([HIGH])
    (entry,) = ev.remove_from_service("h", "max", "transmitter swap", ts=at(0))
    assert events([entry]) == [("remove_from_service", "normal", "out_of_service")]
    assert ev.remove_from_service("h", "max", ts=at(1)) == []
    assert feed(ev, FLOW1, 2, 150) == []
    with pytest.raises(ActionRefused, match="out of service"):
        ev.shelve("h", "max", "x", 60, ts=at(3))
    assert ev.acknowledge("h", "max", ts=at(3)) == []
    assert events(ev.return_to_service("h", "max", ts=at(4))) == [
        ("return_to_service", "out_of_service", "active_unacked")
    ]


def test_bad_input_hold_keeps_the_state_and_says_so() -> None:
    ev = evaluator([{**HIGH, "on_delay": "5s"}])
    feed(ev, FLOW1, 0, 150)
    got = feed(ev, FLOW1, 2, 0, Quality.BAD_COMMUNICATION_ERROR)
    assert events(got) == [("bad_input", "normal", "normal")]
    assert got[0].comment == "bad input: Bad_CommunicationError" and got[0].value is None
    assert feed(ev, FLOW1, 3, 0, Quality.UNCERTAIN) == []  # still bad: journalled once
    # the bad input cancelled the pending delay: it restarts at the next Good sample
    assert events(feed(ev, FLOW1, 8, 150)) == [("input_restored", "normal", "normal")]
    assert feed(ev, FLOW1, 12, 150) == []
    assert ev.state("h").state is State.NORMAL
    got = feed(ev, FLOW1, 13, 150)
    assert events(got) == [("activate", "normal", "active_unacked")]
    # an active alarm held through a bad input does not clear
    assert events(feed(ev, FLOW1, 14, float("nan"), Quality.BAD)) == [
        ("bad_input", "active_unacked", "active_unacked")
    ]
    assert events(feed(ev, FLOW1, 15, 150)) == [
        ("input_restored", "active_unacked", "active_unacked")
    ]


def test_bad_input_policy_raise_trips_the_alarm_until_the_input_is_good() -> None:
    ev = evaluator([{**HIGH, "bad_input": "bad_input"}, {**HIGH, "name": "hold"}])
    got = feed(ev, FLOW1, 1, 0, Quality.BAD_SENSOR_FAILURE)
    assert [(e.alarm, e.event.value, e.to_state.value) for e in got] == [
        ("h", "bad_input", "normal"),
        ("h", "activate", "active_unacked"),
        ("hold", "bad_input", "normal"),
    ]
    got = feed(ev, FLOW1, 2, 10)
    assert [(e.alarm, e.event.value, e.to_state.value) for e in got] == [
        ("h", "input_restored", "active_unacked"),
        ("h", "clear", "rtn_unacked"),
        ("hold", "input_restored", "normal"),
    ]


def test_unknown_alarm_names() -> None:
    ev = evaluator([HIGH])
    with pytest.raises(KeyError):
        ev.acknowledge("nope", "olivia")
    assert ev.names == ["h"] and ev.definition("h").tag == FLOW1
    assert set(ev.states()) == {"h"}
    assert VIB1 not in ev.definition("h").inputs()
