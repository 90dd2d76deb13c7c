"""Enumeration labels in ``/api/tags``: from the config, or read from the device."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from .plant import PREFIX, RUNNING, Plant, api_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app, logged_in=True) as c:
        yield c


async def test_labels_read_from_the_device_are_served(
    plant: Plant, client: httpx.AsyncClient
) -> None:
    running = plant.ids[RUNNING]
    plant.ctx.enum_labels = lambda: {running: {0: "Stopped", 1: "Running"}}
    r = await client.get("/api/tags", params={"prefix": PREFIX})
    assert r.status_code == 200
    enums = {t["path"]: t["enum"] for t in r.json()}
    # JSON object keys are strings
    assert enums[RUNNING] == {"0": "Stopped", "1": "Running"}
    assert [p for p, e in enums.items() if e is not None] == [RUNNING]


async def test_no_labels_anywhere_is_null(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/tags")
    assert {t["enum"] for t in r.json()} == {None}
