"""TOTP (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, ±1 step) and recovery codes.

Pure functions; the caller keeps the last step used per user so that a code is
accepted once only (a replayed code within its window is refused).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import pyotp
import segno

STEP_S = 30
DIGITS = 6
WINDOW = 1
"""Steps accepted either side of now (clock drift between server and phone)."""
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_RECOVERY_GROUPS = 4
_RECOVERY_GROUP_LEN = 4
_CODE_RE = re.compile(r"^\d{6}$")


def new_secret() -> str:
    """A TOTP secret: 160 random bits, base32 (what authenticator apps expect)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """``otpauth://totp/<issuer>:<username>?secret=...&issuer=...`` for authenticator apps."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=username, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The URI as a QR code, an SVG document made locally (no network, no image host)."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, title="TOTP enrolment"))


def qr_data_uri(uri: str) -> str:
    return str(segno.make(uri, error="m").svg_data_uri(scale=4))


def code_at(secret: str, step: int) -> str:
    return str(pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).at(step * STEP_S))


def match_step(secret: str, code: str, now_s: float, window: int = WINDOW) -> int | None:
    """The time step whose code is ``code`` within ±``window`` steps of ``now_s``
    (the latest one if several match), or None."""
    code = code.strip().replace(" ", "")
    if not _CODE_RE.match(code):
        return None
    now_step = int(now_s // STEP_S)
    found: int | None = None
    for step in range(now_step - window, now_step + window + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            found = step
    return found


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """``count`` codes like ``k7mq-2xhp-9tcw-ab3f`` (16 characters of a 31-letter
    alphabet: 79 bits each)."""
    return [
        "-".join(
            "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LEN))
            for _ in range(_RECOVERY_GROUPS)
        )
        for _ in range(count)
    ]


def normalize_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def hash_recovery_code(code: str) -> str:
    return hashlib.sha256(normalize_recovery_code(code).encode()).hexdigest()
