"""/api/auth, /api/users and /api/tokens through the real app in process, with a manual
clock and a real audit log: login, refresh, logout, lockout, MFA (enrol, TOTP, recovery
codes, replay, required per role), users and tokens managed through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from isthmus.api import create_app
from isthmus.model.clock import ManualClock
from isthmus.security import mfa as totp
from isthmus.security.audit import AuditLog
from isthmus.security.identity import IdentitySettings
from isthmus.security.rbac import Role

from .plant import PASSWORD, USERNAME, Plant, build_plant

pytestmark = pytest.mark.integration

T0 = 1_700_000_000 * 10**9
PW = "a long unusual passphrase"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=T0)


@pytest.fixture
def plant(tmp_path: Path, clock: ManualClock) -> Iterator[Plant]:
    plant = build_plant(tmp_path, clock)
    audit = AuditLog(tmp_path, clock=clock)
    plant.ctx.audit = audit
    identity = plant.ctx.identity
    identity.audit = audit
    identity.settings = IdentitySettings(token_ttl_s=15 * 60.0)
    identity.tokens.ttl_s = 15 * 60
    identity.throttle.base_s = 0.0  # the lockout is under test, not the delay
    identity.add_user("root", PW, Role.ADMIN, actor="test")
    identity.add_user("sec", PW, Role.SECURITY_ADMIN, actor="test")
    yield plant
    audit.close()
    plant.store.close()


@pytest.fixture
async def client(plant: Plant) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(plant.ctx)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


async def login(client: httpx.AsyncClient, username: str, password: str, **more: str) -> Any:
    r = await client.post(
        "/api/auth/login", json={"username": username, "password": password, **more}
    )
    assert r.status_code == 200, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and "Traceback" not in r.text
    return body


def audited(plant: Plant, action: str) -> list[dict[str, Any]]:
    assert plant.ctx.audit is not None
    return [r for r in plant.ctx.audit.query(action=action) if r["action"] == action]


# --------------------------------------------------------------------------- auth


async def test_login_me_refresh_logout(client: httpx.AsyncClient, plant: Plant) -> None:
    body = await login(client, USERNAME, PASSWORD)
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["refresh_token"].startswith("isr_") and body["role"] == "operator"
    assert body["mfa_enrollment_required"] is False
    me = (await client.get("/api/auth/me", headers=bearer(body["access_token"]))).json()
    assert (me["username"], me["kind"], me["role"], me["scopes"]) == (
        USERNAME,
        "user",
        "operator",
        [],
    )
    assert me["session_id"] == body["session_id"] and me["mfa_active"] is False
    assert me["expires_at"].endswith("Z")
    r = await client.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert r.status_code == 200
    fresh = r.json()
    r = await client.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert problem(r, 401)["reason"] == "authentication"  # reused: the session is revoked
    r = await client.get("/api/tags", headers=bearer(fresh["access_token"]))
    assert problem(r, 401)["detail"].startswith("session ended")
    again = await login(client, USERNAME, PASSWORD)
    r = await client.post("/api/auth/logout", headers=bearer(again["access_token"]))
    assert r.status_code == 204
    for path in ("/api/tags", "/api/auth/me"):
        r = await client.get(path, headers=bearer(again["access_token"]))
        problem(r, 401)
    assert audited(plant, "auth.logout") and audited(plant, "auth.refresh_reused")


async def test_wrong_password_and_lockout(
    client: httpx.AsyncClient, plant: Plant, clock: ManualClock
) -> None:
    for _ in range(5):
        r = await client.post(
            "/api/auth/login", json={"username": USERNAME, "password": "not the password"}
        )
        assert problem(r, 401)["reason"] == "credentials"
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    body = problem(r, 429)
    assert body["reason"] == "locked" and r.headers["retry-after"] == "900"
    assert PASSWORD not in r.text
    users = (await client.get("/api/users", headers=bearer(await _root(client)))).json()
    olga = next(u for u in users if u["username"] == USERNAME)
    assert olga["locked_until"] is not None
    clock.advance(15 * 60)
    await login(client, USERNAME, PASSWORD)
    assert len(audited(plant, "auth.lockout")) == 1
    assert len(audited(plant, "auth.login_failed")) == 6


async def _root(client: httpx.AsyncClient) -> str:
    return str((await login(client, "root", PW))["access_token"])


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "ist_000000000000_" + "A" * 43, "eyJhbGciOiJub25lIn0.e30."],
)
async def test_bad_tokens_are_401_problems(client: httpx.AsyncClient, token: str) -> None:
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    problem(r, 401)


async def test_access_token_expiry(client: httpx.AsyncClient, clock: ManualClock) -> None:
    body = await login(client, USERNAME, PASSWORD)
    clock.advance(15 * 60)
    r = await client.get("/api/tags", headers=bearer(body["access_token"]))
    assert problem(r, 401)["detail"] == "token expired"
    r = await client.post("/api/auth/refresh", json={"refresh_token": body["refresh_token"]})
    r = await client.get("/api/tags", headers=bearer(r.json()["access_token"]))
    assert r.status_code == 200


async def test_change_own_password(client: httpx.AsyncClient) -> None:
    body = await login(client, USERNAME, PASSWORD)
    other = await login(client, USERNAME, PASSWORD)
    h = bearer(body["access_token"])
    r = await client.post(
        "/api/auth/password",
        headers=h,
        json={"current_password": PASSWORD, "new_password": "olga1234567890"},
    )
    assert problem(r, 422)["invalid_params"][0]["name"] == "password"
    r = await client.post(
        "/api/auth/password", headers=h, json={"current_password": "nope", "new_password": PW}
    )
    assert problem(r, 422)["reason"] == "credentials"  # an answer, not "sign in again"
    assert (await client.get("/api/tags", headers=h)).status_code == 200
    r = await client.post(
        "/api/auth/password", headers=h, json={"current_password": PASSWORD, "new_password": PW}
    )
    assert r.status_code == 204
    assert (await client.get("/api/tags", headers=h)).status_code == 200  # this session lives
    problem(await client.get("/api/tags", headers=bearer(other["access_token"])), 401)
    await login(client, USERNAME, PW)


# --------------------------------------------------------------------------- MFA


async def test_mfa_enrol_then_login_with_totp_and_recovery_code(
    client: httpx.AsyncClient, plant: Plant, clock: ManualClock
) -> None:
    body = await login(client, USERNAME, PASSWORD)
    h = bearer(body["access_token"])
    r = await client.post("/api/auth/mfa/enroll", headers=h)
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["otpauth_uri"].startswith("otpauth://totp/") and e["secret"] in e["otpauth_uri"]
    assert "<svg" in e["qr_svg"] and e["qr_data_uri"].startswith("data:image/svg+xml")
    r = await client.post("/api/auth/mfa/verify", headers=h, json={"otp": "000000"})
    assert problem(r, 422)["reason"] == "mfa_invalid"  # the session stays valid
    step = clock.now_ns() // 10**9 // 30
    r = await client.post(
        "/api/auth/mfa/verify", headers=h, json={"otp": totp.code_at(e["secret"], step)}
    )
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10
    me = (await client.get("/api/auth/me", headers=h)).json()
    assert me["mfa_active"] and me["mfa"] and me["recovery_codes_left"] == 10
    # Now a password alone is not enough.
    clock.advance(30)
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    body = problem(r, 401)
    assert body["reason"] == "mfa_required" and body["mfa_required"] is True
    code = totp.code_at(e["secret"], clock.now_ns() // 10**9 // 30)
    ok = await login(client, USERNAME, PASSWORD, otp=code)
    assert ok["mfa"] is True
    r = await client.post(
        "/api/auth/login", json={"username": USERNAME, "password": PASSWORD, "otp": code}
    )
    assert problem(r, 401)["reason"] == "mfa_invalid"  # replayed within its window
    rec = await login(client, USERNAME, PASSWORD, recovery_code=codes[0])
    assert rec["mfa"] is True
    r = await client.post(
        "/api/auth/login",
        json={"username": USERNAME, "password": PASSWORD, "recovery_code": codes[0]},
    )
    assert problem(r, 401)["reason"] == "mfa_invalid"  # once only
    assert len(audited(plant, "mfa.enrolled")) == 1
    assert len(audited(plant, "mfa.recovery_used")) == 1
    # An admin resets it (lost phone): the password alone works again.
    root = bearer(await _root(client))
    r = await client.post(f"/api/users/{USERNAME}/reset-mfa", headers=root)
    assert r.status_code == 200 and r.json()["mfa_active"] is False
    await login(client, USERNAME, PASSWORD)


async def test_mfa_required_by_role(
    client: httpx.AsyncClient, plant: Plant, clock: ManualClock
) -> None:
    identity = plant.ctx.identity
    identity.settings = IdentitySettings(
        token_ttl_s=900.0, mfa_required_roles=frozenset({Role.ADMIN})
    )
    assert identity.warn_admins_without_mfa() == ["root"]
    body = await login(client, "root", PW)
    assert body["mfa_enrollment_required"] is True
    h = bearer(body["access_token"])
    for method, path in (("GET", "/api/tags"), ("GET", "/api/users"), ("POST", "/api/tokens")):
        r = await client.request(method, path, headers=h, json={"name": "x", "role": "viewer"})
        assert problem(r, 403)["reason"] == "mfa_enrollment_required"
    me = (await client.get("/api/auth/me", headers=h)).json()
    assert me["mfa_enrollment_required"] is True
    e = (await client.post("/api/auth/mfa/enroll", headers=h)).json()
    step = clock.now_ns() // 10**9 // 30
    r = await client.post(
        "/api/auth/mfa/verify", headers=h, json={"otp": totp.code_at(e["secret"], step)}
    )
    assert r.status_code == 200
    assert (await client.get("/api/users", headers=h)).status_code == 200  # a full session now
    assert identity.warn_admins_without_mfa() == []


async def test_a_token_has_no_second_factor(client: httpx.AsyncClient, plant: Plant) -> None:
    _, text = plant.ctx.identity.create_token("mes", Role.VIEWER, expires_in_s=600, actor="t")
    problem(await client.post("/api/auth/mfa/enroll", headers=bearer(text)), 403)
    problem(await client.post("/api/auth/logout", headers=bearer(text)), 409)
    me = (await client.get("/api/auth/me", headers=bearer(text))).json()
    assert (me["kind"], me["username"], me["role"]) == ("token", "mes", "viewer")


# --------------------------------------------------------------------------- users


async def test_users_crud(client: httpx.AsyncClient, plant: Plant) -> None:
    h = bearer(await _root(client))
    r = await client.post(
        "/api/users",
        headers=h,
        json={
            "username": "piotr",
            "password": PW,
            "role": "engineer",
            "scopes": ["acme/plant1/utilities/"],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["scopes"] == ["acme/plant1/utilities"] and "password" not in r.text
    problem(
        await client.post("/api/users", headers=h, json={"username": "Piotr", "password": PW}), 409
    )
    r = await client.post(
        "/api/users", headers=h, json={"username": "jan", "password": "jan-password-1"}
    )
    body = problem(r, 422)
    assert body["reason"] == "password_policy" and body["invalid_params"][0]["name"] == "password"
    r = await client.post("/api/users", headers=h, json={"username": "bad name", "password": PW})
    assert problem(r, 422)["invalid_params"][0]["name"] == "username"
    r = await client.post(
        "/api/users", headers=h, json={"username": "jan", "password": PW, "role": "god"}
    )
    problem(r, 422)
    names = [u["username"] for u in (await client.get("/api/users", headers=h)).json()]
    assert names == ["olga", "piotr", "root", "sec"]
    assert "password_hash" not in (await client.get("/api/users", headers=h)).text
    piotr = await login(client, "piotr", PW)
    r = await client.patch("/api/users/piotr", headers=h, json={"role": "viewer", "scopes": []})
    assert (r.json()["role"], r.json()["scopes"]) == ("viewer", [])
    me = (await client.get("/api/auth/me", headers=bearer(piotr["access_token"]))).json()
    assert me["role"] == "viewer"  # at once, on the same token
    r = await client.patch("/api/users/piotr", headers=h, json={"disabled": True})
    assert r.json()["disabled"] is True
    problem(await client.get("/api/tags", headers=bearer(piotr["access_token"])), 401)
    r = await client.post("/api/auth/login", json={"username": "piotr", "password": PW})
    assert problem(r, 401)["reason"] == "credentials"
    r = await client.post("/api/users/piotr/reset-password", headers=h)
    generated = r.json()["password"]
    assert len(generated) >= 24
    await client.patch("/api/users/piotr", headers=h, json={"disabled": False})
    await login(client, "piotr", generated)
    assert (await client.delete("/api/users/piotr", headers=h)).status_code == 204
    problem(await client.get("/api/users/piotr", headers=h), 404)
    problem(await client.delete("/api/users/piotr", headers=h), 404)
    problem(await client.delete("/api/users/root", headers=h), 403)  # not oneself
    problem(await client.patch("/api/users/root", headers=h, json={"role": "viewer"}), 403)
    actions = [r["action"] for r in plant.ctx.audit.query(action="user")]  # type: ignore[union-attr]
    assert actions.count("user.added") >= 3 and "user.deleted" in actions
    assert "user.password_reset" in actions and actions.count("user.changed") >= 3


async def test_security_admin_may_not_grant_admin(client: httpx.AsyncClient) -> None:
    h = bearer((await login(client, "sec", PW))["access_token"])
    r = await client.post(
        "/api/users", headers=h, json={"username": "eve", "password": PW, "role": "admin"}
    )
    assert problem(r, 403)["reason"] == "permission"
    problem(await client.patch("/api/users/root", headers=h, json={"disabled": True}), 403)
    problem(await client.post("/api/users/root/reset-password", headers=h, json={}), 403)
    r = await client.post(
        "/api/users", headers=h, json={"username": "eve", "password": PW, "role": "operator"}
    )
    assert r.status_code == 201
    h_olga = bearer((await login(client, USERNAME, PASSWORD))["access_token"])
    r = await client.get("/api/users", headers=h_olga)
    assert problem(r, 403)["reason"] == "permission"  # an operator manages no user


async def test_the_last_admin_stays(client: httpx.AsyncClient) -> None:
    h = bearer((await login(client, "sec", PW))["access_token"])
    root = bearer(await _root(client))
    await client.post(
        "/api/users", headers=root, json={"username": "boss", "password": PW, "role": "admin"}
    )
    boss = bearer((await login(client, "boss", PW))["access_token"])
    assert (await client.delete("/api/users/root", headers=boss)).status_code == 204
    r = await client.patch("/api/users/boss", headers=h, json={"disabled": True})
    problem(r, 403)  # sec may not touch an admin anyway
    r = await client.post("/api/users", headers=boss, json={"username": "x", "password": PW})
    assert r.status_code == 201
    r = await client.delete("/api/users/x", headers=boss)
    assert r.status_code == 204


# --------------------------------------------------------------------------- tokens


async def test_tokens_create_list_use_revoke_expire(
    client: httpx.AsyncClient, plant: Plant, clock: ManualClock
) -> None:
    h = bearer(await _root(client))
    r = await client.post(
        "/api/tokens",
        headers=h,
        json={
            "name": "mes-lyon",
            "role": "viewer",
            "scopes": ["acme/plant1/utilities"],
            "expires_in": 86400,
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    text = created["token"]
    assert text.startswith(f"ist_{created['id']}_") and created["state"] == "active"
    listed = (await client.get("/api/tokens", headers=h)).json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert text.split("_", 2)[2] not in (await client.get("/api/tokens", headers=h)).text
    r = await client.get("/api/tags", headers=bearer(text))
    assert r.status_code == 200
    assert [t["path"] for t in r.json()] == ["acme/plant1/utilities/power/main/meter1/power"]
    assert audited(plant, "token.used")[0]["actor"] == f"token:{created['id']}"
    problem(await client.get("/api/users", headers=bearer(text)), 403)  # a viewer token
    assert (await client.delete(f"/api/tokens/{created['id']}", headers=h)).status_code == 204
    assert (
        problem(await client.get("/api/tags", headers=bearer(text)), 401)["detail"]
        == "API token revoked"
    )
    problem(await client.delete("/api/tokens/000000000000", headers=h), 404)
    r = await client.post("/api/tokens", headers=h, json={"name": "short", "expires_in": 60})
    short = r.json()["token"]
    clock.advance(60)
    assert (
        problem(await client.get("/api/tags", headers=bearer(short)), 401)["detail"]
        == "API token expired"
    )
    states = {t["name"]: t["state"] for t in (await client.get("/api/tokens", headers=h)).json()}
    assert states == {"mes-lyon": "revoked", "short": "expired"}
    for bad in ({"name": "x y"}, {"name": "x", "expires_in": -1}, {"name": "x", "role": "boss"}):
        problem(await client.post("/api/tokens", headers=h, json=bad), 422)
    assert len(audited(plant, "token.revoked")) == 1
