"""``DATA_DIR/commands.db``: every command the gate accepted, persisted before it is
written (SQLite, WAL, ``synchronous=FULL``: a committed state survives a power cut).

The store is also the executor's journal (:class:`ExecutionJournal`): an order is
*claimed* (state ``writing``, committed) before the device write, and a claimed id is
never written again — not by a retry, not after a restart (a ``writing`` row found at
start-up becomes ``uncertain``).  Thread-safe; the gate calls it from worker threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from isthmus.security.commands.model import (
    Command,
    CommandOrder,
    CommandResult,
    CommandState,
    Value,
    json_value,
)

DB_FILE = "commands.db"
_COLUMNS = (
    "id",
    "tag",
    "value",
    "reason",
    "requested_by",
    "requested_role",
    "state",
    "created_at_ns",
    "updated_at_ns",
    "expires_at_ns",
    "approved_by",
    "comment",
    "read_back",
    "detail",
    "conduit",
    "written_at_ns",
    "finished_at_ns",
    "fingerprint",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    tag TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_role TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    updated_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER,
    approved_by TEXT,
    comment TEXT,
    read_back TEXT,
    detail TEXT NOT NULL DEFAULT '',
    conduit TEXT NOT NULL DEFAULT '',
    written_at_ns INTEGER,
    finished_at_ns INTEGER,
    fingerprint TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS commands_tag ON commands (tag, created_at_ns);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state);
CREATE INDEX IF NOT EXISTS commands_created ON commands (created_at_ns);
"""
NOT_SENT_AGAIN = "already claimed for writing: its outcome is unknown and it is never sent twice"


class ExecutionJournal(Protocol):
    """Where an executor persists an order before writing it (exactly once)."""

    def claim(self, order: CommandOrder, now_ns: int) -> CommandResult | None:
        """Persist the order as ``writing`` and return None: write it now.  An id seen
        before is not claimed again: its recorded result (``uncertain`` while its write
        is in flight or was cut by a restart) is returned instead."""
        ...

    def record(self, result: CommandResult, now_ns: int) -> None:
        """The outcome of a claimed order."""
        ...


def _dump(value: Value | None) -> str | None:
    return None if value is None else json.dumps(json_value(value))


def _load(text: str | None) -> Value | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, bool | int | float | str) else str(value)


def _row(cmd: Command) -> tuple[Any, ...]:
    """A command as the row of ``_COLUMNS`` (each column is the field of its name)."""
    d = {c: getattr(cmd, c) for c in _COLUMNS}
    d.update(value=_dump(cmd.value), read_back=_dump(cmd.read_back), state=str(cmd.state))
    return tuple(d[c] for c in _COLUMNS)


def _command(row: Sequence[Any]) -> Command:
    d = dict(zip(_COLUMNS, row, strict=True))
    value = _load(d["value"])
    d.update(
        value="" if value is None else value,
        read_back=_load(d["read_back"]),
        state=CommandState(d["state"]),
    )
    return Command(**d)


def as_result(cmd: Command) -> CommandResult:
    """What an executor answers for a command it will not write (again)."""
    if cmd.state in (CommandState.WRITING, CommandState.APPROVED):
        return CommandResult(cmd.id, CommandState.UNCERTAIN, detail=NOT_SENT_AGAIN)
    if cmd.state in (CommandState.AWAITING_APPROVAL, CommandState.REJECTED):
        return CommandResult(cmd.id, CommandState.REFUSED, detail=f"the command is {cmd.state}")
    return CommandResult(
        cmd.id,
        cmd.state,
        read_back=cmd.read_back,
        detail=cmd.detail,
        written_at_ns=cmd.written_at_ns,
        finished_at_ns=cmd.finished_at_ns,
    )


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM commands"
_INSERT = f"INSERT INTO commands ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_UPDATE = "UPDATE commands SET " + ", ".join(f"{c} = ?" for c in _COLUMNS[1:]) + " WHERE id = ?"


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


class CommandStore:
    """The commands of one data directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._lock = threading.Lock()
        self._preclaimed: set[str] = set()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        if fresh:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, data_dir: Path) -> CommandStore:
        return cls(Path(data_dir) / DB_FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): a claim and its
        check are atomic also against another process."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ reads

    def get(self, command_id: str) -> Command | None:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE id = ?", (command_id,)).fetchone()
        return None if row is None else _command(row)

    def find(
        self,
        *,
        states: Iterable[CommandState] = (),
        tag: str | None = None,
        scopes: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Command]:
        """Newest first; ``tag`` is a full path or a hierarchy prefix; ``scopes`` (the
        caller's): only commands to tags inside them (none: all)."""
        where: list[str] = []
        args: list[Any] = []
        wanted = [str(s) for s in states]
        if wanted:
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            args += wanted
        if tag:
            where.append("(tag = ? OR tag LIKE ? ESCAPE '\\')")
            args += [tag.strip("/"), _like(tag.strip("/"))]
        if scopes:
            where.append(
                "(" + " OR ".join("tag = ? OR tag LIKE ? ESCAPE '\\'" for _ in scopes) + ")"
            )
            for scope in scopes:
                args += [scope, _like(scope)]
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at_ns DESC, rowid DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_command(r) for r in rows]

    def in_states(self, states: Iterable[CommandState]) -> list[Command]:
        wanted = [str(s) for s in states]
        sql = f"{_SELECT} WHERE state IN ({', '.join('?' * len(wanted))}) ORDER BY created_at_ns"
        with self._lock:
            rows = self._db.execute(sql, wanted).fetchall()
        return [_command(r) for r in rows]

    def last_command_ns(self, tag: str) -> int | None:
        """When the gate last accepted a command to ``tag``."""
        with self._lock:
            row = self._db.execute(
                "SELECT max(created_at_ns) FROM commands WHERE tag = ?", (tag,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def last_verified(self, tag: str) -> tuple[Value, int] | None:
        """The value and finish time of the newest verified command to ``tag``."""
        with self._lock:
            row = self._db.execute(
                "SELECT value, finished_at_ns FROM commands WHERE tag = ? AND state = ? "
                "ORDER BY finished_at_ns DESC LIMIT 1",
                (tag, str(CommandState.VERIFIED)),
            ).fetchone()
        if row is None:
            return None
        value = _load(row[0])
        return None if value is None else (value, int(row[1] or 0))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM commands").fetchone()[0])

    # ------------------------------------------------------------------ writes

    def insert(self, cmd: Command, *, claim: bool = False) -> Command | None:
        """Persist a new command; returns the existing one if its id is taken.

        ``claim``: persist it already claimed (state ``writing``) for an executor that
        journals into this store: its next :meth:`claim` of the id succeeds without a
        second commit (one durable write fewer before the device write).  A pre-claim
        nobody used is given back with :meth:`release`."""
        if claim:
            cmd = replace(cmd, state=CommandState.WRITING)
        with self._tx() as db:
            row = db.execute(f"{_SELECT} WHERE id = ?", (cmd.id,)).fetchone()
            if row is not None:
                return _command(row)
            db.execute(_INSERT, _row(cmd))
            if claim:
                self._preclaimed.add(cmd.id)
        return None

    def release(self, command_id: str) -> bool:
        """Whether ``command_id`` was pre-claimed by :meth:`insert` and nobody claimed it
        (its executor refused it before writing); the pre-claim is dropped."""
        with self._lock:
            if command_id in self._preclaimed:
                self._preclaimed.discard(command_id)
                return True
            return False

    def transition(self, cmd: Command, from_states: Iterable[CommandState]) -> bool:
        """Replace the row of ``cmd.id`` by ``cmd`` if its state is one of
        ``from_states``; whether it did (atomic: two callers never both win)."""
        wanted = [str(s) for s in from_states]
        values = _row(cmd)
        with self._tx() as db:
            cur = db.execute(
                f"{_UPDATE} AND state IN ({', '.join('?' * len(wanted))})",
                (*values[1:], cmd.id, *wanted),
            )
            return cur.rowcount == 1

    # ------------------------------------------------------------------ journal

    def claim(self, order: CommandOrder, now_ns: int) -> CommandResult | None:
        with self._lock:
            if order.id in self._preclaimed:  # persisted as writing by insert(claim=True)
                self._preclaimed.discard(order.id)
                return None
        with self._tx() as db:
            row = db.execute(f"{_SELECT} WHERE id = ?", (order.id,)).fetchone()
            if row is None:  # an order from elsewhere (a hub): journal it as it comes
                fresh = Command.from_order(order, CommandState.WRITING, now_ns)
                db.execute(_INSERT, _row(fresh))
                return None
            cmd = _command(row)
            if cmd.state is not CommandState.APPROVED:
                return as_result(cmd)
            db.execute(
                "UPDATE commands SET state = ?, updated_at_ns = ? WHERE id = ?",
                (str(CommandState.WRITING), now_ns, order.id),
            )
            return None

    def record(self, result: CommandResult, now_ns: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET state = ?, read_back = ?, detail = ?, written_at_ns = ?, "
                "finished_at_ns = ?, updated_at_ns = ? WHERE id = ? AND state = ?",
                (
                    str(result.state),
                    _dump(result.read_back),
                    result.detail,
                    result.written_at_ns,
                    result.finished_at_ns or now_ns,
                    now_ns,
                    result.id,
                    str(CommandState.WRITING),
                ),
            )

    def recover(self, now_ns: int, skip: Iterable[str] = ()) -> list[Command]:
        """After a restart: ``writing`` rows become ``uncertain`` (the write may have
        reached the device: never sent again), ``approved`` rows become ``failed``
        (claimed for nothing: not sent).  ``skip``: ids in flight in this process.
        Returns the commands changed."""
        skipped = set(skip)
        changed: list[Command] = []
        with self._tx() as db:
            rows = db.execute(
                f"{_SELECT} WHERE state IN (?, ?)",
                (str(CommandState.WRITING), str(CommandState.APPROVED)),
            ).fetchall()
            for row in rows:
                cmd = _command(row)
                if cmd.id in skipped:
                    continue
                if cmd.state is CommandState.WRITING:
                    new = replace(
                        cmd,
                        state=CommandState.UNCERTAIN,
                        detail="the server stopped during the write: the outcome is unknown "
                        "(check the device); not sent again",
                        finished_at_ns=now_ns,
                        updated_at_ns=now_ns,
                    )
                else:
                    new = replace(
                        cmd,
                        state=CommandState.FAILED,
                        detail="the server stopped before the write: not sent",
                        finished_at_ns=now_ns,
                        updated_at_ns=now_ns,
                    )
                db.execute(f"{_UPDATE}", (*_row(new)[1:], new.id))
                changed.append(new)
        return changed
