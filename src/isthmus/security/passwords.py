"""Passwords: argon2id hashes and the password policy.

Policy (the same for the API, the CLI and the first admin):

* at least :data:`MIN_LENGTH` (12) characters, at most :data:`MAX_LENGTH`;
* not equal to the username, and not containing it (case-insensitively; a username
  shorter than 3 characters is only checked for equality, or no password could contain
  an ``a``);
* not in the shipped list of common passwords (``common-passwords.txt.gz``: 40,148
  passwords from Django's and zxcvbn's lists plus a short supplement, see
  ``COMMON-PASSWORDS-NOTICE.txt``), compared lower-cased, also once the digits and
  punctuation around it are stripped (``Dragon2024!!`` is ``dragon``).

Hashes are argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile); a hash
made with weaker parameters is upgraded at the next successful login.
"""

from __future__ import annotations

import gzip
import secrets
import string
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from isthmus.security.errors import IdentityError, WeakPassword

MIN_LENGTH = 12
MAX_LENGTH = 1024
USERNAME_CONTAINED_MIN = 3
COMMON_FILE = "common-passwords.txt.gz"
_AROUND = string.digits + string.punctuation + string.whitespace

DEFAULT_HASHER = PasswordHasher()
"""argon2id (``Type.ID``), argon2-cffi's default parameters."""


def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    if not password:
        raise IdentityError("a password cannot be empty", field="password")
    return hasher.hash(password)


def verify_password(
    password_hash: str, password: str, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    try:
        return bool(hasher.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list, lower-cased (loaded once, ~40k entries)."""
    data = resources.files("isthmus.security").joinpath(COMMON_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").split("\n")) - {""}


def is_common(password: str) -> bool:
    low = password.strip().lower()
    common = common_passwords()
    if low in common:
        return True
    core = low.strip(_AROUND)
    return len(core) >= 4 and core in common


def check_password(password: str, username: str | None = None) -> None:
    """Raise :class:`WeakPassword` naming the rule a password breaks."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"it must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"it must have at most {MAX_LENGTH} characters")
    if not password.strip():
        raise WeakPassword("it cannot be only spaces")
    if username:
        name, low = username.lower(), password.lower()
        if low == name:
            raise WeakPassword("it cannot be the username")
        if len(name) >= USERNAME_CONTAINED_MIN and name in low:
            raise WeakPassword("it cannot contain the username")
    if is_common(password):
        raise WeakPassword("it is in the list of common passwords")


def generate_password() -> str:
    """A random password that passes the policy (24 URL-safe characters, 144 bits)."""
    while True:
        password = secrets.token_urlsafe(18)
        try:
            check_password(password, "admin")
        except WeakPassword:
            continue
        return password
