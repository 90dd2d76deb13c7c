"""A small plant for API and UI tests: a real DuckDB store, catalog, transport, identity."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI

from isthmus.api import ApiContext
from isthmus.historian.base import TagMeta
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import Clock
from isthmus.model.config import Criticality, DataType, StorageConfig, TagConfig
from isthmus.observe.metrics import Metrics
from isthmus.security.identity import Identity, LoginThrottle, Role
from isthmus.transport.local import LocalTransport

PREFIX = "acme/plant1"
TEMPERATURE = f"{PREFIX}/packaging/line1/filler/F101/temperature"
RUNNING = f"{PREFIX}/packaging/line1/filler/F101/running"
COUNT = f"{PREFIX}/packaging/line1/filler/F101/count"
POWER = f"{PREFIX}/utilities/power/main/meter1/power"
USERNAME = "olga"
PASSWORD = "correct horse battery staple"

TAGS: list[tuple[str, TagConfig]] = [
    (
        "plc1",
        TagConfig(
            path="packaging/line1/filler/F101/temperature",
            unit="°C",
            description="Product temperature",
            range=(0.0, 150.0),
            criticality=Criticality.HIGH,
        ),
    ),
    ("plc1", TagConfig(path="packaging/line1/filler/F101/running", data_type=DataType.BOOL)),
    ("plc1", TagConfig(path="packaging/line1/filler/F101/count", data_type=DataType.UINT32)),
    ("meter", TagConfig(path="utilities/power/main/meter1/power", unit="kW", writable=True)),
]

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class Plant:
    ctx: ApiContext
    store: DuckDBStore
    ids: dict[str, int]


def build_plant(
    data_dir: Path,
    clock: Clock,
    *,
    token_ttl_s: float = 3600.0,
    tags: list[tuple[str, TagConfig]] = TAGS,
) -> Plant:
    """Open a real DuckDB store under ``data_dir`` and build an :class:`ApiContext`."""
    store = DuckDBStore(StorageConfig(path="historian.duckdb"), data_dir)
    store.open()
    metas = [TagMeta(f"{PREFIX}/{cfg.path}", str(cfg.data_type), cfg.unit) for _, cfg in tags]
    ids = store.register_tags(metas)
    catalog = TagCatalog(
        CatalogEntry(ids[f"{PREFIX}/{cfg.path}"], f"{PREFIX}/{cfg.path}", source, cfg)
        for source, cfg in tags
    )
    identity = Identity.open(data_dir, token_ttl_s=token_ttl_s, clock=clock, hasher=FAST_HASHER)
    identity.throttle = LoginThrottle(clock, base_s=0.05, max_s=0.2)
    identity.users.add(USERNAME, PASSWORD, Role.OPERATOR)
    metrics = Metrics()
    ctx = ApiContext(
        catalog=catalog,
        store=store,
        transport=LocalTransport(metrics),
        metrics=metrics,
        clock=clock,
        identity=identity,
        version="9.9.9-test",
        source_status=lambda: {"plc1": True, "meter": False},
    )
    return Plant(ctx, store, ids)


@contextlib.asynccontextmanager
async def api_client(app: FastAPI, *, logged_in: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app in process; ``logged_in``: with the test user's token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        if logged_in:
            r = await client.post(
                "/api/auth/login", json={"username": USERNAME, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client
