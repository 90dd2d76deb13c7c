"""OPC UA security against an asyncua server that offers only Basic256Sha256
SignAndEncrypt (its certificate generated in tmp): refused until trusted, then
connected; a policy the server lacks fails clearly, without a weaker fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from isthmus.cli import main
from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.security import OpcUaSecurityError, Pki, apply
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.quality import Quality
from tests.support import Collector

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(15),
    pytest.mark.asyncio(loop_scope="module"),
]

HOST = "127.0.0.1"
LOGGER = "isthmus.test.opcua.security"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Secure:
    def __init__(self, server: Server, endpoint: str, ns: int, cert: Path) -> None:
        self.server = server
        self.endpoint = endpoint
        self.ns = ns
        self.cert = cert


class Users(UserManager):
    """Anonymous, or operator/secret."""

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or (username, password) == ("operator", "secret"):
            return User(role=UserRole.User)
        return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secure]:
    folder = tmp_path_factory.mktemp("server-pki")
    cert, key = folder / "server.der", folder / "server.pem"
    uri = "urn:isthmus:test:secure-server"
    await setup_self_signed_certificate(
        key, cert, uri, HOST, [ExtendedKeyUsageOID.SERVER_AUTH], {"organizationName": "test"}
    )
    port = free_port()
    server = Server(user_manager=Users())
    await server.init()
    await server.set_application_uri(uri)
    server.set_endpoint(f"opc.tcp://{HOST}:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    server.disable_clock(True)
    ns = await server.register_namespace("urn:isthmus:test:secure")
    await server.nodes.objects.add_variable(ua.NodeId("V", ns), "V", 21.5)
    await server.start()
    yield Secure(server, f"opc.tcp://{HOST}:{port}/", ns, cert)
    await server.stop()


def config(endpoint: str, ns: int, pki: Path, **extra: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "name": "secure1",
            "endpoint": endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.05,
            "timeout": 3.0,
            "reconnect_max": 0.5,
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "pki_dir": str(pki),
            "tags": [{"path": "a/l/c/e/v", "node": f"ns={ns};s=V"}],
            **extra,
        }
    )


def make_source(cfg: OpcUaSourceConfig, out: Collector) -> OpcUaSource:
    bound: list[BoundTag[OpcUaTagConfig]] = [BoundTag(1, "x/y/a/l/c/e/v", cfg.tags[0])]
    return opcua_source(cfg, bound, SourceContext(emit=out.emit, log=logging.getLogger(LOGGER)))


async def wait(cond: Any, limit: float = 8.0) -> None:
    for _ in range(int(limit / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"condition not met in {limit} s")


async def test_untrusted_server_is_refused_until_trusted(
    secure: Secure, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pki = tmp_path / "pki"
    out = Collector()
    source = make_source(config(secure.endpoint, secure.ns, pki), out)
    task = asyncio.create_task(source.run())
    try:
        rejected = pki / "secure1" / "rejected"
        await wait(lambda: rejected.is_dir() and any(rejected.iterdir()))
        await asyncio.sleep(0.3)
        assert not source.connected and not out.good()
        warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("is not trusted" in m and "isthmus certs trust secure1" in m for m in warning)
        (stored,) = list(rejected.iterdir())

        # the operator reviews and trusts it with the CLI
        assert main(["certs", "list", "--pki-dir", str(pki)]) == 0
        assert main(["certs", "trust", "secure1", stored.stem[:10], "--pki-dir", str(pki)]) == 0
        assert (pki / "secure1" / "trusted" / stored.name).is_file()
        assert not stored.exists()

        await wait(lambda: source.connected and out.good())
        assert (pki / "_own" / "cert.der").is_file()  # our certificate, made on first use
        values = [v for b in out.batches for v in b.value.tolist() if v == v]
        assert 21.5 in values
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 3.0)
    # reject again: the next connection is refused
    assert main(["certs", "reject", "secure1", stored.stem[:10], "--pki-dir", str(pki)]) == 0
    assert (pki / "secure1" / "rejected" / stored.name).is_file()


async def test_policy_the_server_lacks_fails_clearly(secure: Secure, tmp_path: Path) -> None:
    from asyncua.client.client import Client

    for policy, mode in (("Aes256_Sha256_RsaPss", "SignAndEncrypt"), ("Basic256Sha256", "Sign")):
        cfg = config(
            secure.endpoint,
            secure.ns,
            tmp_path / "pki",
            security_policy=policy,
            security_mode=mode,
        )
        client = Client(cfg.endpoint, timeout=3)
        with pytest.raises(OpcUaSecurityError) as info:
            await apply(client, cfg)
        message = str(info.value)
        assert f"does not offer {policy}/{mode}" in message
        assert "it offers: Basic256Sha256/SignAndEncrypt" in message
        assert "never falls back" in message
        assert client.security_policy.Mode == ua.MessageSecurityMode.None_  # nothing set
        assert not (tmp_path / "pki" / "secure1").exists()  # no certificate was even looked at


async def test_none_client_against_secure_only_server_is_not_connected(
    secure: Secure, tmp_path: Path
) -> None:
    out = Collector()
    cfg = config(
        secure.endpoint, secure.ns, tmp_path / "pki", security_policy="None", security_mode="None"
    )
    source = make_source(cfg, out)
    task = asyncio.create_task(source.run())
    try:
        await wait(lambda: bool(out.batches))
        assert not source.connected
        assert all((b.quality == Quality.BAD_COMMUNICATION_ERROR).all() for b in out.batches)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 3.0)


async def test_discover_over_a_secure_channel(secure: Secure, tmp_path: Path) -> None:
    from isthmus.connectors.opcua.discover import discover, render_yaml
    from isthmus.model.loader import load_plant_config

    pki = tmp_path / "pki"
    cfg = config(secure.endpoint, secure.ns, pki)
    with pytest.raises(OpcUaSecurityError, match="is not trusted"):
        await discover(secure.endpoint, depth=2, security=cfg)
    (stored,) = list((pki / "secure1" / "rejected").iterdir())
    Pki(pki).trust("secure1", stored.stem)
    found = await discover(secure.endpoint, depth=2, security=cfg)
    assert [v.name for v in found.variables] == ["V"]
    text = render_yaml(found, source_name="secure1", security=cfg)
    assert 'security_policy: "Basic256Sha256"' in text
    _, (source,) = load_plant_config(text, "d.yaml", {"opcua": OpcUaSourceConfig})
    assert isinstance(source, OpcUaSourceConfig)
    assert source.security_mode == "SignAndEncrypt" and source.pki_dir == str(pki)


async def test_username_identity(
    secure: Secure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = tmp_path / "pki"
    Pki(pki).trust("secure1", str(secure.cert))  # a file given by the server's operator
    user = {"identity": "username", "username": "operator", "password_env": "TEST_UA_PASSWORD"}
    for password, connects in (("wrong", False), ("secret", True)):
        monkeypatch.setenv("TEST_UA_PASSWORD", password)
        out = Collector()
        source = make_source(config(secure.endpoint, secure.ns, pki, **user), out)
        task = asyncio.create_task(source.run())
        try:
            if connects:
                await wait(lambda s=source, o=out: s.connected and o.good())  # type: ignore[misc]
            else:
                await wait(lambda o=out: bool(o.batches))  # type: ignore[misc]
                assert not source.connected
                assert (out.batches[0].quality == Quality.BAD_COMMUNICATION_ERROR).all()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 3.0)
    monkeypatch.delenv("TEST_UA_PASSWORD")
    client_cfg = config(secure.endpoint, secure.ns, pki, **user)
    from asyncua.client.client import Client

    with pytest.raises(OpcUaSecurityError, match="TEST_UA_PASSWORD"):
        await apply(Client(secure.endpoint), client_cfg)


async def test_aes_policies_connect(tmp_path: Path) -> None:
    """The two other policies, each with the mode the server offers."""
    from isthmus.connectors.opcua.discover import discover

    cert, key = tmp_path / "server.der", tmp_path / "server.pem"
    uri = "urn:isthmus:test:aes-server"
    await setup_self_signed_certificate(
        key, cert, uri, HOST, [ExtendedKeyUsageOID.SERVER_AUTH], {"organizationName": "test"}
    )
    port = free_port()
    server = Server()
    await server.init()
    await server.set_application_uri(uri)
    server.set_endpoint(f"opc.tcp://{HOST}:{port}/")
    server.set_security_policy(
        [
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
            ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
        ]
    )
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    server.disable_clock(True)
    ns = await server.register_namespace("urn:isthmus:test:aes")
    await server.nodes.objects.add_variable(ua.NodeId("W", ns), "W", 1.0)
    await server.start()
    try:
        pki = tmp_path / "pki"
        Pki(pki).trust("secure1", str(cert))
        endpoint = f"opc.tcp://{HOST}:{port}/"
        for policy, mode in (
            ("Aes128_Sha256_RsaOaep", "Sign"),
            ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
        ):
            cfg = config(endpoint, ns, pki, security_policy=policy, security_mode=mode)
            found = await discover(endpoint, depth=1, security=cfg)
            assert [v.name for v in found.variables] == ["W"], policy
        cfg = config(endpoint, ns, pki, security_policy="Aes128_Sha256_RsaOaep")
        with pytest.raises(OpcUaSecurityError, match="it offers: Aes128_Sha256_RsaOaep/Sign, "):
            await discover(endpoint, depth=1, security=cfg)
    finally:
        await server.stop()
