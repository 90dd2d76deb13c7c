"""Access control from the OpenAPI routes: every route, every role, scoped or not.

Real users and API tokens (created through identity, logged in with their passwords)
call every operation of the OpenAPI document and the live WebSocket, with the path
parameters filled from the real tags of the test plant, inside and outside the scope
``acme/plant1/utilities``.  A *bypass* is an answer the permission matrix or the scopes
forbid: a protected route answering without a valid token, a role the matrix refuses
getting anything but a 403, a scoped caller seeing a name outside its scope anywhere
(lists, the tree, single reads, history, events, the stream), or a read of an
out-of-scope tag answering differently from a read of an unknown one.  A *wrong refusal*
is the opposite (an allowed caller refused): counted too, so the test cannot pass by
refusing everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from isthmus.api.deps import RouteGuard, route_guards
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import CommandsConfig
from isthmus.model.events import Severity
from isthmus.model.quality import Quality
from isthmus.security.audit import AuditLog
from isthmus.security.commands import build_gate
from isthmus.security.rbac import MATRIX, Role, in_scope, may_command, on_scope_path
from tests.support import serve_app

from .plant import COUNT, POWER, PREFIX, RUNNING, TAGS, TEMPERATURE, Plant, build_plant

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_040 * S
SCOPE = f"{PREFIX}/utilities"
INSIDE = [POWER]
OUTSIDE = [TEMPERATURE, RUNNING, COUNT]
ALL_TAGS = [*INSIDE, *OUTSIDE]
UNKNOWN = f"{SCOPE}/power/main/meter9/power"  # in the scope's shape, but no such tag
SECRET = "a long and uncommon passphrase 42"
CRITICALITY = {
    cfg_path: cfg.criticality for _, cfg in TAGS for cfg_path in [f"{PREFIX}/{cfg.path}"]
}


# ---------------------------------------------------------------------------- the plant


@dataclass
class Caller:
    label: str
    role: Role | None
    """None: no valid token (anonymous, or a forged one)."""
    scopes: tuple[str, ...] = ()
    username: str | None = None
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=T0)


# The test plant's tags, the temperature (criticality high, outside the scope) writable.
RBAC_TAGS = [
    (source, cfg.model_copy(update={"writable": True}) if cfg.path.endswith("temperature") else cfg)
    for source, cfg in TAGS
]


@pytest.fixture
def plant(tmp_path: Path, clock: ManualClock) -> Iterator[Plant]:
    plant = build_plant(tmp_path, clock, tags=RBAC_TAGS)
    ids = plant.ids
    for k, path in enumerate([*INSIDE, *OUTSIDE]):
        n = np.arange(30)
        plant.store.write(
            Batch.of(np.full(30, ids[path]), T0 - 300 * S + n * 10 * S, n + k, Quality.GOOD)
        )
    audit = AuditLog(tmp_path, clock=clock)
    plant.ctx.audit = audit
    plant.ctx.identity.audit = audit
    # The command gate, without a commander: what matters here is who may ask for what.
    gate, _ = build_gate(CommandsConfig(), plant.ctx.catalog, [], plant.store, tmp_path, clock)
    gate.audit = audit
    plant.ctx.commands = gate
    events = plant.ctx.events
    events.raise_event("tag.flatline", "meter", "no change for 1 h", tag=POWER)
    events.raise_event("tag.flatline", "plc1", "no change for 1 h", tag=TEMPERATURE)
    events.raise_event("link.lost", "meter", "meter: 10.0.0.7:502 unreachable")
    events.raise_event("link.lost", "plc1", "plc1: 10.0.0.5:502 unreachable")
    events.raise_event("source.rejected", "meter", f"a frame of {COUNT} was rejected")
    events.raise_event("tag.compare", "meter", "two tags disagree", tags=[POWER, RUNNING])
    events.raise_event("spool.overflow", "spool", "the spool is full", severity=Severity.INFO)
    yield plant
    audit.close()
    plant.store.close()


def make_callers(plant: Plant) -> list[Caller]:
    """One user per role, unscoped and scoped, and API tokens; logged in for real."""
    identity = plant.ctx.identity
    callers: list[Caller] = []
    for role in Role:
        for scopes in ((), (SCOPE,)):
            name = f"{role.value}-{'scoped' if scopes else 'all'}".replace("_", "-")
            identity.add_user(name, SECRET, role, scopes, actor="test")
            callers.append(Caller(f"user {name}", role, scopes, username=name))
    # Somebody scoped to what the scoped callers must not see: not even its name leaks.
    other = (f"{PREFIX}/packaging",)
    identity.add_user("packer", SECRET, Role.OPERATOR, other, actor="test")
    callers.append(Caller("user packer", Role.OPERATOR, other, username="packer"))
    for role, scopes in ((Role.VIEWER, (SCOPE,)), (Role.OPERATOR, ())):
        name = f"mes-{role.value}-{'scoped' if scopes else 'all'}"
        _, text = identity.create_token(name, role, scopes, expires_in_s=3600, actor="test")
        callers.append(Caller(f"token {name}", role, scopes, token=text))
    login_all(plant, callers)
    callers.append(Caller("anonymous", None))
    callers.append(Caller("forged token", None, token="eyJhbGciOiJIUzI1NiJ9.e30.Zm9yZ2Vk"))
    callers.append(Caller("unknown API token", None, token="ist_000000000000_" + "A" * 43))
    return callers


def login_all(plant: Plant, callers: list[Caller]) -> None:
    for caller in callers:
        if caller.username is not None:
            caller.token = plant.ctx.identity.login(caller.username, SECRET, "test").access_token


# ---------------------------------------------------------------------------- names


def leaks(text: str, scopes: tuple[str, ...]) -> list[str]:
    """Every name outside ``scopes`` that ``text`` contains: full paths of tags and of
    hierarchy nodes off the scopes' paths, and the tags' configured (relative) paths."""
    found = []
    for path in ALL_TAGS:
        if in_scope(path, scopes):
            continue
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            node = "/".join(parts[:i])
            if not on_scope_path(node, scopes) and node in text:
                found.append(node)
        relative = "/".join(parts[2:])
        if relative in text:
            found.append(relative)
    return sorted(set(found))


def outside(tag: str | None, caller: Caller) -> bool:
    """A real tag this (scoped) caller must not see."""
    return tag in ALL_TAGS and not in_scope(tag or "", caller.scopes)


# ---------------------------------------------------------------------------- requests


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]
    guard: RouteGuard


def operations(app: FastAPI) -> list[Operation]:
    spec = app.openapi()
    guards = {(m.lower(), g.path): g for g in route_guards(app) for m in g.methods}
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                ops.append(Operation(method, path, op, guards[(method, path)]))
    # Routes that act on the caller's own session (logout...) run last.
    ops.sort(key=lambda o: (o.path.startswith("/api/auth/"), o.path, o.method))
    return ops


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def example_value(name: str, schema: dict[str, Any], components: dict[str, Any], tag: str) -> Any:
    schema = _resolve(schema, components)
    if "anyOf" in schema:
        schema = _resolve(next(s for s in schema["anyOf"] if s.get("type") != "null"), components)
    if name in ("tag", "path", "command_id"):
        return tag
    if name == "interval":
        return "1m"
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {
            key: example_value(key, sub, components, tag)
            for key, sub in schema.get("properties", {}).items()
            if key in schema.get("required", [])
        }
    return "placeholder"


@dataclass
class Request:
    method: str
    url: str
    params: dict[str, Any]
    body: Any
    tag: str | None
    """The tag the request is about (named in the path or the body, or the tag of the
    command it names), if any."""
    key: str | None = None
    """What names the object in the URL or body (a tag path, a command id)."""
    unknown_key: str | None = None
    """The same, for an object that does not exist."""

    def twin(self) -> Request:
        """This request for an object that does not exist."""
        assert self.key is not None and self.unknown_key is not None
        body = json.loads(json.dumps(self.body).replace(self.key, self.unknown_key))
        url = self.url.replace(self.key, self.unknown_key)
        return Request(self.method, url, self.params, body, None, self.unknown_key)


NO_COMMAND = "no-such-command-1"


def requests_for(
    op: Operation, components: dict[str, Any], commands: dict[str, str]
) -> list[Request]:
    """The requests of one operation: one per tag (inside, outside, unknown) when it names
    a tag, one per command (on a tag inside, outside, unknown) when it names a command."""
    params = op.spec.get("parameters", [])
    body_schema = (
        op.spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )
    path_names = {p["name"] for p in params if p["in"] == "path"}
    body_names = (
        set(_resolve(body_schema, components).get("properties", {})) if body_schema else set()
    )
    variants: list[tuple[str | None, str | None, str | None]]  # key, its tag, unknown key
    if "path" in path_names or "tag" in path_names | body_names:
        variants = [(t, t, UNKNOWN) for t in ALL_TAGS] + [(UNKNOWN, None, None)]
    elif "command_id" in path_names:
        variants = [(cid, tag, NO_COMMAND) for cid, tag in commands.items()]
        variants.append((NO_COMMAND, None, None))
    else:
        variants = [(None, None, None)]
    out = []
    for key, tag, unknown_key in variants:
        url = op.path
        query: dict[str, Any] = {}
        for p in params:
            value = example_value(p["name"], p.get("schema", {}), components, key or "")
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", str(value))
            elif p["in"] == "query" and p.get("required"):
                query[p["name"]] = value
        body = None
        if body_schema is not None:
            body = example_value("body", body_schema, components, key or "")
        out.append(Request(op.method.upper(), url, query, body, tag, key, unknown_key))
    if "prefix" in {p["name"] for p in params}:  # a list under an outside prefix
        out.append(Request("GET", op.path, {"prefix": f"{PREFIX}/packaging"}, None, None))
    return out


# ---------------------------------------------------------------------------- the matrix


@dataclass
class Tally:
    checks: int = 0
    bypasses: list[str] = field(default_factory=list)
    wrong_refusals: list[str] = field(default_factory=list)
    forbidden: int = 0


def judge(
    tally: Tally,
    op: Operation,
    req: Request,
    caller: Caller,
    r: httpx.Response,
    unknown: httpx.Response | None,
) -> None:
    tally.checks += 1
    where = f"{req.method} {req.url} {req.params or ''} as {caller.label} → {r.status_code}"
    guard = op.guard
    if caller.role is None:
        if r.status_code != 401:
            tally.bypasses.append(f"{where}: a protected route answered without a valid token")
        return
    allowed = guard.signed_in or (
        guard.permission is not None and guard.permission in MATRIX[caller.role]
    )
    if not allowed:
        assert guard.permission is not None
        needed = f"{guard.permission[0]}:{guard.permission[1]}"
        if r.status_code != 403 or r.json().get("required") != needed:
            tally.bypasses.append(f"{where}: the matrix refuses {needed}")
        tally.forbidden += 1
        return
    commanded = req.method != "GET" and req.tag in CRITICALITY  # the criticality too
    if commanded and not may_command(caller.role, CRITICALITY[req.tag or ""]):
        if r.status_code < 300:
            tally.bypasses.append(f"{where}: commanded a {CRITICALITY[req.tag or '']} tag")
        elif r.status_code == 403 and not outside(req.tag, caller):
            return  # refused for the criticality: right
    if refused_by_access_control(r):
        tally.wrong_refusals.append(f"{where}: {r.text[:200]}")
        return
    hidden = req.tag in ALL_TAGS and req.method == "GET" and r.status_code == 404
    if hidden and not outside(req.tag, caller):
        tally.wrong_refusals.append(f"{where}: a tag inside the caller's scopes is hidden")
    if not caller.scopes:
        return
    if r.status_code < 300 and (found := leaks(r.text, caller.scopes)):
        tally.bypasses.append(f"{where}: names outside the scope: {found}")
    if outside(req.tag, caller):
        if r.status_code < 300:
            tally.bypasses.append(f"{where}: acted on a tag outside the scope")
        elif unknown is not None and not _alike(r, unknown, req):
            tally.bypasses.append(f"{where}: answers unlike an unknown tag ({r.text[:200]})")


def refused_by_access_control(r: httpx.Response) -> bool:
    """A refusal of the caller itself: its token (401 ``authentication``), its role (403
    naming the permission it lacks) or its session (``mfa_enrollment_required``).  The
    routes' own refusals (a wrong current password, one's own command to approve, a scope
    one may not grant...) are answers, not access control."""
    if r.status_code not in (401, 403):
        return False
    body = r.json()
    return body.get("reason") in ("authentication", "mfa_enrollment_required") or "required" in body


def _alike(r: httpx.Response, unknown: httpx.Response, req: Request) -> bool:
    assert req.key is not None and req.unknown_key is not None
    return r.status_code == unknown.status_code and _shape(r, req.key) == _shape(
        unknown, req.unknown_key
    )


def _shape(r: httpx.Response, key: str) -> Any:
    """A problem with the tag's name and the URL taken out: what must not differ between
    an out-of-scope tag and an unknown one."""
    try:
        body = r.json()
    except ValueError:
        return r.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "instance"}
        if isinstance(body.get("detail"), str):
            body["detail"] = body["detail"].replace(key, "<key>")
    return body


async def call(client: httpx.AsyncClient, req: Request, caller: Caller) -> httpx.Response:
    return await client.request(
        req.method, req.url, params=req.params, json=req.body, headers=caller.headers
    )


async def seed_commands(client: httpx.AsyncClient, admin: Caller) -> dict[str, str]:
    """One command on a tag inside the scope and one outside (no commander: they fail,
    and stay listed): command id → its tag."""
    out = {}
    for tag in (POWER, TEMPERATURE):
        body = {"tag": tag, "value": 20.0, "reason": "seed"}
        r = await client.post("/api/commands", json=body, headers=admin.headers)
        assert r.status_code == 201, r.text
        out[r.json()["id"]] = tag
    return out


def rbac_denials(audit: AuditLog) -> int:
    """The permission matrix's refusals in the audit log (not the scope refusals, nor the
    gate's own)."""
    found = audit.query(
        None, None, "rbac.denied", None, "denied", 1_000_000,
        where=lambda r: r["details"].get("reason") == "permission" and "access" in r["details"],
    )  # fmt: skip
    return len(found)


async def test_every_route_declares_its_permission(app: FastAPI) -> None:
    """No route can forget: every HTTP and WebSocket route of the app declares a
    permission, "any signed-in caller" or public-on-purpose, through one dependency."""
    guards = route_guards(app)
    declared = sum(1 for g in guards if g.declared)
    undeclared = [f"{g.methods} {g.path}" for g in guards if not g.declared]
    assert any(g.methods == ("WEBSOCKET",) for g in guards)
    print(f"\nroutes declaring their permission: {declared}/{declared + len(undeclared)}")
    assert undeclared == []
    public = {g.path for g in guards if g.public is not None}
    assert {"/health", "/api/auth/login", "/", "/docs"} <= public
    assert public <= {"/health", "/api/auth/login", "/api/auth/refresh", "/", "/docs"}, public


async def test_rbac_matrix_over_every_openapi_route(plant: Plant, app: FastAPI) -> None:
    callers = make_callers(plant)
    ops = operations(app)
    components = app.openapi().get("components", {}).get("schemas", {})
    assert plant.ctx.audit is not None
    denials_before = rbac_denials(plant.ctx.audit)
    tally = Tally()
    tested: set[str] = set()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        commands = await seed_commands(
            client, next(c for c in callers if c.label == "user admin-all")
        )
        for op in ops:
            if op.guard.public is not None:
                continue
            tested.add(f"{op.method.upper()} {op.path}")
            if op.path.startswith("/api/auth/"):
                login_all(plant, callers)  # an earlier one may have logged out
            for req in requests_for(op, components, commands):
                for caller in callers:
                    unknown = None
                    if outside(req.tag, caller):
                        unknown = await call(client, req.twin(), caller)
                        if unknown.status_code == 403 and "required" in unknown.json():
                            tally.forbidden += 1  # a refusal of the matrix too
                    r = await call(client, req, caller)
                    judge(tally, op, req, caller, r, unknown)
    await asyncio.sleep(0.2)  # scope refusals are audited without delaying the answer
    denials = rbac_denials(plant.ctx.audit) - denials_before
    roles = len({c.role for c in callers if c.role})
    print(
        f"\nRBAC matrix: {len(tested)} routes x {len(callers)} callers ({roles} roles, "
        f"scoped and not, users and API tokens, no or forged token): {tally.checks} checks, "
        f"bypasses = {len(tally.bypasses)}, wrong refusals = {len(tally.wrong_refusals)}, "
        f"matrix refusals audited = {denials}/{tally.forbidden}"
    )
    assert tally.bypasses == [], "\n".join(tally.bypasses)
    assert tally.wrong_refusals == [], "\n".join(tally.wrong_refusals)
    assert tally.forbidden > 0
    assert denials == tally.forbidden  # every refusal of the matrix audited, once
    for needed in ("GET /api/tags", "GET /api/tags/{path}/samples", "GET /api/events"):
        assert needed in tested


async def test_scoped_views_show_the_scope_and_nothing_beside(plant: Plant, app: FastAPI) -> None:
    """What the matrix proves absent, shown present: a scoped viewer sees its tags, the
    way down to them, and the events about them."""
    callers = {c.label: c for c in make_callers(plant)}
    scoped = callers["user viewer-scoped"].headers
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        tags = (await client.get("/api/tags", headers=scoped)).json()
        assert [t["path"] for t in tags] == INSIDE
        tree = (await client.get("/api/hierarchy", headers=scoped)).json()
        flat = json.dumps(tree)
        assert re.findall(r'"path": "([^"]+)"', flat) == [
            "acme",
            "acme/plant1",
            "acme/plant1/utilities",
            "acme/plant1/utilities/power",
            "acme/plant1/utilities/power/main",
            "acme/plant1/utilities/power/main/meter1",
            POWER,
        ]
        last = (await client.get("/api/last", headers=scoped)).json()["values"]
        assert [v["path"] for v in last] == INSIDE
        events = (await client.get("/api/events", headers=scoped)).json()["events"]
        assert [(e["kind"], e["source"]) for e in events] == [
            ("tag.flatline", "meter"),  # names POWER
            ("link.lost", "meter"),  # the meter's own source
        ]  # not: plc1's, a meter event naming COUNT, one naming RUNNING too, the spool's
        everyone = callers["user viewer-all"].headers
        all_events = (await client.get("/api/events", headers=everyone)).json()["events"]
        assert len(all_events) == 7
        page = (await client.get("/api/events?limit=1", headers=scoped)).json()
        rest = (await client.get(f"/api/events?after={page['next_after']}", headers=scoped)).json()
        assert [e["id"] for e in page["events"] + rest["events"]] == [e["id"] for e in events]
        # A read outside the scope answers like an unknown tag, and is audited.
        r = await client.get(f"/api/tags/{TEMPERATURE}/last", headers=scoped)
        assert r.status_code == 404 and r.json()["detail"] == f"unknown tag {TEMPERATURE!r}"
    assert plant.ctx.audit is not None
    for _ in range(100):
        found = plant.ctx.audit.query(None, None, "rbac.denied", "viewer-scoped", "denied", 10)
        if found:
            break
        await asyncio.sleep(0.02)
    assert [(r["details"]["reason"], r["details"]["tag"]) for r in found] == [
        ("scope", TEMPERATURE)
    ]


# ---------------------------------------------------------------------------- stream


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    async with serve_app(app) as host:
        yield f"ws://{host}/api/stream"


SUBSCRIPTIONS: list[list[str] | None] = [
    None,  # everything
    [],  # everything
    ["acme"],
    [f"{PREFIX}/packaging", SCOPE],
    ["#"],  # MQTT's "everything" is no prefix of ours: nothing at all
]


async def _first_samples(url: str, caller: Caller, subscribe: list[str] | None) -> Any:
    """What the stream sends this caller first: ``{"samples": ...}``, or the close code."""
    first: dict[str, Any] = {"token": caller.token} if caller.token else {"hello": 1}
    if subscribe is not None:
        first["subscribe"] = subscribe
    async with connect(url) as ws:
        await ws.send(json.dumps(first))
        try:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return "nothing"


async def test_stream_sends_each_caller_only_its_scope(plant: Plant, app: FastAPI) -> None:
    callers = make_callers(plant)
    ids = plant.ids
    batch = Batch.of(
        [ids[p] for p in [*OUTSIDE, *INSIDE]],
        T0 + S,
        [1.0, 0.0, 7.0, 42.0],
        Quality.GOOD,
    )
    checks = bypasses = 0
    failures: list[str] = []
    async with serve(app) as url:
        cases = [(c, s) for c in callers for s in SUBSCRIPTIONS]
        expected_subscribers = sum(1 for c, s in cases if c.role is not None)
        tasks = [asyncio.create_task(_first_samples(url, c, s)) for c, s in cases]
        for _ in range(500):
            if plant.ctx.transport.subscriber_count == expected_subscribers:
                break
            await asyncio.sleep(0.01)
        assert plant.ctx.transport.subscriber_count == expected_subscribers
        await plant.ctx.transport.publish(batch)
        results = await asyncio.gather(*tasks)
    for (caller, subscribe), got in zip(cases, results, strict=True):
        checks += 1
        label = f"{caller.label} subscribing to {subscribe}"
        if caller.role is None:
            if got != 4401:
                bypasses += 1
                failures.append(f"{label}: {got!r} instead of a 4401 close")
            continue
        if subscribe == ["#"]:
            if got != "nothing":
                failures.append(f"{label}: {got!r}")
                bypasses += isinstance(got, dict) and bool(leaks(json.dumps(got), caller.scopes))
            continue
        if not isinstance(got, dict):
            failures.append(f"{label}: {got!r}")
            continue
        paths = [s["path"] for s in got["samples"]]
        wanted = [t for t in ALL_TAGS if in_scope(t, caller.scopes)]
        if leaks(json.dumps(got), caller.scopes):
            bypasses += 1
        if sorted(paths) != sorted(wanted):
            failures.append(f"{label}: {paths}")
    print(
        f"\nlive stream: {checks} connections ({len(callers)} callers x "
        f"{len(SUBSCRIPTIONS)} subscriptions), bypasses = {bypasses}"
    )
    assert failures == []
    assert bypasses == 0


async def test_stream_applies_a_scope_change_at_once(plant: Plant, app: FastAPI) -> None:
    """Scopes narrowed while the socket is open apply to the next message; a disabled
    user's socket closes."""
    identity = plant.ctx.identity
    identity.add_user("watcher", SECRET, Role.VIEWER, (), actor="test")
    token = identity.login("watcher", SECRET, "test").access_token
    ids = plant.ids
    async with serve(app) as url, connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        for _ in range(500):
            if plant.ctx.transport.subscriber_count == 1:
                break
            await asyncio.sleep(0.01)
        identity.update_user("watcher", scopes=[SCOPE], actor="test")
        await plant.ctx.transport.publish(
            Batch.of([ids[TEMPERATURE], ids[POWER]], T0 + S, [1.0, 2.0], Quality.GOOD)
        )
        got = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert [s["path"] for s in got["samples"]] == [POWER]
        identity.update_user("watcher", disabled=True, actor="test")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_no_app_route_is_left_out_of_the_openapi_matrix(app: FastAPI) -> None:
    """The matrix walks the OpenAPI document: an HTTP route hidden from it would escape,
    unless it is one of the public pages."""
    spec_paths = set(app.openapi()["paths"])
    hidden = [g.path for g in route_guards(app) if "WEBSOCKET" not in g.methods]
    assert sorted(p for p in hidden if p not in spec_paths) == ["/", "/docs"]
