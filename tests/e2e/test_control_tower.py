"""The control tower in a real headless Chromium against a real uvicorn server."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isthmus.api import create_app
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.quality import Quality
from tests.e2e.conftest import BLUE_PIXELS, SCREENSHOT, LiveServer, wait_js
from tests.integration.api.plant import (
    COUNT,
    PASSWORD,
    POWER,
    RUNNING,
    TEMPERATURE,
    USERNAME,
    Plant,
    build_plant,
)

pytestmark = pytest.mark.e2e

S = 1_000_000_000
SCREENSHOT_PATH = (
    Path(__file__).resolve().parents[2] / "docs" / "img" / "control-tower-synthetic.png"
)


def temperature(t_s: float) -> float:
    return 72.0 + 6.0 * math.sin(t_s / 90.0) + 1.5 * math.sin(t_s / 7.0)


def prefill(plant: Plant) -> None:
    """15 minutes of history every 2 s, with a 40-second communication outage."""
    now = time.time_ns()
    ts = np.arange(now - 15 * 60 * S, now, 2 * S, dtype=np.int64)
    n = len(ts)
    quality = np.full(n, Quality.GOOD, dtype=np.uint32)
    outage = (ts > now - 6 * 60 * S) & (ts < now - 6 * 60 * S + 40 * S)
    quality[outage] = Quality.BAD_COMMUNICATION_ERROR
    ids = plant.ids
    plant.store.write(
        Batch.of(np.full(n, ids[TEMPERATURE]), ts, [temperature(t / S) for t in ts], quality)
    )
    plant.store.write(Batch.of([ids[RUNNING], ids[COUNT]], now - S, [1.0, 1200.0], Quality.GOOD))
    # The power meter is dense (every 200 ms): too many points, so the chart buckets.
    dense = np.arange(now - 15 * 60 * S, now, S // 5, dtype=np.int64)
    plant.store.write(
        Batch.of(
            np.full(len(dense), ids[POWER]),
            dense,
            40.0 + 3.0 * np.sin(dense / S / 60.0) + np.sin(dense / S * 3.0),
            Quality.UNCERTAIN_SENSOR_NOT_ACCURATE,
        )
    )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, Plant]]:
    plant = build_plant(tmp_path, SystemClock())
    prefill(plant)
    ids = plant.ids

    async def publish() -> None:
        """Like the pipeline: a changing value every 200 ms, stored then published."""
        count = 1200
        while True:
            now = time.time_ns()
            count += 1
            batch = Batch.of(
                [ids[TEMPERATURE], ids[COUNT], ids[POWER]],
                now,
                [temperature(now / S), float(count), 40.0 + (count % 7) * 0.5],
                [Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN_SENSOR_NOT_ACCURATE],
            )
            await asyncio.to_thread(plant.store.write, batch)
            await plant.ctx.transport.publish(batch)
            await asyncio.sleep(0.2)

    with LiveServer(create_app(plant.ctx), background=[publish]) as server:
        yield server, plant
    plant.store.close()


def log_in(page: Any, url: str) -> None:
    page.goto(url)
    form = page.get_by_test_id("login-form")
    form.wait_for()
    page.get_by_test_id("login-username").fill(USERNAME)
    page.get_by_test_id("login-password").fill("wrong password")
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("login-error").get_by_text("Wrong username or password").wait_for()
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("tag-table").wait_for()


def test_control_tower_live_value_and_trend(live: tuple[LiveServer, Plant], page: Any) -> None:
    server, _ = live
    log_in(page, server.url)

    # The tree shows the ISA-95 hierarchy down to the equipment.
    page.get_by_test_id("tree-node-acme/plant1/packaging/line1/filler/F101").click()
    rows = page.locator('[data-testid="tag-row"]')
    rows.first.wait_for()
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.path)")) == sorted(
        [TEMPERATURE, RUNNING, COUNT]
    )

    # Open the temperature tag; its value cell changes live.
    page.locator(f'[data-testid="tag-row"][data-path="{TEMPERATURE}"]').click()
    cell = page.get_by_test_id(f"value-{TEMPERATURE}")
    handle = cell.element_handle()
    first = wait_js(page, "el => el.textContent.trim() !== '—' && el.textContent", handle)
    wait_js(page, "([el, before]) => el.textContent !== before", [handle, first], timeout=5)
    assert page.get_by_test_id(f"quality-{TEMPERATURE}").text_content() == "Good"
    assert page.get_by_test_id("connection-status").text_content() == "live"

    # The trend chart is drawn: history plus live points, the line in pixels.
    wait_js(page, "() => Number(document.querySelector('#chart').dataset.points) > 400")
    wait_js(page, f"() => ({BLUE_PIXELS})('trend-chart') > 300")
    assert page.get_by_test_id("chart-title").text_content() == "temperature"

    # Uncertain quality is shown by name too; a dense tag's trend uses buckets.
    page.get_by_test_id("select-all").click()
    page.get_by_test_id(f"quality-{POWER}").get_by_text("Uncertain_SensorNotAccurate").wait_for()
    page.locator(f'[data-testid="tag-row"][data-path="{POWER}"]').click()
    page.locator("#legend-band:not([hidden])").wait_for()
    wait_js(page, f"() => ({BLUE_PIXELS})('trend-chart') > 300")
    page.get_by_test_id("tree-node-acme/plant1/packaging/line1/filler/F101").click()
    page.locator(f'[data-testid="tag-row"][data-path="{TEMPERATURE}"]').click()
    wait_js(page, f"() => ({BLUE_PIXELS})('trend-chart') > 300")

    if SCREENSHOT:
        time.sleep(1.0)
        SCREENSHOT_PATH.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_PATH))

    # Log out: back to the login form, the token is gone.
    page.get_by_test_id("logout").click()
    page.get_by_test_id("login-form").wait_for()
    assert page.evaluate("sessionStorage.getItem('isthmus.token')") is None
