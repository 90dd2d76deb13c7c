"""``isthmus demo | run | check``: the gateway with its API, on a config or the demo plant."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isthmus import __version__
from isthmus.cli.common import (
    DEFAULT_DATA_DIR,
    apply_sim_overrides,
    console,
    load_config,
    out,
    port_free,
    wait_for_port,
)
from isthmus.model.config import PlantConfig, SourceConfig
from isthmus.model.errors import IsthmusError


def cmd_check(args: argparse.Namespace) -> int:
    _plant, sources, _ = load_config(args.config)
    tags = sum(len(s.tags) for s in sources)
    out.print(f"[green]ok[/green]: {args.config}: {len(sources)} source(s), {tags} tag(s)")
    return 0


def _gateway(
    plant: PlantConfig,
    sources: list[SourceConfig],
    data_dir: Path,
    banner: Callable[[str, str, str | None], None],
    role: str = "all",
) -> int:
    from isthmus.app import build_runtime, serve
    from isthmus.security.audit import AuditLog
    from isthmus.security.identity import ensure_admin

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit = AuditLog(data_dir)  # the first admin's creation is audited like any user's
    try:
        user, password = ensure_admin(
            data_dir, os.environ.get("ISTHMUS_ADMIN_PASSWORD"), audit=audit
        )
    finally:
        audit.close()
    rt = build_runtime(plant, sources, data_dir)
    if role != "all":
        from isthmus.roles import attach_role

        attach_role(rt, role)  # type: ignore[arg-type]  # argparse restricts the choices

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            rt,
            host=plant.api.host,
            port=plant.api.port,
            stop=stop,
            on_ready=lambda url: banner(url, user, password),
        )

    asyncio.run(main())
    console.print("[dim]isthmus stopped cleanly[/dim]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    plant, sources, _ = load_config(args.config)
    if args.http_port is not None:
        plant = plant.model_copy(
            update={"api": plant.api.model_copy(update={"port": args.http_port})}
        )
    data_dir = Path(args.data_dir)

    def banner(url: str, user: str, password: str | None) -> None:
        console.print(f"[bold]Isthmus {__version__}[/bold] running {args.config}")
        console.print(f"  API and control tower: [link={url}]{url}[/link]")
        _print_credential(data_dir, user, password)

    return _gateway(plant, sources, data_dir, banner, role=args.role)


def _print_credential(data_dir: Path, user: str, password: str | None) -> None:
    cred = data_dir / "admin-credential.txt"
    if password:
        console.print(f"  Login: [bold]{user}[/bold] / [bold]{password}[/bold]  (saved in {cred})")
    elif cred.exists():
        console.print(f"  Login: [bold]{user}[/bold], password in {cred}")
    else:
        console.print(f"  Login: [bold]{user}[/bold] with ISTHMUS_ADMIN_PASSWORD")


def cmd_demo(args: argparse.Namespace) -> int:
    plant, sources, _ = load_config(args.config)
    plant, sources = apply_sim_overrides(
        plant,
        sources,
        opcua_port=args.opcua_port,
        modbus_port=args.modbus_port,
        seed=args.seed,
        http_port=args.http_port,
    )
    if args.tls:
        from isthmus.model.config import ApiTls

        api = plant.api.model_copy(update={"tls": ApiTls(self_signed=True)})
        plant = plant.model_copy(update={"api": api})
    sim = plant.simulator
    assert sim is not None
    for what, port in (
        ("OPC UA", sim.opcua_port),
        ("Modbus", sim.modbus_port),
        ("HTTP", plant.api.port),
    ):
        host = plant.api.host if what == "HTTP" else sim.host
        if not port_free(host, port):
            raise IsthmusError(f"{what} port {host}:{port} is in use: pick another with --help")
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    sim_config = data_dir / "simulator.json"
    sim_config.write_text(sim.model_dump_json())

    console.print(f"[dim]starting the plant simulator (seed {sim.seed})...[/dim]")
    # Its own session: the terminal's Ctrl-C reaches only the gateway, which stops its
    # sources first and then the simulator, so no connector sees the plant vanish.
    child = subprocess.Popen(
        [sys.executable, "-m", "isthmus.sim", "--settings", str(sim_config)],
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    try:
        for port in (sim.opcua_port, sim.modbus_port):
            if not wait_for_port(sim.host, port, 30):
                raise IsthmusError(f"the simulator did not listen on {sim.host}:{port} in 30 s")

        def banner(url: str, user: str, password: str | None) -> None:
            console.rule("[bold]Isthmus demo[/bold]")
            console.print(f"  Control tower:  [bold][link={url}]{url}[/link][/bold]")
            if args.tls:
                cert = (data_dir / "tls" / "cert.pem").resolve()
                console.print(
                    f"  Self-signed certificate: {cert} (trust it, or accept the warning)"
                )
            _print_credential(data_dir, user, password)
            console.print(
                f"  Simulated plant: opc.tcp://{sim.host}:{sim.opcua_port}  "
                f"modbus://{sim.host}:{sim.modbus_port}"
            )
            console.print(f"  History kept in {data_dir.resolve()}.  Ctrl-C stops everything.")
            console.rule()

        return _gateway(plant, sources, data_dir, banner)
    finally:
        _stop_child(child)


def _die_with_parent() -> None:
    """Linux: the simulator gets SIGTERM if the gateway dies without cleaning up."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _stop_child(child: subprocess.Popen[Any]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=2.5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="simulated plant → historian → API and control tower")
    demo.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    demo.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="where history and keys live")
    demo.add_argument("--http-port", type=int, default=None)
    demo.add_argument("--opcua-port", type=int, default=None)
    demo.add_argument("--modbus-port", type=int, default=None)
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument(
        "--tls", action="store_true", help="HTTPS with a self-signed certificate in DATA_DIR/tls"
    )
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a plant configuration against real devices")
    run.add_argument("config")
    run.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    run.add_argument("--http-port", type=int, default=None)
    run.add_argument(
        "--role",
        choices=["all", "edge", "hub"],
        default="all",
        help="all: one process; edge: publish to the hub over NATS; hub: consume into PostgreSQL",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a plant configuration")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)
