"""Identity: users with argon2-hashed passwords, the first admin, and bearer tokens.

Files in the data dir, all mode 0600 and written atomically:

* ``users.json`` — ``{"version": 1, "users": [{"username", "password_hash", "role"}]}``
* ``secret.key`` — 32 random bytes, the HS256 signing key (created once)
* ``admin-credential.txt`` — the generated first admin password (only when generated)

Tokens are HS256 JWTs with ``iss``, ``sub``, ``role``, ``iat`` and ``exp``, checked
against the injected :class:`~isthmus.model.clock.Clock` with no leeway.  Failed logins
are logged with the username (never the password) and slowed down per username with an
exponential delay that decays with time; there is no account lockout.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from isthmus.model.clock import Clock, SystemClock
from isthmus.model.errors import IsthmusError

log = logging.getLogger(__name__)

USERS_FILE = "users.json"
SECRET_FILE = "secret.key"
ADMIN_CREDENTIAL_FILE = "admin-credential.txt"
ADMIN_USERNAME = "admin"
ISSUER = "isthmus"
ALGORITHM = "HS256"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class IdentityError(IsthmusError):
    """A user file is unreadable, or a user operation is refused."""


class InvalidToken(IsthmusError):
    """A bearer token is malformed, forged, expired or names an unknown user."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    role: Role


@dataclass(frozen=True, slots=True)
class Claims:
    username: str
    role: Role
    issued_at: int
    expires_at: int
    """Seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    """Seconds."""


# --------------------------------------------------------------------------- files


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_secret(data_dir: Path) -> bytes:
    """The token signing key: 32 random bytes created once in ``secret.key``."""
    path = data_dir / SECRET_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) < 32:
            raise IdentityError(f"{path} holds {len(key)} bytes; a key needs at least 32")
        return key
    key = secrets.token_bytes(32)
    write_private(path, key)
    return key


# --------------------------------------------------------------------------- passwords

_DEFAULT_HASHER = PasswordHasher()


def hash_password(password: str, hasher: PasswordHasher = _DEFAULT_HASHER) -> str:
    if not password:
        raise IdentityError("a password cannot be empty")
    return hasher.hash(password)


def verify_password(
    password_hash: str, password: str, hasher: PasswordHasher = _DEFAULT_HASHER
) -> bool:
    try:
        return bool(hasher.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class UserStore:
    """Users in ``DATA_DIR/users.json``; every change rewrites the file atomically."""

    def __init__(self, data_dir: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = data_dir / USERS_FILE
        self.hasher = hasher or _DEFAULT_HASHER
        self._lock = threading.Lock()
        self._users: dict[str, User] = self._load()
        self._dummy_hash: str | None = None

    def _load(self) -> dict[str, User]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return {
                u["username"]: User(u["username"], u["password_hash"], Role(u["role"]))
                for u in doc["users"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"cannot read users from {self.path}: {exc}") from exc

    def _save(self) -> None:
        doc: dict[str, Any] = {
            "version": 1,
            "users": [
                {"username": u.username, "password_hash": u.password_hash, "role": str(u.role)}
                for u in sorted(self._users.values(), key=lambda u: u.username)
            ],
        }
        write_private(self.path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))

    def get(self, username: str) -> User | None:
        return self._users.get(username)

    def usernames(self) -> list[str]:
        return sorted(self._users)

    def add(self, username: str, password: str, role: Role = Role.VIEWER) -> User:
        if not username or username != username.strip() or len(username) > 64:
            raise IdentityError("a username has 1 to 64 characters without outer spaces")
        with self._lock:
            if username in self._users:
                raise IdentityError(f"user {username!r} exists")
            user = User(username, hash_password(password, self.hasher), Role(role))
            self._users[username] = user
            self._save()
        return user

    def set_password(self, username: str, password: str) -> None:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise IdentityError(f"no user {username!r}")
            self._users[username] = User(username, hash_password(password, self.hasher), user.role)
            self._save()

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password matches, else None (same cost for unknown users)."""
        user = self._users.get(username)
        if user is None:
            # Verify against a throw-away hash so unknown users cost the same time.
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
            verify_password(self._dummy_hash, password, self.hasher)
            return None
        if not verify_password(user.password_hash, password, self.hasher):
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            with self._lock:
                self._users[username] = User(
                    username, hash_password(password, self.hasher), user.role
                )
                self._save()
        return user


def ensure_admin(
    data_dir: Path, env_password: str | None, *, hasher: PasswordHasher | None = None
) -> tuple[str, str | None]:
    """Create the first ``admin`` user if there is none.

    With ``env_password`` (e.g. ``ISTHMUS_ADMIN_PASSWORD``) that password is used and
    never written to disk; otherwise one is generated and written, with the username, to
    ``admin-credential.txt`` (mode 0600).  Returns ``(username, generated_password)``;
    the password is ``None`` unless it was generated by this call.
    """
    users = UserStore(data_dir, hasher)
    if users.get(ADMIN_USERNAME) is not None:
        return ADMIN_USERNAME, None
    if env_password:
        users.add(ADMIN_USERNAME, env_password, Role.ADMIN)
        log.info("created user %r with the password from the environment", ADMIN_USERNAME)
        return ADMIN_USERNAME, None
    password = secrets.token_urlsafe(12)
    users.add(ADMIN_USERNAME, password, Role.ADMIN)
    write_private(
        data_dir / ADMIN_CREDENTIAL_FILE,
        f"username: {ADMIN_USERNAME}\npassword: {password}\n".encode(),
    )
    log.info(
        "created user %r with a generated password, see %s",
        ADMIN_USERNAME,
        data_dir / ADMIN_CREDENTIAL_FILE,
    )
    return ADMIN_USERNAME, password


# --------------------------------------------------------------------------- tokens


class TokenService:
    """Issues and verifies HS256 JWTs against an injected clock (leeway 0)."""

    def __init__(
        self, secret: bytes, ttl_s: float, clock: Clock | None = None, issuer: str = ISSUER
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the signing key needs at least 32 bytes")
        if ttl_s <= 0:
            raise ValueError("the token lifetime must be positive")
        self._secret = secret
        self.ttl_s = int(ttl_s)
        self.clock: Clock = clock or SystemClock()
        self.issuer = issuer

    def issue(self, username: str, role: Role) -> IssuedToken:
        now = self.clock.now_ns() // 1_000_000_000
        payload = {
            "iss": self.issuer,
            "sub": username,
            "role": str(role),
            "iat": now,
            "exp": now + self.ttl_s,
        }
        return IssuedToken(jwt.encode(payload, self._secret, algorithm=ALGORITHM), self.ttl_s)

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=0,
                options={
                    "require": ["iss", "sub", "exp", "iat"],
                    # Times are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            exp = payload["exp"]
            iat = payload["iat"]
            if not isinstance(exp, int) or not isinstance(iat, int):
                raise InvalidToken("token times are not integers")
            claims = Claims(str(payload["sub"]), Role(str(payload.get("role"))), iat, exp)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        except ValueError:
            raise InvalidToken("invalid token: unknown role") from None
        now_s = self.clock.now_ns() / 1e9
        if now_s >= claims.expires_at:
            raise InvalidToken("token expired")
        return claims


# --------------------------------------------------------------------------- logins


class LoginThrottle:
    """Per-username delay after failed logins: ``base * 2**(failures-1)`` seconds
    (capped), minus the time since the last failure.  No lockout; bounded memory."""

    def __init__(
        self,
        clock: Clock | None = None,
        base_s: float = 0.5,
        max_s: float = 8.0,
        max_users: int = 10_000,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.base_s = base_s
        self.max_s = max_s
        self.max_users = max_users
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, username: str) -> float:
        entry = self._failures.get(username)
        if entry is None:
            return 0.0
        count, last = entry
        wanted = min(self.base_s * 2.0 ** (count - 1), self.max_s)
        return max(0.0, wanted - (self.clock.monotonic() - last))

    def failure(self, username: str) -> None:
        count = self._failures.pop(username, (0, 0.0))[0]
        self._failures[username] = (min(count + 1, 32), self.clock.monotonic())
        while len(self._failures) > self.max_users:
            self._failures.popitem(last=False)

    def success(self, username: str) -> None:
        self._failures.pop(username, None)


class Identity:
    """Users, tokens and the login throttle of one data dir, as the API uses them."""

    def __init__(
        self,
        users: UserStore,
        tokens: TokenService,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.users = users
        self.tokens = tokens
        self.throttle = throttle or LoginThrottle(tokens.clock)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        token_ttl_s: float = 12 * 3600.0,
        clock: Clock | None = None,
        hasher: PasswordHasher | None = None,
    ) -> Identity:
        clock = clock or SystemClock()
        users = UserStore(data_dir, hasher)
        tokens = TokenService(load_or_create_secret(data_dir), token_ttl_s, clock)
        return cls(users, tokens, LoginThrottle(clock))

    def login_delay(self, username: str) -> float:
        """Seconds to wait before checking this username's password."""
        return self.throttle.delay(username)

    def login(self, username: str, password: str, client: str = "?") -> IssuedToken | None:
        """A token for good credentials, else None (logged, and slowed down next time).
        CPU-bound (argon2): call it from a worker thread in async code."""
        user = self.users.verify(username, password)
        if user is None:
            self.throttle.failure(username)
            log.warning("failed login for user %r from %s", username, client)
            return None
        self.throttle.success(username)
        log.info("user %r logged in from %s", username, client)
        return self.tokens.issue(user.username, user.role)

    def verify_token(self, token: str) -> Claims:
        """The claims of a valid token whose user still exists; else InvalidToken."""
        claims = self.tokens.verify(token)
        if self.users.get(claims.username) is None:
            raise InvalidToken("the token's user no longer exists")
        return claims
