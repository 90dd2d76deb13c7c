"""The simulator over real sockets: plain asyncua and pymodbus clients, no Isthmus code."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress

import pytest
import pytest_asyncio
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient

from isthmus.model.config import SimulatorConfig
from isthmus.sim.runner import run_simulator

# One simulator serves the read/write tests (an asyncua server takes seconds to build
# its standard address space); the cancel test starts its own.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def f32(regs: Sequence[int], swapped: bool = False) -> float:
    words = list(regs)[::-1] if swapped else list(regs)
    return float(struct.unpack(">f", struct.pack(">HH", *words))[0])


class Running:
    def __init__(self, config: SimulatorConfig, task: asyncio.Task[None]) -> None:
        self.config = config
        self.task = task

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{HOST}:{self.config.opcua_port}/"

    async def stop(self) -> float:
        started = time.monotonic()
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task
        return time.monotonic() - started


async def start() -> Running:
    config = SimulatorConfig(seed=42, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    done, _ = await asyncio.wait(
        [task, asyncio.create_task(ready.wait())], timeout=30, return_when="FIRST_COMPLETED"
    )
    if task in done:
        task.result()  # raises the start-up error
    assert ready.is_set(), "simulator not ready in 30 s"
    return Running(config, task)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[Running]:
    running = await start()
    yield running
    if not running.task.done():
        await running.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def own_sim() -> AsyncIterator[Running]:
    running = await start()
    yield running
    if not running.task.done():
        await running.stop()


async def test_opcua_values_plausible_and_changing(sim: Running) -> None:
    async with Client(sim.endpoint, timeout=4) as client:
        ns = await client.get_namespace_index("urn:isthmus:sim")
        assert ns == 2
        state = client.get_node("ns=2;s=Line1.Filler.State")
        total = client.get_node("ns=2;s=Line1.Filler.TotalCount")
        temp = client.get_node("ns=2;s=Line1.Filler.ProductTemperature")
        glue = client.get_node("ns=2;s=Line1.Labeller.GlueTemperature")
        assert await client.get_node("ns=2;s=Line1.Setpoints.LineSpeed").read_value() == 300.0
        assert 0 <= await state.read_value() <= 4
        t1 = await temp.read_value()
        assert 0.0 < t1 < 20.0
        assert 100.0 < await glue.read_value() < 200.0
        await asyncio.sleep(1.0)
        assert await total.read_value() > 0  # the line started producing
        assert await temp.read_value() != t1  # analog values move
        eu_range = await client.get_node("ns=2;s=Line1.Filler.Speed.EURange").read_value()
        assert (eu_range.Low, eu_range.High) == (0.0, 720.0)


async def test_modbus_values_plausible_and_changing(sim: Running) -> None:
    client = AsyncModbusTcpClient(HOST, port=sim.config.modbus_port, timeout=2)
    await client.connect()
    try:
        first = await client.read_input_registers(0, count=32, device_id=1)
        assert not first.isError()
        await asyncio.sleep(0.5)
        rr = await client.read_input_registers(0, count=32, device_id=1)
        regs = rr.registers
        assert regs[20:22] != first.registers[20:22]  # kW moves
        speed = f32(regs[8:10])
        assert 0.0 <= speed <= 100.0
        assert abs(regs[11] - 1480 * speed / 100) < 40  # rpm (uint16) agrees with speed
        assert 0.0 <= f32(regs[0:2]) < 150.0  # flow
        assert 0.0 <= f32(regs[2:4]) < 6.0  # pressure
        assert 15.0 < int.from_bytes(regs[10].to_bytes(2, "big"), signed=True) / 10 < 60.0
        assert 0.0 < f32(regs[20:22]) < 100.0  # kW
        assert 0.70 < regs[26] / 1000 < 1.0  # power factor (int16 x 1000)
        assert 0.0 < f32(regs[28:30], swapped=True) < 100.0  # kvar, word-swapped
        assert 390.0 < regs[24] / 10 < 410.0
        assert 49.5 < regs[25] / 100 < 50.5
        kwh_raw = (regs[22] << 16) | regs[23]
        await asyncio.sleep(1.0)
        later = await client.read_input_registers(0, count=32, device_id=1)
        assert (later.registers[22] << 16) | later.registers[23] >= kwh_raw  # uint32 counter
        assert struct.unpack(">d", struct.pack(">4H", *later.registers[16:20]))[0] >= 0.0
        bits = await client.read_discrete_inputs(0, count=3, device_id=1)
        assert bits.bits[1] is False or bits.bits[0] is False  # a faulted pump is not running
        coils = await client.read_coils(0, count=1, device_id=1)
        assert coils.bits[0] is True
        hr = await client.read_holding_registers(0, count=2, device_id=1)
        assert f32(hr.registers) == 75.0
    finally:
        client.close()


async def test_modbus_status_string(sim: Running) -> None:
    """Pump.StatusText: 8 input registers of NUL-padded ASCII, high byte first."""
    client = AsyncModbusTcpClient(HOST, port=sim.config.modbus_port, timeout=2)
    await client.connect()
    try:
        rr = await client.read_input_registers(12, count=28, device_id=1)  # one instant
        fault = rr.registers[0]
        raw = b"".join(r.to_bytes(2, "big") for r in rr.registers[20:28])
        text = raw.rstrip(b"\x00").decode("ascii")
        expected = {201: "TRIP OVERLOAD", 202: "TRIP VIBRATION", 203: "TRIP DRY RUNNING"}
        if fault:
            assert text == expected[fault]
        else:
            assert text in ("RUNNING", "STOPPED")
    finally:
        client.close()


async def test_line_speed_written_over_opcua_is_followed(sim: Running) -> None:
    async with Client(sim.endpoint, timeout=4) as client:
        setpoint = client.get_node("ns=2;s=Line1.Setpoints.LineSpeed")
        speed = client.get_node("ns=2;s=Line1.Filler.Speed")
        await setpoint.write_value(120.0)  # a Double
        await asyncio.sleep(2.5)  # ramps down at up to 120 bottles/min per second
        assert await setpoint.read_value() == 120.0
        assert await speed.read_value() == pytest.approx(120.0, abs=1.0) or (
            await client.get_node("ns=2;s=Line1.Filler.State").read_value() != 1
        )
        await setpoint.write_value(9999.0)  # out of limits: clamped and read back
        await asyncio.sleep(0.5)
        assert await setpoint.read_value() == 600.0
        await setpoint.write_value(300.0)


async def test_pump_speed_written_over_modbus_is_followed(sim: Running) -> None:
    client = AsyncModbusTcpClient(HOST, port=sim.config.modbus_port, timeout=2)
    await client.connect()
    try:
        words = list(struct.unpack(">HH", struct.pack(">f", 40.0)))
        wr = await client.write_registers(0, words, device_id=1)
        assert not wr.isError()
        await asyncio.sleep(2.5)  # 75 % → 40 % at 20 %/s
        rr = await client.read_input_registers(8, count=2, device_id=1)
        assert f32(rr.registers) == pytest.approx(40.0, abs=0.5)
        hr = await client.read_holding_registers(0, count=2, device_id=1)
        assert f32(hr.registers) == 40.0
        # Stop the pump with its run command.
        await client.write_coil(0, False, device_id=1)
        await asyncio.sleep(2.0)  # ramps down at 20 %/s; "running" below 5 %
        bits = await client.read_discrete_inputs(0, count=1, device_id=1)
        assert bits.bits[0] is False
        await client.write_coil(0, True, device_id=1)
        await client.write_registers(0, list(struct.unpack(">HH", struct.pack(">f", 75.0))))
    finally:
        client.close()


async def test_cancel_closes_both_ports_fast(own_sim: Running) -> None:
    sim = own_sim
    assert port_open(sim.config.opcua_port)
    assert port_open(sim.config.modbus_port)
    # A connected client of each kind must not hold the servers up.
    async with Client(sim.endpoint, timeout=4):
        modbus = AsyncModbusTcpClient(HOST, port=sim.config.modbus_port, timeout=2)
        await modbus.connect()
        elapsed = await sim.stop()
        modbus.close()
        assert elapsed < 2.0
        assert not port_open(sim.config.opcua_port)
        assert not port_open(sim.config.modbus_port)
