"""``python -m isthmus.sim``: serve the simulated plant until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

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
    args = parser.parse_args(argv)
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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(config))


if __name__ == "__main__":
    main()
