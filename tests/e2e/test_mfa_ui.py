"""Identity in a real browser, against `isthmus demo`: the users page, TOTP enrolment on
the account page (the QR code shown as a data: image under the page's CSP, the secret
read from the page, a code computed with pyotp), sign-in with a one-time code and with a
recovery code, an admin's MFA reset, and API tokens created (shown once), used and
revoked on the tokens page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest

from tests.e2e.conftest import enter_password, sign_in, wait_js
from tests.support import ADMIN_PASSWORD, Demo, running_demo

pytestmark = pytest.mark.e2e

USER = "mia"
PASSWORD = "Night-Shift-Pumps-42"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo") / "data") as running:
        yield running
        running.stop()


def sign_out(page: Any) -> None:
    page.get_by_test_id("logout").click()
    page.get_by_test_id("login-form").wait_for()
    assert page.get_by_test_id("current-user").inner_text() == ""


def user_row(page: Any, name: str) -> Any:
    return page.locator(f"[data-testid='user-table-row'][data-key='{name}']")


def test_enrol_mfa_then_sign_in_with_a_code_and_with_a_recovery_code(
    demo: Demo, page: Any, second_page: Any
) -> None:
    # An admin adds the user on the users page; the policy refuses a weak password first.
    sign_in(page, demo.url, "admin", ADMIN_PASSWORD)
    page.get_by_test_id("nav-users").click()
    page.get_by_test_id("user-add-open").click()
    assert "at least 12 characters" in page.get_by_test_id("password-policy").inner_text()
    page.get_by_test_id("user-add-username").fill(USER)
    page.get_by_test_id("user-add-role").select_option("operator")
    page.get_by_test_id("user-add-scopes").fill("acme/lyon/utilities")
    page.get_by_test_id("user-add-password").fill("Mia-pumps-2024")  # contains the name
    page.get_by_test_id("user-add-submit").click()
    refused = page.get_by_test_id("user-add-problem")
    assert refused.locator("dd[data-field='reason']").inner_text() == "password_policy"
    assert "username" in refused.inner_text()
    page.get_by_test_id("user-add-password").fill(PASSWORD)
    page.get_by_test_id("user-add-submit").click()
    row = user_row(page, USER)
    row.wait_for()
    assert "acme/lyon/utilities" in row.inner_text()
    assert row.locator(".mfa-state").inner_text() == "none"

    # The new user enrols on their account page.
    sign_in(second_page, demo.url, USER, PASSWORD)
    second_page.get_by_test_id("nav-account").click()
    assert second_page.get_by_test_id("account-mfa-state").inner_text() == "not set up"
    second_page.get_by_test_id("mfa-start").click()
    qr = second_page.get_by_test_id("mfa-qr")
    qr.wait_for()
    assert str(qr.get_attribute("src")).startswith("data:image/svg+xml")
    # The QR image really drew (the CSP's img-src allows data:).
    assert wait_js(second_page, "() => document.querySelector('[data-testid=mfa-qr]').naturalWidth")
    secret = second_page.get_by_test_id("mfa-secret").inner_text().replace(" ", "")
    uri = second_page.get_by_test_id("mfa-uri").text_content()
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == secret and parsed.name == USER
    totp = pyotp.TOTP(secret)

    # A wrong code is refused where it was typed; the session goes on.
    wrong = "000000" if totp.now() != "000000" else "111111"
    second_page.get_by_test_id("mfa-code").fill(wrong)
    second_page.get_by_test_id("mfa-verify").click()
    problem = second_page.get_by_test_id("mfa-problem")
    assert problem.locator("dd[data-field='reason']").inner_text() == "mfa_invalid"
    assert second_page.get_by_test_id("current-user").inner_text().startswith(USER)

    second_page.get_by_test_id("mfa-code").fill(totp.now())
    second_page.get_by_test_id("mfa-verify").click()
    codes_box = second_page.get_by_test_id("mfa-recovery-codes")
    codes_box.wait_for()
    codes = [c.strip() for c in codes_box.get_by_test_id("mfa-recovery-code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    done = second_page.get_by_test_id("mfa-done")
    assert done.is_disabled()
    second_page.get_by_test_id("mfa-saved").check()
    done.click()
    second_page.get_by_test_id("mfa-active").wait_for()
    assert second_page.get_by_test_id("account-mfa-state").inner_text() == "active"
    assert second_page.get_by_test_id("account-recovery-left").inner_text() == "10"

    # Signing in now asks for the second factor; a wrong code is refused.
    sign_out(second_page)
    enter_password(second_page, USER, PASSWORD)
    second_page.get_by_test_id("login-otp").wait_for()
    assert second_page.get_by_test_id("login-password").is_hidden()
    second_page.get_by_test_id("login-otp").fill(wrong)
    second_page.get_by_test_id("login-submit").click()
    wait_js(
        second_page,
        "() => document.querySelector('[data-testid=login-error]').textContent.includes('code')",
    )
    assert second_page.get_by_test_id("login-otp").is_visible()
    # The code of the next 30 s step: the one used to verify is spent (no replay).
    second_page.get_by_test_id("login-otp").fill(totp.at(time.time() + 30))
    second_page.get_by_test_id("login-submit").click()
    second_page.get_by_test_id("current-user").filter(has_text=USER).wait_for()
    second_page.get_by_test_id("account-facts").wait_for()  # back where they were

    # ... and with a recovery code instead, once.
    sign_out(second_page)
    enter_password(second_page, USER, PASSWORD)
    second_page.get_by_test_id("login-use-recovery").click()
    second_page.get_by_test_id("login-recovery").fill(codes[0])
    second_page.get_by_test_id("login-submit").click()
    second_page.get_by_test_id("current-user").filter(has_text=USER).wait_for()
    second_page.get_by_test_id("nav-account").click()
    wait_js(
        second_page,
        "() => document.querySelector('[data-testid=account-recovery-left]')?.textContent === '9'",
    )
    sign_out(second_page)
    enter_password(second_page, USER, PASSWORD)
    second_page.get_by_test_id("login-use-recovery").click()
    second_page.get_by_test_id("login-recovery").fill(codes[0])
    second_page.get_by_test_id("login-submit").click()
    wait_js(
        second_page,
        "() => document.querySelector('[data-testid=login-error]').textContent"
        ".includes('recovery code')",
    )

    # The admin sees the second factor, and resets it (lost phone).
    page.reload()
    row = user_row(page, USER)
    assert row.locator(".mfa-state").inner_text() == "active · 9 codes"
    row.get_by_test_id("user-reset-mfa").click()
    page.get_by_test_id("user-mfa-dialog").get_by_test_id("dialog-confirm").click()
    wait_js(
        page,
        f"() => document.querySelector(\"[data-key='{USER}'] .mfa-state\")?.textContent === 'none'",
    )
    sign_in(second_page, demo.url, USER, PASSWORD)  # the password alone again
    print(
        "\nFIGURE MFA in the browser: enrolled from the page's secret, verified with pyotp; "
        "wrong code refused; sign-in with TOTP ok; with a recovery code ok (9 left), "
        "reused recovery code refused; admin reset → password alone"
    )


def test_users_page_sets_role_and_scopes_and_disables(demo: Demo, page: Any) -> None:
    sign_in(page, demo.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{demo.url}/#/users")
    page.get_by_test_id("user-add-open").click()
    page.get_by_test_id("user-add-username").fill("olaf")
    page.get_by_test_id("user-add-password").fill("Quiet-River-Valve-9")
    page.get_by_test_id("user-add-submit").click()
    row = user_row(page, "olaf")
    row.wait_for()
    assert row.locator(".role-badge").inner_text() == "viewer"

    row.get_by_test_id("user-set-role").click()
    dialog = page.get_by_test_id("user-role-dialog")
    dialog.get_by_test_id("dialog-role").select_option("engineer")
    dialog.get_by_test_id("dialog-confirm").click()
    wait_js(
        page,
        "() => document.querySelector(\"[data-key='olaf'] .role-badge\")"
        "?.textContent === 'engineer'",
    )
    user_row(page, "olaf").get_by_test_id("user-set-scopes").click()
    dialog = page.get_by_test_id("user-scopes-dialog")
    dialog.get_by_test_id("dialog-scopes").fill("acme/lyon/packaging\nacme/lyon/utilities")
    dialog.get_by_test_id("dialog-confirm").click()
    wait_js(
        page,
        "() => document.querySelector(\"[data-key='olaf'] td.scopes\")?.textContent"
        " === 'acme/lyon/packaging, acme/lyon/utilities'",
    )
    # The admin cannot disable themselves: no button on their own row.
    assert user_row(page, "admin").get_by_test_id("user-disable").count() == 0

    user_row(page, "olaf").get_by_test_id("user-disable").click()
    page.get_by_test_id("user-disable-dialog").get_by_test_id("dialog-confirm").click()
    user_row(page, "olaf").get_by_test_id("user-enable").wait_for()
    assert user_row(page, "olaf").get_by_test_id("user-status").inner_text() == "disabled"
    refused = httpx.post(
        f"{demo.url}/api/auth/login", json={"username": "olaf", "password": "Quiet-River-Valve-9"}
    )
    assert refused.status_code == 401
    user_row(page, "olaf").get_by_test_id("user-enable").click()
    user_row(page, "olaf").get_by_test_id("user-disable").wait_for()
    signed = httpx.post(
        f"{demo.url}/api/auth/login", json={"username": "olaf", "password": "Quiet-River-Valve-9"}
    )
    assert signed.status_code == 200
    assert (signed.json()["role"], signed.json()["scopes"]) == (
        "engineer",
        ["acme/lyon/packaging", "acme/lyon/utilities"],
    )

    # A generated password, shown once.
    user_row(page, "olaf").get_by_test_id("user-reset-password").click()
    page.get_by_test_id("user-password-dialog").get_by_test_id("dialog-confirm").click()
    generated = page.get_by_test_id("generated-password").inner_text()
    assert len(generated) >= 12
    page.get_by_test_id("generated-password-dialog").get_by_role("button", name="Done").click()
    again = httpx.post(
        f"{demo.url}/api/auth/login", json={"username": "olaf", "password": generated}
    )
    assert again.status_code == 200
    print("\nFIGURE users page: add, role, scopes, disable (login 401), enable, reset password")


def test_api_token_shown_once_used_and_revoked(demo: Demo, page: Any) -> None:
    sign_in(page, demo.url, "admin", ADMIN_PASSWORD)
    page.get_by_test_id("nav-tokens").click()
    page.get_by_test_id("token-name").fill("mes-lyon")
    page.get_by_test_id("token-role").select_option("viewer")
    page.get_by_test_id("token-scopes").fill("acme/lyon/utilities")
    page.get_by_test_id("token-expiry").select_option(label="30 days")
    page.get_by_test_id("token-create").click()
    secret = page.get_by_test_id("token-secret").inner_text()
    assert secret.startswith("ist_")
    row = page.locator("[data-testid='token-table-row']").filter(has_text="mes-lyon")
    row.wait_for()
    assert row.get_by_test_id("token-state").inner_text() == "active"

    headers = {"Authorization": f"Bearer {secret}"}
    tags = httpx.get(f"{demo.url}/api/tags", headers=headers)
    assert tags.status_code == 200
    paths = [t["path"] for t in tags.json()]
    assert paths and all(p.startswith("acme/lyon/utilities/") for p in paths)

    page.get_by_test_id("token-secret-done").click()
    assert page.get_by_test_id("token-secret").count() == 0  # shown once

    row.get_by_test_id("token-revoke").click()
    page.get_by_test_id("token-revoke-dialog").get_by_test_id("dialog-confirm").click()
    row.wait_for(state="detached")  # revoked tokens are hidden by default
    page.get_by_test_id("tokens-show-all").check()
    revoked = page.locator("[data-testid='token-table-row']").filter(has_text="mes-lyon")
    assert revoked.get_by_test_id("token-state").inner_text() == "revoked"
    deadline = time.monotonic() + 2.0
    while True:
        status = httpx.get(f"{demo.url}/api/tags", headers=headers).status_code
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 401
    print("\nFIGURE tokens page: created (shown once), scoped reads ok, revoked → 401")


@pytest.fixture(scope="module")
def strict_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo plant with `api.mfa_required_roles: [supervisor]` and access tokens that
    live 6 s (the page must refresh them)."""
    from importlib import resources

    plant = resources.files("isthmus.examples").joinpath("demo-plant.yaml").read_text()
    assert "\napi:\n  port: 8080\n" in plant
    plant = plant.replace(
        "\napi:\n  port: 8080\n",
        "\napi:\n  port: 8080\n  token_ttl: 6s\n  mfa_required_roles: [supervisor]\n",
    )
    root = tmp_path_factory.mktemp("strict")
    config = root / "plant.yaml"
    config.write_text(plant)
    with running_demo(root / "data", "--config", str(config)) as running:
        yield running
        running.stop()


def test_a_role_that_requires_mfa_enrols_before_anything_else(strict_demo: Demo, page: Any) -> None:
    demo = strict_demo
    admin = httpx.post(
        f"{demo.url}/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    ).json()["access_token"]
    added = httpx.post(
        f"{demo.url}/api/users",
        headers={"Authorization": f"Bearer {admin}"},
        json={"username": "sue", "password": "Second-Pair-Of-Eyes-8", "role": "supervisor"},
    )
    assert added.status_code == 201, added.text

    page.goto(demo.url)
    enter_password(page, "sue", "Second-Pair-Of-Eyes-8")
    banner = page.get_by_test_id("mfa-required-banner")
    banner.wait_for()
    assert page.evaluate("() => location.hash") == "#/account"
    assert page.get_by_test_id("main-nav").is_hidden()
    # The session may do nothing else: the API says so too.
    token = page.evaluate("() => sessionStorage.getItem('isthmus.token')")
    assert httpx.get(
        f"{demo.url}/api/tags", headers={"Authorization": f"Bearer {token}"}
    ).status_code in (401, 403)

    # Another page is not reachable meanwhile (and trying does not end the session).
    page.evaluate("() => { location.hash = '#/commands'; }")
    wait_js(page, "() => location.hash === '#/account'")
    banner.wait_for()
    page.get_by_test_id("mfa-start").click()
    secret = page.get_by_test_id("mfa-secret").inner_text().replace(" ", "")
    page.get_by_test_id("mfa-code").fill(pyotp.TOTP(secret).now())
    page.get_by_test_id("mfa-verify").click()
    page.get_by_test_id("mfa-saved").check()
    page.get_by_test_id("mfa-done").click()
    # Enrolled: the whole tower opens, approvals included.
    page.get_by_test_id("tree").wait_for()
    page.get_by_test_id("nav-approvals").wait_for()
    assert page.get_by_test_id("main-nav").is_visible()

    # Access tokens live 6 s: the page refreshes them and the session goes on.
    first = page.evaluate("() => sessionStorage.getItem('isthmus.token')")
    page.wait_for_timeout(14_000)
    assert page.get_by_test_id("login-form").is_hidden()
    now = page.evaluate("() => sessionStorage.getItem('isthmus.token')")
    assert now != first
    reads = httpx.get(f"{demo.url}/api/tags", headers={"Authorization": f"Bearer {now}"})
    assert reads.status_code == 200
    assert page.get_by_test_id("connection-status").inner_text() == "live"
    expired = httpx.get(f"{demo.url}/api/tags", headers={"Authorization": f"Bearer {first}"})
    assert expired.status_code == 401
    print(
        "\nFIGURE MFA required for supervisors: first sign-in → enrolment only → tower; "
        "6 s access tokens refreshed by the page for 14 s"
    )
