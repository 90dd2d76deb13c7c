"""Hostile peers for every polling or subscribing connector: a "device" (or broker) that
answers garbage, never answers, or floods.  Each costs bounded memory, its tags never
turn Good, it is reported as a few events, and a healthy Modbus device polled in the
same process keeps delivering on time.  (The OPC UA client has its own, protocol-aware
hostile server: test_opcua_hostile.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from isthmus.connectors.base import BoundTag, Source, SourceContext
from isthmus.connectors.registry import default_connectors
from isthmus.model.batch import Batch
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality, is_bad
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics
from tests.integration.connectors.test_modbus_source import (
    EXPECTED,
    TAGS,
    make_source,
    running,
    start_server,
)
from tests.integration.hostile_peer import HostilePeer, Mode
from tests.support import Collector, free_port, running_source

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

RUN_S = float(os.environ.get("ISTHMUS_HOSTILE_S", "3"))
MEMORY_BOUND = 48 * 1024 * 1024
"""Peak Python allocations over the run, both sources and pymodbus together.  Measured
~26 MB for a flood whether it lasts 3 s (130 MB pushed at us) or 10 s (575 MB)."""


HOSTILE_CONFIGS: dict[str, dict[str, Any]] = {
    "modbus": {
        "poll_interval": 0.05,
        "timeout": 0.3,
        "tags": [
            {"path": "a/l/c/h/r0", "data_type": "int16", "address": 0},
            {"path": "a/l/c/h/f", "data_type": "float32", "address": 10},
        ],
    },
    "s7": {
        "poll_interval": 0.05,
        "timeout": 0.3,
        "tags": [
            {"path": "a/l/c/h/w", "address": "DB1.DBW0"},
            {"path": "a/l/c/h/r", "address": "DB1.DBD2"},
        ],
    },
    "mqtt": {
        "timeout": 0.5,
        "subscriptions": [{"topic": "plant/{machine}/v", "values": [{"tag": "a/l/c/{machine}/v"}]}],
        "tags": [{"path": "a/l/c/h/v"}],
    },
}


def hostile_source(
    kind: str, port: int, collector: Collector, events: EventLog, metrics: Metrics
) -> Source:
    spec = default_connectors().get(kind)
    raw = {"name": "hostile", "type": kind, "host": "127.0.0.1", "port": port}
    config = spec.config_model.model_validate(raw | {"reconnect_max": 0.3} | HOSTILE_CONFIGS[kind])
    bound: list[BoundTag[TagConfig]] = [
        BoundTag(900 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(
        emit=collector.emit,
        metrics=metrics,
        log=logging.getLogger("isthmus.test.hostile"),
        events=events,
    )
    return spec.factory(config, bound, ctx)


def good_batch_gaps(batches: list[tuple[float, Batch]]) -> float:
    """The longest time between two all-Good batches of the healthy device."""
    times = [t for t, b in batches if len(b) and (b.quality == Quality.GOOD).all()]
    assert len(times) >= 10, len(times)
    return float(np.max(np.diff(times)))


@pytest.fixture(autouse=True)
def quiet_pymodbus() -> Iterator[None]:
    """As ``isthmus run`` does: pymodbus logs hex dumps of every frame it holds when it
    reports an error (megabytes under a flood); the source reports problems itself."""
    logger = logging.getLogger("pymodbus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("mode", ["garbage", "silent", "flood"])
@pytest.mark.parametrize("kind", sorted(HOSTILE_CONFIGS))
async def test_hostile_peer_is_contained(kind: str, mode: Mode) -> None:
    good_port = free_port()
    server = await start_server(good_port)
    healthy_out: list[tuple[float, Batch]] = []
    healthy_collector = Collector()

    async def healthy_emit(batch: Batch) -> None:
        healthy_out.append((time.monotonic(), batch))
        await healthy_collector.emit(batch)

    healthy = make_source(good_port, TAGS, healthy_collector)
    healthy.ctx.emit = healthy_emit
    hostile_out = Collector()
    events = EventLog()
    metrics = Metrics()
    tracemalloc.start()
    try:
        with HostilePeer(mode).running() as peer:
            source = hostile_source(kind, peer.port, hostile_out, events, metrics)
            async with running(healthy), running_source(source):
                await asyncio.sleep(RUN_S)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await server.shutdown()

    stats = peer.stats
    assert stats is not None
    print(
        f"\n{kind} vs {mode}: peer got {stats.bytes_received} B, "
        f"sent {stats.bytes_sent / 1e6:.1f} MB over {stats.connections} connection(s); "
        f"peak Python memory {peak / 1e6:.1f} MB; "
        f"hostile errors {metrics.counters.get('source.hostile.errors', 0)}; "
        f"events {[(e.kind, e.count) for e in events.recent(limit=1000)]}"
    )
    assert peak < MEMORY_BOUND, peak
    if mode == "flood":
        assert stats.bytes_sent > 2 * peak  # we were flooded with more than we ever held
    # The healthy device: correct values, never late by more than a few polls.
    last = healthy_out[-1][1]
    assert [float(v) for v in last.value] == EXPECTED
    assert good_batch_gaps(healthy_out) < 1.0
    # The hostile device: never a Good value, and reported, not spammed.
    hostile = hostile_out.all()
    assert len(hostile) > 0
    assert not (hostile.quality == Quality.GOOD).any()
    assert is_bad(hostile.quality).all()
    reported = events.recent(source="hostile", limit=1000)
    assert 1 <= len(reported) <= 40, [(e.kind, e.message) for e in reported]
    assert metrics.counters.get("source.hostile.errors", 0) >= 1


async def test_mqtt_broker_announcing_a_huge_packet_is_cut_off() -> None:
    """paho would allocate the announced 200 MB; max_packet_size ends the connection."""
    out = Collector()
    events = EventLog()
    metrics = Metrics()
    tracemalloc.start()
    try:
        with HostilePeer("mqtt-oversize").running() as peer:
            source = hostile_source("mqtt", peer.port, out, events, metrics)
            async with running_source(source):
                await asyncio.sleep(2.0)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peer.stats is not None and peer.stats.connections >= 2  # cut, then retried
    assert peak < 8 * 1024 * 1024, peak
    assert metrics.counters["source.hostile.errors"] >= 2
    assert [e.kind for e in events.recent()][:1] == ["link.lost"]
    assert is_bad(out.all().quality).all()
