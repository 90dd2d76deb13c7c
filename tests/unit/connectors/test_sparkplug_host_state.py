"""The Sparkplug host state machine: seq, reorder window, rebirth, aliases, bdSeq."""

from __future__ import annotations

import itertools
import math

import pytest

from isthmus.connectors.sparkplug import codec
from isthmus.connectors.sparkplug.codec import OutMetric, Topic, decode, encode
from isthmus.connectors.sparkplug.host_state import Death, Event, HostState, Rebirth, Update

G, N = "g1", "n1"


def nbirth(seq: int = 0, bd: int = 3) -> tuple[Topic, codec.Payload]:
    data = encode(
        [
            OutMetric("bdSeq", None, codec.INT64, bd),
            OutMetric("Node Control/Rebirth", None, codec.BOOLEAN, False),
            OutMetric("temp", 1, codec.DOUBLE, 20.5),
        ],
        seq=seq,
        timestamp_ms=1000,
    )
    return Topic(G, "NBIRTH", N, None), decode(data)


def ndeath(bd: int = 3) -> tuple[Topic, codec.Payload]:
    data = encode([OutMetric("bdSeq", None, codec.INT64, bd)], seq=None, timestamp_ms=1)
    return Topic(G, "NDEATH", N, None), decode(data)


def dbirth(seq: int, device: str = "d1") -> tuple[Topic, codec.Payload]:
    data = encode(
        [
            OutMetric("level", 10, codec.INT16, -5),
            OutMetric("run", 11, codec.BOOLEAN, True),
        ],
        seq=seq,
        timestamp_ms=2000,
    )
    return Topic(G, "DBIRTH", N, device), decode(data)


def ndata(seq: int, value: float = 1.0, alias: int = 1) -> tuple[Topic, codec.Payload]:
    data = encode(
        [OutMetric(None, alias, codec.DOUBLE, value, send_datatype=False)],
        seq=seq,
        timestamp_ms=3000,
    )
    return Topic(G, "NDATA", N, None), decode(data)


def ddata(seq: int, device: str = "d1", raw: int = 0xFFFF) -> tuple[Topic, codec.Payload]:
    data = encode(
        [OutMetric(None, 10, codec.UINT16, raw, send_datatype=False)], seq=seq, timestamp_ms=4
    )
    return Topic(G, "DDATA", N, device), decode(data)


def ddeath(seq: int, device: str = "d1") -> tuple[Topic, codec.Payload]:
    return Topic(G, "DDEATH", N, device), decode(encode([], seq=seq, timestamp_ms=5))


def run(state: HostState, msg: tuple[Topic, codec.Payload], now: float = 0.0) -> list[Event]:
    return state.receive(msg[0], msg[1], now)


def values(events: list[Event]) -> list[float]:
    return [m.value for e in events if isinstance(e, Update) for _, m in e.metrics]


def born_state(window: int = 4) -> HostState:
    state = HostState(reorder_window=window, reorder_timeout=2.0, rebirth_min_interval=5.0)
    run(state, nbirth(seq=0))
    return state


def test_nbirth_maps_names_and_skips_control_metrics() -> None:
    state = HostState()
    (event,) = run(state, nbirth())
    assert isinstance(event, Update) and event.birth
    assert [name for name, _ in event.metrics] == ["temp"]
    assert state.is_born(G, N) and state.expected_seq(G, N) == 1


def test_aliases_resolve_data_and_datatype_from_birth() -> None:
    state = born_state()
    run(state, dbirth(1))
    (event,) = run(state, ddata(2, raw=0xFFFB))
    assert isinstance(event, Update)
    (name, metric) = event.metrics[0]
    # DDATA left the datatype out: the birth said Int16, so 0xFFFB is -5
    assert name == "level" and metric.value == -5.0
    (event,) = run(state, ndata(3, 7.5))
    assert isinstance(event, Update) and event.metrics[0][0] == "temp"


def test_in_order_sequence_wraps_at_255() -> None:
    state = born_state()
    seqs = [(1 + k) % 256 for k in range(600)]
    for k, seq in enumerate(seqs):
        events = run(state, ndata(seq, float(k)))
        assert values(events) == [float(k)]
        assert not [e for e in events if isinstance(e, Rebirth)]
    assert state.counts["gaps"] == 0 and state.expected_seq(G, N) == (seqs[-1] + 1) % 256


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3, 4])))
def test_reorder_window_restores_order(order: tuple[int, ...]) -> None:
    state = born_state(window=4)
    got: list[float] = []
    for seq in order:
        got += values(run(state, ndata(seq, float(seq))))
    assert got == [1.0, 2.0, 3.0, 4.0]
    assert state.counts["gaps"] == 0 and state.counts["rebirths"] == 0


def test_reorder_across_wrap() -> None:
    state = HostState(reorder_window=4)
    run(state, nbirth(seq=253))
    got: list[float] = []
    for seq in (255, 0, 254):
        got += values(run(state, ndata(seq, float(seq))))
    assert got == [254.0, 255.0, 0.0]
    assert state.expected_seq(G, N) == 1


def test_gap_times_out_then_rebirth_and_held_data_kept() -> None:
    state = born_state(window=4)
    assert run(state, ndata(2, 2.0), now=1.0) == []
    assert run(state, ndata(3, 3.0), now=1.5) == []
    assert state.tick(2.9) == []  # opened at 1.0, timeout 2 s
    events = state.tick(3.0)
    assert values(events) == [2.0, 3.0]
    assert isinstance(events[-1], Rebirth) and events[-1].node == N
    assert state.counts["gaps"] == 1
    # continues after the gap
    assert values(run(state, ndata(4, 4.0), now=3.1)) == [4.0]


def test_jump_beyond_window_is_an_immediate_gap() -> None:
    state = born_state(window=4)
    events = run(state, ndata(50, 50.0))
    assert values(events) == [50.0]
    assert any(isinstance(e, Rebirth) for e in events)
    assert state.expected_seq(G, N) == 51


def test_zero_window_rebirths_on_first_missing_seq() -> None:
    state = born_state(window=0)
    events = run(state, ndata(2, 2.0))
    assert values(events) == [2.0] and any(isinstance(e, Rebirth) for e in events)


def test_duplicates_and_late_messages_dropped() -> None:
    state = born_state(window=4)
    run(state, ndata(1))
    run(state, ndata(2))
    assert run(state, ndata(2)) == []
    assert run(state, ndata(1)) == []
    assert state.counts["late"] == 2 and state.counts["rebirths"] == 0


def test_data_before_birth_requests_rebirth_rate_limited() -> None:
    state = HostState(rebirth_min_interval=5.0)
    first = run(state, ndata(7), now=0.0)
    assert first == [Rebirth(G, N, "NDATA before NBIRTH")]
    assert run(state, ndata(8), now=1.0) == []
    assert state.counts["rebirths_suppressed"] == 1
    assert isinstance(run(state, ndata(9), now=6.0)[0], Rebirth)
    assert state.counts["before_birth"] == 3


def test_ddata_before_dbirth_requests_rebirth() -> None:
    state = born_state()
    events = run(state, ddata(1, device="nope"))
    assert [type(e) for e in events] == [Rebirth]
    assert state.counts["before_birth"] == 1


def test_unknown_alias_requests_rebirth_but_keeps_known_metrics() -> None:
    state = born_state()
    events = run(state, ndata(1, alias=99))
    assert any(isinstance(e, Rebirth) for e in events)
    assert state.counts["unknown_alias"] == 1


def test_alias_of_another_device_is_not_taken() -> None:
    state = born_state()
    run(state, dbirth(1, device="d1"))
    events = run(state, ddata(2, device="d1"))
    assert values(events) == [-1.0]  # Int16 0xFFFF
    # alias 10 belongs to d1: DDATA from d2 (born without aliases) cannot use it
    run(state, (Topic(G, "DBIRTH", N, "d2"), decode(encode([], seq=3, timestamp_ms=1))))
    events = run(state, ddata(4, device="d2"))
    assert state.counts["unknown_alias"] == 1 and values(events) == []


def test_alias_collision_counted() -> None:
    state = HostState()
    data = encode(
        [OutMetric("a", 1, codec.DOUBLE, 1.0), OutMetric("b", 1, codec.DOUBLE, 2.0)],
        seq=0,
        timestamp_ms=1,
    )
    run(state, (Topic(G, "NBIRTH", N, None), decode(data)))
    assert state.counts["alias_collisions"] == 1
    (event,) = run(state, ndata(1, 5.0, alias=1))
    assert isinstance(event, Update) and event.metrics[0][0] == "a"


def test_ndeath_with_matching_bdseq_kills_once() -> None:
    state = born_state()
    run(state, dbirth(1))
    assert run(state, ndeath(bd=3)) == [Death(G, N, None)]
    assert run(state, ndeath(bd=3)) == []  # once
    assert not state.is_born(G, N)
    assert state.counts["deaths"] == 1 and state.counts["stale_deaths"] == 1


def test_ndeath_with_other_bdseq_ignored() -> None:
    state = born_state()
    assert run(state, ndeath(bd=2)) == []
    assert state.is_born(G, N) and state.counts["stale_deaths"] == 1
    assert values(run(state, ndata(1, 9.0))) == [9.0]


def test_ddeath_once_and_device_data_after_it_rebirths() -> None:
    state = born_state()
    run(state, dbirth(1))
    assert run(state, ddeath(2)) == [Death(G, N, "d1")]
    assert run(state, ddeath(3)) == []
    events = run(state, ddata(4))
    assert [type(e) for e in events] == [Rebirth]


def test_nbirth_resets_devices_and_aliases() -> None:
    state = born_state()
    run(state, dbirth(1))
    run(state, nbirth(seq=0, bd=4))
    assert not state.is_born(G, N, "d1")
    assert [type(e) for e in run(state, ddata(1))] == [Rebirth]
    # NDEATH of the earlier session (bdSeq 3) no longer counts
    assert run(state, ndeath(bd=3)) == []


def test_reset_forgets_everything() -> None:
    state = born_state()
    state.reset()
    assert not state.is_born(G, N)


def test_type_mismatch_is_an_error_not_a_crash() -> None:
    state = born_state()
    data = encode([OutMetric(None, 1, codec.BOOLEAN, True, send_datatype=False)], seq=1,
                  timestamp_ms=1)  # fmt: skip
    (event,) = run(state, (Topic(G, "NDATA", N, None), decode(data)))
    assert isinstance(event, Update)
    metric = event.metrics[0][1]
    assert metric.error is not None and math.isnan(metric.value)


def test_window_bound_is_validated() -> None:
    with pytest.raises(ValueError):
        HostState(reorder_window=65)


def test_exhaustive_small_orders_never_lose_in_window_data() -> None:
    """Every arrival order of 5 messages within the window: all values, in seq order."""
    for order in itertools.permutations(range(1, 6)):
        state = born_state(window=8)
        got: list[float] = []
        for seq in order:
            got += values(run(state, ndata(seq, float(seq))))
        got += values(state.tick(100.0))
        assert got == [1.0, 2.0, 3.0, 4.0, 5.0], order


def test_far_back_is_late_but_a_restarted_counter_resyncs() -> None:
    state = born_state(window=4)
    for seq in range(1, 101):
        run(state, ndata(seq, float(seq)))
    assert run(state, ndata(0)) == [] and state.counts["late"] == 1
    # the edge node restarted its counter without a birth: 4 consecutive → gap + rebirth
    events: list[Event] = []
    for seq in (10, 11, 12, 13):
        events += run(state, ndata(seq, float(seq)))
    assert values(events) == [13.0] and any(isinstance(e, Rebirth) for e in events)
    assert state.expected_seq(G, N) == 14
    assert values(run(state, ndata(14, 14.0))) == [14.0]
