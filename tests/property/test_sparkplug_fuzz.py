"""Fuzz the Sparkplug B payload decoder and the host: no crash, every rejection counted.

The default run is small; a nightly run scales it with ``ISTHMUS_FUZZ_EXAMPLES``
(e.g. ``ISTHMUS_FUZZ_EXAMPLES=100000``).
"""

from __future__ import annotations

import logging
import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.sparkplug import codec
from isthmus.connectors.sparkplug.codec import OutMetric, decode, encode
from isthmus.connectors.sparkplug.config import SparkplugSourceConfig, SparkplugTagConfig
from isthmus.connectors.sparkplug.host import SparkplugHost
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock

EXAMPLES = int(os.environ.get("ISTHMUS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KINDS = ["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD"]


def make_host() -> SparkplugHost:
    tags = [
        BoundTag(k, f"e/s/sp/g/n/d/m{k}", SparkplugTagConfig(path=f"sp/g/n/d/m{k}"))
        for k in range(4)
    ]
    cfg = SparkplugSourceConfig(name="f", host="h", groups=["g"])

    async def emit(batch: Batch) -> None:  # pragma: no cover - handle() does not emit
        pass

    ctx = SourceContext(emit=emit, clock=ManualClock(), log=logging.getLogger("fuzz"))
    return SparkplugHost(cfg, tags, ctx)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    try:
        payload = decode(data)
    except codec.DecodeError:
        return
    for metric in payload.metrics:
        assert isinstance(metric.value, float)
        assert metric.error is None or math.isnan(metric.value)


metrics = st.builds(
    OutMetric,
    name=st.one_of(st.none(), st.sampled_from(["m0", "m1", "m2", "bdSeq", "x/y"])),
    alias=st.one_of(st.none(), st.integers(0, 5)),
    datatype=st.sampled_from([*sorted(codec.NUMERIC_TYPES), codec.STRING]),
    value=st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text()
    ),
    is_historical=st.booleans(),
    send_datatype=st.booleans(),
)


def _encode_or_none(items: list[OutMetric], seq: int | None) -> bytes | None:
    try:
        return encode(items, seq=seq, timestamp_ms=1)
    except (TypeError, ValueError, OverflowError):
        return None  # the strategy built a value protobuf cannot hold: not our decoder


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.sampled_from([None, "d"]),
            st.lists(metrics, max_size=4),
            st.one_of(st.none(), st.integers(0, 255)),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_host_survives_any_message_sequence(
    messages: list[tuple[str, str | None, list[OutMetric], int | None, bool]],
) -> None:
    host = make_host()
    rejected = 0
    for now, (kind, device, items, seq, corrupt) in enumerate(messages):
        data = _encode_or_none(items, seq)
        if data is None:
            continue
        if corrupt:
            data = data[: len(data) // 2] + b"\xff"
        tail = f"/{device}" if device else ""
        try:
            decode(data)
        except codec.DecodeError:
            rejected += 1
        batches, _ = host.handle(f"spBv1.0/g/{kind}/n{tail}", data, now=float(now))
        for batch in batches:
            assert len(batch.tag_id) == len(batch.value)
    events = host.state.tick(1e9)
    host.events_to_output(events)
    assert host._ctx.metrics.snapshot().get("source.f.malformed", 0) == rejected


@FUZZ
@given(
    start=st.integers(0, 255),
    count=st.integers(1, 40),
    window=st.integers(0, 8),
    data=st.data(),
)
def test_seq_machine_never_duplicates_or_reorders(
    start: int, count: int, window: int, data: st.DataObject
) -> None:
    """Whatever is lost, duplicated or swapped (within the window): each message is
    processed at most once, in seq order, and a rebirth is requested iff one is lost
    or the reordering exceeded the window."""
    from isthmus.connectors.sparkplug.codec import Topic
    from isthmus.connectors.sparkplug.host_state import HostState, Rebirth, Update

    state = HostState(reorder_window=window, reorder_timeout=1.0, rebirth_min_interval=0.0)
    birth = encode([OutMetric("v", 1, codec.DOUBLE, -1.0)], seq=start, timestamp_ms=1)
    state.receive(Topic("g", "NBIRTH", "n", None), decode(birth), 0.0)
    indexes = list(range(1, count + 1))
    kept = [i for i in indexes if data.draw(st.integers(0, 9), label="keep") > 0]
    dups = data.draw(st.lists(st.sampled_from(kept), max_size=3), label="dups") if kept else []
    # local swaps only (within the window), so in-window reordering is exercised
    arrival = kept + dups
    for k in range(len(arrival) - 1):
        if data.draw(st.booleans(), label="swap"):
            arrival[k], arrival[k + 1] = arrival[k + 1], arrival[k]
    got: list[float] = []
    rebirths = 0
    for now, i in enumerate(arrival):
        seq = (start + i) % 256
        payload = encode([OutMetric(None, 1, codec.DOUBLE, float(i), send_datatype=False)],
                         seq=seq, timestamp_ms=1)  # fmt: skip
        for event in state.receive(Topic("g", "NDATA", "n", None), decode(payload), now * 0.01):
            if isinstance(event, Update):
                got += [m.value for _, m in event.metrics]
            rebirths += isinstance(event, Rebirth)
    for event in state.tick(1e6):
        if isinstance(event, Update):
            got += [m.value for _, m in event.metrics]
        rebirths += isinstance(event, Rebirth)
    assert len(got) == len(set(got)), "a message was processed twice"
    assert got == sorted(got), "messages were processed out of order"
    assert set(got) <= set(map(float, kept))
    if kept == indexes and arrival == kept:
        assert rebirths == 0 and got == [float(i) for i in indexes]
    if kept != indexes and kept and max(kept) > min(set(indexes) - set(kept)):
        assert rebirths >= 1, "a lost message must cause a rebirth request"
