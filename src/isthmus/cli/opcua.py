"""``isthmus discover | certs``: browse an OPC UA server; manage its trust store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from isthmus.cli.common import DEFAULT_DATA_DIR, console, out
from isthmus.model.errors import IsthmusError


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


def register(sub: Any) -> None:
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
    disc.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="trust store in DATA_DIR/pki")
    disc.add_argument("--pki-dir", default=None, help="trust store directory, if not DATA_DIR/pki")
    disc.set_defaults(func=cmd_discover)

    certs = sub.add_parser("certs", help="OPC UA trust stores: list, trust, reject")
    certs.add_argument("action", choices=("list", "trust", "reject"))
    certs.add_argument("source", nargs="?", default=None, help="the opcua source name")
    certs.add_argument(
        "certificate", nargs="?", default=None, help="thumbprint prefix (≥ 6), or a file to trust"
    )
    certs.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="certificates in DATA_DIR/pki")
    certs.add_argument("--pki-dir", default=None, help="the source's pki_dir, if not DATA_DIR/pki")
    certs.set_defaults(func=cmd_certs)
