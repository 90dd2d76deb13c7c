"""ModbusSource against a real pymodbus TCP server on 127.0.0.1 (started here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.decode import encode_value
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.quality import Quality
from tests.support import Collector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

LOGGER = "isthmus.test.modbus"

HOLDING = (
    encode_value(DataType.FLOAT32, 1.5)  # 0..1
    + encode_value(DataType.INT16, -7)  # 2
    + encode_value(DataType.UINT32, 70000, "little")  # 3..4
    + encode_value(DataType.FLOAT64, -2.25)  # 5..8
)
INPUT = encode_value(DataType.INT16, 321) + encode_value(DataType.FLOAT32, 9.5, "big", "little")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device() -> SimDevice:
    return SimDevice(
        1,
        simdata=(
            [SimData(0, values=[True, False, True, True], datatype=SimType.BITS)],
            [SimData(10, values=[False, True], datatype=SimType.BITS)],
            [SimData(0, values=HOLDING, datatype=SimType.REGISTERS)],
            [SimData(0, values=INPUT, datatype=SimType.REGISTERS)],
        ),
    )


async def start_server(port: int) -> ModbusTcpServer:
    server = ModbusTcpServer(device(), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/f32", "data_type": "float32", "address": 0},
    {"path": "a/l/c/e/i16", "data_type": "int16", "address": 2},
    {"path": "a/l/c/e/u32", "data_type": "uint32", "address": 3, "word_order": "little"},
    {"path": "a/l/c/e/f64", "data_type": "float64", "address": 5},
    {"path": "a/l/c/e/in16", "data_type": "int16", "address": 0, "kind": "input"},
    {
        "path": "a/l/c/e/inf",
        "data_type": "float32",
        "address": 1,
        "kind": "input",
        "byte_order": "little",
    },
    {"path": "a/l/c/e/coil0", "data_type": "bool", "address": 0, "kind": "coil"},
    {"path": "a/l/c/e/coil1", "data_type": "bool", "address": 1, "kind": "coil"},
    {"path": "a/l/c/e/di11", "data_type": "bool", "address": 11, "kind": "discrete"},
]
EXPECTED = [1.5, -7.0, 70000.0, -2.25, 321.0, 9.5, 1.0, 0.0, 1.0]


def make_source(port: int, tags: list[dict[str, Any]], collector: Collector) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "plc1",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 0.5,
            "reconnect_max": 0.3,
            "max_gap": 0,
            "tags": tags,
        }
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    return ModbusSource(config, bound, ctx)


@contextlib.asynccontextmanager
async def running(source: ModbusSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


def by_tag(batch: Batch) -> dict[int, tuple[float, int]]:
    return {
        int(t): (float(v), int(q))
        for t, v, q in zip(batch.tag_id, batch.value, batch.quality, strict=True)
    }


def all_good(batch: Batch) -> bool:
    return len(batch) > 0 and not batch.quality.any()


async def test_reads_and_decodes_every_kind() -> None:
    port = free_port()
    server = await start_server(port)
    collector = Collector()
    source = make_source(port, TAGS, collector)
    try:
        async with running(source):
            batch = await collector.wait_for(all_good)
            assert source.connected
    finally:
        await server.shutdown()
    got = by_tag(batch)
    assert [got[100 + i][0] for i in range(len(TAGS))] == EXPECTED
    assert len(set(batch.ts.tolist())) == 1  # one timestamp per poll cycle
    metrics = source.ctx.metrics.counters
    assert metrics["source.plc1.requests"] >= 4  # holding, input, coil, discrete
    assert metrics["source.plc1.values"] >= len(TAGS)


async def test_illegal_address_makes_only_its_block_bad() -> None:
    port = free_port()
    server = await start_server(port)
    collector = Collector()
    tags = [*TAGS[:2], {"path": "a/l/c/e/ghost", "data_type": "int16", "address": 500}]
    source = make_source(port, tags, collector)
    try:
        async with running(source):
            batch = await collector.wait_for(lambda b: len(b) == 3)
    finally:
        await server.shutdown()
    got = by_tag(batch)
    assert got[100] == (1.5, Quality.GOOD)
    assert got[101] == (-7.0, Quality.GOOD)
    assert np.isnan(got[102][0])
    assert got[102][1] == Quality.BAD_CONFIGURATION_ERROR
    assert source.ctx.metrics.counters["source.plc1.errors"] >= 1


async def test_outage_is_bad_once_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = free_port()
    server = await start_server(port)
    collector = Collector()
    source = make_source(port, TAGS, collector)
    async with running(source):
        await collector.wait_for(all_good)
        await server.shutdown()
        lost = await collector.wait_for(lambda b: bool(b.quality.any()))
        assert (lost.quality == Quality.BAD_COMMUNICATION_ERROR).all()
        assert len(lost) == len(TAGS)
        assert np.isnan(lost.value).all()
        # Several reconnect attempts fail while the server is down...
        await asyncio.sleep(1.0)
        assert not source.connected
        bad = [b for b in collector.batches if b.quality.any()]
        assert len(bad) == 1  # ...but the tags went Bad once
        server = await start_server(port)
        try:
            back = await collector.wait_for(all_good)
            assert [by_tag(back)[100 + i][0] for i in range(len(TAGS))] == EXPECTED
            assert source.connected
        finally:
            await server.shutdown()
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
    infos = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert any("connected again" in r.getMessage() for r in infos)
    assert source.ctx.metrics.counters["source.plc1.reconnects"] == 1
    # One event for the outage, one for the recovery.
    kinds = [(e.kind, e.source) for e in source.ctx.events.recent()]
    assert kinds == [("link.lost", "plc1"), ("link.restored", "plc1")]


async def test_unreachable_at_start_is_bad_once_and_cancel_is_prompt() -> None:
    port = free_port()  # nothing listens there
    collector = Collector()
    source = make_source(port, TAGS, collector)
    task = asyncio.create_task(source.run())
    batch = await collector.wait_for(lambda b: True)
    assert (batch.quality == Quality.BAD_COMMUNICATION_ERROR).all()
    await asyncio.sleep(0.8)
    assert len(collector.batches) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)


async def test_fixed_rate_schedule() -> None:
    port = free_port()
    server = await start_server(port)
    collector = Collector()
    source = make_source(port, TAGS, collector)
    try:
        async with running(source):
            await collector.wait_for(all_good)
            first = len(collector.batches)
            await asyncio.sleep(1.0)
            polls = len(collector.batches) - first
    finally:
        await server.shutdown()
    assert 17 <= polls <= 22  # 20 cycles of 50 ms, no drift from the work done
