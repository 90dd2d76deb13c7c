"""The real thing: `isthmus demo` (simulator → OPC UA/Modbus → pipeline → historian →
API) seen in headless Chromium.  A user logs in and watches a live value change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BLUE_PIXELS, SCREENSHOT, wait_js
from tests.support import ADMIN_PASSWORD, Demo, running_demo

pytestmark = pytest.mark.e2e

SCREENSHOT_PATH = Path(__file__).resolve().parents[2] / "docs" / "img" / "control-tower.png"
# Signals that keep moving while the plant runs (counters and noisy analogs): the test
# needs one of them to change on screen, whichever the simulated plant moves first.
LIVE_TAGS = [
    "acme/lyon/utilities/water/pumping/pump1/run_seconds",
    "acme/lyon/utilities/water/metering/energy_meter/active_energy",
    "acme/lyon/utilities/water/pumping/pump1/motor_current",
    "acme/lyon/utilities/water/pumping/pump1/flow",
]
OPCUA_TAG = "acme/lyon/packaging/line1/filling/filler/product_temperature"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo") / "data") as running:
        yield running
        running.stop()


def test_login_and_watch_live_values_from_the_simulated_plant(demo: Demo, page: Any) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(demo.url)
    page.get_by_test_id("login-username").fill("admin")
    page.get_by_test_id("login-password").fill(ADMIN_PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("tree").wait_for()

    cells = [f"[data-testid='value-{tag}']" for tag in LIVE_TAGS]
    page.locator(cells[0]).wait_for(timeout=15_000)
    texts = "(sels) => sels.map((s) => document.querySelector(s)?.textContent ?? '')"
    first = wait_js(
        page, f"(sels) => {{ const t = ({texts})(sels); return t.every(Boolean) && t; }}", cells
    )
    changed = wait_js(
        page,
        f"([sels, old]) => ({texts})(sels).some((t, i) => t && t !== old[i])",
        [cells, first],
        timeout=20,
    )
    assert changed is True

    quality = page.locator(f"[data-testid='quality-{OPCUA_TAG}']")
    quality.wait_for()
    wait_js(
        page,
        "(sel) => document.querySelector(sel)?.textContent.includes('Good')",
        f"[data-testid='quality-{OPCUA_TAG}']",
        timeout=15,
    )

    # An enumeration shows its label (from the tag's `enum:` in the demo plant).
    state = "[data-testid='value-acme/lyon/packaging/line1/filling/filler/state']"
    assert wait_js(
        page,
        "(sel) => /^(idle|running|starved|blocked|down) \\([0-4]\\)$/"
        ".test(document.querySelector(sel)?.textContent ?? '')",
        state,
        timeout=15,
    )

    # Open the trend of an OPC UA tag and see the chart drawn from history + live data.
    page.locator(f"[data-testid='tag-row'][data-path='{OPCUA_TAG}']").click()
    # (the chart is drawn as history and live points arrive: wait for a real line, not
    # for its first pixels)
    assert wait_js(page, f"() => ({BLUE_PIXELS})('trend-chart') > 50", timeout=15)
    if SCREENSHOT:
        page.wait_for_timeout(8000)  # let the trend gather a few seconds of live data
        SCREENSHOT_PATH.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_PATH))
