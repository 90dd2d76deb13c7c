"""``isthmus users ...`` and ``isthmus tokens ...`` as subprocesses against the data
directory of a server running in this process: the server sees each change within
2 seconds.  A corrupt users file stops the CLI and the server with file and line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus.api import create_app
from isthmus.model.clock import SystemClock
from isthmus.security.audit import AuditLog, verify

from .plant import PASSWORD, USERNAME, Plant, build_plant

pytestmark = pytest.mark.integration

PW = "a long unusual passphrase"
SEEN_WITHIN_S = 2.0


def isthmus(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    plant = build_plant(tmp_path, SystemClock())
    audit = AuditLog(tmp_path)
    plant.ctx.audit = audit
    plant.ctx.identity.audit = audit
    yield plant
    audit.close()
    plant.store.close()


@pytest.fixture
async def client(plant: Plant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(plant.ctx)), base_url="http://test"
    ) as c:
        yield c


async def seen_after(client: httpx.AsyncClient, token: str, check: Any) -> float:
    """Seconds until ``check(response of GET /api/auth/me)`` holds (polling every 50 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < 5.0:
        r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        if check(r):
            return time.monotonic() - start
        await _sleep(0.05)
    raise AssertionError(f"not seen in 5 s: {r.status_code} {r.text}")


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_cli_changes_are_seen_by_the_running_server(
    client: httpx.AsyncClient, plant: Plant, tmp_path: Path
) -> None:
    data = ["--data-dir", str(tmp_path)]
    r = await client.post("/api/auth/login", json={"username": USERNAME, "password": PASSWORD})
    token = r.json()["access_token"]
    seen: dict[str, float] = {}

    # users add (the interface contract), then a login through the server.
    done = isthmus(
        "users",
        "add",
        "piotr",
        "--role",
        "engineer",
        "--scope",
        "acme/plant1/utilities",
        "--password-stdin",
        *data,
        stdin=PW + "\n",
    )
    assert done.returncode == 0, done.stderr
    start = time.monotonic()
    r = await client.post("/api/auth/login", json={"username": "piotr", "password": PW})
    seen["users add"] = time.monotonic() - start
    assert r.status_code == 200 and r.json()["scopes"] == ["acme/plant1/utilities"]

    done = isthmus("users", "set-role", USERNAME, "viewer", *data)
    assert done.returncode == 0, done.stderr
    seen["users set-role"] = await seen_after(
        client, token, lambda r: r.status_code == 200 and r.json()["role"] == "viewer"
    )
    done = isthmus("users", "set-scopes", USERNAME, "acme/plant1/packaging", *data)
    assert done.returncode == 0, done.stderr
    seen["users set-scopes"] = await seen_after(
        client, token, lambda r: r.json()["scopes"] == ["acme/plant1/packaging"]
    )
    done = isthmus("users", "disable", USERNAME, *data)
    assert done.returncode == 0, done.stderr
    seen["users disable"] = await seen_after(client, token, lambda r: r.status_code == 401)

    done = isthmus("tokens", "create", "mes", "--role", "viewer", "--expires", "1d", *data)
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    assert text.startswith("ist_") and "Copy it now" in done.stderr
    start = time.monotonic()
    r = await client.get("/api/tags", headers={"Authorization": f"Bearer {text}"})
    seen["tokens create"] = time.monotonic() - start
    assert r.status_code == 200
    listed = isthmus("tokens", "list", "--json", *data)
    assert '"name": "mes"' in listed.stdout and text.split("_", 2)[2] not in listed.stdout
    done = isthmus("tokens", "revoke", "mes", *data)
    assert done.returncode == 0, done.stderr
    seen["tokens revoke"] = await seen_after(client, text, lambda r: r.status_code == 401)

    print(
        "\nCLI change seen by the running server after (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in seen.items())
    )
    assert max(seen.values()) <= SEEN_WITHIN_S

    # Every change audited with the OS user as actor, and the log still verifies.
    assert plant.ctx.audit is not None
    cli = [r for r in plant.ctx.audit.query() if str(r["actor"]).startswith("cli:")]
    assert {r["action"] for r in cli} >= {
        "user.added",
        "user.changed",
        "token.created",
        "token.revoked",
    }
    assert verify(tmp_path).ok


def test_users_commands(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    done = isthmus("users", "list", *data)
    assert done.returncode == 1 and "no data directory" in done.stderr
    weak = isthmus(
        "users",
        "add",
        "olga",
        "--role",
        "viewer",
        "--password-stdin",
        *data,
        stdin="olga12345678\n",
    )
    assert (
        weak.returncode == 1
        and "contain the username" in weak.stderr
        and "Traceback" not in weak.stderr
    )
    for name, role in (("olga", "operator"), ("root", "admin")):
        done = isthmus("users", "add", name, "--role", role, "--password-stdin", *data, stdin=PW)
        assert done.returncode == 0, done.stderr
    assert (
        isthmus(
            "users", "add", "olga", "--role", "viewer", "--password-stdin", *data, stdin=PW
        ).returncode
        == 1
    )
    assert isthmus("users", "set-scopes", "olga", *data).returncode == 1  # needs --whole-enterprise
    for args in (
        ("set-role", "olga", "supervisor"),
        ("set-scopes", "olga", "acme/lyon", "acme/paris/"),
        ("disable", "olga"),
        ("enable", "olga"),
        ("reset-mfa", "olga"),
    ):
        done = isthmus("users", *args, *data)
        assert done.returncode == 0, (args, done.stderr)
    done = isthmus("users", "reset-password", "olga", "--generate", *data)
    assert done.returncode == 0 and len(done.stdout.strip()) >= 24
    done = isthmus("users", "list", "--json", *data)
    import json

    rows = {r["username"]: r for r in json.loads(done.stdout)}
    assert rows["olga"]["role"] == "supervisor"
    assert rows["olga"]["scopes"] == ["acme/lyon", "acme/paris"]
    assert rows["olga"]["disabled"] is False
    done = isthmus("users", "disable", "root", *data)
    assert done.returncode == 1 and "last enabled admin" in done.stderr
    assert isthmus("audit", "verify", *data).returncode == 0


def test_mfa_enroll_from_the_cli(tmp_path: Path) -> None:
    """The otpauth URI in the CLI: read it, answer with the app's code, get the codes."""
    import re

    from isthmus.security import mfa as totp
    from isthmus.security.identity import Identity

    data = ["--data-dir", str(tmp_path)]
    added = isthmus("users", "add", "olga", "--role", "admin", "--password-stdin", *data, stdin=PW)
    assert added.returncode == 0
    wrong = isthmus("users", "mfa-enroll", "olga", "--code", "000000", *data)
    assert wrong.returncode == 1 and "otpauth://totp/" in wrong.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "isthmus", "users", "mfa-enroll", "olga", *data],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    uri = proc.stdout.readline()
    found = re.search(r"secret=([A-Z2-7]+)", uri)
    assert uri.startswith("otpauth://totp/") and found is not None
    secret = found.group(1)
    proc.stdin.write(totp.code_at(secret, int(time.time()) // 30) + "\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    codes = out.split()
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", c) for c in codes)
    identity = Identity.open(tmp_path)
    assert identity.user_info("olga").mfa_active
    assert identity.login("olga", PW, recovery_code=codes[0]).mfa
    identity.close()


def test_corrupt_users_file_stops_cli_and_server(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "users.json").write_text(
        '{\n  "version": 2,\n  "users": [\n    {"username": }\n  ]\n}\n'
    )
    done = isthmus("users", "list", "--data-dir", str(data))
    assert done.returncode == 1
    assert f"{data / 'users.json'}:4:" in done.stderr and "Traceback" not in done.stderr
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(
        "version: 1\nenterprise: acme\nsite: test\nhierarchy:\n  utilities:\n    water:\n"
        "      pumping: [pump1]\nsources:\n  - name: plc\n    type: modbus\n"
        "    host: 127.0.0.1\n    port: 1\n    tags:\n"
        "      - path: utilities/water/pumping/pump1/flow\n        address: 0\n"
        "        data_type: float32\napi: {port: 0}\n"
    )
    done = isthmus("run", str(cfg), "--data-dir", str(data))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert f"{data / 'users.json'}:4:" in out and "Traceback" not in out
    print(f"\ncorrupt users file at start: {out.strip().splitlines()[-1]}")
