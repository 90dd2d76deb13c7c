"""The Modbus source as a Commander, against a pymodbus TCP server (not our code) on
127.0.0.1, directly and through the DroppingProxy: write then read back, scale/offset
round trips, refusals before anything is sent, and the outcome of each failure."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from isthmus.connectors.base import BoundTag, Commander, CommandWriteError, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.errors import WriteFailed
from isthmus.connectors.modbus.source import ModbusSource
from tests.integration.connectors.proxy import (
    MODBUS,
    DroppingProxy,
    modbus_write,
    write_through_drops,
)
from tests.support import Collector, free_port, running_source

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/speed_sp", "data_type": "float32", "address": 0, "writable": True},
    {"path": "a/l/c/e/temp_sp", "data_type": "int16", "address": 2, "scale": 0.1,
     "offset": -50, "writable": True},
    {"path": "a/l/c/e/count_sp", "data_type": "int16", "address": 3, "writable": True},
    {"path": "a/l/c/e/total_sp", "data_type": "uint64", "address": 4, "writable": True},
    {"path": "a/l/c/e/flag", "data_type": "bool", "address": 8, "bit": 3, "writable": True},
    {"path": "a/l/c/e/enable", "data_type": "bool", "address": 0, "kind": "coil",
     "writable": True},
    {"path": "a/l/c/e/flow", "data_type": "float32", "address": 0, "kind": "input"},
]  # fmt: skip


@pytest_asyncio.fixture
async def device() -> AsyncIterator[tuple[ModbusTcpServer, int]]:
    port = free_port()
    dev = SimDevice(
        1,
        simdata=(
            [SimData(0, count=16, values=False, datatype=SimType.BITS)],
            [SimData(0, count=16, values=False, datatype=SimType.BITS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(dev, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    yield server, port
    await server.shutdown()  # type: ignore[no-untyped-call]


def make_source(port: int, **options: Any) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "plc",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 0.5,
            "reconnect_max": 0.2,
            "device_identification": False,
            "tags": TAGS,
        }
        | options
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=Collector().emit, log=logging.getLogger("isthmus.test.cmd.modbus"))
    return ModbusSource(config, bound, ctx)


async def holding(server: ModbusTcpServer, address: int, count: int = 1) -> list[int]:
    return [int(v) for v in await server.async_getValues(1, 3, address, count)]


async def test_write_then_read_back_equal(device: tuple[ModbusTcpServer, int]) -> None:
    server, port = device
    source = make_source(port)
    assert isinstance(source, Commander)
    async with running_source(source, connected_within=5):
        await source.write("a/l/c/e/speed_sp", 62.5)
        assert await source.read_back("a/l/c/e/speed_sp", 1.0) == 62.5
        await source.write("ent/site/a/l/c/e/count_sp", -1234)  # by UNS path
        got = await source.read_back(102, 1.0)  # by tag id
        assert got == -1234 and isinstance(got, int)
        big = 2**60 + 1  # beyond float64 precision: exact both ways
        await source.write("a/l/c/e/total_sp", big)
        assert await source.read_back("a/l/c/e/total_sp", 1.0) == big
        await source.write("a/l/c/e/enable", True)
        assert await source.read_back("a/l/c/e/enable", 1.0) is True
        await source.write("a/l/c/e/flag", True)  # FC 22: bit 3 of register 8
        assert await holding(server, 8) == [0b1000]
        assert await source.read_back("a/l/c/e/flag", 1.0) is True
        # read back is a fresh read: a change on the device shows at once
        await server.async_setValues(1, 3, 3, [7])
        assert await source.read_back("a/l/c/e/count_sp", 1.0) == 7
        # an input register reads back too (not writable)
        await server.async_setValues(1, 4, 0, list(struct.unpack(">HH", struct.pack(">f", 9.5))))
        assert await source.read_back("a/l/c/e/flow", 1.0) == 9.5
        assert await source.read_back("a/l/c/e/nothing", 1.0) is None
    assert source.ctx.metrics.counters["source.plc.writes"] == 5


async def test_scale_and_offset_round_trip(device: tuple[ModbusTcpServer, int]) -> None:
    server, port = device
    source = make_source(port)
    async with running_source(source, connected_within=5):
        # raw = (21.37 + 50) / 0.1 = 713.7 → 714 (half away from zero); back: 71.4 - 50
        await source.write("a/l/c/e/temp_sp", 21.37)
        assert await holding(server, 2) == [714]
        back = await source.read_back("a/l/c/e/temp_sp", 1.0)
        assert isinstance(back, float) and back == pytest.approx(21.4)
        assert abs(back - 21.37) <= 0.1 / 2 + 1e-9  # within half a scale step
        await source.write("a/l/c/e/temp_sp", -53.25)  # raw -32.5 → -33 (away from zero)
        assert await holding(server, 2) == [0x10000 - 33]
        assert await source.read_back("a/l/c/e/temp_sp", 1.0) == pytest.approx(-53.3)


async def test_value_out_of_register_range_is_refused_before_sending(
    device: tuple[ModbusTcpServer, int],
) -> None:
    server, port = device
    async with DroppingProxy("127.0.0.1", port, framing=MODBUS, watch=modbus_write) as proxy:
        source = make_source(proxy.port)
        async with running_source(source, connected_within=5):
            await server.async_setValues(1, 3, 2, [600])
            cases: list[tuple[str, Any, str]] = [
                ("a/l/c/e/temp_sp", 5000, "int16 range"),  # raw 50500
                ("a/l/c/e/count_sp", 2.0**15, "int16 range"),
                ("a/l/c/e/speed_sp", 1e39, "float32"),
                ("a/l/c/e/speed_sp", float("nan"), "finite"),
                ("a/l/c/e/enable", 2, "0/1"),
                ("a/l/c/e/count_sp", "12", "strings go to string tags"),
                ("a/l/c/e/flow", 1.0, "not writable"),
                ("a/l/c/e/nothing", 1.0, "no tag"),
            ]
            for tag, value, match in cases:
                with pytest.raises(CommandWriteError, match=match) as info:
                    await source.write(tag, value)
                assert info.value.outcome == "failed"
            assert proxy.matched == 0  # no write request reached the device
            assert await holding(server, 2) == [600]


async def test_not_connected_and_device_refusal_are_failed(
    device: tuple[ModbusTcpServer, int],
) -> None:
    _server, port = device
    source = make_source(port)
    with pytest.raises(WriteFailed, match="not connected") as info:
        await source.write("a/l/c/e/speed_sp", 1.0)
    assert info.value.outcome == "failed"
    assert await source.read_back("a/l/c/e/speed_sp", 0.5) is None

    small_port = free_port()  # a device with two holding registers only
    small = ModbusTcpServer(
        SimDevice(1, simdata=[SimData(0, count=2, values=0, datatype=SimType.REGISTERS)]),
        address=("127.0.0.1", small_port),
    )
    await small.serve_forever(background=True)
    try:
        lacking = make_source(small_port)
        async with running_source(lacking, connected_within=5):
            with pytest.raises(WriteFailed, match="illegal data address") as info:
                await lacking.write("a/l/c/e/count_sp", 1)  # register 3: not on the device
            assert (info.value.outcome, info.value.code) == ("failed", 2)
            assert await lacking.read_back("a/l/c/e/count_sp", 1.0) is None
    finally:
        await small.shutdown()  # type: ignore[no-untyped-call]


async def test_connection_dropped_after_the_request_is_uncertain(
    device: tuple[ModbusTcpServer, int],
) -> None:
    server, port = device

    async def count_sp() -> int:
        (value,) = await holding(server, 3)
        return value

    async with DroppingProxy("127.0.0.1", port, framing=MODBUS, watch=modbus_write) as proxy:
        source = make_source(proxy.port)
        async with running_source(source, connected_within=5):
            outcomes = await write_through_drops(
                proxy, source, "a/l/c/e/count_sp", count_sp, (11, 22, 33, 44, 55),
                watch=modbus_write, applied_first=True, no_answer="no answer",
            )  # fmt: skip
    print(f"\nmodbus outcomes through the dropping proxy: {outcomes}")
    assert set(outcomes.values()) == {"uncertain"}
    assert proxy.drops == 3
    assert proxy.matched == 4  # write requests forwarded whole: 11, 22, 44, 55
