"""TLS and security headers on a real uvicorn server; the audit log through the API and
the ``isthmus audit`` command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from isthmus.api.app import PAGE_CSP
from isthmus.api.headers import DEFAULT_CSP, HSTS
from isthmus.app import _Server
from isthmus.model.clock import ManualClock
from isthmus.model.config import ApiConfig, ApiTls
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config
from isthmus.security.audit import AUDIT_DIR, AuditLog
from isthmus.security.identity import Role
from isthmus.security.tls import CERT_FILE, TLS_DIR, TlsError, TlsFiles, resolve, self_signed
from tests.support import ADMIN_PASSWORD, free_port

from .plant import PASSWORD, USERNAME, Plant

pytestmark = pytest.mark.integration

SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@contextlib.asynccontextmanager
async def serving(app: FastAPI, tls: TlsFiles | None = None) -> AsyncIterator[str]:
    """The app on a real uvicorn server on a free port, as the gateway runs it."""
    port = free_port()
    server = _Server(app, "127.0.0.1", port, tls)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            assert not task.done(), task
            await asyncio.sleep(0.025)
        assert server.started
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)


def _assert_security_headers(resp: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert resp.headers.get_list(name) == [value], (resp.url, name, resp.headers)
    assert len(resp.headers.get_list("content-security-policy")) == 1


# --------------------------------------------------------------------------- TLS


async def test_self_signed_tls_with_hsts(tmp_path: Path, app: FastAPI) -> None:
    tls = resolve(ApiTls(self_signed=True), tmp_path)
    assert tls.self_signed and tls.certfile == tmp_path / TLS_DIR / CERT_FILE
    for f in (tls.certfile, tls.keyfile):
        assert f.stat().st_mode & 0o777 == 0o600
    async with serving(app, tls) as url:
        assert url.startswith("https://")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=tls.certfile)) as c:
            health = await c.get(f"{url}/health")
            page = await c.get(f"{url}/")
            api = await c.get(f"{url}/api/tags")  # a 401 problem
        # a client that does not trust the certificate is refused: it is real TLS
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"{url}/health")
        # plain HTTP on the TLS port is no way around it
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(url.replace("https", "http") + "/health")
    assert health.status_code == 200
    for resp in (health, page, api):
        _assert_security_headers(resp)
        assert resp.headers["strict-transport-security"] == HSTS == "max-age=31536000"
    assert api.status_code == 401 and api.headers["content-security-policy"] == DEFAULT_CSP
    assert page.headers["content-security-policy"] == PAGE_CSP
    print(f"\nTLS {tls.fingerprint[:23]}...: /health {health.status_code}, HSTS present")


async def test_security_headers_without_tls_and_no_hsts(app: FastAPI) -> None:
    async with serving(app) as url, httpx.AsyncClient() as c:
        responses = {
            path: await c.get(url + path)
            for path in ("/health", "/", "/api/tags", "/nowhere", "/docs", "/openapi.json")
        }
    for path, resp in responses.items():
        _assert_security_headers(resp)
        assert "strict-transport-security" not in resp.headers, path
    assert responses["/nowhere"].status_code == 404
    page_csp = responses["/"].headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page_csp and "'unsafe-inline'" not in page_csp
    assert "script-src 'self';" in page_csp
    # Swagger's one inline bootstrap script runs by its hash, no other inline script
    docs = responses["/docs"]
    csp = docs.headers["content-security-policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline'; img" in csp  # styles only


def _own_certificate(tmp_path: Path, password: bytes | None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    cert_path, key_path = tmp_path / "site.crt", tmp_path / "site.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    )
    return cert_path, key_path


async def test_your_own_certificate_with_a_key_password_from_the_environment(
    tmp_path: Path, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _own_certificate(tmp_path, b"s3cret-key-pass")
    cfg = ApiTls(cert=str(cert), key=str(key), key_password_env="TEST_TLS_KEY_PASSWORD")
    with pytest.raises(TlsError, match="TEST_TLS_KEY_PASSWORD is not set"):
        resolve(cfg, tmp_path)
    monkeypatch.setenv("TEST_TLS_KEY_PASSWORD", "wrong")
    with pytest.raises(TlsError, match="cannot use"):
        resolve(cfg, tmp_path)
    no_env = ApiTls(cert=str(cert), key=str(key))
    with pytest.raises(TlsError, match="encrypted"):  # never an OpenSSL prompt on the tty
        resolve(no_env, tmp_path)
    monkeypatch.setenv("TEST_TLS_KEY_PASSWORD", "s3cret-key-pass")
    tls = resolve(cfg, tmp_path)
    assert not tls.self_signed
    trust = ssl.create_default_context(cafile=cert)
    async with serving(app, tls) as url, httpx.AsyncClient(verify=trust) as c:
        resp = await c.get(f"{url}/health")
    assert resp.status_code == 200 and resp.headers["strict-transport-security"] == HSTS


async def test_bad_tls_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="does not exist"):
        resolve(ApiTls(cert=str(tmp_path / "no.crt"), key=str(tmp_path / "no.key")), tmp_path)
    cert, _ = _own_certificate(tmp_path, None)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = _own_certificate(other, None)
    with pytest.raises(TlsError, match="cannot use"):
        resolve(ApiTls(cert=str(cert), key=str(wrong_key)), tmp_path)
    # the config refuses half settings, with file and line
    yaml = "enterprise: acme\nsite: s\napi:\n  tls:\n    cert: a.crt\n"
    with pytest.raises(ConfigError) as info:
        load_plant_config(yaml, "plant.yaml", {})
    (issue,) = [i for i in info.value.issues if i.path.startswith("api.tls")]
    assert issue.file == "plant.yaml" and issue.line in (4, 5), issue
    assert "self_signed" in issue.message
    with pytest.raises(ValueError):
        ApiTls(self_signed=True, cert="a", key="b")
    assert ApiConfig().tls is None


def test_the_self_signed_certificate_is_reused_and_renewed(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000 * 10**9)
    first = self_signed(tmp_path, "127.0.0.1", clock)
    assert self_signed(tmp_path, "127.0.0.1", clock).fingerprint == first.fingerprint
    cert = x509.load_pem_x509_certificate(first.certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    clock.advance(380 * 86_400)  # within 30 days of expiry: a new one
    assert self_signed(tmp_path, "127.0.0.1", clock).fingerprint != first.fingerprint
    renewed = self_signed(tmp_path, "127.0.0.1", clock).fingerprint
    assert self_signed(tmp_path, "10.1.2.3", clock).fingerprint != renewed  # a new host name


# --------------------------------------------------------------------------- audit API


@pytest.fixture
def audited(plant: Plant, tmp_path: Path) -> AuditLog:
    """30 records of token.* actions: logins and refusals during the test are audited
    too (by the auth routes and the permission dependency), always under other actions."""
    audit = AuditLog(tmp_path / "state", clock=plant.ctx.clock)
    plant.ctx.audit = audit
    plant.ctx.identity.users.add("sec", PASSWORD, Role.ADMIN)
    for i in range(30):
        audit.append(
            "token.revoked" if i % 5 == 0 else "token.created",
            actor=["ann", "sec2", "bob"][i % 3],
            outcome="failed" if i % 5 == 0 else "ok",
            token_id=i,
        )
        plant.ctx.clock.advance(60)  # type: ignore[attr-defined]
    return audit


async def _token(c: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await c.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_audit_api_filters_and_permissions(app: FastAPI, audited: AuditLog) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        assert (await c.get("/api/audit")).status_code == 401
        denied = await c.get("/api/audit", headers=await _token(c, USERNAME))  # an operator
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
        admin = await _token(c, "sec")

        async def seqs(query: str) -> list[int]:
            resp = await c.get(f"/api/audit?action=token&{query}", headers=admin)
            assert resp.status_code == 200, resp.text
            return [r["seq"] for r in resp.json()["records"]]

        page = (await c.get("/api/audit?action=token", headers=admin)).json()
        assert [r["seq"] for r in page["records"]] == list(range(1, 31))
        assert page["next_after"] == 30
        assert page["records"][0]["action"] == "token.revoked"
        assert len(page["records"][0]["mac"]) == 64
        assert await seqs("outcome=failed") == [1, 6, 11, 16, 21, 26]
        assert await seqs("action=token.revoked") == [1, 6, 11, 16, 21, 26]
        assert await seqs("actor=bob") == list(range(3, 31, 3))
        assert await seqs("order=desc&limit=2") == [30, 29]
        assert await seqs("after=28") == [29, 30]
        assert await seqs("limit=3") == [1, 2, 3]
        t5, t9 = page["records"][4]["ts"], page["records"][8]["ts"]
        window = await c.get("/api/audit", params={"from": t5, "to": t9}, headers=admin)
        assert [r["seq"] for r in window.json()["records"]] == [5, 6, 7, 8, 9]
        everything = (await c.get("/api/audit", headers=admin)).json()["records"]
        actions = {r["action"] for r in everything}
        assert len(everything) >= 30 and "token.created" in actions
        for bad in ("from=yesterday", "limit=0", "order=sideways", "from=now&to=-1h"):
            resp = await c.get(f"/api/audit?{bad}", headers=admin)
            assert resp.status_code == 422, bad
            assert resp.headers["content-type"] == "application/problem+json"
        app.state.ctx.audit = None
        assert (await c.get("/api/audit", headers=admin)).status_code == 503


def test_a_scoped_reader_sees_only_records_about_its_tags(tmp_path: Path) -> None:
    from isthmus.api.routers.audit import _scope_filter
    from isthmus.security.rbac import Principal
    from isthmus.security.rbac import Role as RbacRole

    audit = AuditLog(tmp_path)
    audit.append("auth.login", actor="olga")
    audit.append("command.result", actor="olga", tag="acme/p1/utilities/pump/speed")
    audit.append("command.result", actor="olga", tag="acme/p1/packaging/filler/volume")
    audit.append("command.result", actor="olga", tag="acme/p1/utilitiesX/other")
    unscoped = Principal("sec", RbacRole.SECURITY_ADMIN)
    scoped = Principal("sec", RbacRole.SECURITY_ADMIN, ("acme/p1/utilities",))
    assert _scope_filter(unscoped) is None
    seen = audit.query(where=_scope_filter(scoped))
    assert [r["seq"] for r in seen] == [2]
    assert len(audit.query(where=_scope_filter(scoped), limit=1, newest_first=True)) == 1


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_audit_verify_and_export_commands(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    for i in range(20):
        audit.append("command.gate", actor="olga", outcome="ok", step=i)
    audit.close()

    ok = _cli("audit", "verify", "--data-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact: 20 record(s)" in ok.stdout

    exported = _cli("audit", "export", "--format", "jsonl", "--data-dir", str(tmp_path))
    assert exported.returncode == 0
    assert [json.loads(x)["seq"] for x in exported.stdout.splitlines()] == list(range(1, 21))
    out = tmp_path / "audit.csv"
    csv_run = _cli(
        "audit", "export", "--from", "-1h", "--to", "now", "--format", "csv",
        "--output", str(out), "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert csv_run.returncode == 0, csv_run.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and len(out.read_text().splitlines()) == 21
    again = _cli("audit", "export", "--output", str(out), "--data-dir", str(tmp_path))
    assert again.returncode == 1 and "--overwrite" in again.stdout + again.stderr

    (segment,) = sorted((tmp_path / AUDIT_DIR).glob("audit-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[11] = lines[11].replace(b'"step":11', b'"step":99')
    segment.write_bytes(b"".join(lines))
    bad = _cli("audit", "verify", "--data-dir", str(tmp_path))
    assert bad.returncode == 1
    assert f"{segment}:12, record 12" in bad.stdout and "mac does not match" in bad.stdout
    assert "11 record(s) verified before it" in bad.stdout

    missing = _cli("audit", "verify", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no data directory" in missing.stdout + missing.stderr


def test_demo_with_tls(tmp_path: Path) -> None:
    """``isthmus demo --tls``: HTTPS with HSTS, the certificate in DATA_DIR/tls, the audit
    log opened and verified at start (config.loaded), and audit verify on it."""
    import time

    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "isthmus", "demo", "--tls",
            "--data-dir", str(tmp_path),
            "--http-port", str(ports[0]),
            "--opcua-port", str(ports[1]),
            "--modbus-port", str(ports[2]),
        ],
        env={**os.environ, "ISTHMUS_ADMIN_PASSWORD": ADMIN_PASSWORD},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    url = f"https://127.0.0.1:{ports[0]}"
    cert = tmp_path / TLS_DIR / CERT_FILE
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and health is None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            if cert.exists():
                with contextlib.suppress(httpx.HTTPError):
                    health = httpx.get(
                        f"{url}/health", verify=ssl.create_default_context(cafile=cert)
                    )
            time.sleep(0.2)
        assert health is not None and health.status_code == 200
        assert health.headers["strict-transport-security"] == HSTS
        server = json.loads((tmp_path / "server.json").read_text())
        assert server["url"] == url and server["cafile"] == str(cert.resolve())
        trust = ssl.create_default_context(cafile=cert)
        login = httpx.post(
            f"{url}/api/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            verify=trust,
        )
        token = login.json()["access_token"]
        records = httpx.get(
            f"{url}/api/audit?action=config.loaded",
            headers={"Authorization": f"Bearer {token}"},
            verify=trust,
        ).json()["records"]
        assert len(records) == 1 and records[0]["details"]["sources"] >= 1
        verified = _cli("audit", "verify", "--data-dir", str(tmp_path))
        assert verified.returncode == 0 and "intact" in verified.stdout
    finally:
        proc.send_signal(2)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
