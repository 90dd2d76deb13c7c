"""Users in ``DATA_DIR/users.json``: who may log in, with which role, scopes and MFA.

The file (mode 0600, rewritten atomically by every change)::

    {"version": 2, "users": [
      {"username": "olga", "password_hash": "$argon2id$...", "role": "operator",
       "scopes": ["acme/lyon/utilities"], "disabled": false,
       "mfa": {"secret": "BASE32...", "active": true, "recovery": ["<sha256 hex>", ...],
               "enrolled_ns": 1714550400000000000},
       "created_ns": 1714550400000000000, "changed_ns": 1714550400000000000}]}

``mfa`` is ``null`` without a second factor; ``active`` is false between enrolment and
its first verified code.  The TOTP secret is stored as is (it must be readable to check
codes; the file is as private as ``secret.key`` beside it); recovery codes only as
SHA-256 (each is 80 random bits, so a plain hash cannot be reversed).

Version 1 files of the previous release (``username``, ``password_hash``, ``role`` with
roles ``admin``, ``operator``, ``viewer``: the same names now) are read and rewritten as
version 2 at once; the old file is kept as ``users.json.v1.bak``.

Several processes may change the file (the server's API, ``isthmus users ...``): every
change takes ``DATA_DIR/.users.lock`` (``flock``), re-reads the file if another process
changed it, applies the change and writes the file.  A reader (the running server) sees
another process's change by :meth:`UserStore.reload_if_changed` (inode, mtime and size).

A corrupt file raises :class:`IdentityError` naming the file, the line and the field.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import json.decoder
import json.scanner
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from isthmus.model.clock import Clock, SystemClock
from isthmus.security.errors import Conflict, IdentityError, NotFound
from isthmus.security.files import write_private
from isthmus.security.passwords import (
    DEFAULT_HASHER,
    check_password,
    hash_password,
    verify_password,
)
from isthmus.security.rbac import Role, normalize_scope

USERS_FILE = "users.json"
LOCK_FILE = ".users.lock"
VERSION = 2
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_BASE32_RE = re.compile(r"^[A-Z2-7]{16,128}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


def check_username(username: str) -> str:
    """A username: 1 to 64 letters, digits, ``.``, ``_``, ``@`` or ``-`` (no spaces, no
    ``:`` so that it never looks like ``token:<id>`` or ``cli:<login>`` in the audit
    log), starting with a letter or digit."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise IdentityError(
            f"{username!r} is not a valid username: 1 to 64 letters, digits, '.', '_', '@'"
            " or '-', starting with a letter or digit",
            field="username",
        )
    return username


def normalize_scopes(scopes: object) -> tuple[str, ...]:
    """Hierarchy prefixes, normalised, without duplicates, in the given order."""
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple):
        raise ValueError("scopes must be a list of hierarchy prefixes")
    out: dict[str, None] = {}
    for scope in scopes:
        if not isinstance(scope, str):
            raise ValueError("scopes must be a list of hierarchy prefixes")
        out[normalize_scope(scope)] = None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MfaState:
    secret: str
    """The TOTP secret (base32)."""
    active: bool = False
    """False between enrolment and the first verified code."""
    recovery: tuple[str, ...] = ()
    """SHA-256 (hex) of the unused recovery codes."""
    enrolled_ns: int | None = None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    role: Role
    scopes: tuple[str, ...] = ()
    disabled: bool = False
    mfa: MfaState | None = None
    created_ns: int = 0
    changed_ns: int = 0

    @property
    def mfa_active(self) -> bool:
        return self.mfa is not None and self.mfa.active

    def to_json(self) -> dict[str, Any]:
        mfa: dict[str, Any] | None = None
        if self.mfa is not None:
            mfa = {
                "secret": self.mfa.secret,
                "active": self.mfa.active,
                "recovery": list(self.mfa.recovery),
                "enrolled_ns": self.mfa.enrolled_ns,
            }
        return {
            "username": self.username,
            "password_hash": self.password_hash,
            "role": str(self.role),
            "scopes": list(self.scopes),
            "disabled": self.disabled,
            "mfa": mfa,
            "created_ns": self.created_ns,
            "changed_ns": self.changed_ns,
        }


# --------------------------------------------------------------------------- parsing


# The pure-Python scanner calls ``parse_object`` (the C one does not): it tells where
# each object starts, to name the line of a bad field.
_JSON_OBJECT: Callable[..., tuple[Any, int]] = json.decoder.JSONObject  # type: ignore[attr-defined]
_PY_SCANNER: Callable[[Any], Any] = json.scanner.py_make_scanner  # type: ignore[attr-defined]


class _PositionDecoder(json.JSONDecoder):
    """A JSON decoder that remembers where each object starts and ends (to name lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[int, tuple[int, int]] = {}

        def parse_object(s_and_end: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
            obj, end = _JSON_OBJECT(s_and_end, *args, **kwargs)
            self.spans[id(obj)] = (s_and_end[1] - 1, end)
            return obj, end

        self.parse_object = parse_object
        self.scan_once = _PY_SCANNER(self)


class _Bad(Exception):
    def __init__(self, obj: object, name: str, message: str) -> None:
        self.obj = obj
        self.name = name
        self.message = message


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_users(text: str, path: str) -> tuple[int, dict[str, User]]:
    """``(version, users)`` of a users file's text; :class:`IdentityError` with file,
    line and field when it is not a valid version 1 or 2 file."""
    decoder = _PositionDecoder()
    try:
        doc = decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise IdentityError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})",
            file=path,
            line=exc.lineno,
        ) from None

    def where(obj: object, name: str) -> int:
        start, end = decoder.spans.get(id(obj), (0, len(text)))
        key = name.rsplit(".", 1)[-1].split("[", 1)[0]
        found = text.find(f'"{key}"', start, end) if key else -1
        return _line_of(text, found if found >= 0 else start)

    try:
        return _parse_doc(doc)
    except _Bad as bad:
        line = where(bad.obj, bad.name)
        raise IdentityError(
            f"{path}:{line}: {bad.name}: {bad.message}", file=path, line=line, field=bad.name
        ) from None


def _parse_doc(doc: object) -> tuple[int, dict[str, User]]:
    if not isinstance(doc, dict):
        raise _Bad(doc, "", "a users file is an object with 'version' and 'users'")
    version = doc.get("version")
    if version not in (1, 2) or isinstance(version, bool):
        raise _Bad(doc, "version", f"unknown version {version!r} (this release reads 1 and 2)")
    items = doc.get("users")
    if not isinstance(items, list):
        raise _Bad(doc, "users", "must be a list of users")
    users: dict[str, User] = {}
    folded: set[str] = set()
    for i, item in enumerate(items):
        user = _parse_user(item, f"users[{i}]", version)
        if user.username.lower() in folded:
            raise _Bad(item, f"users[{i}].username", f"{user.username!r} appears twice")
        folded.add(user.username.lower())
        users[user.username] = user
    return version, users


def _get(item: Mapping[str, Any], name: str, where: str, kind: type | tuple[type, ...]) -> Any:
    value = item.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        want = "/".join(k.__name__ for k in _kinds(kind))
        raise _Bad(item, f"{where}.{name}", f"must be {want}, not {type(value).__name__}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _parse_user(item: object, where: str, version: int) -> User:
    if not isinstance(item, dict):
        raise _Bad(item, where, "a user is an object")
    username = _get(item, "username", where, str)
    if not username or username != username.strip():
        raise _Bad(item, f"{where}.username", "empty or with outer spaces")
    password_hash = _get(item, "password_hash", where, str)
    if not password_hash.startswith("$argon2"):
        raise _Bad(item, f"{where}.password_hash", "not an argon2 hash")
    role_text = _get(item, "role", where, str)
    try:
        role = Role(role_text)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise _Bad(item, f"{where}.role", f"unknown role {role_text!r} ({roles})") from None
    if version == 1:
        return User(username, password_hash, role)
    try:
        scopes = normalize_scopes(item.get("scopes", []))
    except ValueError as exc:
        raise _Bad(item, f"{where}.scopes", str(exc)) from None
    disabled = item.get("disabled", False)
    if not isinstance(disabled, bool):
        raise _Bad(item, f"{where}.disabled", "must be true or false")
    times: list[int] = []
    for name in ("created_ns", "changed_ns"):
        value = item.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _Bad(item, f"{where}.{name}", "must be a non-negative integer")
        times.append(value)
    mfa_doc = item.get("mfa")
    mfa = None if mfa_doc is None else _parse_mfa(mfa_doc, f"{where}.mfa", item)
    return User(username, password_hash, role, scopes, disabled, mfa, times[0], times[1])


def _parse_mfa(doc: object, where: str, parent: object) -> MfaState:
    if not isinstance(doc, dict):
        raise _Bad(parent, where, "must be null or an object with secret, active, recovery")
    secret = _get(doc, "secret", where, str)
    if not _BASE32_RE.match(secret):
        raise _Bad(doc, f"{where}.secret", "not a base32 TOTP secret")
    active = _get(doc, "active", where, bool)
    recovery = doc.get("recovery", [])
    if not isinstance(recovery, list) or not all(
        isinstance(h, str) and _HEX64_RE.match(h) for h in recovery
    ):
        raise _Bad(doc, f"{where}.recovery", "must be a list of SHA-256 hex digests")
    enrolled = doc.get("enrolled_ns")
    if enrolled is not None and (not isinstance(enrolled, int) or isinstance(enrolled, bool)):
        raise _Bad(doc, f"{where}.enrolled_ns", "must be null or an integer")
    return MfaState(secret, active, tuple(recovery), enrolled)


def dump_users(users: Mapping[str, User]) -> bytes:
    doc = {
        "version": VERSION,
        "users": [users[name].to_json() for name in sorted(users)],
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- the store


@dataclass
class _Signature:
    ino: int = 0
    mtime_ns: int = 0
    size: int = -1


def _signature(path: Path) -> _Signature | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _Signature(st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class _State:
    users: dict[str, User] = field(default_factory=dict)
    signature: _Signature | None = None


class UserStore:
    """The users of one data directory, shared safely with other processes."""

    RELOAD_EVERY_S = 1.0

    def __init__(
        self,
        data_dir: Path,
        hasher: PasswordHasher | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / USERS_FILE
        self.hasher = hasher or DEFAULT_HASHER
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._state = _State()
        self._dummy_hash: str | None = None
        self._checked_at = -1e300
        self.reloads = 0
        self.error: IdentityError | None = None
        """Set while the file on disk is unreadable (a server then refuses every user)."""
        self._load(upgrade=True)

    # ------------------------------------------------------------------ files

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> tuple[int, dict[str, User], _Signature | None]:
        sig = _signature(self.path)
        if sig is None:
            return VERSION, {}, None
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"{self.path}: cannot read: {exc}", file=str(self.path)) from None
        version, users = parse_users(text, str(self.path))
        return version, users, sig

    def _load(self, *, upgrade: bool) -> None:
        version, users, sig = self._read()
        if version != VERSION and upgrade:
            with self._file_lock():
                version, users, sig = self._read()
                if version != VERSION:
                    backup = self.path.with_name(f"{USERS_FILE}.v{version}.bak")
                    shutil.copy2(self.path, backup)
                    os.chmod(backup, 0o600)
                    write_private(self.path, dump_users(users))
                    sig = _signature(self.path)
        self._state = _State(users, sig)
        self.error = None

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the file if another process changed it (checked at most once per
        :data:`RELOAD_EVERY_S` unless ``force``).  Returns whether it was re-read.
        Raises :class:`IdentityError` (and keeps it in :attr:`error`) when it is corrupt."""
        now = self.clock.monotonic()
        with self._lock:
            if not force and now - self._checked_at < self.RELOAD_EVERY_S:
                if self.error is not None:
                    raise self.error
                return False
            self._checked_at = now
            if _signature(self.path) == self._state.signature and self.error is None:
                return False
            try:
                self._load(upgrade=False)
            except IdentityError as exc:
                self.error = exc
                raise
            self.reloads += 1
            return True

    def _change(self, fn: Callable[[dict[str, User]], None]) -> None:
        """Apply ``fn`` to the current users (re-read under the lock) and save."""
        with self._lock, self._file_lock():
            _, users, _ = self._read()
            fn(users)
            write_private(self.path, dump_users(users))
            self._state = _State(users, _signature(self.path))
            self.error = None

    # ------------------------------------------------------------------ reads

    def get(self, username: str) -> User | None:
        return self._state.users.get(username)

    def find(self, username: str) -> User | None:
        """The user named ``username`` ignoring case."""
        user = self._state.users.get(username)
        if user is not None:
            return user
        folded = username.lower()
        return next((u for u in self._state.users.values() if u.username.lower() == folded), None)

    def require(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def usernames(self) -> list[str]:
        return sorted(self._state.users)

    def all(self) -> list[User]:
        return [self._state.users[n] for n in sorted(self._state.users)]

    # ------------------------------------------------------------------ changes

    def add(
        self,
        username: str,
        password: str,
        role: Role | str = Role.VIEWER,
        scopes: tuple[str, ...] | list[str] = (),
        *,
        check_policy: bool = True,
    ) -> User:
        check_username(username)
        if check_policy:
            check_password(password, username)
        role = Role(role)
        try:
            scope_tuple = normalize_scopes(list(scopes))
        except ValueError as exc:
            raise IdentityError(str(exc), field="scopes") from None
        hashed = hash_password(password, self.hasher)
        now = self.clock.now_ns()
        user = User(username, hashed, role, scope_tuple, created_ns=now, changed_ns=now)

        def add(users: dict[str, User]) -> None:
            if any(name.lower() == username.lower() for name in users):
                raise Conflict(f"user {username!r} exists")
            users[username] = user

        self._change(add)
        return user

    def update(self, username: str, fn: Callable[[User], User]) -> User:
        """Replace a user by ``fn(user)`` (``fn`` sees the latest copy on disk)."""
        result: list[User] = []

        def update(users: dict[str, User]) -> None:
            user = users.get(username)
            if user is None:
                raise NotFound(f"no user {username!r}")
            new = replace(fn(user), changed_ns=self.clock.now_ns())
            users[username] = new
            result.append(new)

        self._change(update)
        return result[0]

    def delete(self, username: str) -> User:
        removed: list[User] = []

        def delete(users: dict[str, User]) -> None:
            user = users.pop(username, None)
            if user is None:
                raise NotFound(f"no user {username!r}")
            removed.append(user)

        self._change(delete)
        return removed[0]

    def set_password(self, username: str, password: str, *, check_policy: bool = True) -> User:
        if check_policy:
            check_password(password, username)
        hashed = hash_password(password, self.hasher)
        return self.update(username, lambda u: replace(u, password_hash=hashed))

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password matches, else None (the same cost for an unknown
        user).  Disabled users are returned too: the caller decides."""
        user = self._state.users.get(username)
        if user is None:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
            verify_password(self._dummy_hash, password, self.hasher)
            return None
        if not verify_password(user.password_hash, password, self.hasher):
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            hashed = hash_password(password, self.hasher)
            with contextlib.suppress(IdentityError, OSError):
                user = self.update(username, lambda u: replace(u, password_hash=hashed))
        return user
