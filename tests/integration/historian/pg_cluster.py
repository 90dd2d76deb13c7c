"""A throw-away PostgreSQL cluster built from the server binaries on this machine.

No pytest here: the test fixtures (``conftest.py``) and ``bench/historian_pg.py`` both
use it.  The cluster lives in a fresh directory under the system temp dir, listens on a
free 127.0.0.1 port (its unix socket stays in that directory), trusts local connections
and is removed on :meth:`PgCluster.stop`.  It never touches the machine's own server.

PostgreSQL refuses to run as root: when the tests run as root the binaries are started
as the ``postgres`` OS user through ``runuser`` and the directory is handed to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
"""Durability is pointless for a cluster deleted after the run; tests start it this way."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb, else the directory on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """initdb + pg_ctl start on a free port; :meth:`dsn` builds connection strings."""

    def __init__(self, bin_dir: Path, *, durable: bool = False, user: str = "postgres") -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.os_user = user if os.geteuid() == 0 else None
        self.port = 0
        self.root: Path | None = None

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.os_user is not None:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")

    def start(self) -> PgCluster:
        root = Path(tempfile.mkdtemp(prefix="isthmus-pg-"))
        self.root = root
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        data = root / "data"
        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={root}",
            "max_connections=200",
            "shared_buffers=128MB",
            "max_wal_size=2GB",
            *(() if self.durable else _FAST),
        ]
        for attempt in range(3):  # the free port may be taken between probe and bind
            self.port = _free_port()
            opts = " ".join(f"-c {s}" for s in [f"port={self.port}", *settings])
            try:
                self._run(
                    "pg_ctl", "-D", str(data), "-l", str(root / "server.log"),
                    "-o", opts, "-w", "-t", "30", "start",
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == 2:
                    log = (root / "server.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"postgres did not start:\n{log}") from None
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def create_schema(self, dbname: str, schema: str) -> str:
        """A new empty schema (in a database created on first use); returns a DSN whose
        ``search_path`` is that schema: much cheaper than a database per test."""
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            if not con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
                con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        with psycopg.connect(self.dsn(dbname), autocommit=True) as con:
            con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return make_conninfo(self.dsn(dbname), options=f"-c search_path={schema}")

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(dsn: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def query(dsn: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of one statement on a fresh connection (test assertions)."""
    with psycopg.connect(dsn) as con:
        return con.execute(statement, params).fetchall()


@contextlib.contextmanager
def throwaway_cluster(why: str) -> Iterator[PgCluster]:
    """A started cluster from this machine's binaries, stopped on exit; skipped (a failure
    when ``CI=true``) when the binaries are missing, with ``why`` as the reason."""
    from tests.support import require_binary

    bin_dir = find_bin_dir()
    require_binary(str(bin_dir / "initdb") if bin_dir else "initdb", why)
    assert bin_dir is not None
    with PgCluster(bin_dir) as cluster:
        yield cluster
