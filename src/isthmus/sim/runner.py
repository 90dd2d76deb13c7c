"""Run the plant model behind real OPC UA and Modbus TCP servers until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from isthmus.model.config import SimulatorConfig
from isthmus.sim.modbus_server import SimModbusServer
from isthmus.sim.model import PlantModel
from isthmus.sim.opcua_server import SimOpcUaServer

log = logging.getLogger("isthmus.sim")

MAX_STEP_S = 1.0
"""Longest model step: after a stall (laptop asleep) the plant does not jump ahead."""
STOP_TIMEOUT_S = 1.5


class Simulator:
    """The model and its two servers.  ``start()``, then ``tick()`` repeatedly, ``stop()``."""

    def __init__(self, config: SimulatorConfig, *, faults: bool = True) -> None:
        self.config = config
        self.model = PlantModel(config.seed, faults=faults)
        self.opcua = SimOpcUaServer(config.host, config.opcua_port)
        self.modbus = SimModbusServer(config.host, config.modbus_port)
        self._last_tick: float | None = None

    async def start(self) -> None:
        initial = self.model.values()
        try:
            await self.opcua.start(initial)
            await self.modbus.start(initial)
        except BaseException:
            await self.stop()
            raise
        self._last_tick = time.monotonic()

    async def tick(self) -> None:
        """Apply setpoints written by clients, advance the model, publish what changed."""
        now = time.monotonic()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, MAX_STEP_S)
        self._last_tick = now
        model = self.model
        written = {**self.opcua.read_setpoints(), **await self.modbus.read_setpoints()}
        for name, value in written.items():
            applied = model.write_setpoint(name, value)
            log.info("setpoint %s written: %s (applied %s)", name, value, applied)
        model.step(dt)
        values = model.values()
        await self.opcua.push(values)
        await self.modbus.push(values)

    async def stop(self) -> None:
        """Stop both servers; bounded in time, never raises."""
        for stop in (self.modbus.stop, self.opcua.stop):
            try:
                await asyncio.wait_for(stop(), STOP_TIMEOUT_S / 2)
            except Exception:
                log.warning("simulator server did not stop cleanly", exc_info=True)


async def run_simulator(config: SimulatorConfig, *, ready: asyncio.Event | None = None) -> None:
    """Serve the simulated plant until cancelled.

    Starts the OPC UA server on ``config.opcua_port`` and the Modbus TCP server on
    ``config.modbus_port`` (both on ``config.host``), sets ``ready`` once both listen,
    then ticks the model every ``config.tick`` seconds of wall-clock time.  On
    cancellation both servers are stopped (within about 1.5 s) and the cancellation
    propagates.
    """
    sim = Simulator(config)
    await sim.start()
    log.info(
        "simulator ready: opc.tcp://%s:%d/ and modbus %s:%d (seed %d)",
        config.host,
        config.opcua_port,
        config.host,
        config.modbus_port,
        config.seed,
    )
    if ready is not None:
        ready.set()
    period = max(config.tick, 0.01)
    try:
        next_at = time.monotonic()
        while True:
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:  # fell behind (stall): don't try to catch up
                next_at = time.monotonic()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
            try:
                await sim.tick()
            except Exception:
                log.exception("simulator tick failed")
    finally:
        with contextlib.suppress(BaseException):
            await asyncio.shield(sim.stop())
