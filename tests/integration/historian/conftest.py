"""Fixtures of the historian tests: a throw-away PostgreSQL cluster per session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.integration.historian.pg_cluster import PgCluster, throwaway_cluster

_db_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server from the binaries on this machine, on a free 127.0.0.1 port.

    Skipped when the server binaries are missing (a failure when ``CI=true``).
    """
    with throwaway_cluster(
        "the postgres historian tests start a throw-away cluster (apt install postgresql)"
    ) as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh empty schema for one test, also exported as ``ISTHMUS_PG_DSN``."""
    dsn = pg_cluster.create_schema("isthmus_test", f"t{next(_db_names)}")
    monkeypatch.setenv("ISTHMUS_PG_DSN", dsn)
    return dsn
