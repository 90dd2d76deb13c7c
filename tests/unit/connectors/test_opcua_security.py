"""OPC UA security configuration and the trust store (files only, no network)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from isthmus.cli import main
from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.connectors.opcua.security import (
    OpcUaSecurityError,
    Pki,
    certificate_problems,
    thumbprint,
)


def cfg(**extra: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate({"name": "s1", "endpoint": "opc.tcp://h:4840", **extra})


def test_defaults_are_none_and_anonymous() -> None:
    c = cfg()
    assert (c.security_policy, c.security_mode, c.identity) == ("None", "None", "anonymous")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"security_policy": "Basic256Sha256"}, "go together"),
        ({"security_mode": "Sign"}, "go together"),
        ({"security_policy": "Basic128Rsa15", "security_mode": "Sign"}, "security_policy"),
        (
            {"security_policy": "Basic256Sha256", "security_mode": "Sign", "identity": "username"},
            "needs username and password_env",
        ),
        ({"identity": "username", "username": "u", "password_env": "P"}, "unsecured channel"),
        (
            {
                "security_policy": "Aes256_Sha256_RsaPss",
                "security_mode": "SignAndEncrypt",
                "identity": "certificate",
                "user_certificate": "u.der",
            },
            "user_private_key",
        ),
    ],
)
def test_invalid_security_settings(extra: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        cfg(**extra)


def test_valid_secure_settings() -> None:
    c = cfg(
        security_policy="Aes128_Sha256_RsaOaep",
        security_mode="Sign",
        identity="username",
        username="operator",
        password_env="PLC_PASSWORD",
    )
    assert c.security_mode == "Sign"


def make_cert(folder: Path, host: str = "plc1") -> bytes:
    cert, key = folder / "c.der", folder / "k.pem"
    asyncio.run(
        setup_self_signed_certificate(
            key, cert, "urn:test", host, [ExtendedKeyUsageOID.SERVER_AUTH], {}
        )
    )
    return cert.read_bytes()


def test_trust_store_workflow(tmp_path: Path) -> None:
    der = make_cert(tmp_path)
    pki = Pki(tmp_path / "pki")
    assert not pki.is_trusted("s1", der)
    stored = pki.store_rejected("s1", der)
    assert stored.name == f"{thumbprint(der)}.der"
    ((source, info),) = pki.list()
    assert (source, info.state, info.subject) == ("s1", "rejected", "urn:test")
    pki.trust("s1", thumbprint(der)[:8])
    assert pki.is_trusted("s1", der) and not stored.exists()
    pki.reject("s1", thumbprint(der)[:8])
    assert not pki.is_trusted("s1", der)
    # trusting a certificate file directly (given by the server's operator)
    pki.trust("s2", str(tmp_path / "c.der"))
    assert pki.is_trusted("s2", der)


def test_trust_store_errors(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with pytest.raises(OpcUaSecurityError, match="no rejected certificate"):
        pki.trust("s1", "abcdef12")
    with pytest.raises(OpcUaSecurityError, match="at least 6"):
        pki.reject("s1", "ab")
    assert pki.list() == []


def test_certificate_problems_name_the_host(tmp_path: Path) -> None:
    der = make_cert(tmp_path, host="plc1")
    assert certificate_problems(der, "opc.tcp://plc1:4840") == []
    (problem,) = certificate_problems(der, "opc.tcp://10.0.0.5:4840")
    assert "host 10.0.0.5 is not among its names (plc1)" in problem


def test_certs_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    der = make_cert(tmp_path)
    Pki(tmp_path / "data" / "pki").store_rejected("plc", der)
    assert main(["certs", "list", "--data-dir", str(tmp_path / "data")]) == 0
    assert thumbprint(der)[:12] in capsys.readouterr().out
    assert main(["certs", "trust", "plc", "zzzzzzzz", "--data-dir", str(tmp_path / "data")]) == 1
    assert main(["certs", "trust", "plc"]) == 1
    assert (
        main(["certs", "trust", "plc", thumbprint(der), "--data-dir", str(tmp_path / "data")]) == 0
    )
