"""The command gate over the API, against the plant simulator (real OPC UA and Modbus TCP
servers): setpoints written and read back (verified), a critical one approved by a
second person, idempotent retries; then every unauthenticated and unauthorized attempt
of the issue's list — accepted = 0, audited = 100% (printed)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from isthmus.model.config import CommandsConfig
from isthmus.security.audit import iter_records
from tests.integration.security.system import (
    FILL_VOLUME_NODE,
    FILL_VOLUME_SP,
    LINE_SPEED_NODE,
    LINE_SPEED_SP,
    PUMP_ENABLE,
    PUMP_FLOW,
    PUMP_SPEED_SP,
    System,
    modbus_speed_sp,
    opcua_value,
    start_system,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(180),
]

APPROVAL_TIMEOUT_S = 1.5


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    data = tmp_path_factory.mktemp("gate") / "data"
    sys_ = await start_system(data, commands=CommandsConfig(approval_timeout=APPROVAL_TIMEOUT_S))
    try:
        await sys_.wait_connected()
        yield sys_
    finally:
        await sys_.stop()


def records(system: System) -> list[dict[str, Any]]:
    return list(iter_records(system.rt.data_dir))


async def post(system: System, token: str | None, path: str, body: Any) -> Any:
    """POST ``body`` as JSON (NaN and Infinity written as Python's json writes them: what
    a careless client sends)."""
    async with system.client(token) as client:
        return await client.post(
            path, content=json.dumps(body), headers={"Content-Type": "application/json"}
        )


async def test_modbus_setpoint_verified_with_read_back(system: System) -> None:
    token = system.token("ops", "operator")
    r = await post(system, token, "/api/commands",
                   {"tag": PUMP_SPEED_SP, "value": 42.5, "reason": "rinse cycle"})  # fmt: skip
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "verified", body
    assert (
        body["read_back"] == 42.5
        and body["requested_by"] == "token:" + body["requested_by"].split(":", 1)[1]
    )
    assert await modbus_speed_sp(system.sim.modbus_port) == 42.5
    async with system.client(token) as client:
        got = (await client.get(f"/api/commands/{body['id']}")).json()
    assert got["state"] == "verified" and got["tag"] == PUMP_SPEED_SP and got["value"] == 42.5
    for key in ("requested_by", "approved_by", "reason", "comment", "created_at",
                "updated_at", "read_back", "detail"):  # fmt: skip
        assert key in got


async def test_modbus_coil_and_opcua_setpoint_verified(system: System) -> None:
    token = system.token("eng", "engineer")
    r = await post(system, token, "/api/commands",
                   {"tag": PUMP_ENABLE, "value": False, "reason": "stop pump"})  # fmt: skip
    assert r.status_code == 201 and r.json()["state"] == "verified", r.text
    r = await post(system, token, "/api/commands",
                   {"tag": LINE_SPEED_SP, "value": 350.0, "reason": "format change"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "verified" and r.json()["read_back"] == 350.0
    assert await opcua_value(system.sim.opcua_port, LINE_SPEED_NODE) == 350.0


async def test_critical_setpoint_needs_a_second_person(system: System) -> None:
    sup = system.token("sup", "supervisor")
    boss = system.token("boss", "admin")
    r = await post(system, sup, "/api/commands",
                   {"tag": FILL_VOLUME_SP, "value": 750.0, "reason": "recipe 0.75 l"})  # fmt: skip
    assert r.status_code == 201 and r.json()["state"] == "awaiting_approval", r.text
    cid = r.json()["id"]
    async with system.client(boss) as client:
        inbox = (await client.get("/api/commands", params={"state": "awaiting_approval"})).json()
        assert cid in [c["id"] for c in inbox["commands"]]
        r = await client.post(f"/api/commands/{cid}/approve", json={"comment": "QA ok"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "verified" and r.json()["approved_by"].startswith("token:")
    assert r.json()["comment"] == "QA ok"
    assert await opcua_value(system.sim.opcua_port, FILL_VOLUME_NODE) == 750.0


async def test_idempotent_retry(system: System) -> None:
    token = system.token("mes", "operator")
    body = {"tag": PUMP_SPEED_SP, "value": 40.0, "reason": "work order 17", "id": "wo-17-sp"}
    before = system.gate.executor.writes  # type: ignore[attr-defined]
    first = await post(system, token, "/api/commands", body)
    again = await post(system, token, "/api/commands", body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and first.json()["id"] == "wo-17-sp"
    assert system.gate.executor.writes == before + 1  # type: ignore[attr-defined]
    other = await post(system, token, "/api/commands", {**body, "value": 41.0})
    assert other.status_code == 409 and other.json()["reason"] == "conflict"
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_bad_attempts_accepted_0_audited_100_percent(system: System) -> None:
    op = system.token("op2", "operator")
    viewer = system.token("viewer", "viewer")
    scoped = system.token("utilities-op", "operator", ("acme/lyon/utilities",))
    sup = system.token("sup2", "supervisor")
    admin = system.token("admin2", "admin")
    short = system.token("short", "admin", expires_in_s=0.3)
    gone = system.token("gone", "admin")
    system.revoke("gone")
    await asyncio.sleep(0.5)  # `short` expired

    # a critical command by sup2, for the own-approval attempt; one that will expire
    def fill(value: float, why: str) -> dict[str, Any]:
        return {"tag": FILL_VOLUME_SP, "value": value, "reason": why}

    late = (await post(system, sup, "/api/commands", fill(510.0, "late"))).json()
    assert late["state"] == "awaiting_approval"
    await asyncio.sleep(APPROVAL_TIMEOUT_S + 0.2)
    own = (await post(system, sup, "/api/commands", fill(520.0, "own"))).json()
    assert own["state"] == "awaiting_approval"

    sp = {"tag": PUMP_SPEED_SP, "reason": "attempt"}
    attempts: list[tuple[str, str | None, str, Any, int, str]] = [
        ("no token", None, "/api/commands", {**sp, "value": 50.0}, 401, "authentication"),
        ("malformed token", "not-a-token", "/api/commands", {**sp, "value": 50.0}, 401,
         "authentication"),
        ("forged token", "ist_0000_abcdef", "/api/commands", {**sp, "value": 50.0}, 401,
         "authentication"),
        ("expired token", short, "/api/commands", {**sp, "value": 50.0}, 401, "authentication"),
        ("revoked token", gone, "/api/commands", {**sp, "value": 50.0}, 401, "authentication"),
        ("viewer", viewer, "/api/commands", {**sp, "value": 50.0}, 403, "permission"),
        ("operator, critical tag", op, "/api/commands",
         {"tag": FILL_VOLUME_SP, "value": 500.0, "reason": "x"}, 403, "permission"),
        ("operator, high tag", op, "/api/commands",
         {"tag": LINE_SPEED_SP, "value": 300.0, "reason": "x"}, 403, "permission"),
        ("scoped user, out-of-scope tag", scoped, "/api/commands",
         {"tag": LINE_SPEED_SP, "value": 300.0, "reason": "x"}, 404, "unknown_tag"),
        ("unknown tag", admin, "/api/commands",
         {"tag": PUMP_SPEED_SP + "_nope", "value": 1.0, "reason": "x"}, 404, "unknown_tag"),
        ("read-only tag", admin, "/api/commands",
         {"tag": PUMP_FLOW, "value": 1.0, "reason": "x"}, 422, "not_writable"),
        ("string for a float tag", op, "/api/commands", {**sp, "value": "50"}, 422, "type"),
        ("NaN", op, "/api/commands", {**sp, "value": math.nan}, 422, "type"),
        ("Infinity", op, "/api/commands", {**sp, "value": math.inf}, 422, "type"),
        ("bool for a float tag", op, "/api/commands", {**sp, "value": True}, 422, "type"),
        ("beyond limits", op, "/api/commands", {**sp, "value": 150.0}, 422, "limits"),
        ("below limits", op, "/api/commands", {**sp, "value": -1.0}, 422, "limits"),
        ("own approval", sup, f"/api/commands/{own['id']}/approve", {"comment": "me"}, 403,
         "self_approval"),
        ("approval of an expired command", admin, f"/api/commands/{late['id']}/approve",
         {"comment": "late"}, 409, "expired"),
        ("approval by an operator", op, f"/api/commands/{own['id']}/approve", {"comment": ""},
         403, "permission"),
        ("approval without a token", None, f"/api/commands/{own['id']}/approve",
         {"comment": ""}, 401, "authentication"),
        ("rejection by the requester", sup, f"/api/commands/{own['id']}/reject",
         {"comment": ""}, 403, "self_approval"),
    ]  # fmt: skip
    writes_before = system.gate.executor.writes  # type: ignore[attr-defined]
    device_before = await modbus_speed_sp(system.sim.modbus_port)
    accepted = audited = 0
    for name, token, path, body, status, reason in attempts:
        if status == 401:
            # refused tokens and anonymous calls are audited at most once a second per
            # client (probes must not flood the log): one attempt per second here
            await asyncio.sleep(1.05)
        seen = {r["seq"] for r in records(system)}
        r = await post(system, token, path, body)
        problem = r.json()
        ok = r.status_code == status and problem.get("reason") == reason
        assert ok, (name, r.status_code, problem)
        assert r.headers["content-type"].startswith("application/problem+json"), name
        if r.status_code < 400:
            accepted += 1
        new = [x for x in records(system) if x["seq"] not in seen]
        if any(x["outcome"] in ("denied", "refused") for x in new):
            audited += 1
        else:
            print(f"not audited: {name}: {[x['action'] for x in new]}")
    writes = system.gate.executor.writes - writes_before  # type: ignore[attr-defined]
    print(
        f"\nbad command attempts: {len(attempts)}, accepted = {accepted}, "
        f"audited = {audited}/{len(attempts)} ({100 * audited / len(attempts):.0f}%), "
        f"device writes = {writes}"
    )
    assert accepted == 0 and writes == 0
    assert audited == len(attempts)
    assert await modbus_speed_sp(system.sim.modbus_port) == device_before
    async with system.client(admin) as client:
        got = (await client.get(f"/api/commands/{late['id']}")).json()
    assert got["state"] == "expired"


async def test_reads_are_scoped_and_documented(system: System) -> None:
    scoped = system.token("utilities-reader", "operator", ("acme/lyon/utilities",))
    async with system.client(scoped) as client:
        listed = (await client.get("/api/commands", params={"limit": 1000})).json()["commands"]
        assert listed and all(c["tag"].startswith("acme/lyon/utilities/") for c in listed)
        admin = system.token("admin3", "admin")
    async with system.client(admin) as client:
        everything = (await client.get("/api/commands", params={"limit": 1000})).json()
        packaging = [c for c in everything["commands"] if "/packaging/" in c["tag"]]
        assert packaging
        openapi = (await client.get("/openapi.json")).json()
    async with system.client(scoped) as client:
        r = await client.get(f"/api/commands/{packaging[0]['id']}")
        assert r.status_code == 404 and r.json()["reason"] == "unknown_command"
    post_op = openapi["paths"]["/api/commands"]["post"]["responses"]
    for status in ("201", "401", "403", "404", "409", "422", "429", "503"):
        assert status in post_op, status
        if status != "201":
            assert "application/problem+json" in post_op[status]["content"]
