"""The command gate in a real browser, against `isthmus demo` (simulator → OPC UA/Modbus).

- An operator scoped to the utilities sends a non-critical setpoint (pump speed): verified,
  read back shown; a tag above the operator's criticality is refused with the gate's
  problem (reason `permission`), shown by the problem component.
- An admin asks for a critical change (the filler's fill volume setpoint) on the commands
  page: the confirmation shows the current value, the new one and the limits and says a
  second person must approve; the command waits. The admin's own inbox shows it without
  buttons; a supervisor (another browser context) approves it in the inbox; the command
  ends verified with the device's read back, on both screens and in the API.
- A viewer sees no commands page, and a direct API call with the viewer's token is a 403
  problem.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SCREENSHOT, sign_in, wait_js
from tests.support import ADMIN_PASSWORD, Demo, running_demo

pytestmark = pytest.mark.e2e

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
FILL = "acme/lyon/packaging/line1/filling/filler/fill_volume_sp"  # critical
PUMP_SPEED = "acme/lyon/utilities/water/pumping/pump1/speed_sp"  # medium
PUMP_ENABLE = "acme/lyon/utilities/water/pumping/pump1/enable"  # high
PASSWORDS = {
    "sam": "Approve-Fill-Volume-7",
    "otto": "Pump-Station-Night-3",
    "vera": "Only-Looking-Around-5",
}


def add_user(demo: Demo, name: str, role: str, *scopes: str) -> None:
    """`isthmus users add` against the running demo's data directory (the server sees
    the new user at once: a login re-reads the users file)."""
    args = [sys.executable, "-m", "isthmus", "users", "add", name, "--role", role,
            "--password-stdin", "--data-dir", str(demo.data_dir)]  # fmt: skip
    for scope in scopes:
        args += ["--scope", scope]
    done = subprocess.run(
        args, input=PASSWORDS[name] + "\n", text=True, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo") / "data") as running:
        add_user(running, "sam", "supervisor")
        add_user(running, "otto", "operator", "acme/lyon/utilities")
        add_user(running, "vera", "viewer")
        yield running
        running.stop()


def api_token(page: Any) -> str:
    token = page.evaluate("() => sessionStorage.getItem('isthmus.token')")
    assert token
    return str(token)


def last_value(demo: Demo, token: str, path: str) -> float:
    r = httpx.get(f"{demo.url}/api/tags/{path}/last", headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    return float(r.json()["value"])


def fill_command_form(page: Any, tag: str, value: str, reason: str) -> None:
    page.get_by_test_id("command-tag").select_option(tag)
    page.get_by_test_id("tag-facts").filter(has_text=tag).wait_for()
    field = page.get_by_test_id("command-value")
    if field.evaluate("(e) => e.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)
    page.get_by_test_id("command-reason").fill(reason)
    page.get_by_test_id("command-review").click()


def result_state(page: Any) -> str:
    return str(page.get_by_test_id("command-result").get_attribute("data-state"))


def test_operator_sends_a_setpoint_and_sees_it_verified(demo: Demo, page: Any) -> None:
    sign_in(page, demo.url, "otto", PASSWORDS["otto"])
    page.get_by_test_id("nav-commands").click()
    page.get_by_test_id("command-form").wait_for()
    # Scoped to the utilities: the packaging setpoints are not even listed.
    options = page.get_by_test_id("command-tag").evaluate(
        "(s) => [...s.options].map((o) => o.value)"
    )
    assert sorted(options) == sorted([PUMP_ENABLE, PUMP_SPEED])
    assert page.get_by_test_id("nav-approvals").count() == 0

    current = last_value(demo, api_token(page), PUMP_SPEED)
    new = 37.5 if abs(current - 37.5) > 1 else 62.5
    fill_command_form(page, PUMP_SPEED, f"{new:g}", "night tariff: slower pumping")
    dialog = page.get_by_test_id("command-confirm")
    dialog.wait_for()
    assert dialog.get_by_test_id("confirm-new").inner_text() == f"{new:.2f} %"
    assert dialog.get_by_test_id("confirm-limits").inner_text() == "0 … 100 %"
    assert dialog.get_by_test_id("confirm-approval").count() == 0
    assert "read back" in dialog.get_by_test_id("confirm-direct").inner_text()
    dialog.get_by_test_id("dialog-confirm").click()

    wait_js(
        page,
        "() => document.querySelector('[data-testid=command-result]')"
        "?.getAttribute('data-state') === 'verified'",
    )
    assert page.get_by_test_id("result-readback").inner_text() == f"{new:.2f} %"
    assert page.get_by_test_id("result-value").inner_text() == f"{new:.2f} %"
    command_id = page.get_by_test_id("result-link").inner_text()
    row = page.locator(f"[data-testid='command-history-row'][data-key='{command_id}']")
    row.wait_for(timeout=5000)
    assert row.locator("[data-state]").get_attribute("data-state") == "verified"

    # A client-side check: a value outside the range is not even sent.
    page.get_by_test_id("command-value").fill("150")
    page.get_by_test_id("command-review").click()
    assert (
        "Outside the allowed 0 … 100 %" in page.get_by_test_id("command-value-error").inner_text()
    )
    assert page.get_by_test_id("command-confirm").count() == 0

    # A tag above the operator's criticality: the gate refuses, the page shows its problem.
    fill_command_form(page, PUMP_ENABLE, "true", "restart after maintenance")
    page.get_by_test_id("command-confirm").get_by_test_id("dialog-confirm").click()
    problem = page.get_by_test_id("command-problem")
    problem.wait_for()
    assert problem.locator("dd[data-field='reason']").inner_text() == "permission"
    assert "403" in problem.inner_text()

    # The history filter.
    page.get_by_test_id("history-state").select_option("verified")
    wait_js(
        page,
        "() => { const rows = [...document.querySelectorAll('[data-testid=command-history-row]')];"
        " return rows.length > 0 && rows.every((r) => r.querySelector('[data-state=verified]')); }",
    )
    print(f"\nFIGURE operator setpoint in the browser: {PUMP_SPEED} → {new:g} % verified")


def test_critical_command_waits_for_a_supervisor_who_approves_it_in_the_inbox(
    demo: Demo, page: Any, second_page: Any, browser: Any
) -> None:
    sign_in(page, demo.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{demo.url}/#/commands")
    page.get_by_test_id("command-form").wait_for()
    current = last_value(demo, api_token(page), FILL)
    new = current + 5 if current + 5 <= 1000 else current - 5
    fill_command_form(page, FILL, f"{new:g}", "new bottle size for order 4711")

    # The confirmation: current value, new value, limits, and the second person.
    dialog = page.get_by_test_id("command-confirm")
    dialog.wait_for()
    assert dialog.get_by_test_id("confirm-current").inner_text().startswith(f"{current:,.2f}")
    assert dialog.get_by_test_id("confirm-new").inner_text() == f"{new:,.2f} ml"
    assert dialog.get_by_test_id("confirm-limits").inner_text() == "250 … 1,000 ml"
    assert "second person" in dialog.get_by_test_id("confirm-approval").inner_text()
    dialog.get_by_test_id("dialog-confirm").click()

    page.get_by_test_id("result-state").wait_for()
    assert result_state(page) == "awaiting_approval"
    command_id = page.get_by_test_id("result-link").inner_text()
    # The history lists it within one refresh.
    history = page.locator(f"[data-testid='command-history-row'][data-key='{command_id}']")
    history.wait_for(timeout=5000)

    # The requester's own inbox: the command is there, without buttons.
    own = browser.new_context(viewport={"width": 1400, "height": 860}).new_page()
    try:
        sign_in(own, demo.url, "admin", ADMIN_PASSWORD)
        own.goto(f"{demo.url}/#/approvals")
        mine = own.locator(f"[data-testid='approval-card'][data-id='{command_id}']")
        mine.wait_for()
        assert "another approver" in mine.get_by_test_id("approval-own").inner_text()
        assert mine.get_by_test_id("approval-approve").count() == 0
        assert mine.get_by_test_id("approval-reject").count() == 0
    finally:
        own.context.close()

    # A supervisor at another desk approves it.
    sign_in(second_page, demo.url, "sam", PASSWORDS["sam"])
    second_page.get_by_test_id("nav-approvals").click()
    card = second_page.locator(f"[data-testid='approval-card'][data-id='{command_id}']")
    card.wait_for()
    assert card.get_by_test_id("approval-requester").inner_text() == "admin (admin)"
    assert card.get_by_test_id("approval-value").inner_text() == f"{new:,.2f} ml"
    assert card.get_by_test_id("approval-reason").inner_text() == "new bottle size for order 4711"
    wait_js(
        second_page,
        "(id) => document.querySelector(`[data-id='${id}'] [data-testid=approval-current]`)"
        "?.textContent.includes('Good')",
        command_id,
    )
    card.get_by_test_id("approval-comment").fill("checked against order 4711")
    card.get_by_test_id("approval-approve").click()
    second_page.get_by_test_id("approve-confirm").get_by_test_id("dialog-confirm").click()

    decided = second_page.locator(f"[data-testid='approval-decided-row'][data-key='{command_id}']")
    decided.wait_for(timeout=15_000)
    assert decided.locator("[data-state]").get_attribute("data-state") == "verified"
    assert card.count() == 0

    # The requester's page follows the command to its end: verified, with the read back.
    wait_js(
        page,
        "() => document.querySelector('[data-testid=command-result]')"
        "?.getAttribute('data-state') === 'verified'",
        timeout=10,
    )
    assert page.get_by_test_id("result-readback").inner_text() == f"{new:,.2f} ml"
    assert page.get_by_test_id("result-approver").inner_text() == "sam"

    if SCREENSHOT:
        page.wait_for_timeout(2500)  # one more history refresh
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / "commands.png"))
    body = httpx.get(
        f"{demo.url}/api/commands/{command_id}",
        headers={"Authorization": f"Bearer {api_token(page)}"},
    ).json()
    assert (body["state"], body["approved_by"], body["read_back"]) == ("verified", "sam", new)
    assert last_value(demo, api_token(page), FILL) == pytest.approx(new)

    # A second request, which the supervisor rejects (a comment is required for that).
    other = new + 5 if new + 5 <= 1000 else new - 10
    fill_command_form(page, FILL, f"{other:g}", "typo in the order?")
    page.get_by_test_id("command-confirm").get_by_test_id("dialog-confirm").click()
    wait_js(
        page,
        "(old) => { const r = document.querySelector('[data-testid=result-link]');"
        " return r && r.textContent !== old; }",
        command_id,
    )
    rejected_id = page.get_by_test_id("result-link").inner_text()
    card = second_page.locator(f"[data-testid='approval-card'][data-id='{rejected_id}']")
    card.wait_for(timeout=5000)
    if SCREENSHOT:
        second_page.wait_for_timeout(1000)
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        second_page.screenshot(path=str(DOCS_IMG / "approvals.png"))
    card.get_by_test_id("approval-reject").click()
    assert "Say why" in card.locator(".field-error").inner_text()
    card.get_by_test_id("approval-comment").fill("order 4711 is 505 ml: ask the planner")
    card.get_by_test_id("approval-reject").click()
    second_page.locator(
        f"[data-testid='approval-decided-row'][data-key='{rejected_id}'] [data-state=rejected]"
    ).wait_for(timeout=5000)
    wait_js(
        page,
        "() => document.querySelector('[data-testid=command-result]')"
        "?.getAttribute('data-state') === 'rejected'",
        timeout=10,
    )
    assert page.get_by_test_id("result-readback").inner_text() == "—"
    assert last_value(demo, api_token(page), FILL) == pytest.approx(new)  # nothing written
    print(
        f"\nFIGURE approval flow in the browser: {FILL} {current:g} → {new:g} ml, "
        f"requested by admin, approved by sam, state {body['state']}, "
        f"read back {body['read_back']:g} ml; {other:g} ml rejected by sam, not written"
    )


def test_a_viewer_has_no_commands_page_and_the_api_refuses_too(demo: Demo, page: Any) -> None:
    sign_in(page, demo.url, "vera", PASSWORDS["vera"])
    page.get_by_test_id("tree").wait_for()
    assert page.get_by_test_id("nav-commands").count() == 0
    assert page.get_by_test_id("nav-approvals").count() == 0
    page.goto(f"{demo.url}/#/commands")
    assert "not open to the role viewer" in page.get_by_test_id("page-forbidden").inner_text()
    page.goto(f"{demo.url}/#/approvals")
    page.get_by_test_id("page-forbidden").wait_for()

    headers = {"Authorization": f"Bearer {api_token(page)}"}
    sent = httpx.post(
        f"{demo.url}/api/commands",
        headers=headers,
        json={"tag": PUMP_SPEED, "value": 50.0, "reason": "just trying"},
    )
    assert sent.status_code == 403
    assert sent.headers["content-type"].startswith("application/problem+json")
    assert sent.json()["reason"] == "permission"
    listed = httpx.get(f"{demo.url}/api/commands", headers=headers)
    assert listed.status_code == 403
    assert listed.headers["content-type"].startswith("application/problem+json")
    print("\nFIGURE viewer: commands page hidden, POST /api/commands → 403 reason=permission")
