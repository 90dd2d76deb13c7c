"""Fixtures of the historian tests: a throw-away PostgreSQL cluster per session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.integration.historian.pg_cluster import PgCluster, find_bin_dir
from tests.support import require_binary

_db_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server from the binaries on this machine, on a free 127.0.0.1 port.

    Skipped when the server binaries are missing (a failure when ``CI=true``).
    """
    bin_dir = find_bin_dir()
    require_binary(
        str(bin_dir / "initdb") if bin_dir else "initdb",
        "the postgres historian tests start a throw-away cluster (apt install postgresql)",
    )
    assert bin_dir is not None
    cluster = PgCluster(bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh empty schema for one test, also exported as ``ISTHMUS_PG_DSN``."""
    dsn = pg_cluster.create_schema("isthmus_test", f"t{next(_db_names)}")
    monkeypatch.setenv("ISTHMUS_PG_DSN", dsn)
    return dsn
