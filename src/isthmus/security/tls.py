"""TLS for the API: the user's certificate and key, or a generated self-signed pair.

The self-signed pair lives in ``DATA_DIR/tls/`` (``cert.pem`` and ``key.pem``, both mode
0600, an ECDSA P-256 key), is created once and reused until 30 days before it expires
or until the listen host is no longer among its names; browsers warn about it (trust
``cert.pem`` explicitly, or give your own certificate).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from isthmus.model.clock import Clock, SystemClock
from isthmus.model.config import ApiTls
from isthmus.model.errors import IsthmusError
from isthmus.security.identity import write_private

TLS_DIR = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
VALIDITY_DAYS = 397
RENEW_BEFORE_DAYS = 30


class TlsError(IsthmusError):
    """A certificate or key cannot be used."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    password: str | None = None
    self_signed: bool = False
    fingerprint: str = ""
    """SHA-256 of the certificate (DER), hex with colons: what a browser shows."""


def _fingerprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def _names(host: str) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    dns = ["localhost"]
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    hostname = socket.gethostname()
    if hostname and hostname not in dns:
        dns.append(hostname)
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified and ip not in ips:
            ips.append(ip)
    except ValueError:
        if host and host not in dns:
            dns.append(host)
    return dns, ips


def _usable(cert: x509.Certificate, host: str, now: dt.datetime) -> bool:
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    if cert.not_valid_before_utc > now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns, ips = _names(host)
    return set(dns) <= set(san.get_values_for_type(x509.DNSName)) and set(ips) <= set(
        san.get_values_for_type(x509.IPAddress)
    )


def self_signed(data_dir: Path, host: str = "127.0.0.1", clock: Clock | None = None) -> TlsFiles:
    """The self-signed certificate of ``data_dir`` (created or renewed when needed)."""
    clock = clock or SystemClock()
    now = dt.datetime.fromtimestamp(clock.now_ns() / 1e9, dt.UTC)
    folder = Path(data_dir) / TLS_DIR
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if _usable(cert, host, now):
                return TlsFiles(cert_path, key_path, None, True, _fingerprint(cert))
        except ValueError:
            pass  # damaged: make a new one
    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = _names(host)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Isthmus"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Isthmus on {dns[-1]}"[:64]),
        ]
    )
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        # A CA for itself, so clients can trust exactly this file (httpx verify=cert.pem).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_pem)
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(folder, 0o700)
    return TlsFiles(cert_path, key_path, None, True, _fingerprint(cert))


def resolve(
    tls: ApiTls, data_dir: Path, host: str = "127.0.0.1", clock: Clock | None = None
) -> TlsFiles:
    """The files uvicorn serves for ``api.tls``, checked now (a server must not start with
    a certificate it cannot use): raises :class:`TlsError` naming the file."""
    if tls.self_signed:
        files = self_signed(data_dir, host, clock)
    else:
        assert tls.cert is not None and tls.key is not None  # the config model checks
        password: str | None = None
        if tls.key_password_env is not None:
            password = os.environ.get(tls.key_password_env)
            if password is None:
                raise TlsError(
                    f"api.tls.key_password_env: the environment variable "
                    f"{tls.key_password_env} is not set"
                )
        cert_path, key_path = Path(tls.cert), Path(tls.key)
        for what, path in (("certificate", cert_path), ("key", key_path)):
            if not path.is_file():
                raise TlsError(f"api.tls: the {what} {path} does not exist")
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TlsError(f"api.tls: {cert_path} is not a PEM certificate: {exc}") from None
        files = TlsFiles(cert_path, key_path, password, False, _fingerprint(cert))

    def no_password() -> str:
        # Without this, OpenSSL would prompt on the terminal for an encrypted key.
        raise TlsError(f"api.tls: {files.keyfile} is encrypted: name key_password_env")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.certfile, files.keyfile, files.password or no_password)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"api.tls: cannot use {files.certfile} with {files.keyfile}: {exc}"
        ) from None
    return files
