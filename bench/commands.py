"""Command latency: API → gate → written → read back, over Modbus and over OPC UA on the
plant simulator, beside the raw library's write + read in the same run.

Run: ``.venv/bin/python bench/commands.py [--commands 300] [--quick]``.  Writes
``bench/results/commands.json`` and prints a table.

The simulator runs in its own process, as in ``isthmus demo`` (``python -m isthmus.sim``:
real Modbus TCP and OPC UA servers on free ports); this process runs the demo plant
pointed at it, built by the composition root (``build_runtime`` + ``api_context``:
historian, audit log in a temporary data directory on disk, the gate with its SQLite
store) and its API served by uvicorn.  Modes, one after the other, each ``--commands``
commands after a warm-up, values alternating inside the tag's range:

* ``raw`` — the library alone on its own connection: pymodbus ``write_registers`` of the
  float32 setpoint (2 registers, FC 16) then ``read_holding_registers``; asyncua
  ``write_value`` then ``read_value`` of the Double setpoint node;
* ``isthmus`` — ``POST /api/commands`` with an API token over a kept-alive HTTP
  connection, timed until the response says ``verified``: bearer check, permission,
  gate steps, ``command.requested``/``written``/``result`` audit records (each fsync'd),
  the command persisted before the write and its result after (SQLite, synchronous=FULL),
  the connector's write and a fresh read back, the comparison.

Target (issue 9): isthmus p99 <= 2 x raw p99 + 20 ms, per protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.api import create_app
from isthmus.app import api_context, build_runtime, start_pipeline, stop_pipeline
from isthmus.cli.common import apply_sim_overrides, load_config
from isthmus.model.config import SimulatorConfig

HOST = "127.0.0.1"
MODBUS_TAG = "acme/lyon/utilities/water/pumping/pump1/speed_sp"  # holding 0, float32
OPCUA_TAG = "acme/lyon/packaging/line1/control/line_plc/line_speed_sp"  # Double node
OPCUA_NODE = "ns=2;s=Line1.Setpoints.LineSpeed"
VALUES = {"modbus": (40.0, 41.5), "opcua": (300.0, 301.5)}
WARMUP = 20


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_ports(ports: tuple[int, ...], within: float) -> None:
    deadline = time.monotonic() + within
    for port in ports:
        while True:
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the simulator is not listening on {port}") from None
                await asyncio.sleep(0.2)
                continue
            writer.close()
            break


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50_ms": round(pct(50) * 1e3, 3),
        "p90_ms": round(pct(90) * 1e3, 3),
        "p99_ms": round(pct(99) * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


async def raw_modbus(port: int, n: int) -> list[float]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(HOST, port=port, timeout=2)
    await client.connect()
    out: list[float] = []
    try:
        for i in range(n + WARMUP):
            value = VALUES["modbus"][i % 2]
            words = list(struct.unpack(">HH", struct.pack(">f", value)))
            t0 = time.perf_counter()
            w = await client.write_registers(0, words, device_id=1)
            r = await client.read_holding_registers(0, count=2, device_id=1)
            elapsed = time.perf_counter() - t0
            assert not w.isError() and list(r.registers) == words, (w, r)
            if i >= WARMUP:
                out.append(elapsed)
    finally:
        client.close()
    return out


async def raw_opcua(port: int, n: int) -> list[float]:
    from asyncua import Client, ua

    out: list[float] = []
    async with Client(f"opc.tcp://{HOST}:{port}/", timeout=4) as client:
        node = client.get_node(OPCUA_NODE)
        for i in range(n + WARMUP):
            value = VALUES["opcua"][i % 2]
            t0 = time.perf_counter()
            await node.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Double)))
            back = await node.read_value()
            elapsed = time.perf_counter() - t0
            assert back == value, (back, value)
            if i >= WARMUP:
                out.append(elapsed)
    return out


async def via_api(
    url: str, token: str, protocol: str, n: int
) -> tuple[list[float], dict[str, int]]:
    tag = MODBUS_TAG if protocol == "modbus" else OPCUA_TAG
    out: list[float] = []
    states: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        for i in range(n + WARMUP):
            body = {"tag": tag, "value": VALUES[protocol][i % 2], "reason": "bench"}
            t0 = time.perf_counter()
            r = await client.post("/api/commands", json=body)
            elapsed = time.perf_counter() - t0
            state = r.json().get("state") if r.status_code == 201 else f"http {r.status_code}"
            if i >= WARMUP:
                states[str(state)] = states.get(str(state), 0) + 1
                out.append(elapsed)
    return out, states


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("isthmus").setLevel(logging.WARNING)
    sim = SimulatorConfig(seed=42, host=HOST, opcua_port=free_port(), modbus_port=free_port())
    sim_proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "isthmus.sim", "--host", HOST, "--opcua-port",
        str(sim.opcua_port), "--modbus-port", str(sim.modbus_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_ports((sim.opcua_port, sim.modbus_port), 60)
    plant, sources, _ = load_config(None)
    plant, sources = apply_sim_overrides(
        plant, sources, opcua_port=sim.opcua_port, modbus_port=sim.modbus_port, seed=None,
        http_port=None,
    )  # fmt: skip
    results: dict[str, Any] = {"commands": args.commands, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-commands-", dir=args.data_dir) as tmp:
        rt = build_runtime(plant, sources, Path(tmp) / "data")
        ctx = api_context(rt)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(ctx), host=HOST, port=port, log_level="warning",
                           lifespan="off", access_log=False)
        )  # fmt: skip
        await start_pipeline(rt)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while not all(rt.source_status().values()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            identity: Any = ctx.identity
            _, token = identity.create_token("bench", "admin", (), expires_in_s=3600, actor="bench")
            url = f"http://{HOST}:{port}"
            for protocol in args.only:
                print(f"  {protocol}: raw ...", file=sys.stderr, flush=True)
                if protocol == "modbus":
                    raw = await raw_modbus(sim.modbus_port, args.commands)
                else:
                    raw = await raw_opcua(sim.opcua_port, args.commands)
                print(f"  {protocol}: isthmus ...", file=sys.stderr, flush=True)
                api, states = await via_api(url, token, protocol, args.commands)
                r, a = summary(raw), summary(api)
                budget = 2 * r["p99_ms"] + 20
                results["modes"][protocol] = {
                    "raw": r,
                    "isthmus": {**a, "states": states},
                    "target_p99_ms": round(budget, 3),
                    "ratio_p99": round(a["p99_ms"] / r["p99_ms"], 2),
                    "met": a["p99_ms"] <= budget and states.get("verified") == args.commands,
                }
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 3)
            await stop_pipeline(rt)
            sim_proc.terminate()
            await sim_proc.wait()
    return results


def table(results: dict[str, Any]) -> None:
    print(f"\ncommand latency, {results['commands']} commands per mode (ms)")
    print(f"{'protocol':<8} {'mode':<8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  verified")
    for protocol, row in results["modes"].items():
        for mode in ("raw", "isthmus"):
            s = row[mode]
            ok = s.get("states", {}).get("verified", "-")
            print(
                f"{protocol:<8} {mode:<8} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
                f"{s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}  {ok}"
            )
        print(
            f"{'':<8} target p99 <= 2 x raw + 20 ms = {row['target_p99_ms']:.2f} ms: "
            f"{'met' if row['met'] else 'NOT met'} (p99 ratio {row['ratio_p99']}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300, help="commands per mode")
    parser.add_argument("--quick", action="store_true", help="100 commands per mode")
    parser.add_argument("--only", nargs="+", choices=("modbus", "opcua"),
                        default=["modbus", "opcua"])  # fmt: skip
    parser.add_argument(
        "--data-dir", default=None, help="where the temporary data directory goes (disk)"
    )
    args = parser.parse_args()
    if args.quick:
        args.commands = 100
    started = time.perf_counter()
    results = asyncio.run(run(args))
    results["total_s"] = round(time.perf_counter() - started, 1)
    table(results)
    path = write_result("commands", results)
    print(f"wrote {path} in {results['total_s']} s")
    if not all(row["met"] for row in results["modes"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
