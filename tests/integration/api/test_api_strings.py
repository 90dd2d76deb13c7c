"""String tags through the API: last values, raw samples, 422 for aggregates, the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import DataType, TagConfig
from isthmus.model.durations import format_ns
from isthmus.model.quality import Quality

from .plant import PREFIX, TAGS, TEMPERATURE, Plant, api_client, build_plant
from .test_api import assert_problem, serve, stream_token, wait_for_subscribers

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_040 * S
RECIPE = f"{PREFIX}/packaging/line1/filler/F101/recipe"
STRING_TAGS = [
    *TAGS,
    ("plc1", TagConfig(path="packaging/line1/filler/F101/recipe", data_type=DataType.STRING)),
]


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    plant = build_plant(tmp_path, ManualClock(start_ns=T0), tags=STRING_TAGS)
    ids = plant.ids
    plant.store.write(
        Batch.of(
            [ids[RECIPE], ids[TEMPERATURE], ids[RECIPE], ids[RECIPE]],
            [T0 - 30 * S, T0 - 30 * S, T0 - 20 * S, T0 - 10 * S],
            [0.0, 21.5, 0.0, float("nan")],
            [Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD_COMMUNICATION_ERROR],
            text=["LAGER-33CL", None, "PILS-50CL", None],
        )
    )
    yield plant
    plant.store.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app, logged_in=True) as c:
        yield c


async def test_raw_samples_of_a_string_tag(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/api/tags/{RECIPE}/samples", params={"from": "-1m"})
    assert r.status_code == 200, r.text
    assert [(s["value"], s["quality"]) for s in r.json()["samples"]] == [
        ("LAGER-33CL", "Good"),
        ("PILS-50CL", "Good"),
        (None, "Bad_CommunicationError"),  # a Bad sample of a string tag has no text
    ]


async def test_last_values_hold_strings(client: httpx.AsyncClient, plant: Plant) -> None:
    plant.store.write(Batch.of([plant.ids[RECIPE]], [T0 - S], 0.0, 0, text=["STOUT-33CL"]))
    r = await client.get(f"/api/tags/{RECIPE}/last")
    assert r.status_code == 200, r.text
    assert r.json()["value"] == "STOUT-33CL"
    assert r.json()["timestamp"] == format_ns(T0 - S)
    r = await client.get("/api/last", params={"prefix": f"{PREFIX}/packaging"})
    values = {v["path"]: v["value"] for v in r.json()["values"]}
    assert values == {RECIPE: "STOUT-33CL", TEMPERATURE: 21.5}
    tag = next(t for t in (await client.get("/api/tags")).json() if t["path"] == RECIPE)
    assert tag["data_type"] == tag["value_type"] == "string"


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("samples", {"bucket": "1m"}),
        ("samples", {"bucket": "1m", "extended": "true"}),
        ("interpolated", {"interval": "10s"}),
    ],
)
async def test_aggregates_of_a_string_tag_are_422(
    client: httpx.AsyncClient, route: str, params: dict[str, str]
) -> None:
    r = await client.get(f"/api/tags/{RECIPE}/{route}", params=params)
    body = assert_problem(r, 422)
    assert body["detail"] == f"tag {RECIPE} holds strings; aggregates need a numeric tag"


async def test_stream_sends_strings(app: FastAPI, plant: Plant) -> None:
    token = await stream_token(plant)
    ids = plant.ids
    async with serve(app) as url, connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        await wait_for_subscribers(plant, 1)
        await plant.ctx.transport.publish(
            Batch.of(
                [ids[RECIPE], ids[TEMPERATURE]], T0, [0.0, 22.0], Quality.GOOD, text=["IPA", None]
            )
        )
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert [(s["path"], s["value"]) for s in message["samples"]] == [
            (RECIPE, "IPA"),
            (TEMPERATURE, 22.0),
        ]


async def test_a_numeric_tag_whose_history_holds_strings_is_422(
    client: httpx.AsyncClient, plant: Plant
) -> None:
    """A tag reconfigured from string to number: its old text samples stay stored."""
    plant.store.write(Batch.of([plant.ids[TEMPERATURE]], [T0 - 5 * S], 0.0, 0, text=["old"]))
    for params in ({"bucket": "1m"}, {"bucket": "1m", "extended": "true"}):
        r = await client.get(f"/api/tags/{TEMPERATURE}/samples", params={"from": "-1m", **params})
        assert assert_problem(r, 422)["detail"].endswith("aggregates need a numeric tag")
    r = await client.get(f"/api/tags/{TEMPERATURE}/samples", params={"from": "-1m"})
    assert [s["value"] for s in r.json()["samples"]] == [21.5, "old"]
