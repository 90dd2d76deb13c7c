"""``DATA_DIR/identity.db``: sessions, API tokens and login state in one SQLite file.

Why SQLite and not JSON files: the server and ``isthmus tokens ...`` / ``isthmus users
...`` change these rows at the same time, and every request reads one of them (is this
session or token still valid?).  SQLite gives atomic, concurrent changes across
processes (WAL, a busy timeout) and indexed reads in microseconds; a change by the CLI
is seen by the server's next request.  The file, its ``-wal`` and ``-shm`` are mode
0600 (SQLite gives its side files the database's mode).

Tables: ``sessions`` (a login: hashed current refresh token, last activity, MFA state,
revocation), ``spent_refresh`` (hashes of rotated refresh tokens, to detect reuse),
``api_tokens`` (hashed secrets, role, scopes, expiry, revocation) and ``login_state``
(failed logins, lockout, the last TOTP time step used).  No secret is stored: only
SHA-256 digests of 256-bit random values.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from isthmus.security.errors import IdentityError

DB_FILE = "identity.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    refresh_hash TEXT NOT NULL,
    mfa INTEGER NOT NULL,
    client TEXT NOT NULL,
    revoked_ns INTEGER,
    revoked_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
CREATE TABLE IF NOT EXISTS spent_refresh(
    hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    spent_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spent_session ON spent_refresh(session_id);
CREATE TABLE IF NOT EXISTS api_tokens(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_ns INTEGER NOT NULL,
    revoked_ns INTEGER,
    revoked_by TEXT,
    last_used_ns INTEGER
);
CREATE TABLE IF NOT EXISTS login_state(
    username TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_ns INTEGER NOT NULL DEFAULT 0,
    locked_until_ns INTEGER NOT NULL DEFAULT 0,
    totp_step INTEGER NOT NULL DEFAULT 0
);
"""


class IdentityDB:
    """One SQLite connection (thread-safe behind a lock) to ``DATA_DIR/identity.db``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._lock = threading.RLock()
        try:
            self._con = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.execute("PRAGMA busy_timeout=10000")
            self._con.executescript(_SCHEMA)
            row = self._con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._con.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise IdentityError(
                    f"{self.path}: schema version {row[0]}, this release reads {SCHEMA_VERSION}",
                    file=str(self.path),
                )
        except sqlite3.DatabaseError as exc:
            raise IdentityError(
                f"{self.path}: not a usable identity database: {exc}", file=str(self.path)
            ) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an exception)."""
        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._con.execute(sql, args).fetchone()
            return row

    def all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._con.execute(sql, args).fetchall())

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one statement in its own transaction; returns the rows changed."""
        with self._lock:
            return self._con.execute(sql, args).rowcount

    def close(self) -> None:
        with self._lock:
            self._con.close()
