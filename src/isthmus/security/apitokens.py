"""API tokens for machines (MES, ERP, scripts): a role, scopes and an expiry.

A token reads ``ist_<id>_<secret>``: ``id`` is 12 hex digits (shown in lists and in the
audit log as ``token:<id>``), ``secret`` 32 random bytes (256 bits, base64url).  It is
shown once, at creation; the server keeps only SHA-256 of the secret.

Why SHA-256 and not argon2 like passwords: a token is checked on every request, and
argon2 costs ~50 ms and 64 MiB by design; a slow hash protects guessable secrets
(passwords), but a 256-bit random secret cannot be guessed or brute-forced from its
SHA-256 (2^256 candidates), so a fast hash gives the same protection for a stolen
database at microseconds per request.  Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass

from isthmus.security.errors import Conflict, IdentityError, InvalidToken, NotFound
from isthmus.security.rbac import Role
from isthmus.security.sessions import digest
from isthmus.security.store import IdentityDB

TOKEN_PREFIX = "ist_"
TOKEN_RE = re.compile(r"^ist_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    role: Role
    scopes: tuple[str, ...]
    created_ns: int
    created_by: str
    expires_ns: int
    revoked_ns: int | None = None
    revoked_by: str | None = None
    last_used_ns: int | None = None

    def state(self, now_ns: int) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_ns is not None:
            return "revoked"
        return "expired" if now_ns >= self.expires_ns else "active"


_COLUMNS = (
    "id, name, role, scopes, created_ns, created_by, expires_ns, revoked_ns, revoked_by,"
    " last_used_ns"
)


def _token(row: tuple[object, ...]) -> ApiToken:
    tid, name, role, scopes, created, by, expires, revoked, revoked_by, used = row
    return ApiToken(
        str(tid),
        str(name),
        Role(str(role)),
        tuple(json.loads(str(scopes))),
        int(created),  # type: ignore[call-overload]
        str(by),
        int(expires),  # type: ignore[call-overload]
        None if revoked is None else int(revoked),  # type: ignore[call-overload]
        None if revoked_by is None else str(revoked_by),
        None if used is None else int(used),  # type: ignore[call-overload]
    )


def check_token_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise IdentityError(
            f"{name!r} is not a valid token name: 1 to 64 letters, digits, '.', '_', '@' or"
            " '-', starting with a letter or digit",
            field="name",
        )
    return name


class ApiTokenStore:
    def __init__(self, db: IdentityDB) -> None:
        self.db = db

    def create(
        self,
        name: str,
        role: Role,
        scopes: tuple[str, ...],
        *,
        expires_ns: int,
        created_by: str,
        now_ns: int,
    ) -> tuple[ApiToken, str]:
        """A new token and its text (``ist_<id>_<secret>``, the only time it is known)."""
        check_token_name(name)
        if expires_ns <= now_ns:
            raise IdentityError("a token's expiry must be in the future", field="expires")
        secret = secrets.token_urlsafe(32)
        for _ in range(5):
            tid = secrets.token_hex(6)
            token = ApiToken(tid, name, Role(role), scopes, now_ns, created_by, expires_ns)
            with self.db.transaction() as cur:
                if cur.execute("SELECT 1 FROM api_tokens WHERE id=?", (tid,)).fetchone():
                    continue
                cur.execute(
                    f"INSERT INTO api_tokens({_COLUMNS}, secret_hash)"
                    " VALUES(?,?,?,?,?,?,?,NULL,NULL,NULL,?)",
                    (tid, name, str(token.role), json.dumps(list(scopes)), now_ns, created_by,
                     expires_ns, digest(secret)),
                )  # fmt: skip
            return token, f"{TOKEN_PREFIX}{tid}_{secret}"
        raise Conflict("could not draw a free token id")  # pragma: no cover

    def get(self, tid: str) -> ApiToken | None:
        row = self.db.one(f"SELECT {_COLUMNS} FROM api_tokens WHERE id=?", (tid,))
        return None if row is None else _token(row)

    def all(self) -> list[ApiToken]:
        return [
            _token(r) for r in self.db.all(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_ns")
        ]

    def find(self, id_or_name: str) -> ApiToken:
        """A token by id, or by name when exactly one unrevoked token has it."""
        token = self.get(id_or_name)
        if token is not None:
            return token
        rows = self.db.all(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE name=? AND revoked_ns IS NULL",
            (id_or_name,),
        )
        if len(rows) == 1:
            return _token(rows[0])
        if rows:
            ids = ", ".join(str(r[0]) for r in rows)
            raise Conflict(f"{len(rows)} tokens are named {id_or_name!r}: give the id ({ids})")
        raise NotFound(f"no token {id_or_name!r}")

    def revoke(self, tid: str, by: str, now_ns: int) -> ApiToken:
        with self.db.transaction() as cur:
            row = cur.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE id=?", (tid,)).fetchone()
            if row is None:
                raise NotFound(f"no token {tid!r}")
            if row[7] is None:
                cur.execute(
                    "UPDATE api_tokens SET revoked_ns=?, revoked_by=? WHERE id=?", (now_ns, by, tid)
                )
        token = self.get(tid)
        assert token is not None
        return token

    def revoke_named(self, name: str, by: str, now_ns: int) -> list[str]:
        """Revoke every unrevoked token called ``name``; returns their ids."""
        rows = self.db.all("SELECT id FROM api_tokens WHERE name=? AND revoked_ns IS NULL", (name,))
        for (tid,) in rows:
            self.revoke(str(tid), by, now_ns)
        return [str(r[0]) for r in rows]

    def verify(self, text: str, now_ns: int) -> ApiToken:
        """The token of a well-formed, known, unrevoked, unexpired ``text``; else
        :class:`InvalidToken` (whose message says which)."""
        m = TOKEN_RE.match(text)
        if m is None:
            raise InvalidToken("malformed API token")
        tid, secret = m.groups()
        row = self.db.one(f"SELECT {_COLUMNS}, secret_hash FROM api_tokens WHERE id=?", (tid,))
        if row is None:
            raise InvalidToken("unknown API token")
        if not hmac.compare_digest(str(row[-1]), digest(secret)):
            raise InvalidToken("wrong API token secret")
        token = _token(row[:-1])
        if token.revoked_ns is not None:
            raise InvalidToken("API token revoked")
        if now_ns >= token.expires_ns:
            raise InvalidToken("API token expired")
        return token

    def mark_used(self, tid: str, now_ns: int) -> None:
        self.db.execute("UPDATE api_tokens SET last_used_ns=? WHERE id=?", (now_ns, tid))
