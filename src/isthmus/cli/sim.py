"""``isthmus sim``: the plant simulator alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from isthmus.cli.common import load_config
from isthmus.model.errors import IsthmusError


def cmd_sim(args: argparse.Namespace) -> int:
    from isthmus.model.config import SimulatorConfig
    from isthmus.sim.runner import run_simulator

    if args.settings:
        settings = SimulatorConfig.model_validate_json(Path(args.settings).read_text())
    else:
        plant, _, _ = load_config(args.config)
        if plant.simulator is None:
            raise IsthmusError(f"{args.config}: no 'simulator' section")
        settings = plant.simulator
    update = {
        k: v
        for k, v in (
            ("opcua_port", args.opcua_port),
            ("modbus_port", args.modbus_port),
            ("seed", args.seed),
        )
        if v is not None
    }
    settings = settings.model_copy(update=update)

    async def main() -> None:
        task = asyncio.create_task(run_simulator(settings))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


def register(sub: Any) -> None:
    sim = sub.add_parser("sim", help="run the plant simulator alone")
    sim.add_argument("config", nargs="?", default=None, help="default: the demo plant")
    sim.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    sim.add_argument("--opcua-port", type=int, default=None)
    sim.add_argument("--modbus-port", type=int, default=None)
    sim.add_argument("--seed", type=int, default=None)
    sim.set_defaults(func=cmd_sim)
