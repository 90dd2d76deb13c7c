"""The ``isthmus`` command: demo | run | check | sim | query | discover | certs.

Every user-facing failure ends with a clear message and exit status 1, never a
traceback (set ``ISTHMUS_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from isthmus import __version__
from isthmus.model.config import PlantConfig, SourceConfig
from isthmus.model.errors import ConfigError, IsthmusError

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
log = logging.getLogger("isthmus")

DEMO_CONFIG = "demo-plant.yaml"


# --------------------------------------------------------------------------- helpers


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    # The connectors report link problems themselves (one warning per outage); the
    # libraries' own tracebacks are only for --verbose.
    for noisy in ("asyncua", "pymodbus", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if not verbose else logging.INFO)


def demo_config_text() -> str:
    return resources.files("isthmus.examples").joinpath(DEMO_CONFIG).read_text()


def load_config(path: str | None) -> tuple[PlantConfig, list[SourceConfig], str]:
    """Load and validate a config file (the embedded demo plant when ``path`` is None)."""
    from isthmus.connectors.registry import default_connectors, source_models
    from isthmus.model.loader import load_plant_config

    if path is None:
        text, name = demo_config_text(), f"{DEMO_CONFIG} (embedded)"
    else:
        try:
            text, name = Path(path).read_text(encoding="utf-8"), path
        except OSError as exc:
            raise IsthmusError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise IsthmusError(f"{path}: not a UTF-8 text file") from None
    plant, sources = load_plant_config(text, name, source_models(default_connectors()))
    return plant, sources, text


def _replace_port(url: str, old: int, new: int) -> str:
    parts = urlsplit(url)
    if parts.port != old or parts.hostname is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{new}"))


def apply_sim_overrides(
    plant: PlantConfig,
    sources: list[SourceConfig],
    *,
    opcua_port: int | None,
    modbus_port: int | None,
    seed: int | None,
    http_port: int | None,
) -> tuple[PlantConfig, list[SourceConfig]]:
    """Point the demo's sources and simulator at the ports given on the command line."""
    sim = plant.simulator
    if sim is None:
        raise IsthmusError("this configuration has no 'simulator' section")
    new_sim = sim.model_copy(
        update={
            k: v
            for k, v in (("opcua_port", opcua_port), ("modbus_port", modbus_port), ("seed", seed))
            if v is not None
        }
    )
    updated: list[SourceConfig] = []
    for s in sources:
        data = s.model_dump()
        if s.type == "opcua":
            data["endpoint"] = _replace_port(data["endpoint"], sim.opcua_port, new_sim.opcua_port)
        elif s.type == "modbus" and data.get("port") == sim.modbus_port:
            data["port"] = new_sim.modbus_port
        updated.append(type(s).model_validate(data))
    api = plant.api.model_copy(update={"port": http_port}) if http_port else plant.api
    return plant.model_copy(update={"simulator": new_sim, "api": api}), updated


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return True
        time.sleep(0.1)
    return False


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- commands


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
    from isthmus.security.identity import ensure_admin

    user, password = ensure_admin(data_dir, os.environ.get("ISTHMUS_ADMIN_PASSWORD"))
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
        [sys.executable, "-m", "isthmus", "sim", "--settings", str(sim_config)],
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


def cmd_query(args: argparse.Namespace) -> int:
    from isthmus.query import run_query

    rows, columns = run_query(
        config=args.config,
        data_dir=Path(args.data_dir),
        path=args.path,
        since=args.since,
        until=args.until,
        bucket=args.bucket,
        limit=args.limit,
        interval=args.interval,
        method=args.method,
        extended=args.extended,
    )
    if args.json:
        out.print_json(json.dumps(rows)) if sys.stdout.isatty() else print(json.dumps(rows))
        return 0
    table = Table(title=args.path, show_lines=False)
    for col in columns:
        table.add_column(col, justify="right" if col not in ("timestamp", "quality") else "left")
    for row in rows:
        table.add_row(*(_fmt(row[c]) for c in columns))
    out.print(table)
    out.print(f"[dim]{len(rows)} row(s)[/dim]")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from isthmus.historian.export import run_export

    result = run_export(
        config=args.config,
        data_dir=Path(args.data_dir),
        since=args.from_,
        until=args.to,
        fmt=args.format,
        tags=args.tags,
        dest=Path(args.dest),
        overwrite=args.overwrite,
        console=console,
    )
    out.print(result.summary())
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def cmd_discover(args: argparse.Namespace) -> int:
    """Browse an OPC UA server and write a plant file with its tag map."""
    from isthmus.connectors.opcua.discover import default_source_name, discover, render_yaml
    from isthmus.model.config import check_segment

    endpoint: str = args.endpoint
    if not endpoint.startswith("opc.tcp://"):
        raise IsthmusError(f"{endpoint!r}: an OPC UA endpoint starts with opc.tcp://")
    if args.depth < 1:
        raise IsthmusError("--depth must be at least 1")
    name = args.name or default_source_name(endpoint)
    try:
        check_segment(name)
    except ValueError as exc:
        raise IsthmusError(f"--name: {exc}") from None
    security = None
    if args.security_policy != "None" or args.username:
        from pydantic import ValidationError

        from isthmus.connectors.opcua.config import OpcUaSourceConfig

        try:
            security = OpcUaSourceConfig(
                name=name,
                endpoint=endpoint,
                security_policy=args.security_policy,
                security_mode=args.security_mode,
                pki_dir=args.pki_dir or str(Path(args.data_dir) / "pki"),
                identity="username" if args.username else "anonymous",
                username=args.username,
                password_env=args.password_env,
            )
        except ValidationError as exc:
            raise IsthmusError(
                "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            ) from None
    target = Path(args.output) if args.output and args.output != "-" else None
    if target is not None and target.exists() and not args.force:
        raise IsthmusError(f"{target} exists: pick another --output or add --force")

    with console.status(f"connecting to {endpoint}...") as status:

        def progress(depth: int, nodes: int, variables: int) -> None:
            status.update(
                f"browsing {endpoint}: depth {depth}, {nodes} node(s), {variables} variable(s)"
            )

        found = asyncio.run(
            discover(
                endpoint,
                depth=args.depth,
                include_standard=args.include_standard,
                progress=progress,
                security=security,
            )
        )
    text = render_yaml(found, source_name=name, security=security)
    usable = sum(1 for v in found.variables if v.data_type is not None)
    skipped = len(found.variables) - usable
    if target is None:
        sys.stdout.write(text)
    else:
        target.write_text(text, encoding="utf-8")
    console.print(
        f"[green]discovered[/green] {usable} tag(s) ({skipped} skipped) in "
        f"{found.nodes_browsed} node(s) of {endpoint}"
        + (f" → {target}; next: isthmus check {target}" if target else "")
    )
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """OPC UA trust stores: list, trust or reject server certificates."""
    from isthmus.connectors.opcua.security import Pki

    pki_dir = Path(args.pki_dir) if args.pki_dir else Path(args.data_dir) / "pki"
    pki = Pki(pki_dir)
    if args.action == "list":
        rows = pki.list()
        own, _key = pki.own()
        table = Table(title=f"OPC UA certificates in {pki_dir}")
        for col in ("source", "state", "thumbprint", "subject", "valid until"):
            table.add_column(col, no_wrap=col != "subject")
        for source, info in rows:
            colour = "green" if info.state == "trusted" else "yellow"
            table.add_row(
                source,
                f"[{colour}]{info.state}[/{colour}]",
                info.thumbprint,
                info.subject,
                f"{info.not_after:%Y-%m-%d}",
            )
        out.print(table)
        mine = f"our application certificate: {own}" if own.is_file() else "no own certificate yet"
        out.print(f"[dim]{len(rows)} certificate(s); {mine}[/dim]")
        return 0
    if not args.source or not args.certificate:
        raise IsthmusError(f"certs {args.action} needs SOURCE and a thumbprint (or a file)")
    if args.action == "trust":
        path = pki.trust(args.source, args.certificate)
        out.print(f"[green]trusted[/green] {path.stem} for source {args.source}")
    else:
        path = pki.reject(args.source, args.certificate)
        out.print(f"[yellow]rejected[/yellow] {path.stem} for source {args.source}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus", description="Isthmus: machines to business across a governed boundary"
    )
    parser.add_argument("--version", action="version", version=f"isthmus {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="simulated plant → historian → API and control tower")
    demo.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    demo.add_argument("--data-dir", default=".isthmus", help="where history and keys live")
    demo.add_argument("--http-port", type=int, default=None)
    demo.add_argument("--opcua-port", type=int, default=None)
    demo.add_argument("--modbus-port", type=int, default=None)
    demo.add_argument("--seed", type=int, default=None)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a plant configuration against real devices")
    run.add_argument("config")
    run.add_argument("--data-dir", default=".isthmus")
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

    sim = sub.add_parser("sim", help="run the plant simulator alone")
    sim.add_argument("config", nargs="?", default=None, help="default: the demo plant")
    sim.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    sim.add_argument("--opcua-port", type=int, default=None)
    sim.add_argument("--modbus-port", type=int, default=None)
    sim.add_argument("--seed", type=int, default=None)
    sim.set_defaults(func=cmd_sim)

    disc = sub.add_parser("discover", help="browse an OPC UA server, write a plant file")
    disc.add_argument("endpoint", help="opc.tcp://HOST:PORT[/path]")
    disc.add_argument("--depth", type=int, default=8, help="levels below Objects (default 8)")
    disc.add_argument("--output", "-o", default=None, help="file to write (default: stdout)")
    disc.add_argument("--name", default=None, help="source name (default: opcua-HOST)")
    disc.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    disc.add_argument(
        "--include-standard",
        action="store_true",
        help="also browse the standard nodes below Objects (the Server object)",
    )
    disc.add_argument(
        "--security-policy",
        default="None",
        choices=("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"),
    )
    disc.add_argument("--security-mode", default="None", choices=("None", "Sign", "SignAndEncrypt"))
    disc.add_argument("--username", default=None, help="user identity (needs --password-env)")
    disc.add_argument("--password-env", default=None, help="environment variable with the password")
    disc.add_argument("--data-dir", default=".isthmus", help="trust store in DATA_DIR/pki")
    disc.add_argument("--pki-dir", default=None, help="trust store directory, if not DATA_DIR/pki")
    disc.set_defaults(func=cmd_discover)

    certs = sub.add_parser("certs", help="OPC UA trust stores: list, trust, reject")
    certs.add_argument("action", choices=("list", "trust", "reject"))
    certs.add_argument("source", nargs="?", default=None, help="the opcua source name")
    certs.add_argument(
        "certificate", nargs="?", default=None, help="thumbprint prefix (≥ 6), or a file to trust"
    )
    certs.add_argument("--data-dir", default=".isthmus", help="certificates in DATA_DIR/pki")
    certs.add_argument("--pki-dir", default=None, help="the source's pki_dir, if not DATA_DIR/pki")
    certs.set_defaults(func=cmd_certs)

    query = sub.add_parser("query", help="read a tag's history")
    query.add_argument("path", help="UNS path (enterprise/site/... or area/line/cell/eq/tag)")
    query.add_argument("--since", default="10m", help="duration or ISO time (default 10m)")
    query.add_argument("--until", default="now")
    query.add_argument("--bucket", default=None, help="aggregate per bucket, e.g. 1m")
    query.add_argument("--limit", type=int, default=10_000)
    query.add_argument(
        "--extended", action="store_true", help="with --bucket: time-weighted avg and stddev"
    )
    query.add_argument("--interval", default=None, help="values at fixed instants, e.g. 1m")
    query.add_argument(
        "--method", choices=("previous", "linear"), default="previous", help="with --interval"
    )
    query.add_argument("--json", action="store_true", help="print JSON")
    query.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    query.add_argument("--data-dir", default=".isthmus")
    query.set_defaults(func=cmd_query)

    export = sub.add_parser(
        "export", help="write history to a data lake: Hive-partitioned Parquet or CSV"
    )
    export.add_argument("dest", help="destination folder (site=/date= partitions below it)")
    export.add_argument("--from", dest="from_", required=True, help="ISO time or 7d, -7d")
    export.add_argument("--to", default="now", help="ISO time, -1h or now (default)")
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    export.add_argument("--tags", default=None, help="glob on UNS paths, e.g. '*/pump1/*'")
    export.add_argument("--overwrite", action="store_true", help="replace exported days")
    export.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    export.add_argument("--data-dir", default=".isthmus")
    export.set_defaults(func=cmd_export)
    return parser


_TIME_OPTIONS = frozenset({"--from", "--to", "--since", "--until"})
_RELATIVE = re.compile(r"^-\d+(\.\d+)?(ns|us|ms|s|min|m|h|d|w)$")


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """``--from -1h`` → ``--from=-1h``: argparse would take ``-1h`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _TIME_OPTIONS and i + 1 < len(argv) and _RELATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _glue_relative_times(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for issue in exc.issues:
            console.print(str(issue), markup=False, highlight=False)
        console.print(f"[red]{len(exc.issues)} error(s)[/red]")
        return 1
    except IsthmusError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("ISTHMUS_DEBUG"):
            raise
        console.print(f"[red]unexpected error:[/red] {type(exc).__name__}: {exc}")
        console.print("[dim]set ISTHMUS_DEBUG=1 for details[/dim]")
        return 1
