"""The API as a contract: schemathesis against our own OpenAPI document.

A real uvicorn serves the app over a plant with history, an audit log and the command
gate; the schemathesis CLI runs every check it has (server errors, status codes, content
types, response schemas and headers, schema-valid data accepted, schema-invalid data
rejected, missing auth, unsupported methods...) over every operation, once with an admin
token and once without one, with a fixed seed and a bounded number of examples.  It must
find nothing.

Two allowances, per operation and written below: the time-window routes may answer 422
to data the schema accepts, because what two fields must satisfy together (``from``
before ``to``, at most 10,000 buckets, a window inside the representable time range)
is not expressible in OpenAPI; and so may the routes that set a password, whose policy
(not the username, not in the list of common passwords) is not either.  Everything a
single field must satisfy is in the schema.

The admin's session is renewed by signing in again whenever a route ended it (logout,
password change...); resets of passwords, which could be the admin's own, run in a second
pass with an admin API token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from isthmus.api.deps import route_guards
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import CommandsConfig
from isthmus.model.quality import Quality
from isthmus.security.audit import AuditLog
from isthmus.security.commands import build_gate
from tests.support import serve_app

from .plant import COUNT, POWER, RUNNING, TEMPERATURE, Plant, build_plant

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_040 * S
SECRET = "a long and uncommon passphrase 42"
EXAMPLES = 10
"""Hypothesis examples per operation and phase: both runs stay well under a minute."""
SEED = 20240601

CONFIG = r"""
# Our tag paths are several segments (acme/plant1/utilities/...): schemathesis never puts a
# "/" in a path parameter, so most values it draws from the pattern are filtered out; the
# stateful phase reaches the real tags through the links it infers from GET /api/tags.
suppress-health-check = ["filter_too_much"]

# What two fields must satisfy together: `from` before `to`, at most 10,000 buckets, a
# window inside the representable time range.
[[operations]]
include-path-regex = '^/api/(tags/\{path\}/(samples|interpolated)|audit)$'
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "422"]

# The password policy: not the username nor inside it, not a common password.
[[operations]]
include-path-regex = '^/api/(users|users/\{name\}/reset-password|auth/password)$'
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""

AS_ADMIN = f"""
# Sign in as the admin, and again whenever a route ended the session (logout, a password
# change, a second factor enrolled...): every operation is reached signed in.
[auth.dynamic.openapi.HTTPBearer]
path = "/api/auth/login"
payload = {{ username = "ada", password = "{SECRET}" }}
extract_selector = "/access_token"
retry_on = [401]

# A reset of the admin's own password would lock this run out: the next run does it.
[[operations]]
include-path-regex = '/reset-password$'
enabled = false
"""

REAL_TAG = r"""
# The tag routes on a real tag with history (schemathesis cannot draw a path of several
# segments; unknown tags and scopes are the RBAC matrix's business).
[[operations]]
include-path-regex = '^/api/tags/\{path\}/'
parameters = { path = "acme/plant1/packaging/line1/filler/F101/temperature" }
"""

WITH_API_TOKEN = """
# The password resets, with an admin API token (a reset of any password leaves it valid).
[[operations]]
exclude-path-regex = '/reset-password$'
enabled = false

[phases.stateful]
enabled = false  # one operation: no links to follow
"""

ANONYMOUS = """
# Without a token means without one: no signing up through POST /api/users either.
[auth]
auto-signup = false
"""


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    clock = ManualClock(start_ns=T0)
    plant = build_plant(tmp_path, clock)
    for k, path in enumerate([TEMPERATURE, RUNNING, COUNT, POWER]):
        n = np.arange(60)
        plant.store.write(
            Batch.of(np.full(60, plant.ids[path]), T0 - 600 * S + n * 10 * S, n + k, Quality.GOOD)
        )
    # The fuzzer's wrong passwords must not lock the admin out (lockout has its own tests).
    settings = plant.ctx.identity.settings
    plant.ctx.identity.settings = replace(settings, lockout_attempts=1_000_000)
    audit = AuditLog(tmp_path, clock=clock)
    plant.ctx.audit = audit
    plant.ctx.identity.audit = audit
    gate, _ = build_gate(CommandsConfig(), plant.ctx.catalog, [], plant.store, tmp_path, clock)
    gate.audit = audit
    plant.ctx.commands = gate
    plant.ctx.events.raise_event("link.lost", "meter", "meter: 10.0.0.7:502 unreachable")
    plant.ctx.identity.add_user("ada", SECRET, "admin", (), actor="test")
    yield plant
    audit.close()
    plant.store.close()


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    async with serve_app(app, log_level="critical", stop_within=10) as host:
        yield f"http://{host}"


async def schemathesis(
    base: str, tmp_path: Path, name: str, auth: str, *headers: str
) -> dict[str, Any]:
    """Run the schemathesis CLI; its JSON report."""
    config = tmp_path / f"{name}.toml"
    config.write_text(CONFIG + auth)
    report = tmp_path / f"{name}.json"
    args = [
        "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"{base}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
        "--seed", str(SEED), "--no-color", "--workers", "1", "--request-timeout", "10",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    for header in headers:
        args += ["--header", header]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert report.exists(), out.decode(errors="replace")[-5000:]
    result: dict[str, Any] = json.loads(report.read_text())
    result["output"] = out.decode(errors="replace")
    return result


async def test_schemathesis_finds_no_failure(plant: Plant, app: FastAPI, tmp_path: Path) -> None:
    _, api_token = plant.ctx.identity.create_token(
        "contract", "admin", (), expires_in_s=3600, actor="test"
    )
    passes = {
        "signed in as an admin": (AS_ADMIN + REAL_TAG, []),
        "with an admin API token": (WITH_API_TOKEN, [f"Authorization: Bearer {api_token}"]),
        "without a token": (ANONYMOUS, []),
    }
    started = time.monotonic()
    async with serve(app) as base:
        reports = await asyncio.gather(
            *(
                schemathesis(base, tmp_path, name.replace(" ", "-"), auth, *headers)
                for name, (auth, headers) in passes.items()
            )
        )
    runs = dict(zip(passes, reports, strict=True))
    for name, report in runs.items():
        cases = report["test_cases"]
        found = sum(f["count"] for f in report["failures"])
        print(
            f"\nschemathesis {name}: {report['operations']['tested']} operations, "
            f"{cases['generated']} test cases, all checks, failures = {found}, "
            f"errors = {len(report['errors'])}"
        )
    print(f"schemathesis: the three passes took {time.monotonic() - started:.1f} s")
    for name, report in runs.items():
        assert report["failures"] == [] and report["errors"] == [], (
            f"{name}: {report['failures']} {report['errors']}\n{report['output'][-8000:]}"
        )
        assert report["operations"]["tested"] == report["operations"]["selected"]
        assert report["exit_code"] == 0
    assert runs["signed in as an admin"]["auth"]["reauth_broke"] is False
    tested = sum(r["operations"]["tested"] for n, r in runs.items() if n != "without a token")
    assert tested == runs["without a token"]["operations"]["tested"] >= 20  # every one


# ---------------------------------------------------------------------------- the document


def test_every_route_documents_its_problems(app: FastAPI) -> None:
    """What any route can answer is in the document, as application/problem+json: 401
    where a token is taken, 403 where a permission is needed (a role the matrix refuses,
    or a session that must enrol a second factor), 422 where there are parameters or a
    body, 400 where a body may not parse."""
    spec = app.openapi()
    guarded = {
        (m.lower(), g.path)
        for g in route_guards(app)
        if g.permission is not None
        for m in g.methods
    }
    missing = []
    operations = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            operations += 1
            responses = op["responses"]
            wanted = set()
            if op.get("security"):
                wanted.add("401")
            if (method, path) in guarded:
                wanted.add("403")
            if op.get("parameters") or op.get("requestBody"):
                wanted.add("422")
            if op.get("requestBody"):
                wanted.add("400")
            missing += [f"{method.upper()} {path}: {code}" for code in wanted - set(responses)]
            for code, response in responses.items():
                if code[0] in "45":
                    content = response.get("content", {})
                    if set(content) != {"application/problem+json"}:
                        missing.append(f"{method.upper()} {path}: {code} is {set(content)}")
    print(f"\nOpenAPI: {operations} operations, undocumented problems = {len(missing)}")
    assert missing == []
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["Problem"]["properties"]["reason"]


async def test_a_wrong_method_names_every_method_of_the_path(app: FastAPI) -> None:
    """``GET`` and ``POST /api/commands`` are two routes: a 405 says ``Allow: GET, POST``
    (Starlette would name the first route's only)."""
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        r = await client.request("OPTIONS", "/api/commands")
        assert r.status_code == 405
        assert r.headers["content-type"] == "application/problem+json"
        assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
        r = await client.delete("/api/tags")
        assert r.status_code == 405 and "GET" in r.headers["allow"]
