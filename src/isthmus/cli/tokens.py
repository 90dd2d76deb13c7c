"""``isthmus tokens create|list|revoke``: API tokens for machines (MES, ERP, scripts).

``create`` prints the token (``ist_<id>_<secret>``) alone on standard output, once:
only its hash is stored.  Works whether or not a server runs; a revocation takes effect
at the server's next request.  Every change is audited as ``cli:<login name>``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from isthmus.cli.common import DEFAULT_DATA_DIR, console, out
from isthmus.cli.users import ROLES, cli_actor, open_identity
from isthmus.model.durations import format_ns, parse_duration_ns
from isthmus.model.errors import IsthmusError


def cmd_create(args: argparse.Namespace) -> int:
    try:
        lifetime_s = parse_duration_ns(args.expires) / 1e9
    except ValueError as exc:
        raise IsthmusError(f"--expires: {exc}") from None
    if lifetime_s <= 0:
        raise IsthmusError("--expires must be positive (e.g. 90d)")
    identity = open_identity(args, create=True)
    token, text = identity.create_token(
        args.name, args.role, args.scope or [], expires_in_s=lifetime_s, actor=cli_actor()
    )
    scopes = ", ".join(token.scopes) or "the whole enterprise"
    console.print(
        f"created token {token.id} [bold]{escape(token.name)}[/bold], role {token.role}, "
        f"scopes {escape(scopes)}, expires {format_ns(token.expires_ns)}",
        highlight=False,
    )
    console.print("[yellow]Copy it now: it is shown only this once.[/yellow]")
    print(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    now = identity.clock.now_ns()
    tokens = identity.list_tokens()
    if args.json:
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "role": str(t.role),
                "scopes": list(t.scopes),
                "created_at": format_ns(t.created_ns),
                "created_by": t.created_by,
                "expires_at": format_ns(t.expires_ns),
                "last_used_at": format_ns(t.last_used_ns) if t.last_used_ns else None,
                "state": t.state(now),
            }
            for t in tokens
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("id", "name", "role", "scopes", "expires", "last used", "state")
    for t in tokens:
        table.add_row(
            t.id,
            escape(t.name),
            str(t.role),
            escape(", ".join(t.scopes) or "(whole enterprise)"),
            format_ns(t.expires_ns),
            format_ns(t.last_used_ns) if t.last_used_ns else "",
            t.state(now),
        )
    out.print(table)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    token = identity.revoke_token(args.token, actor=cli_actor())
    console.print(f"revoked token {token.id} ({escape(token.name)})", highlight=False)
    return 0


def register(sub: Any) -> None:
    tokens = sub.add_parser("tokens", help="API tokens for machines: create, list, revoke")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a token (printed once)")
    create.add_argument("name", help="what the audit log and the list show, e.g. mes-lyon")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument(
        "--scope", action="append", default=None, metavar="PATH",
        help="a hierarchy prefix (repeat; none: the whole enterprise)",
    )  # fmt: skip
    create.add_argument("--expires", default="90d", help="lifetime, e.g. 90d, 12h (default 90d)")
    create.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    create.set_defaults(func=cmd_create)

    lst = actions.add_parser("list", help="every token (never a secret)")
    lst.add_argument("--json", action="store_true", help="JSON instead of a table")
    lst.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    lst.set_defaults(func=cmd_list)

    revoke = actions.add_parser("revoke", help="revoke a token (by id, or by a unique name)")
    revoke.add_argument("token", metavar="ID")
    revoke.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    revoke.set_defaults(func=cmd_revoke)
