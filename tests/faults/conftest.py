"""Fixtures of the fault tests: one PostgreSQL cluster for the module run, a database
per test, and nats-server processes started by each test (they kill them)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.historian.pg_cluster import PgCluster, throwaway_cluster
from tests.integration.nats.nats_server import NATS_SERVER
from tests.support import require_binary

_names = itertools.count()

OUTAGE_S = float(os.environ.get("ISTHMUS_FAULT_OUTAGE_S", "10"))
"""How long NATS stays down in the outage test (the issue's "several minutes" scaled
down for ``make test``; set ISTHMUS_FAULT_OUTAGE_S=300 for the full figure)."""


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    require_binary(NATS_SERVER, "the fault tests run real nats-server processes")
    with throwaway_cluster("the fault tests run a throw-away PostgreSQL cluster") as cluster:
        yield cluster


@pytest.fixture
def dsn(pg: PgCluster) -> str:
    name = f"faults{next(_names)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return pg.dsn(name)
