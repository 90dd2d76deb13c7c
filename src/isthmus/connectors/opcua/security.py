"""OPC UA security: our application certificate, the per-source trust store, and the
secure-channel set-up that never falls back to a weaker mode.

Layout below ``pki_dir`` (default ``DATA_DIR/pki``)::

    _own/cert.der, _own/key.pem        our application certificate (generated on first use)
    <source>/trusted/<thumbprint>.der  server certificates the operator trusts
    <source>/rejected/<thumbprint>.der server certificates seen and refused (to review)

A server certificate is accepted only if its exact DER bytes are in ``trusted``; the
first time an unknown certificate is presented it is stored in ``rejected`` and the
connection fails with a message naming the ``isthmus certs trust`` command.  Trusting
is the operator's explicit decision: an expired certificate or one whose names do not
match the endpoint host is still refused until trusted, and the problems are listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.model.errors import IsthmusError

log = logging.getLogger("isthmus.opcua.security")

OWN = "_own"
APP_NAME = "Isthmus"
_POLICY_URI = "http://opcfoundation.org/UA/SecurityPolicy#"
_MODES = {"None": 1, "Sign": 2, "SignAndEncrypt": 3}  # MessageSecurityMode values
_MODE_NAMES = {v: k for k, v in _MODES.items()}


class OpcUaSecurityError(IsthmusError):
    """The configured security cannot be established: the server does not offer the
    policy and mode, its certificate is not trusted, or a credential is missing."""


def application_uri() -> str:
    return f"urn:{socket.gethostname()}:isthmus"


def thumbprint(der: bytes) -> str:
    """SHA-1 of the DER bytes, hex: the OPC UA certificate thumbprint."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest()


def _policy_class(name: str) -> Any:
    from asyncua.crypto import security_policies as sp

    classes: dict[str, Any] = {
        "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
        "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
        "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
    }
    return classes[name]


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] if uri else "?"


@dataclass(frozen=True)
class CertInfo:
    path: Path
    thumbprint: str
    subject: str
    not_after: datetime
    state: str  # trusted | rejected


def _load(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


class Pki:
    """The certificate directories of one ``pki_dir``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def own(self) -> tuple[Path, Path]:
        return self.root / OWN / "cert.der", self.root / OWN / "key.pem"

    def trusted(self, source: str) -> Path:
        return self.root / source / "trusted"

    def rejected(self, source: str) -> Path:
        return self.root / source / "rejected"

    async def ensure_own(self) -> tuple[Path, Path]:
        """Our application certificate and key, generated on first use (2048-bit RSA,
        SHA-256, one year, with our application URI and host name)."""
        from asyncua.crypto.cert_gen import setup_self_signed_certificate

        cert, key = self.own()
        before = _read(cert)
        cert.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(cert.parent, 0o700)
        # asyncua keeps a valid pair and regenerates the certificate when it is missing,
        # expired, or does not name our application URI and host.
        await setup_self_signed_certificate(
            key,
            cert,
            application_uri(),
            socket.gethostname(),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"organizationName": APP_NAME},
        )
        os.chmod(key, 0o600)
        after = _read(cert)
        if after != before:
            log.warning(
                "generated the OPC UA application certificate %s [%s]: servers must trust it",
                cert,
                thumbprint(after),
            )
        return cert, key

    def is_trusted(self, source: str, der: bytes) -> bool:
        path = self.trusted(source) / f"{thumbprint(der)}.der"
        return path.is_file() and path.read_bytes() == der

    def store_rejected(self, source: str, der: bytes) -> Path:
        folder = self.rejected(source)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{thumbprint(der)}.der"
        if not path.exists():
            path.write_bytes(der)
        return path

    def list(self) -> list[tuple[str, CertInfo]]:
        """(source, certificate) for every trusted and rejected certificate."""
        out: list[tuple[str, CertInfo]] = []
        if not self.root.is_dir():
            return out
        for source_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != OWN):
            for state in ("trusted", "rejected"):
                for path in sorted((source_dir / state).glob("*.der")):
                    try:
                        cert = _load(path)
                    except ValueError:
                        continue
                    out.append(
                        (
                            source_dir.name,
                            CertInfo(
                                path,
                                thumbprint(path.read_bytes()),
                                _subject(cert),
                                cert.not_valid_after_utc,
                                state,
                            ),
                        )
                    )
        return out

    def _find(self, source: str, state: str, prefix: str) -> Path:
        prefix = prefix.lower()
        hits = [p for p in (self.root / source / state).glob("*.der") if p.stem.startswith(prefix)]
        if len(prefix) < 6:
            raise OpcUaSecurityError("give at least 6 characters of the thumbprint")
        if not hits:
            raise OpcUaSecurityError(f"no {state} certificate {prefix}... for source {source}")
        if len(hits) > 1:
            raise OpcUaSecurityError(f"{prefix}... matches {len(hits)} certificates: give more")
        return hits[0]

    def trust(self, source: str, ref: str) -> Path:
        """Trust a rejected certificate (by thumbprint prefix) or a certificate file."""
        file = Path(ref)
        if file.is_file():
            try:
                der = _load(file).public_bytes(_der())
            except ValueError:
                raise OpcUaSecurityError(f"{file}: not a certificate (DER or PEM)") from None
        else:
            found = self._find(source, "rejected", ref)
            der = found.read_bytes()
            found.unlink()
        folder = self.trusted(source)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{thumbprint(der)}.der"
        target.write_bytes(der)
        return target

    def reject(self, source: str, ref: str) -> Path:
        """Move a trusted certificate (by thumbprint prefix) to rejected."""
        found = self._find(source, "trusted", ref)
        folder = self.rejected(source)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / found.name
        found.replace(target)
        return target


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def certificate_problems(der: bytes, endpoint: str) -> list[str]:
    """What is wrong with a server certificate besides not being trusted."""
    problems: list[str] = []
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return ["not a valid X.509 certificate"]
    now = datetime.now(UTC)
    if cert.not_valid_after_utc < now:
        problems.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        problems.append(
            f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (clock skew?)"
        )
    host = urlsplit(endpoint).hostname or ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names, addresses = [], []
    matches = host.lower() in names
    with contextlib.suppress(ValueError):
        matches = matches or str(ipaddress.ip_address(host)) in addresses
    if host and not matches:
        shown = ", ".join(names + addresses) or "none"
        problems.append(f"host {host} is not among its names ({shown})")
    return problems


async def apply(client: Any, config: OpcUaSourceConfig) -> None:
    """Configure an unconnected asyncua ``Client`` for ``config``'s security and
    identity.  With a policy other than None: fetch the server's endpoints, pick the one
    with exactly the configured policy and mode (else :class:`OpcUaSecurityError`
    naming what the server offers — never a weaker one), check its certificate against
    the trust store, then set our certificate.  Raises before any session is created."""
    if config.security_policy != "None":
        await _secure(client, config)
    if config.identity == "username":
        assert config.username is not None and config.password_env is not None
        password = os.environ.get(config.password_env)
        if password is None:
            raise OpcUaSecurityError(
                f"opcua source {config.name}: environment variable {config.password_env} "
                "(password_env) is not set"
            )
        client.set_user(config.username)
        client.set_password(password)
    elif config.identity == "certificate":
        assert config.user_certificate is not None and config.user_private_key is not None
        missing = _missing(config.user_certificate, config.user_private_key)
        if missing:
            raise OpcUaSecurityError(f"opcua source {config.name}: {missing} does not exist")
        await client.load_client_certificate(config.user_certificate)
        await client.load_private_key(config.user_private_key)


def _missing(*paths: str) -> str:
    return next((p for p in paths if not Path(p).is_file()), "")


async def _secure(client: Any, config: OpcUaSourceConfig) -> None:
    from asyncua import ua

    label = f"opcua source {config.name}"
    wanted_uri = _POLICY_URI + config.security_policy
    wanted_mode = _MODES[config.security_mode]
    endpoints = await client.connect_and_get_server_endpoints()
    chosen = None
    for ep in endpoints:
        if ep.SecurityPolicyUri == wanted_uri and int(ep.SecurityMode) == wanted_mode:
            chosen = ep
            break
    if chosen is None:
        offered = sorted(
            {
                f"{_policy_name(ep.SecurityPolicyUri)}/{_MODE_NAMES.get(int(ep.SecurityMode), '?')}"
                for ep in endpoints
            }
        )
        raise OpcUaSecurityError(
            f"{label}: {config.endpoint} does not offer {config.security_policy}/"
            f"{config.security_mode}; it offers: {', '.join(offered) or 'nothing'}. "
            "Isthmus never falls back to a weaker mode: change security_policy/"
            "security_mode or the server's configuration"
        )
    der = bytes(chosen.ServerCertificate or b"")
    if not der:
        raise OpcUaSecurityError(f"{label}: the server sent no certificate for its endpoint")
    from asyncua.crypto.uacrypto import x509_from_der

    first: x509.Certificate = x509_from_der(der)  # type: ignore[no-untyped-call]
    der = first.public_bytes(_der())
    if config.pki_dir is None:
        raise OpcUaSecurityError(f"{label}: no pki_dir resolved for the trust store")
    pki = Pki(config.pki_dir)
    if not pki.is_trusted(config.name, der):
        path = pki.store_rejected(config.name, der)
        problems = certificate_problems(der, config.endpoint)
        extra = f" ({'; '.join(problems)})" if problems else ""
        raise OpcUaSecurityError(
            f"{label}: server certificate {_subject(first)!r} [{thumbprint(der)}] is not "
            f"trusted{extra}; stored in {path}. After checking its thumbprint with the "
            f"server's operator: isthmus certs trust {config.name} {thumbprint(der)[:12]} "
            f"--pki-dir {config.pki_dir}"
        )
    problems = certificate_problems(der, config.endpoint)
    if problems:
        log.warning("%s: trusted server certificate: %s", label, "; ".join(problems))
    cert, key = await pki.ensure_own()
    client.application_uri = application_uri()
    client.product_uri = "urn:isthmus"
    await client.set_security(
        _policy_class(config.security_policy),
        str(cert),
        str(key),
        server_certificate=der,
        mode=ua.MessageSecurityMode(wanted_mode),
    )
