"""Our simulator read by ``mbpoll`` (Debian's Modbus master, built on libmodbus: not our
code), checked against what our own connector reads from it at the same time; and a
setpoint written by our connector, read back by mbpoll.

mbpoll numbers references from 1 (``-r 1`` is our ``address: 0``), shows 32-bit values
low word first unless ``-B`` is given, and prints ``[ref]: <tab>value`` per value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.model.batch import Batch
from isthmus.model.config import SimulatorConfig
from isthmus.sim.runner import run_simulator
from tests.integration.connectors.test_modbus_source import by_tag, running
from tests.support import Collector, free_port, require_binary

# One simulator for the module (its OPC UA server takes seconds to build).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(40),
    pytest.mark.asyncio(loop_scope="module"),
]

MBPOLL = "/usr/bin/mbpoll"
HOST = "127.0.0.1"
LINE = re.compile(r"^\[(\d+)\]:\s+(-?[0-9.eE+-]+|nan|-?inf)\s*$", re.MULTILINE)

# Our tag map of the simulator (sim/addressspace.py), as a user would write it.
TAGS: list[dict[str, Any]] = [
    {"path": "u/w/p/pump1/flow", "kind": "input", "address": 0, "data_type": "float32"},
    {"path": "u/w/p/pump1/pressure", "kind": "input", "address": 2, "data_type": "float32"},
    {"path": "u/w/p/pump1/current", "kind": "input", "address": 4, "data_type": "float32"},
    {"path": "u/w/p/pump1/vibration", "kind": "input", "address": 6, "data_type": "float32"},
    {"path": "u/w/p/pump1/speed", "kind": "input", "address": 8, "data_type": "float32"},
    {"path": "u/w/p/pump1/bearing_temp", "kind": "input", "address": 10, "data_type": "int16"},
    {"path": "u/w/p/pump1/rpm", "kind": "input", "address": 11, "data_type": "uint16"},
    {"path": "u/w/p/meter/kwh", "kind": "input", "address": 22, "data_type": "uint32"},
    {"path": "u/w/p/meter/voltage", "kind": "input", "address": 24, "data_type": "uint16"},
    {"path": "u/w/p/meter/kvar", "kind": "input", "address": 28, "data_type": "float32",
     "word_order": "little"},
    {"path": "u/w/p/pump1/speed_sp", "kind": "holding", "address": 0, "data_type": "float32",
     "writable": True},
    {"path": "u/w/p/pump1/enable", "kind": "coil", "address": 0, "data_type": "bool"},
    {"path": "u/w/p/pump1/running", "kind": "discrete", "address": 0, "data_type": "bool"},
    {"path": "u/w/p/pump1/fault", "kind": "discrete", "address": 1, "data_type": "bool"},
]  # fmt: skip
ID = {t["path"]: 100 + i for i, t in enumerate(TAGS)}

# mbpoll invocations and, per printed reference, the tag it shows.
READS: list[tuple[list[str], dict[int, str]]] = [
    (
        ["-t", "3:float", "-B", "-r", "1", "-c", "5"],
        {1: "flow", 3: "pressure", 5: "current", 7: "vibration", 9: "speed"},
    ),
    (["-t", "3", "-r", "11", "-c", "2"], {11: "bearing_temp", 12: "rpm"}),
    (["-t", "3:int", "-B", "-r", "23", "-c", "1"], {23: "kwh"}),
    (["-t", "3", "-r", "25", "-c", "1"], {25: "voltage"}),
    (["-t", "3:float", "-r", "29", "-c", "1"], {29: "kvar"}),  # mbpoll's default: low word first
    (["-t", "4:float", "-B", "-r", "1", "-c", "1"], {1: "speed_sp"}),
    (["-t", "0", "-r", "1", "-c", "1"], {1: "enable"}),
    (["-t", "1", "-r", "1", "-c", "2"], {1: "running", 2: "fault"}),
]


def tag_id(short: str) -> int:
    return next(v for k, v in ID.items() if k.endswith("/" + short))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim_port() -> AsyncIterator[int]:
    require_binary(MBPOLL, "interop: the simulator read by an independent Modbus master")
    config = SimulatorConfig(seed=42, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=20, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if task in done:
        task.result()
    assert ready.is_set(), "simulator not ready in 20 s"
    try:
        yield config.modbus_port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def mbpoll(port: int, *args: str, write: tuple[str, ...] = ()) -> dict[int, float]:
    """Run mbpoll once; returns the values it printed by reference (reads)."""
    proc = await asyncio.create_subprocess_exec(
        MBPOLL, "-m", "tcp", "-a", "1", "-1", "-o", "2", "-p", str(port), *args, HOST, *write,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 5)
    assert proc.returncode == 0, (args, out.decode(), err.decode())
    return {int(ref): float(value) for ref, value in LINE.findall(out.decode())}


def make_source(port: int, collector: Collector) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {"name": "sim", "host": HOST, "port": port, "poll_interval": 0.05, "tags": TAGS}
    )
    bound: list[BoundTag[ModbusTagConfig]] = [BoundTag(ID[t.path], t.path, t) for t in config.tags]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger("isthmus.test.mbpoll"))
    return ModbusSource(config, bound, ctx)


async def fresh(collector: Collector) -> dict[int, tuple[float, int]]:
    batch: Batch = await collector.wait_for(lambda b: len(b) == len(TAGS))
    assert not batch.quality.any()
    return by_tag(batch)


def close(ours: list[float], theirs: float) -> bool:
    """mbpoll's value lies within what our connector read (every 50 ms; the simulator
    ticks every 100 ms) from just before to just after mbpoll ran, with room for
    mbpoll's 6 significant digits and a sample we might have missed on a busy machine."""
    low, high = min(ours), max(ours)
    slack = 1e-4 * max(abs(low), abs(high)) + 1e-3 + 0.5 * (high - low)
    return low - slack <= theirs <= high + slack


async def test_mbpoll_reads_what_our_connector_reads(sim_port: int) -> None:
    port = sim_port
    collector = Collector()
    source = make_source(port, collector)
    async with running(source):
        await fresh(collector)
        mismatches = []
        for args, refs in READS:
            await fresh(collector)
            first = len(collector.batches) - 1
            theirs = await mbpoll(port, *args)
            await fresh(collector)
            window = [by_tag(b) for b in collector.batches[first:] if len(b) == len(TAGS)]
            assert set(theirs) == set(refs), (args, theirs)
            for ref, short in refs.items():
                ours = [got[tag_id(short)][0] for got in window]
                if not close(ours, theirs[ref]):
                    mismatches.append((short, theirs[ref], ours))
        assert not mismatches, mismatches


async def test_a_setpoint_we_write_is_read_by_mbpoll(sim_port: int) -> None:
    port = sim_port
    collector = Collector()
    source = make_source(port, collector)
    async with running(source):
        await fresh(collector)
        await source.write("u/w/p/pump1/speed_sp", 63.25)
        assert await mbpoll(port, "-t", "4:float", "-B", "-r", "1", "-c", "1") == {1: 63.25}
        # ...and a value mbpoll writes (FC 16, big-endian words) is what we read.
        await mbpoll(port, "-t", "4:float", "-B", "-r", "1", write=("47.5",))
        got = await collector.wait_for(
            lambda b: len(b) == len(TAGS) and by_tag(b)[tag_id("speed_sp")][0] == 47.5
        )
        assert not got.quality.any()
