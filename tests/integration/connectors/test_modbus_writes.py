"""Writes and device identification against a pymodbus TCP server (not our code):
float32 holding (FC 16), scaled int16 (FC 6), coil (FC 5), each read back."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pymodbus.pdu.device import ModbusControlBlock, ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.errors import WriteFailed, WriteRefused
from isthmus.connectors.modbus.source import ModbusSource
from tests.integration.connectors.test_modbus_source import by_tag, free_port, running
from tests.support import Collector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

IDENTITY = {
    "VendorName": "Isthmus test vendor",
    "ProductCode": "IT-42",
    "MajorMinorRevision": "3.16",
    "VendorUrl": "https://example.org/isthmus",
    "ProductName": "pymodbus test server",
    "ModelName": "sim-1",
}

TAGS = [
    {"path": "a/l/c/e/speed_sp", "data_type": "float32", "address": 0, "writable": True},
    {
        "path": "a/l/c/e/temp_sp",
        "data_type": "int16",
        "address": 2,
        "scale": 0.1,
        "offset": -50,
        "writable": True,
    },
    {"path": "a/l/c/e/swapped", "data_type": "float32", "address": 4, "word_order": "little",
     "writable": True},
    {"path": "a/l/c/e/enable", "data_type": "bool", "address": 0, "kind": "coil",
     "writable": True},
    {"path": "a/l/c/e/limit", "data_type": "int16", "address": 6},
]  # fmt: skip


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[ModbusTcpServer, int]]:
    port = free_port()
    device = SimDevice(
        1,
        simdata=(
            [SimData(0, count=16, values=False, datatype=SimType.BITS)],
            [SimData(0, count=16, values=False, datatype=SimType.BITS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
            [SimData(0, count=16, values=0, datatype=SimType.REGISTERS)],
        ),
    )
    srv = ModbusTcpServer(
        device,
        address=("127.0.0.1", port),
        identity=ModbusDeviceIdentification(info_name=IDENTITY),
    )
    await srv.serve_forever(background=True)
    yield srv, port
    await srv.shutdown()  # type: ignore[no-untyped-call]
    # pymodbus keeps the identity in a process-wide singleton: leave it blank again.
    ModbusControlBlock().Identity.update(ModbusDeviceIdentification())


def make_source(port: int, collector: Collector) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "plc2",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 0.5,
            "reconnect_max": 0.3,
            "tags": TAGS,
        }
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger("isthmus.test.modbus.w"))
    return ModbusSource(config, bound, ctx)


async def registers(srv: ModbusTcpServer, fc: int, address: int, count: int) -> list[int]:
    return [int(v) for v in await srv.async_getValues(1, fc, address, count)]


async def test_writes_are_encoded_sent_and_read_back(
    server: tuple[ModbusTcpServer, int],
) -> None:
    srv, port = server
    collector = Collector()
    source = make_source(port, collector)
    async with running(source):
        await collector.wait_for(lambda b: not b.quality.any())
        await source.write("a/l/c/e/speed_sp", 62.5)
        await source.write("a/l/c/e/temp_sp", 21.37)  # raw (21.37 + 50) / 0.1 = 713.7 → 714
        await source.write("a/l/c/e/swapped", -1.25)
        await source.write("a/l/c/e/enable", True)
        assert await registers(srv, 3, 0, 6) == [
            *struct.unpack(">HH", struct.pack(">f", 62.5)),
            714,
            0,
            *reversed(struct.unpack(">HH", struct.pack(">f", -1.25))),
        ]
        assert await registers(srv, 1, 0, 1) == [1]
        # Our own poll reads the raw values back (qualify applies scale/offset later).
        batch = await collector.wait_for(lambda b: by_tag(b)[103][0] == 1.0)
        got = by_tag(batch)
        assert got[100][0] == 62.5
        assert got[101][0] == 714.0
        assert got[102][0] == -1.25
        with pytest.raises(WriteRefused, match="int16 range"):
            await source.write("a/l/c/e/temp_sp", 5000)  # raw 50500
        with pytest.raises(WriteRefused, match="float32"):
            await source.write("a/l/c/e/speed_sp", 1e39)
        with pytest.raises(WriteRefused, match="not writable"):
            await source.write("a/l/c/e/limit", 1)
        await source.write("a/l/c/e/enable", 0)
        assert await registers(srv, 1, 0, 1) == [0]
    assert source.ctx.metrics.counters["source.plc2.writes"] == 5


async def test_device_identification_from_a_pymodbus_server(
    server: tuple[ModbusTcpServer, int],
) -> None:
    _, port = server
    collector = Collector()
    source = make_source(port, collector)
    async with running(source):
        await collector.wait_for(lambda b: not b.quality.any())
    assert source.device_info == IDENTITY


async def test_write_to_an_address_the_device_lacks_fails_with_the_exception() -> None:
    port = free_port()
    device = SimDevice(1, simdata=([SimData(0, count=2, values=0, datatype=SimType.REGISTERS)]))
    srv = ModbusTcpServer(device, address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    collector = Collector()
    source = make_source(port, collector)
    try:
        async with running(source):
            await collector.wait_for(lambda b: True)  # connected and polled once
            with pytest.raises(WriteFailed, match="illegal data address") as info:
                await source.write("a/l/c/e/temp_sp", 1.0)
            assert info.value.code == 2
    finally:
        await srv.shutdown()  # type: ignore[no-untyped-call]
