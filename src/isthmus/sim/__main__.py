"""``python -m isthmus.sim``: serve the simulated plant until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from isthmus.model.config import SimulatorConfig
from isthmus.sim.runner import run_simulator


def main(argv: list[str] | None = None) -> None:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m isthmus.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--opcua-port", type=int, default=defaults.opcua_port)
    parser.add_argument("--modbus-port", type=int, default=defaults.modbus_port)
    parser.add_argument("--tick", default=str(defaults.tick), help="e.g. 0.1 or 100ms")
    parser.add_argument(
        "--settings",
        default=None,
        help="a SimulatorConfig as JSON (what `isthmus demo` writes); the other options "
        "are then ignored",
    )
    args = parser.parse_args(argv)
    if args.settings is not None:
        with open(args.settings, encoding="utf-8") as fh:
            config = SimulatorConfig.model_validate_json(fh.read())
    else:
        config = SimulatorConfig(
            seed=args.seed,
            host=args.host,
            opcua_port=args.opcua_port,
            modbus_port=args.modbus_port,
            tick=args.tick,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    async def serve() -> None:
        task = asyncio.create_task(run_simulator(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop the servers cleanly
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
