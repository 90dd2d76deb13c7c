"""A nats-server with JetStream per test module; PostgreSQL from the historian fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.historian.conftest import pg_cluster, pg_dsn
from tests.integration.nats.nats_server import NATS_SERVER, NatsServer, wait_jetstream
from tests.support import require_binary

__all__ = ["nats_server", "pg_cluster", "pg_dsn"]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    require_binary(NATS_SERVER, "the edge/hub tests run a real nats-server with JetStream")
    root: Path = tmp_path_factory.mktemp("nats")
    server = NatsServer(root).start()
    try:
        wait_jetstream([server.url])
        yield server
    finally:
        server.stop()
