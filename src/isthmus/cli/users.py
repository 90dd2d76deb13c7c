"""``isthmus users add|list|disable|enable|set-role|set-scopes|reset-password|reset-mfa|
delete|mfa-enroll``: manage the users of a data directory.

These commands work whether or not a server runs on the data directory: they change
``users.json`` and ``identity.db`` under the same locks as the server, which sees the
change within two seconds.  Every change is audited (``DATA_DIR/audit/``) with the
acting OS user as actor (``cli:<login name>``); a change that cannot be audited is not
made.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from isthmus.cli.common import DEFAULT_DATA_DIR, console, out
from isthmus.model.durations import format_ns
from isthmus.model.errors import IsthmusError
from isthmus.security.identity import Identity
from isthmus.security.rbac import Role

ROLES = [r.value for r in Role]


def cli_actor() -> str:
    """``cli:<login name>`` of whoever runs the command."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    return f"cli:{name}"


def open_identity(args: argparse.Namespace, *, create: bool = False) -> Identity:
    """The identity of ``--data-dir``, auditing into its audit log."""
    from isthmus.security.audit import AuditLog

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        if not create:
            raise IsthmusError(f"no data directory {data_dir}: pass the server's --data-dir")
        data_dir.mkdir(parents=True, mode=0o700)
    audit = AuditLog(data_dir)
    return Identity.open(data_dir, audit=audit)


def read_password(args: argparse.Namespace, *, prompt: str = "Password") -> str:
    """The password from standard input (``--password-stdin``: everything up to the end,
    without the final newline) or typed twice without echo."""
    if getattr(args, "password_stdin", False):
        text = sys.stdin.read()
        password = text[:-1] if text.endswith("\n") else text
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise IsthmusError("--password-stdin: standard input is empty")
        return password
    if not sys.stdin.isatty():
        raise IsthmusError("no terminal to type a password: use --password-stdin")
    first = getpass.getpass(f"{prompt}: ")
    second = getpass.getpass(f"{prompt} (again): ")
    if first != second:
        raise IsthmusError("the two passwords differ")
    return first


def _when(ns: int | None) -> str:
    return format_ns(ns) if ns else ""


def cmd_add(args: argparse.Namespace) -> int:
    password = read_password(args)
    identity = open_identity(args, create=True)
    user = identity.add_user(args.name, password, args.role, args.scope or [], actor=cli_actor())
    scopes = ", ".join(user.scopes) or "the whole enterprise"
    console.print(
        f"added user [bold]{escape(user.username)}[/bold], role {user.role}, scopes {scopes}",
        highlight=False,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    infos = identity.list_users()
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "username": i.username,
                "role": str(i.role),
                "scopes": list(i.scopes),
                "disabled": i.disabled,
                "mfa_active": i.mfa_active,
                "mfa_pending": i.mfa_pending,
                "recovery_codes_left": i.recovery_codes_left,
                "locked_until": _when(i.locked_until_ns) or None,
                "sessions": i.sessions,
            }
            for i in infos
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("user", "role", "scopes", "state", "MFA", "sessions")
    for i in infos:
        state = "disabled" if i.disabled else "enabled"
        if i.locked_until_ns:
            state += f", locked until {_when(i.locked_until_ns)}"
        mfa = "active" if i.mfa_active else ("enrolling" if i.mfa_pending else "none")
        if i.mfa_active:
            mfa += f" ({i.recovery_codes_left} recovery codes)"
        scopes = ", ".join(i.scopes) or "(whole enterprise)"
        table.add_row(escape(i.username), str(i.role), escape(scopes), state, mfa, str(i.sessions))
    out.print(table)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    identity.update_user(args.name, disabled=True, actor=cli_actor())
    console.print(f"disabled {escape(args.name)}: their sessions ended", highlight=False)
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    identity.update_user(args.name, disabled=False, actor=cli_actor())
    console.print(f"enabled {escape(args.name)}", highlight=False)
    return 0


def cmd_set_role(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    identity.update_user(args.name, role=args.role, actor=cli_actor())
    console.print(f"{escape(args.name)} is now {args.role}", highlight=False)
    return 0


def cmd_set_scopes(args: argparse.Namespace) -> int:
    if not args.scopes and not args.whole_enterprise:
        raise IsthmusError("give one or more hierarchy prefixes, or --whole-enterprise")
    if args.scopes and args.whole_enterprise:
        raise IsthmusError("give hierarchy prefixes or --whole-enterprise, not both")
    identity = open_identity(args)
    user = identity.update_user(args.name, scopes=args.scopes, actor=cli_actor())
    scopes = ", ".join(user.scopes) or "the whole enterprise"
    console.print(f"scopes of {escape(args.name)}: {escape(scopes)}", highlight=False)
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    password = None if args.generate else read_password(args, prompt="New password")
    identity = open_identity(args)
    generated = identity.reset_password(args.name, password, actor=cli_actor())
    console.print(
        f"password of {escape(args.name)} reset: their sessions ended, a lockout is lifted",
        highlight=False,
    )
    if generated is not None:
        print(generated)
    return 0


def cmd_reset_mfa(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    identity.reset_mfa(args.name, actor=cli_actor())
    console.print(
        f"second factor of {escape(args.name)} removed: their sessions ended", highlight=False
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    identity = open_identity(args)
    identity.delete_user(args.name, actor=cli_actor())
    console.print(f"deleted {escape(args.name)}", highlight=False)
    return 0


def cmd_mfa_enroll(args: argparse.Namespace) -> int:
    import segno

    identity = open_identity(args)
    actor = cli_actor()
    enrollment, _ = identity.enroll_offline(args.name, actor=actor)
    console.print("Scan this with an authenticator app, or add the URI or secret by hand:")
    if sys.stdout.isatty():
        segno.make(enrollment.otpauth_uri, error="m").terminal(compact=True)
    print(enrollment.otpauth_uri, flush=True)
    console.print(f"secret: {enrollment.secret}", highlight=False)
    console.print("Type the code the app shows:")
    if args.code is not None:
        code = args.code
    else:
        if not sys.stdin.isatty():
            code = sys.stdin.readline().strip()
        else:
            code = input("Code from the app: ").strip()
    codes = identity.verify_offline(args.name, code, actor=actor)
    console.print("[green]MFA active.[/green] Recovery codes (each works once; shown only now):")
    for c in codes:
        print(c)
    return 0


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="manage users (works with or without a running server)")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add a user (password policy: 12+ characters...)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--scope", action="append", default=None, metavar="PATH",
        help="a hierarchy prefix such as acme/lyon/utilities (repeat; none: whole enterprise)",
    )  # fmt: skip
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    _data_dir_arg(add)
    add.set_defaults(func=cmd_add)

    lst = actions.add_parser("list", help="every user: role, scopes, state, MFA, sessions")
    lst.add_argument("--json", action="store_true", help="JSON instead of a table")
    _data_dir_arg(lst)
    lst.set_defaults(func=cmd_list)

    for name, func, text in (
        ("disable", cmd_disable, "disable a user (their sessions end at once)"),
        ("enable", cmd_enable, "enable a disabled user"),
        ("reset-mfa", cmd_reset_mfa, "remove a user's second factor (lost phone)"),
        ("delete", cmd_delete, "delete a user"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("name")
        _data_dir_arg(p)
        p.set_defaults(func=func)

    role = actions.add_parser("set-role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    _data_dir_arg(role)
    role.set_defaults(func=cmd_set_role)

    scopes = actions.add_parser("set-scopes", help="limit a user to hierarchy prefixes")
    scopes.add_argument("name")
    scopes.add_argument("scopes", nargs="*", metavar="PATH", help="e.g. acme/lyon/utilities")
    scopes.add_argument(
        "--whole-enterprise", action="store_true", help="no limit (clears every scope)"
    )
    _data_dir_arg(scopes)
    scopes.set_defaults(func=cmd_set_scopes)

    reset = actions.add_parser(
        "reset-password", help="set a new password (sessions end, a lockout is lifted)"
    )
    reset.add_argument("name")
    how = reset.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read it from standard input")
    how.add_argument("--generate", action="store_true", help="generate one and print it")
    _data_dir_arg(reset)
    reset.set_defaults(func=cmd_reset_password)

    enrol = actions.add_parser(
        "mfa-enroll", help="enrol a user's TOTP second factor here (otpauth URI, QR, code)"
    )
    enrol.add_argument("name")
    enrol.add_argument("--code", default=None, help="the app's current code (else asked)")
    _data_dir_arg(enrol)
    enrol.set_defaults(func=cmd_mfa_enroll)
