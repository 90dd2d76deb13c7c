"""A string tag in the control tower (real Chromium, real uvicorn): its text is shown
and updated live in the table and the badge, and it has no trend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.api import create_app
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.config import DataType, TagConfig
from isthmus.model.quality import Quality
from tests.e2e.conftest import LiveServer, wait_js
from tests.e2e.test_control_tower import log_in
from tests.integration.api.plant import PREFIX, TAGS, TEMPERATURE, Plant, build_plant

pytestmark = pytest.mark.e2e

RECIPE = f"{PREFIX}/packaging/line1/filler/F101/recipe"
RECIPES = ["LAGER-33CL", "PILS-50CL", "STOUT-33CL"]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, Plant]]:
    tags = [
        *TAGS,
        ("plc1", TagConfig(path="packaging/line1/filler/F101/recipe", data_type=DataType.STRING)),
    ]
    plant = build_plant(tmp_path, SystemClock(), tags=tags)
    ids = plant.ids

    async def publish() -> None:
        k = 0
        while True:
            k += 1
            batch = Batch.of(
                [ids[RECIPE], ids[TEMPERATURE]],
                time.time_ns(),
                [0.0, 70.0 + k % 5],
                Quality.GOOD,
                text=[RECIPES[k % len(RECIPES)], None],
            )
            await asyncio.to_thread(plant.store.write, batch)
            await plant.ctx.transport.publish(batch)
            await asyncio.sleep(0.3)

    with LiveServer(create_app(plant.ctx), background=[publish]) as server:
        yield server, plant
    plant.store.close()


def test_string_tag_shows_text_without_trend(live: tuple[LiveServer, Plant], page: Any) -> None:
    server, _ = live
    log_in(page, server.url)
    page.get_by_test_id("tree-node-acme/plant1/packaging/line1/filler/F101").click()
    cell = page.get_by_test_id(f"value-{RECIPE}")
    handle = cell.element_handle()
    first = wait_js(page, "el => el.textContent.trim() !== '—' && el.textContent", handle)
    assert first in RECIPES
    wait_js(page, "([el, before]) => el.textContent !== before", [handle, first], timeout=5)
    assert cell.text_content() in RECIPES

    page.locator(f'[data-testid="tag-row"][data-path="{RECIPE}"]').click()
    empty = page.get_by_test_id("chart-empty")
    empty.get_by_text("Text tag: no trend").wait_for()
    wait_js(page, "() => document.querySelector('#chart-value').textContent.length > 0")
    assert page.get_by_test_id("chart-value").text_content() in RECIPES
    assert page.evaluate("document.querySelector('#chart').dataset.points") == "0"

    # Back to a numeric tag: the trend returns.
    page.locator(f'[data-testid="tag-row"][data-path="{TEMPERATURE}"]').click()
    page.locator('[data-testid="chart-empty"][hidden]').wait_for(state="attached")
