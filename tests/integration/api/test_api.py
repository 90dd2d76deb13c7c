"""The REST API and the live stream against a real DuckDB store."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from isthmus.api.context import SAMPLES_WRITTEN_METRIC
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.durations import format_ns
from isthmus.model.quality import Quality
from tests.support import serve_app

from .plant import (
    COUNT,
    PASSWORD,
    POWER,
    PREFIX,
    RUNNING,
    TEMPERATURE,
    USERNAME,
    Plant,
    api_client,
    build_plant,
)

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_040 * S  # "now" in these tests: a whole minute (2023-11-14T22:14:00Z)
START = T0 - 600 * S  # temperature: one sample every 10 s for the last 10 minutes


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=T0)


@pytest.fixture
def plant(tmp_path: Path, clock: ManualClock) -> Iterator[Plant]:
    plant = build_plant(tmp_path, clock)
    ids = plant.ids
    i = np.arange(60)
    quality = np.full(60, Quality.GOOD, dtype=np.uint32)
    quality[30] = Quality.BAD_COMMUNICATION_ERROR
    value = i.astype(np.float64)
    value[30] = 999.0
    plant.store.write(Batch.of(np.full(60, ids[TEMPERATURE]), START + i * 10 * S, value, quality))
    plant.store.write(
        Batch.of([ids[RUNNING], ids[COUNT]], [T0 - 5 * S, T0 - 3 * S], [1.0, 42.0], Quality.GOOD)
    )
    plant.ctx.metrics.inc(SAMPLES_WRITTEN_METRIC, 62)
    yield plant
    plant.store.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app) as c:
        yield c


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
async def auth(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    for key in ("type", "title", "detail", "instance"):
        assert isinstance(body[key], str), key
    assert "Traceback" not in r.text
    return body


# ---------------------------------------------------------------------------- health, auth


async def test_health_needs_no_token(client: httpx.AsyncClient, clock: ManualClock) -> None:
    clock.advance(12.5)
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "status": "ok",
        "version": "9.9.9-test",
        "uptime_s": 12.5,
        "sources": {"plc1": True, "meter": False},
        "samples_written": 62,
    }


PROTECTED = [
    "/api/tags",
    "/api/hierarchy",
    "/api/last",
    "/api/auth/me",
    f"/api/tags/{TEMPERATURE}/last",
    f"/api/tags/{TEMPERATURE}/samples",
    "/api/tags/no/such/tag/last",
]


@pytest.mark.parametrize("url", PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic b2xnYTpwdw=="])
async def test_api_routes_need_a_token(
    client: httpx.AsyncClient, url: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = await client.get(url, headers=headers)
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert body["instance"] == url


async def test_every_api_route_is_protected(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Guards against a new router forgetting the auth dependency."""
    open_routes = {"/api/auth/login"}
    for route in app.routes:
        path = getattr(route, "path", "")
        methods = getattr(route, "methods", None) or set()
        if not path.startswith("/api/") or path in open_routes or "GET" not in methods:
            continue
        url = path.replace("{path:path}", "x/y")
        r = await client.get(url)
        assert_problem(r, 401)


async def test_expired_token_refused(client: httpx.AsyncClient, clock: ManualClock) -> None:
    headers = await login(client)
    assert (await client.get("/api/tags", headers=headers)).status_code == 200
    clock.advance(3600)
    body = assert_problem(await client.get("/api/tags", headers=headers), 401)
    assert "expired" in body["detail"]


async def test_login(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    me = await client.get("/api/auth/me", headers=auth)
    assert me.json()["username"] == USERNAME
    assert me.json()["role"] == "operator"


@pytest.mark.parametrize(
    "creds", [{"username": USERNAME, "password": "nope"}, {"username": "eve", "password": "x"}]
)
async def test_login_wrong_credentials(client: httpx.AsyncClient, creds: dict[str, str]) -> None:
    r = await client.post("/api/auth/login", json=creds)
    body = assert_problem(r, 401)
    assert "access_token" not in body
    assert creds["password"] not in r.text


async def test_login_malformed_body(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/api/auth/login", json={"username": "x"}), 422)
    assert any(p["name"] == "password" for p in body["invalid_params"])


# ---------------------------------------------------------------------------- tags


async def test_tags(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get("/api/tags", headers=auth)
    tags = {t["path"]: t for t in r.json()}
    assert set(tags) == {TEMPERATURE, RUNNING, COUNT, POWER}
    temp = tags[TEMPERATURE]
    assert temp == {
        "path": TEMPERATURE,
        "name": "temperature",
        "equipment": f"{PREFIX}/packaging/line1/filler/F101",
        "unit": "°C",
        "data_type": "float64",
        "value_type": "float64",
        "description": "Product temperature",
        "range": [0.0, 150.0],
        "writable": False,
        "criticality": "high",
        "source": "plc1",
        "enum": None,
        "write_limits": None,
        "max_step": None,
        "min_interval": None,
    }
    assert tags[POWER]["writable"] is True
    r = await client.get("/api/tags", params={"prefix": f"{PREFIX}/utilities/"}, headers=auth)
    assert [t["path"] for t in r.json()] == [POWER]
    r = await client.get("/api/tags", params={"prefix": f"{PREFIX}/util"}, headers=auth)
    assert r.json() == []


async def test_hierarchy(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    roots = (await client.get("/api/hierarchy", headers=auth)).json()
    assert [(n["name"], n["level"]) for n in roots] == [("acme", "enterprise")]
    node = roots[0]
    levels = []
    while node["children"] and node["level"] != "equipment":
        node = node["children"][0]
        levels.append((node["level"], node["name"]))
    assert levels == [
        ("site", "plant1"),
        ("area", "packaging"),
        ("line", "line1"),
        ("cell", "filler"),
        ("equipment", "F101"),
    ]
    leaves = {c["name"]: c for c in node["children"]}
    assert set(leaves) == {"count", "running", "temperature"}
    assert leaves["temperature"]["level"] == "tag"
    assert leaves["temperature"]["path"] == TEMPERATURE
    assert leaves["temperature"]["unit"] == "°C"
    assert leaves["running"]["data_type"] == "bool"
    assert leaves["count"]["value_type"] == "uint32"


async def test_last(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get(f"/api/tags/{TEMPERATURE}/last", headers=auth)
    assert r.json() == {
        "path": TEMPERATURE,
        "value": 59.0,
        "quality": "Good",
        "quality_code": 0,
        "timestamp": "2023-11-14T22:13:50.000Z",
    }
    r = await client.get(f"/api/tags/{RUNNING}/last", headers=auth)
    assert r.json()["value"] is True
    r = await client.get(f"/api/tags/{COUNT}/last", headers=auth)
    assert r.json()["value"] == 42
    assert isinstance(r.json()["value"], int)


async def test_last_many(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get("/api/last", headers=auth)
    values = {v["path"]: v for v in r.json()["values"]}
    assert set(values) == {TEMPERATURE, RUNNING, COUNT}  # power has no sample
    assert values[COUNT]["timestamp"] == format_ns(T0 - 3 * S)
    r = await client.get("/api/last", params={"prefix": f"{PREFIX}/utilities"}, headers=auth)
    assert r.json() == {"values": []}


async def test_last_bad_quality_name(
    client: httpx.AsyncClient, auth: dict[str, str], plant: Plant
) -> None:
    plant.store.write(
        Batch.of([plant.ids[POWER]], [T0 - S], [float("nan")], [Quality.BAD_NOT_CONNECTED])
    )
    body = (await client.get(f"/api/tags/{POWER}/last", headers=auth)).json()
    assert body["quality"] == "Bad_NotConnected"
    assert body["quality_code"] == Quality.BAD_NOT_CONNECTED
    assert body["value"] is None  # NaN is not JSON


async def test_unknown_tag_404(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for url in ("/api/tags/acme/nope/last", "/api/tags/acme/nope/samples"):
        body = assert_problem(await client.get(url, headers=auth), 404)
        assert "acme/nope" in body["detail"]


async def test_no_sample_yet_404(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    body = assert_problem(await client.get(f"/api/tags/{POWER}/last", headers=auth), 404)
    assert "no sample yet" in body["detail"]


async def test_unknown_route_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404)


async def test_samples_raw(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get(f"/api/tags/{TEMPERATURE}/samples", params={"from": "-10m"}, headers=auth)
    body = r.json()
    assert body["path"] == TEMPERATURE
    assert body["unit"] == "°C"
    samples = body["samples"]
    assert len(samples) == 60
    assert samples[0] == {"timestamp": format_ns(START), "value": 0.0, "quality": "Good"}
    assert samples[30] == {
        "timestamp": format_ns(START + 300 * S),
        "value": 999.0,
        "quality": "Bad_CommunicationError",
    }
    assert [s["value"] for s in samples[31:]] == [float(v) for v in range(31, 60)]


async def test_samples_default_window_is_15_minutes(
    client: httpx.AsyncClient, auth: dict[str, str], clock: ManualClock
) -> None:
    clock.advance(10 * 60)  # now the first 5 minutes of data are older than 15 minutes
    body = (await client.get(f"/api/tags/{TEMPERATURE}/samples", headers=auth)).json()
    assert len(body["samples"]) == 30
    assert body["samples"][0]["timestamp"] == format_ns(START + 300 * S)


async def test_samples_iso_range_and_limit(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    params = {"from": format_ns(T0 - 300 * S), "to": "2023-11-14T22:14:00Z", "limit": "5"}
    r = await client.get(f"/api/tags/{TEMPERATURE}/samples", params=params, headers=auth)
    values = [s["value"] for s in r.json()["samples"]]
    assert values == [999.0, 31.0, 32.0, 33.0, 34.0]


async def test_samples_bucketed(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get(
        f"/api/tags/{TEMPERATURE}/samples",
        params={"from": "-10m", "to": "now", "bucket": "1m"},
        headers=auth,
    )
    body = r.json()
    assert body["path"] == TEMPERATURE
    assert body["unit"] == "°C"
    assert body["bucket"] == "1m"
    buckets = body["buckets"]
    assert len(buckets) == 10
    for k, bucket in enumerate(buckets):
        assert bucket["timestamp"] == format_ns(START + k * 60 * S)
        if k == 5:  # holds the Bad sample (i = 30), which aggregates ignore
            assert bucket == {**bucket, "avg": 33.0, "min": 31.0, "max": 35.0, "count": 5}
        else:
            expected = {"avg": 6 * k + 2.5, "min": 6.0 * k, "max": 6.0 * k + 5, "count": 6}
            assert bucket == {**bucket, **expected}


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2023-13-45"}, "to"),
        ({"from": "-10x"}, "from"),
        ({"from": "now", "to": "-1m"}, "from"),
        ({"from": "-1m", "to": "-1m"}, "from"),
        ({"bucket": "0s"}, "bucket"),
        ({"bucket": "soon"}, "bucket"),
        ({"bucket": "1ms"}, "bucket"),  # 900,000 buckets in 15 minutes
        ({"limit": "0"}, "limit"),
        ({"limit": "1000001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"from": "-999999999d"}, "from"),
    ],
)
async def test_samples_bad_parameters(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str], name: str
) -> None:
    r = await client.get(f"/api/tags/{TEMPERATURE}/samples", params=params, headers=auth)
    body = assert_problem(r, 422)
    assert name in body["detail"]
    assert [p["name"] for p in body["invalid_params"]] == [name]
    assert body["invalid_params"][0]["location"] == "query"


async def test_unexpected_error_is_a_generic_500(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/api/boom", boom)
    r = await client.get("/api/boom")
    body = assert_problem(r, 500)
    assert "secret internal detail" not in r.text
    assert "RuntimeError" not in r.text
    assert body["instance"] == "/api/boom"
    assert "secret internal detail" in caplog.text  # the server log has it


async def test_openapi_documents_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/health",
        "/api/auth/login",
        "/api/tags",
        "/api/hierarchy",
        "/api/last",
        "/api/tags/{path}/last",
        "/api/tags/{path}/samples",
    ):
        assert path in paths, path
        for operation in paths[path].values():
            assert operation.get("summary"), path
            assert "200" in operation["responses"]


async def test_page_and_static_need_no_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert 'data-testid="login-form"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/js/main.js", "/static/app.css"):
        assert (await client.get(asset)).status_code == 200


# ---------------------------------------------------------------------------- stream


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """A real uvicorn server on a free port, in this event loop."""
    async with serve_app(app) as host:
        yield f"ws://{host}/api/stream"


async def wait_for_subscribers(plant: Plant, count: int) -> None:
    for _ in range(200):
        if plant.ctx.transport.subscriber_count == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} stream subscribers")


async def stream_token(plant: Plant) -> str:
    issued = await asyncio.to_thread(plant.ctx.identity.login, USERNAME, PASSWORD)
    assert issued is not None
    return issued.access_token


@pytest.mark.parametrize(
    "first", ['{"token": "not-a-token"}', '{"subscribe": []}', "hello", '["token"]']
)
async def test_stream_refuses_bad_token(app: FastAPI, plant: Plant, first: str) -> None:
    async with serve(app) as url, connect(url) as ws:
        await ws.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    assert plant.ctx.transport.subscriber_count == 0


async def test_stream_pushes_filtered_batches(app: FastAPI, plant: Plant) -> None:
    token = await stream_token(plant)
    ids = plant.ids
    async with serve(app) as url, connect(url) as ws:
        await ws.send(json.dumps({"token": token, "subscribe": [f"{PREFIX}/packaging"]}))
        await wait_for_subscribers(plant, 1)
        await plant.ctx.transport.publish(
            Batch.of(
                [ids[TEMPERATURE], ids[POWER], ids[RUNNING]],
                [T0 + S, T0 + S, T0 + 2 * S],
                [21.5, 7.0, 0.0],
                [Quality.GOOD, Quality.GOOD, Quality.BAD_TIMEOUT],
            )
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message == {
            "samples": [
                {
                    "path": TEMPERATURE,
                    "value": 21.5,
                    "quality": "Good",
                    "timestamp": format_ns(T0 + S),
                },
                {
                    "path": RUNNING,
                    "value": False,
                    "quality": "Bad_Timeout",
                    "timestamp": format_ns(T0 + 2 * S),
                },
            ]
        }
        # Change the subscription: now only the power meter.
        await ws.send(json.dumps({"subscribe": [POWER]}))
        await asyncio.sleep(0.2)
        await plant.ctx.transport.publish(
            Batch.of([ids[TEMPERATURE], ids[POWER]], T0 + 3 * S, [22.0, 8.0], Quality.GOOD)
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert [(s["path"], s["value"]) for s in message["samples"]] == [(POWER, 8.0)]
    await wait_for_subscribers(plant, 0)


async def test_stream_merges_bursts(app: FastAPI, plant: Plant) -> None:
    token = await stream_token(plant)
    tag = plant.ids[TEMPERATURE]
    async with serve(app) as url, connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        await wait_for_subscribers(plant, 1)
        for k in range(50):
            await plant.ctx.transport.publish(Batch.of([tag], [T0 + k], [float(k)], Quality.GOOD))
            await asyncio.sleep(0.005)
        received: list[float] = []
        messages = 0
        while len(received) < 50:
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            received += [s["value"] for s in message["samples"]]
            messages += 1
        assert received == [float(k) for k in range(50)]
        assert messages < 25  # ~10 per second at most, batches merged


async def test_stream_closes_when_token_expires(
    app: FastAPI, plant: Plant, clock: ManualClock
) -> None:
    token = await stream_token(plant)
    async with serve(app) as url, connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        await wait_for_subscribers(plant, 1)
        clock.advance(3600)
        await plant.ctx.transport.publish(
            Batch.of([plant.ids[TEMPERATURE]], [T0], [1.0], Quality.GOOD)
        )
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_api_docs_are_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    js = await client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


async def test_samples_bucketed_extended(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await client.get(
        f"/api/tags/{TEMPERATURE}/samples",
        params={"from": "-10m", "bucket": "1m", "extended": "true"},
        headers=auth,
    )
    buckets = r.json()["buckets"]
    assert len(buckets) == 10
    for k, b in enumerate(buckets):
        if k == 5:  # the Bad sample's 10 s are not covered; 31..35 hold 10 s each
            assert b["twa"] == pytest.approx(33.0)
            assert b["stddev"] == pytest.approx(2**0.5)
        else:  # six values 6k..6k+5, each in force for 10 s
            assert b["twa"] == pytest.approx(6 * k + 2.5)
            assert b["stddev"] == pytest.approx((35 / 12) ** 0.5)
    plain = await client.get(
        f"/api/tags/{TEMPERATURE}/samples", params={"from": "-10m", "bucket": "1m"}, headers=auth
    )
    assert plain.json()["buckets"][0]["twa"] is None


async def test_interpolated_previous_and_linear(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    url = f"/api/tags/{TEMPERATURE}/interpolated"
    r = await client.get(url, params={"from": "-10m", "interval": "1m"}, headers=auth)
    body = r.json()
    assert body["method"] == "previous" and body["interval"] == "1m"
    values = body["values"]
    assert [v["timestamp"] for v in values] == [format_ns(START + k * 60 * S) for k in range(10)]
    assert [v["value"] for v in values] == [6.0 * k if k != 5 else None for k in range(10)]
    assert values[5]["quality"] == "Bad_CommunicationError"
    r = await client.get(
        url,
        params={
            "from": format_ns(START + 5 * S),
            "to": "now",
            "interval": "1m",
            "method": "linear",
        },
        headers=auth,
    )
    linear = r.json()["values"]
    assert [v["value"] for v in linear] == [6 * k + 0.5 if k != 5 else None for k in range(10)]
    assert all(v["quality"] == "Good" for k, v in enumerate(linear) if k != 5)
    # Before any sample there is no value: Bad_NoData.
    r = await client.get(
        url,
        params={"from": format_ns(START - 120 * S), "to": format_ns(START), "interval": "1m"},
        headers=auth,
    )
    assert [v["quality"] for v in r.json()["values"]] == ["Bad_NoData", "Bad_NoData"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"interval": "0s"}, "interval"),
        ({"interval": "soon"}, "interval"),
        ({"interval": "1ms", "from": "-1d"}, "interval"),
        ({"interval": "1m", "method": "cubic"}, "method"),
        ({"interval": "1m", "from": "now", "to": "-1m"}, "from"),
        ({}, "interval"),
    ],
)
async def test_interpolated_bad_parameters(
    client: httpx.AsyncClient, auth: dict[str, str], params: dict[str, str], name: str
) -> None:
    r = await client.get(f"/api/tags/{TEMPERATURE}/interpolated", params=params, headers=auth)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert name in {p["name"] for p in r.json()["invalid_params"]}
