"""A live system for the command gate tests and benchmark: the plant simulator (real
OPC UA and Modbus TCP servers on free ports), the demo plant pointed at it, built by the
composition root (``build_runtime`` + ``api_context``), its API served by uvicorn on a
free port, and API tokens of each role."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from isthmus.api import create_app
from isthmus.api.context import ApiContext
from isthmus.app import Runtime, api_context, build_runtime, start_pipeline, stop_pipeline
from isthmus.cli.common import apply_sim_overrides, load_config
from isthmus.model.config import CommandsConfig, SimulatorConfig
from isthmus.security.commands import CommandGate
from isthmus.sim.runner import run_simulator

HOST = "127.0.0.1"
SITE = "acme/lyon"
PUMP_SPEED_SP = f"{SITE}/utilities/water/pumping/pump1/speed_sp"  # Modbus holding 0, float32
PUMP_ENABLE = f"{SITE}/utilities/water/pumping/pump1/enable"  # Modbus coil 0, high
PUMP_FLOW = f"{SITE}/utilities/water/pumping/pump1/flow"  # read-only
LINE_SPEED_SP = f"{SITE}/packaging/line1/control/line_plc/line_speed_sp"  # OPC UA, high
FILL_VOLUME_SP = f"{SITE}/packaging/line1/filling/filler/fill_volume_sp"  # OPC UA, critical
LINE_SPEED_NODE = "ns=2;s=Line1.Setpoints.LineSpeed"
FILL_VOLUME_NODE = "ns=2;s=Line1.Setpoints.FillVolume"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def start_simulator() -> tuple[SimulatorConfig, asyncio.Task[None]]:
    config = SimulatorConfig(seed=42, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait([task, waiter], timeout=30, return_when="FIRST_COMPLETED")
    if task in done:
        task.result()
    assert ready.is_set(), "simulator not ready in 30 s"
    return config, task


@dataclass
class System:
    rt: Runtime
    ctx: ApiContext
    url: str
    sim: SimulatorConfig
    server: uvicorn.Server
    server_task: asyncio.Task[None]
    sim_task: asyncio.Task[None] | None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def gate(self) -> CommandGate:
        assert self.rt.commands is not None
        return self.rt.commands

    def token(
        self,
        name: str,
        role: str,
        scopes: tuple[str, ...] = (),
        *,
        expires_in_s: float = 3600.0,
    ) -> str:
        """An API token of ``role`` (created once per name)."""
        if name not in self.tokens:
            identity: Any = self.ctx.identity
            _, text = identity.create_token(
                name, role, scopes, expires_in_s=expires_in_s, actor="test"
            )
            self.tokens[name] = text
        return self.tokens[name]

    def revoke(self, name: str) -> None:
        identity: Any = self.ctx.identity
        identity.revoke_token(name, actor="test")

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def wait_connected(self, within: float = 30.0) -> None:
        """Until every source is connected."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            status = self.rt.source_status()
            if status and all(status.values()):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"sources not connected in {within} s: {status}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.server_task, 3)
        await stop_pipeline(self.rt)
        if self.sim_task is not None:
            self.sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sim_task


async def start_system(
    data_dir: Path,
    *,
    commands: CommandsConfig | None = None,
    sim: tuple[SimulatorConfig, asyncio.Task[None]] | None = None,
) -> System:
    sim_config, sim_task = sim or await start_simulator()
    plant, sources, _ = load_config(None)
    plant, sources = apply_sim_overrides(
        plant,
        sources,
        opcua_port=sim_config.opcua_port,
        modbus_port=sim_config.modbus_port,
        seed=None,
        http_port=None,
    )
    if commands is not None:
        plant = plant.model_copy(update={"commands": commands})
    rt = build_runtime(plant, sources, data_dir)
    ctx = api_context(rt)
    app = create_app(ctx)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off")
    )
    await start_pipeline(rt)
    server_task = asyncio.create_task(server.serve())
    while not server.started:
        if server_task.done():
            server_task.result()
        await asyncio.sleep(0.02)
    return System(rt, ctx, f"http://{HOST}:{port}", sim_config, server, server_task, sim_task)


async def modbus_speed_sp(port: int) -> float:
    """The pump speed setpoint as the device holds it (raw pymodbus read)."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(HOST, port=port, timeout=2)
    await client.connect()
    try:
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        return float(struct.unpack(">f", struct.pack(">HH", *rr.registers))[0])
    finally:
        client.close()


async def opcua_value(port: int, node: str) -> Any:
    from asyncua import Client

    async with Client(f"opc.tcp://{HOST}:{port}/", timeout=4) as client:
        return await client.get_node(node).read_value()
