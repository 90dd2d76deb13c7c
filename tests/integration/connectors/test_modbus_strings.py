"""Fixed-length strings against a pymodbus TCP server (not our code): read in a block
with numbers, both byte orders, written with FC 16 and read back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.errors import WriteRefused
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.model.batch import Batch
from tests.integration.connectors.test_modbus_source import free_port, running
from tests.support import Collector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

SERIAL = 100  # "SN-0042" in 5 registers, high byte first
RECIPE = 101  # 8 holding registers, writable
SWAPPED = 102  # "PUMP" stored low byte first (byte_order: little)
SPEED = 103  # a uint16 between the strings: one block for all

TAGS = [
    {"path": "a/l/c/e/serial", "kind": "input", "address": 0, "data_type": "string",
     "length": 5},
    {"path": "a/l/c/e/recipe", "address": 0, "data_type": "string", "length": 8,
     "writable": True},
    {"path": "a/l/c/e/name", "kind": "input", "address": 6, "data_type": "string", "length": 2,
     "byte_order": "little"},
    {"path": "a/l/c/e/speed", "kind": "input", "address": 5, "data_type": "uint16"},
]  # fmt: skip


def ascii_registers(text: bytes, count: int, swap: bool = False) -> list[int]:
    data = text.ljust(2 * count, b"\x00")
    pairs = [data[k : k + 2] for k in range(0, len(data), 2)]
    return [int.from_bytes(p, "little" if swap else "big") for p in pairs]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[ModbusTcpServer, int]]:
    port = free_port()
    device = SimDevice(
        1,
        simdata=(
            [SimData(0, count=8, values=False, datatype=SimType.BITS)],
            [SimData(0, count=8, values=False, datatype=SimType.BITS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
        ),
    )
    srv = ModbusTcpServer(device, address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    await srv.async_setValues(1, 4, 0, ascii_registers(b"SN-0042", 5))
    await srv.async_setValues(1, 4, 5, [1450])
    await srv.async_setValues(1, 4, 6, ascii_registers(b"PUMP", 2, swap=True))
    await srv.async_setValues(1, 3, 0, ascii_registers(b"INIT", 8))
    yield srv, port
    await srv.shutdown()  # type: ignore[no-untyped-call]


def make_source(port: int, collector: Collector) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "strings",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 0.5,
            "device_identification": False,
            "tags": TAGS,
        }
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger("isthmus.test.modbus.s"))
    return ModbusSource(config, bound, ctx)


def values(batch: Batch) -> dict[int, object]:
    return {
        t: (x if x is not None else v)
        for t, v, x in zip(batch.tag_id.tolist(), batch.value.tolist(), batch.texts(), strict=True)
    }


async def test_strings_are_read_written_and_read_back(
    server: tuple[ModbusTcpServer, int],
) -> None:
    srv, port = server
    collector = Collector()
    source = make_source(port, collector)
    assert [(b.kind.value, b.address, b.count) for b in source.plan.blocks] == [
        ("holding", 0, 8),
        ("input", 0, 8),  # serial, speed and name coalesced into one request
    ]
    async with running(source):
        batch = await collector.wait_for(lambda b: len(b) == 4 and not b.quality.any())
        assert values(batch) == {SERIAL: "SN-0042", RECIPE: "INIT", SWAPPED: "PUMP", SPEED: 1450.0}

        await source.write("a/l/c/e/recipe", "LAGER-33CL-V2")  # FC 16
        assert [int(v) for v in await srv.async_getValues(1, 3, 0, 8)] == ascii_registers(
            b"LAGER-33CL-V2", 8
        )
        batch = await collector.wait_for(lambda b: values(b).get(RECIPE) == "LAGER-33CL-V2")
        assert batch.text is not None

        with pytest.raises(WriteRefused, match="do not fit 8 registers"):
            await source.write("a/l/c/e/recipe", "X" * 17)
        with pytest.raises(WriteRefused, match="takes text"):
            await source.write("a/l/c/e/recipe", 3.0)


async def test_read_back_gives_the_text_the_device_holds(
    server: tuple[ModbusTcpServer, int],
) -> None:
    srv, port = server
    collector = Collector()
    source = make_source(port, collector)
    async with running(source):
        await collector.wait_for(lambda b: len(b) == 4 and not b.quality.any())
        # a fresh read of the registers (the command gate compares it with the command)
        assert await source.read_back("a/l/c/e/recipe", 1.0) == "INIT"
        await srv.async_setValues(1, 3, 0, ascii_registers(b"OTHER", 8))
        assert await source.read_back("a/l/c/e/recipe", 1.0) == "OTHER"
