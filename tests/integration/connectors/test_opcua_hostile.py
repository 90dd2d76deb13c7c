"""Hostile peers: an OPC UA source pointed at a server that sends garbage, never
answers, or floods.  For each: its tags go Bad_CommunicationError once, one warning
per burst, retries with backoff, bounded memory, and another OPC UA source in the same
event loop and emit path keeps delivering Good values throughout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from asyncua import Node, Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.quality import Quality
from isthmus.observe.metrics import Metrics
from tests.support import Collector, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(30),
    pytest.mark.asyncio(loop_scope="module"),
]

ROOT = Path(__file__).resolve().parents[3]
LOGGER = "isthmus.test.opcua.hostile"
HOSTILE_ID = 500
GOOD_ID = 900
WINDOW = 6.0  # seconds of hostility per test
MEMORY_BOUND = 48 * 1024 * 1024
"""Peak traced memory allowed during the window.  The guard keeps at most one chunk
(≤ 16 MiB) buffered; unguarded, asyncua buffers a flood until its request times out
(hundreds of MiB in a 2 s timeout on loopback)."""


@contextlib.contextmanager
def hostile_peer(mode: str) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.connectors.hostile_peer", mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(5)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def good_plant() -> AsyncIterator[tuple[str, Node]]:
    port = free_port()
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:isthmus:test:hostile")
    var = await server.nodes.objects.add_variable(ua.NodeId("Level", ns), "Level", 0.0)
    await server.start()
    yield endpoint, var
    await server.stop()


def make_source(
    name: str, endpoint: str, node: str, tag_id: int, collector: Collector, metrics: Metrics
) -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": name,
            "endpoint": endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": 1.0,
            "reconnect_max": 0.5,
            "tags": [{"path": f"a/l/c/e/{name}", "node": node}],
        }
    )
    tag = config.tags[0]
    bound: list[BoundTag[OpcUaTagConfig]] = [BoundTag(tag_id, f"x/y/{tag.path}", tag)]
    ctx = SourceContext(emit=collector.emit, metrics=metrics, log=logging.getLogger(LOGGER))
    return opcua_source(config, bound, ctx)


class Arrivals(Collector):
    """A collector that also notes when Good samples of the good source arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.good_at: list[float] = []

    async def emit(self, batch: Any) -> None:
        if np.any((batch.tag_id == GOOD_ID) & (batch.quality == Quality.GOOD)):
            self.good_at.append(time.monotonic())
        await super().emit(batch)


async def writer(var: Node, stop: asyncio.Event) -> None:
    value = 0.0
    while not stop.is_set():
        value += 1.0
        await var.write_value(value)
        await asyncio.sleep(0.05)


async def run_hostile(
    mode: str, good_plant: tuple[str, Node], caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    caplog.set_level(logging.INFO, logger=LOGGER)
    endpoint, var = good_plant
    collector = Arrivals()
    metrics = Metrics()
    good = make_source("good", endpoint, var.nodeid.to_string(), GOOD_ID, collector, metrics)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(good.run()), asyncio.create_task(writer(var, stop))]
    try:
        for _ in range(100):
            if good.connected:
                break
            await asyncio.sleep(0.05)
        assert good.connected
        with hostile_peer(mode) as port:
            hostile = make_source(
                "hostile",
                f"opc.tcp://127.0.0.1:{port}/",
                "ns=2;s=X",
                HOSTILE_ID,
                collector,
                metrics,
            )
            tracemalloc.start()
            tracemalloc.reset_peak()
            started = time.monotonic()
            task = asyncio.create_task(hostile.run())
            await asyncio.sleep(WINDOW)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 3.0)
            ended = time.monotonic()
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(t, 3.0)

    during = [t for t in collector.good_at if started <= t <= ended]
    gaps = np.diff([started, *during, ended])
    batch = collector.all()
    hostile_q = batch.quality[batch.tag_id == HOSTILE_ID]
    good_mask = (batch.tag_id == GOOD_ID) & (batch.quality == Quality.GOOD)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    print(  # shown with pytest -s: the numbers behind the assertions
        f"{mode}: peak {peak / 1e6:.1f} MB, attempts {metrics.counters['source.hostile.errors']}, "
        f"rejected {metrics.counters['source.hostile.rejected_frames']}, good samples "
        f"{int(np.count_nonzero(good_mask))}, longest good gap {gaps.max():.2f} s"
    )
    return {
        "hostile_qualities": list(hostile_q),
        "good_values": batch.value[good_mask],
        "good_bad": int(np.count_nonzero((batch.tag_id == GOOD_ID) & (batch.quality != 0))),
        "errors": metrics.counters["source.hostile.errors"],
        "rejected": metrics.counters["source.hostile.rejected_frames"],
        "unreachable": [m for m in messages if "hostile" in m and "unreachable" in m],
        "rejected_logs": [m for m in messages if "connection dropped" in m],
        "peak": peak,
        "seconds": ended - started,
        "max_gap": float(gaps.max()),
        "events": [(e.kind, e.source, e.count) for e in hostile.ctx.events],
    }


def check_common(result: dict[str, Any]) -> None:
    # tags Bad_CommunicationError exactly once, one warning for the whole outage
    assert result["hostile_qualities"] == [Quality.BAD_COMMUNICATION_ERROR]
    assert len(result["unreachable"]) == 1
    # kept retrying, with backoff (0.5 s cap): neither given up nor hammering
    assert 3 <= result["errors"] <= 20, result["errors"]
    # bounded memory
    assert result["peak"] < MEMORY_BOUND, f"peak {result['peak'] / 1e6:.1f} MB"
    # the other source: Good throughout (a write every 50 ms over the window)
    good = result["good_values"]
    assert result["good_bad"] == 0
    expected = result["seconds"] / 0.05
    assert len(good) >= 0.6 * expected, (len(good), expected)
    assert np.all(np.diff(good) > 0)  # in order, no duplicates
    assert result["max_gap"] < 1.0, f"the good source stalled {result['max_gap']:.2f} s"


async def test_garbage_peer(good_plant: tuple[str, Node], caplog: pytest.LogCaptureFixture) -> None:
    result = await run_hostile("garbage", good_plant, caplog)
    check_common(result)
    assert result["rejected"] >= 3  # every attempt's garbage is counted
    assert len(result["rejected_logs"]) == 1  # ... and logged once per burst
    assert "not an OPC UA message" in result["rejected_logs"][0]
    assert "not an OPC UA message" in result["unreachable"][0]  # the cause, not a timeout
    # the burst is an event too (source.rejected), and so is the outage (link.lost)
    kinds = [kind for kind, source, _ in result["events"] if source == "hostile"]
    assert kinds.count("source.rejected") == 1 and kinds.count("link.lost") == 1


async def test_silent_peer(good_plant: tuple[str, Node], caplog: pytest.LogCaptureFixture) -> None:
    result = await run_hostile("silent", good_plant, caplog)
    check_common(result)
    assert result["rejected"] == 0  # nothing was received: a timeout, not a bad frame


async def test_flooding_peer(
    good_plant: tuple[str, Node], caplog: pytest.LogCaptureFixture
) -> None:
    result = await run_hostile("flood", good_plant, caplog)
    check_common(result)
    assert result["rejected"] >= 2
    assert 1 <= len(result["rejected_logs"]) <= 2  # oversized (and maybe garbage) bursts
    assert any("above the" in m for m in result["rejected_logs"])
    assert "above the" in result["unreachable"][0]
