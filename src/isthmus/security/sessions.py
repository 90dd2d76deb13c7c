"""Login sessions with rotating refresh tokens, and the per-username login state.

A login creates a session: its id (``sid``) is in every access token issued for it, and
its refresh token (``isr_<sid>_<secret>``) is stored only as SHA-256.  ``refresh``
rotates the refresh token (the old one is remembered as spent); presenting a spent one
again means it was copied: the whole session is revoked (reuse detection).  A session
ends when it is revoked (logout, password or MFA reset, user disabled or deleted,
refresh reuse), when it has been idle longer than the idle timeout, or at its absolute
lifetime; its access tokens stop working at once because every request checks the
session.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from isthmus.security.errors import InvalidToken
from isthmus.security.store import IdentityDB

REFRESH_PREFIX = "isr_"
_REFRESH_RE = re.compile(r"^isr_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    username: str
    created_ns: int
    last_seen_ns: int
    expires_ns: int
    """The absolute end (login + session lifetime)."""
    mfa: bool
    """Whether this session passed a second factor (at login or by enrolling)."""
    client: str
    revoked_ns: int | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_ns is not None


_COLUMNS = (
    "id, username, created_ns, last_seen_ns, expires_ns, mfa, client, revoked_ns, revoked_reason"
)


def _session(row: tuple[object, ...]) -> Session:
    sid, user, created, seen, expires, mfa, client, revoked, reason = row
    return Session(
        str(sid),
        str(user),
        int(created),  # type: ignore[call-overload]
        int(seen),  # type: ignore[call-overload]
        int(expires),  # type: ignore[call-overload]
        bool(mfa),
        str(client),
        None if revoked is None else int(revoked),  # type: ignore[call-overload]
        None if reason is None else str(reason),
    )


class RefreshReused(InvalidToken):
    """A refresh token that was already rotated was presented again: the session is
    revoked (whoever holds the newer one, thief or owner, must log in again)."""

    def __init__(self, session: Session) -> None:
        super().__init__("refresh token reused: the session is revoked")
        self.session = session


class SessionStore:
    def __init__(self, db: IdentityDB) -> None:
        self.db = db

    def create(
        self, username: str, *, mfa: bool, client: str, now_ns: int, lifetime_ns: int
    ) -> tuple[Session, str]:
        """A new session and its first refresh token."""
        sid = secrets.token_hex(16)
        secret = secrets.token_urlsafe(32)
        session = Session(sid, username, now_ns, now_ns, now_ns + lifetime_ns, mfa, client[:200])
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO sessions(id, username, created_ns, last_seen_ns, expires_ns,"
                " refresh_hash, mfa, client) VALUES(?,?,?,?,?,?,?,?)",
                (sid, username, now_ns, now_ns, session.expires_ns, digest(secret), int(mfa),
                 session.client),
            )  # fmt: skip
        return session, f"{REFRESH_PREFIX}{sid}_{secret}"

    def get(self, sid: str) -> Session | None:
        row = self.db.one(f"SELECT {_COLUMNS} FROM sessions WHERE id=?", (sid,))
        return None if row is None else _session(row)

    def of_user(self, username: str, *, active_only: bool = True) -> list[Session]:
        sql = f"SELECT {_COLUMNS} FROM sessions WHERE username=?"
        if active_only:
            sql += " AND revoked_ns IS NULL"
        return [_session(r) for r in self.db.all(sql + " ORDER BY created_ns", (username,))]

    def touch(self, sid: str, now_ns: int) -> None:
        self.db.execute(
            "UPDATE sessions SET last_seen_ns=? WHERE id=? AND last_seen_ns<?",
            (now_ns, sid, now_ns),
        )

    def set_mfa(self, sid: str) -> None:
        self.db.execute("UPDATE sessions SET mfa=1 WHERE id=?", (sid,))

    def revoke(self, sid: str, reason: str, now_ns: int) -> bool:
        changed = self.db.execute(
            "UPDATE sessions SET revoked_ns=?, revoked_reason=? WHERE id=? AND revoked_ns IS NULL",
            (now_ns, reason, sid),
        )
        return changed > 0

    def revoke_user(
        self, username: str, reason: str, now_ns: int, *, keep: str | None = None
    ) -> int:
        """Revoke every active session of ``username`` (but ``keep``); returns how many."""
        return self.db.execute(
            "UPDATE sessions SET revoked_ns=?, revoked_reason=?"
            " WHERE username=? AND revoked_ns IS NULL AND id IS NOT ?",
            (now_ns, reason, username, keep),
        )

    def rotate(self, refresh_token: str, now_ns: int) -> tuple[Session, str]:
        """Check a refresh token and replace it by a new one.  Raises
        :class:`InvalidToken` (malformed, unknown, revoked) or :class:`RefreshReused`
        (then the session is revoked).  Expiry and idleness are the caller's checks
        (they need the settings): see :meth:`Identity.refresh`."""
        m = _REFRESH_RE.match(refresh_token)
        if m is None:
            raise InvalidToken("malformed refresh token")
        sid, secret = m.groups()
        presented = digest(secret)
        new_secret = secrets.token_urlsafe(32)
        with self.db.transaction() as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS}, refresh_hash FROM sessions WHERE id=?", (sid,)
            ).fetchone()
            if row is None:
                raise InvalidToken("unknown refresh token")
            session = _session(row[:-1])
            current = str(row[-1])
            if hmac.compare_digest(current, presented):
                if session.revoked:
                    raise InvalidToken(f"session ended ({session.revoked_reason})")
                cur.execute(
                    "UPDATE sessions SET refresh_hash=?, last_seen_ns=MAX(last_seen_ns, ?)"
                    " WHERE id=?",
                    (digest(new_secret), now_ns, sid),
                )
                cur.execute(
                    "INSERT OR IGNORE INTO spent_refresh(hash, session_id, spent_ns) VALUES(?,?,?)",
                    (current, sid, now_ns),
                )
                return session, f"{REFRESH_PREFIX}{sid}_{new_secret}"
            spent = cur.execute(
                "SELECT 1 FROM spent_refresh WHERE hash=? AND session_id=?", (presented, sid)
            ).fetchone()
        if spent is None:
            raise InvalidToken("unknown refresh token")
        self.revoke(sid, "refresh_reused", now_ns)
        raise RefreshReused(session)

    def prune(self, before_ns: int) -> int:
        """Forget sessions that ended before ``before_ns`` (and their spent tokens)."""
        with self.db.transaction() as cur:
            cur.execute(
                "DELETE FROM sessions WHERE (revoked_ns IS NOT NULL AND revoked_ns < ?)"
                " OR expires_ns < ?",
                (before_ns, before_ns),
            )
            count = cur.rowcount
            cur.execute(
                "DELETE FROM spent_refresh WHERE session_id NOT IN (SELECT id FROM sessions)"
            )
        return count


@dataclass(frozen=True, slots=True)
class LoginState:
    failures: int = 0
    last_failure_ns: int = 0
    locked_until_ns: int = 0
    totp_step: int = 0


class LoginStates:
    """Failed logins and lockout per username (also for unknown usernames, so that a
    lockout does not tell which users exist), and the last TOTP step used."""

    def __init__(self, db: IdentityDB) -> None:
        self.db = db

    def get(self, username: str) -> LoginState:
        row = self.db.one(
            "SELECT failures, last_failure_ns, locked_until_ns, totp_step FROM login_state"
            " WHERE username=?",
            (username,),
        )
        if row is None:
            return LoginState()
        return LoginState(*(int(v) for v in row))

    def failure(self, username: str, now_ns: int, attempts: int, window_ns: int) -> LoginState:
        """Count a failure; at ``attempts`` failures (each within ``window_ns`` of the
        previous one) lock the username for ``window_ns``.  Returns the new state."""
        with self.db.transaction() as cur:
            row = cur.execute(
                "SELECT failures, last_failure_ns, locked_until_ns, totp_step FROM login_state"
                " WHERE username=?",
                (username,),
            ).fetchone()
            old = LoginState() if row is None else LoginState(*(int(v) for v in row))
            failures = old.failures
            if now_ns - old.last_failure_ns > window_ns or (
                old.locked_until_ns and old.locked_until_ns <= now_ns
            ):
                failures = 0  # the earlier failures are forgotten (or a lockout served)
            failures += 1
            locked = old.locked_until_ns if old.locked_until_ns > now_ns else 0
            if failures >= attempts:
                locked = now_ns + window_ns
            new = LoginState(failures, now_ns, locked, old.totp_step)
            cur.execute(
                "INSERT INTO login_state(username, failures, last_failure_ns, locked_until_ns,"
                " totp_step) VALUES(?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET"
                " failures=excluded.failures, last_failure_ns=excluded.last_failure_ns,"
                " locked_until_ns=excluded.locked_until_ns",
                (username, new.failures, new.last_failure_ns, new.locked_until_ns, new.totp_step),
            )
        return new

    def success(self, username: str) -> None:
        self.db.execute(
            "UPDATE login_state SET failures=0, last_failure_ns=0, locked_until_ns=0"
            " WHERE username=?",
            (username,),
        )

    def unlock(self, username: str) -> bool:
        return (
            self.db.execute(
                "UPDATE login_state SET failures=0, locked_until_ns=0 WHERE username=?",
                (username,),
            )
            > 0
        )

    def use_totp_step(self, username: str, step: int) -> bool:
        """Record ``step`` as used; False if it (or a later one) was used already."""
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO login_state(username) VALUES(?) ON CONFLICT(username) DO NOTHING",
                (username,),
            )
            changed = cur.execute(
                "UPDATE login_state SET totp_step=? WHERE username=? AND totp_step<?",
                (step, username, step),
            ).rowcount
        return changed > 0

    def forget(self, username: str) -> None:
        self.db.execute("DELETE FROM login_state WHERE username=?", (username,))

    def prune(self, before_ns: int) -> int:
        """Forget unknown usernames' failures (bounded table under a guessing attack)."""
        return self.db.execute(
            "DELETE FROM login_state WHERE last_failure_ns < ? AND locked_until_ns < ?"
            " AND totp_step = 0",
            (before_ns, before_ns),
        )
