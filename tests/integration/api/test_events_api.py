"""``GET /api/events`` over the real app and a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from .plant import PASSWORD, USERNAME, Plant, api_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app) as c:
        yield c


async def _auth(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_events_need_a_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/events")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_events_page_with_cursor_and_filters(plant: Plant, client: httpx.AsyncClient) -> None:
    auth = await _auth(client)
    ev = plant.ctx.events
    ev.raise_event("link.lost", "plc1", "plc1 unreachable", target="10.0.0.5:502")
    ev.raise_event("source.malformed", "mq", "rejected payload", count=12)
    ev.raise_event("source.rejected", "mq", "rejected field", count=3)

    r = await client.get("/api/events", headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert [e["kind"] for e in body["events"]] == [
        "link.lost",
        "source.malformed",
        "source.rejected",
    ]
    assert body["events"][0]["details"] == {"target": "10.0.0.5:502"}
    assert body["next_after"] == body["events"][-1]["id"]

    r = await client.get("/api/events", params={"kind": "source", "after": 0}, headers=auth)
    assert [(e["kind"], e["count"]) for e in r.json()["events"]] == [
        ("source.malformed", 12),
        ("source.rejected", 3),
    ]
    r = await client.get("/api/events", params={"after": body["next_after"]}, headers=auth)
    assert r.json() == {"events": [], "next_after": body["next_after"]}
    r = await client.get("/api/events", params={"source": "plc1", "limit": 1}, headers=auth)
    assert [e["source"] for e in r.json()["events"]] == ["plc1"]


async def test_bad_parameters_are_problems(client: httpx.AsyncClient) -> None:
    auth = await _auth(client)
    for params in ({"after": -1}, {"limit": 0}, {"limit": "many"}):
        r = await client.get("/api/events", params=params, headers=auth)
        assert r.status_code == 422, params
        assert r.headers["content-type"].startswith("application/problem+json")
