"""Identity: who is calling, and the changes to users and tokens — audited.

:class:`Identity` is what the API and the CLI use.  Its parts live beside it:
``passwords`` (argon2id, the policy), ``users`` (``DATA_DIR/users.json``), ``store``
(``DATA_DIR/identity.db``: sessions, API tokens, login state), ``sessions`` (rotating
refresh tokens, lockout), ``apitokens`` (``ist_<id>_<secret>``) and ``mfa`` (TOTP).

* :meth:`Identity.authenticate` turns a bearer token into an
  :class:`~isthmus.security.rbac.Principal` or raises :class:`InvalidToken`.  An access
  token (HS256 JWT signed with ``DATA_DIR/secret.key``: ``iss``, ``sub``, ``sid``,
  ``iat``, ``exp``, ``typ``) is valid while it has not expired (``api.token_ttl``,
  default 15 min) *and* its session lives: not revoked (logout, password or MFA reset,
  refresh reuse, user disabled or deleted), not idle longer than ``api.idle_timeout``
  (default 30 min), not older than ``api.session_lifetime`` (12 h), and its user exists
  and is enabled.  The role and scopes are the user's *current* ones.  An API token
  (``ist_...``) is valid until it expires or is revoked.
* :meth:`Identity.login` checks the password (argon2id), the lockout
  (``api.lockout``: 5 failures → 15 min, also for unknown usernames) and the second
  factor (TOTP ±1 step, each step once; or a one-time recovery code), and opens a
  session.  A user whose role is in ``api.mfa_required_roles`` and has no second factor
  gets a session that may only enrol (``mfa_enrollment_required``).
* Every login, failure, lockout, logout, MFA change, user and token change, every API
  token use (at most once a minute per token) and every refused token is recorded in the
  audit log.  A change to users or tokens is recorded *before* it is made and refused if
  the audit log cannot be written.

The users file is re-read when another process (``isthmus users ...``) changed it,
checked at most once a second by ``authenticate`` (and at every login).  Sessions and
API tokens are rows in SQLite that every request reads, so a revocation by the CLI takes
effect at the next request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jwt
from argon2 import PasswordHasher

from isthmus.model.clock import Clock, SystemClock
from isthmus.security import mfa as totp
from isthmus.security.apitokens import TOKEN_PREFIX, ApiToken, ApiTokenStore, check_token_name
from isthmus.security.errors import (
    Conflict,
    Forbidden,
    IdentityError,
    InvalidToken,
    LoginRefused,
    MfaEnrollmentRequired,
    NotFound,
    WeakPassword,
)
from isthmus.security.files import SECRET_FILE, load_or_create_secret, write_private
from isthmus.security.passwords import (
    check_password,
    generate_password,
    hash_password,
    verify_password,
)
from isthmus.security.rbac import Principal, Role, in_scope
from isthmus.security.sessions import LoginStates, RefreshReused, Session, SessionStore
from isthmus.security.store import DB_FILE, IdentityDB
from isthmus.security.users import (
    USERS_FILE,
    MfaState,
    User,
    UserStore,
    check_username,
    normalize_scopes,
)

if TYPE_CHECKING:
    from isthmus.model.config import ApiConfig

__all__ = [
    "ADMIN_CREDENTIAL_FILE",
    "ADMIN_USERNAME",
    "DB_FILE",
    "SECRET_FILE",
    "USERS_FILE",
    "ApiToken",
    "AuditSink",
    "Conflict",
    "Forbidden",
    "Identity",
    "IdentityError",
    "IdentitySettings",
    "InvalidToken",
    "IssuedToken",
    "LoginRefused",
    "LoginResult",
    "LoginThrottle",
    "MfaEnrollment",
    "MfaEnrollmentRequired",
    "NotFound",
    "Role",
    "TokenService",
    "User",
    "UserStore",
    "WeakPassword",
    "ensure_admin",
    "hash_password",
    "load_or_create_secret",
    "verify_password",
    "write_private",
]

log = logging.getLogger(__name__)

ADMIN_CREDENTIAL_FILE = "admin-credential.txt"
ADMIN_USERNAME = "admin"
ISSUER = "isthmus"
ALGORITHM = "HS256"
LOCAL_TOKEN_NAME = "local-cli"
SYSTEM_ACTOR = "system"
_NS = 1_000_000_000
_TOKEN_USE_AUDIT_NS = 60 * _NS
_REFUSAL_AUDIT_NS = 1 * _NS
_PRUNE_EVERY_NS = 3600 * _NS
_KEEP_ENDED_NS = 7 * 86400 * _NS

# Audit actions (the audit module names some of them too; it is not imported here
# because it imports this module's file helpers).
AUTH_LOGIN = "auth.login"
AUTH_LOGIN_FAILED = "auth.login_failed"
AUTH_LOCKOUT = "auth.lockout"
AUTH_LOGOUT = "auth.logout"
AUTH_REFRESH_REUSED = "auth.refresh_reused"
AUTH_SESSION_EXPIRED = "auth.session_expired"
AUTH_TOKEN_REFUSED = "auth.token_refused"
AUTH_PASSWORD_CHANGED = "auth.password_changed"
MFA_ENROLLMENT_STARTED = "mfa.enrollment_started"
MFA_ENROLLED = "mfa.enrolled"
MFA_VERIFY_FAILED = "mfa.verify_failed"
MFA_RECOVERY_USED = "mfa.recovery_used"
MFA_RESET = "mfa.reset"
USER_ADDED = "user.added"
USER_CHANGED = "user.changed"
USER_DELETED = "user.deleted"
USER_PASSWORD_RESET = "user.password_reset"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"
TOKEN_USED = "token.used"


class AuditSink(Protocol):
    """What identity needs of :class:`isthmus.security.audit.AuditLog`."""

    def append(
        self, action: str, *, actor: str | None, outcome: str = "ok", **details: Any
    ) -> Any: ...


class AuditFailed(IdentityError):
    """The audit log cannot be written, so the change was not made (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    token_ttl_s: float = 15 * 60.0
    idle_timeout_s: float = 30 * 60.0
    session_lifetime_s: float = 12 * 3600.0
    lockout_attempts: int = 5
    lockout_s: float = 15 * 60.0
    mfa_required_roles: frozenset[Role] = frozenset()
    mfa_issuer: str = "Isthmus"
    """The issuer name authenticator apps show."""

    @classmethod
    def from_config(cls, api: ApiConfig, mfa_issuer: str = "Isthmus") -> IdentitySettings:
        return cls(
            token_ttl_s=float(api.token_ttl),
            idle_timeout_s=float(api.idle_timeout),
            session_lifetime_s=float(api.session_lifetime),
            lockout_attempts=api.lockout.attempts,
            lockout_s=api.lockout.minutes * 60.0,
            mfa_required_roles=frozenset(Role(r) for r in api.mfa_required_roles),
            mfa_issuer=mfa_issuer,
        )


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    """Seconds."""
    expires_at: int = 0
    """Seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    username: str
    session_id: str
    issued_at: int
    expires_at: int
    """Seconds since the epoch."""


class TokenService:
    """Issues and verifies access tokens (HS256 JWTs) against an injected clock."""

    def __init__(
        self, secret: bytes, ttl_s: float, clock: Clock | None = None, issuer: str = ISSUER
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the signing key needs at least 32 bytes")
        if ttl_s <= 0:
            raise ValueError("the token lifetime must be positive")
        self._secret = secret
        self.ttl_s = max(1, int(ttl_s))
        self.clock: Clock = clock or SystemClock()
        self.issuer = issuer

    def issue(self, username: str, session_id: str) -> IssuedToken:
        now = self.clock.now_ns() // _NS
        payload = {
            "iss": self.issuer,
            "sub": username,
            "sid": session_id,
            "typ": "access",
            "iat": now,
            "exp": now + self.ttl_s,
        }
        token = jwt.encode(payload, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, self.ttl_s, now + self.ttl_s)

    def verify(self, token: str) -> AccessClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=0,
                options={
                    "require": ["iss", "sub", "sid", "exp", "iat"],
                    # Times are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        exp, iat, sub, sid = payload["exp"], payload["iat"], payload["sub"], payload["sid"]
        if not isinstance(exp, int) or not isinstance(iat, int):
            raise InvalidToken("invalid token: times are not integers")
        if payload.get("typ") != "access" or not isinstance(sid, str) or not isinstance(sub, str):
            raise InvalidToken("invalid token: not an access token")
        if self.clock.now_ns() / _NS >= exp:
            raise InvalidToken("token expired")
        return AccessClaims(sub, sid, iat, exp)


class LoginThrottle:
    """Per-username delay before checking a password after failed logins
    (``base * 2**(failures-1)`` seconds, capped, minus the time since the last failure),
    on top of the lockout: it slows a guesser between lockouts.  Bounded memory."""

    def __init__(
        self,
        clock: Clock | None = None,
        base_s: float = 0.25,
        max_s: float = 2.0,
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


@dataclass(frozen=True, slots=True)
class LoginResult:
    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str
    username: str
    role: Role
    scopes: tuple[str, ...]
    mfa: bool
    """Whether this session passed a second factor."""
    mfa_enrollment_required: bool
    """The user's role requires MFA and the user has none: the session may only enrol."""
    refresh_expires_at: int = 0
    """Seconds since the epoch: the session's absolute end."""


@dataclass(frozen=True, slots=True)
class MfaEnrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str
    qr_data_uri: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as listed: no hash, no secret."""

    username: str
    role: Role
    scopes: tuple[str, ...]
    disabled: bool
    mfa_active: bool
    mfa_pending: bool
    recovery_codes_left: int
    locked_until_ns: int | None
    sessions: int
    created_ns: int
    changed_ns: int


# --------------------------------------------------------------------------- identity


@dataclass
class _Memo:
    token_audited: dict[str, int] = field(default_factory=dict)
    refusals: OrderedDict[tuple[str, str], int] = field(default_factory=OrderedDict)
    last_prune_ns: int = 0
    users_error_logged: bool = False


class Identity:
    """Users, sessions, MFA and API tokens of one data directory."""

    def __init__(
        self,
        users: UserStore,
        tokens: TokenService,
        db: IdentityDB,
        *,
        settings: IdentitySettings | None = None,
        audit: AuditSink | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.users = users
        self.tokens = tokens
        self.clock: Clock = tokens.clock
        self.db = db
        self.sessions = SessionStore(db)
        self.login_states = LoginStates(db)
        self.api_tokens = ApiTokenStore(db)
        self.settings = settings or IdentitySettings(token_ttl_s=tokens.ttl_s)
        self.audit = audit
        self.throttle = throttle or LoginThrottle(self.clock)
        self._lock = threading.Lock()
        self._memo = _Memo()

    @classmethod
    def open(
        cls,
        data_dir: Path,
        token_ttl_s: float | None = None,
        clock: Clock | None = None,
        hasher: PasswordHasher | None = None,
        *,
        settings: IdentitySettings | None = None,
        audit: AuditSink | None = None,
    ) -> Identity:
        """Open (or create) the identity files of ``data_dir``.  Raises
        :class:`IdentityError` naming the file, line and field of a corrupt users file."""
        clock = clock or SystemClock()
        settings = settings or IdentitySettings()
        if token_ttl_s is not None:
            settings = replace(settings, token_ttl_s=float(token_ttl_s))
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        users = UserStore(data_dir, hasher, clock)
        tokens = TokenService(load_or_create_secret(data_dir), settings.token_ttl_s, clock)
        return cls(users, tokens, IdentityDB(data_dir), settings=settings, audit=audit)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ audit

    def _record(self, action: str, actor: str | None, outcome: str = "ok", **details: Any) -> None:
        """An event (a login, a refusal): a failing audit log is logged, not fatal."""
        if self.audit is None:
            return
        try:
            self.audit.append(action, actor=actor, outcome=outcome, **details)
        except Exception as exc:
            log.error("audit record %s for %s not written: %s", action, actor, exc)

    def _record_change(self, action: str, actor: str, **details: Any) -> None:
        """A change to users or tokens: recorded before it is made, or not made."""
        log.debug("%s by %s: %s", action, actor, details)
        if self.audit is None:
            return
        try:
            self.audit.append(action, actor=actor, **details)
        except Exception as exc:
            raise AuditFailed(
                f"the audit log cannot be written, so nothing was changed: {exc}"
            ) from None

    def _refuse(self, reason: str, subject: str, **details: Any) -> InvalidToken:
        """Audit a refused token (the same reason and subject at most once a second)."""
        now = self.clock.now_ns()
        key = (reason, subject)
        with self._lock:
            last = self._memo.refusals.get(key)
            due = last is None or now - last >= _REFUSAL_AUDIT_NS
            if due:
                self._memo.refusals[key] = now
                self._memo.refusals.move_to_end(key)
                while len(self._memo.refusals) > 1024:
                    self._memo.refusals.popitem(last=False)
        if due:
            self._record(
                AUTH_TOKEN_REFUSED, None, "denied", reason=reason, subject=subject, **details
            )
        return InvalidToken(reason)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> int:
        return self.clock.now_ns()

    def _reload_users(self, *, force: bool = False) -> None:
        try:
            self.users.reload_if_changed(force=force)
            self._memo.users_error_logged = False
        except IdentityError as exc:
            if not self._memo.users_error_logged:
                log.error("every login and session is refused until this is fixed: %s", exc)
                self._memo.users_error_logged = True
            raise

    def mfa_required(self, user: User) -> bool:
        return user.role in self.settings.mfa_required_roles

    def _pending(self, user: User, session: Session) -> bool:
        return self.mfa_required(user) and not session.mfa

    def _maybe_prune(self, now: int) -> None:
        if now - self._memo.last_prune_ns < _PRUNE_EVERY_NS:
            return
        self._memo.last_prune_ns = now
        with contextlib.suppress(Exception):
            self.sessions.prune(now - _KEEP_ENDED_NS)
            self.login_states.prune(now - int(self.settings.lockout_s * _NS) - 86400 * _NS)

    # ------------------------------------------------------------------ authenticate

    def authenticate(self, bearer: str, *, allow_pending: bool = False) -> Principal:
        """The caller of a bearer token (an access token or an API token).

        Raises :class:`InvalidToken` for a malformed, forged, expired or revoked token,
        an ended session, or a disabled or deleted user; :class:`MfaEnrollmentRequired`
        (a subclass) for a session that must enrol MFA first, unless ``allow_pending``
        (the enrolment routes).  Every refusal is audited."""
        if not isinstance(bearer, str) or not bearer or len(bearer) > 4096:
            raise self._refuse("malformed token", "?")
        if bearer.startswith(TOKEN_PREFIX):
            return self._authenticate_api_token(bearer)
        try:
            claims = self.tokens.verify(bearer)
        except InvalidToken as exc:
            raise self._refuse(str(exc), "?") from None
        now = self._now()
        session = self.sessions.get(claims.session_id)
        subject = claims.username
        if session is None or session.username != claims.username:
            raise self._refuse("unknown session", subject, session=claims.session_id)
        if session.revoked:
            raise self._refuse(
                f"session ended ({session.revoked_reason})", subject, session=session.id
            )
        if self._expire(session, now):
            raise self._refuse("session expired", subject, session=session.id)
        try:
            self._reload_users()
        except IdentityError:
            raise InvalidToken("the users file is unreadable: see the server log") from None
        user = self.users.get(claims.username)
        if user is None:
            raise self._refuse("the token's user no longer exists", subject, session=session.id)
        if user.disabled:
            raise self._refuse("the token's user is disabled", subject, session=session.id)
        pending = self._pending(user, session)
        if pending and not allow_pending:
            self._refuse("mfa enrollment required", subject, session=session.id)
            raise MfaEnrollmentRequired(
                "this user must enrol a second factor first: POST /api/auth/mfa/enroll, then"
                " POST /api/auth/mfa/verify"
            )
        touch_ns = int(min(30.0, self.settings.idle_timeout_s / 30) * _NS)
        if now - session.last_seen_ns >= touch_ns:
            self.sessions.touch(session.id, now)
        extra = {"mfa_enrollment_required": "true"} if pending else {}
        return Principal(
            user.username, user.role, user.scopes, "user", session.id, session.mfa, extra
        )

    def _expire(self, session: Session, now: int) -> bool:
        """End a session that is idle or past its lifetime (audited); True if it ended."""
        reason = None
        if now - session.last_seen_ns >= int(self.settings.idle_timeout_s * _NS):
            reason = "idle"
        elif now >= session.expires_ns:
            reason = "lifetime"
        if reason is None:
            return False
        if self.sessions.revoke(session.id, reason, now):
            self._record(AUTH_SESSION_EXPIRED, session.username, session=session.id, reason=reason)
        return True

    def _authenticate_api_token(self, bearer: str) -> Principal:
        now = self._now()
        tid = bearer[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 12]
        try:
            token = self.api_tokens.verify(bearer, now)
        except InvalidToken as exc:
            raise self._refuse(str(exc), f"token:{tid}", kind="token") from None
        with self._lock:
            last = self._memo.token_audited.get(token.id)
            due = last is None or now - last >= _TOKEN_USE_AUDIT_NS
            if due:
                self._memo.token_audited[token.id] = now
        if due:
            self.api_tokens.mark_used(token.id, now)
            self._record(TOKEN_USED, f"token:{token.id}", name=token.name, role=token.role)
        return Principal(token.name, token.role, token.scopes, "token", token.id, False)

    # ------------------------------------------------------------------ login

    def login_delay(self, username: str) -> float:
        """Seconds to wait before checking this username's password."""
        return self.throttle.delay(username)

    def login(
        self,
        username: str,
        password: str,
        client: str = "?",
        *,
        otp: str | None = None,
        recovery_code: str | None = None,
    ) -> LoginResult:
        """A new session for good credentials (and second factor); else
        :class:`LoginRefused`.  CPU-bound (argon2): call it from a worker thread."""
        now = self._now()
        self._maybe_prune(now)
        state = self.login_states.get(username)
        if state.locked_until_ns > now:
            retry = (state.locked_until_ns - now) / _NS
            self._record(
                AUTH_LOGIN_FAILED, username, "denied", reason="locked", client=client,
                retry_after_s=round(retry),
            )  # fmt: skip
            raise LoginRefused(
                "locked",
                f"too many failed logins: try again in {max(1, round(retry))} s",
                retry_after=retry,
            )
        self._reload_users(force=True)
        user = self.users.verify(username, password)
        if user is None or user.disabled:
            reason = "credentials" if user is None else "disabled"
            self._failure(username, client, reason)
            raise LoginRefused("credentials", "wrong username or password")
        mfa_passed = False
        if user.mfa_active:
            assert user.mfa is not None
            if otp:
                step = totp.match_step(user.mfa.secret, otp, now / _NS)
                if step is None:
                    self._failure(username, client, "mfa_invalid")
                    raise LoginRefused("mfa_invalid", "wrong one-time code")
                if not self.login_states.use_totp_step(username, step):
                    self._failure(username, client, "mfa_replayed")
                    raise LoginRefused(
                        "mfa_invalid", "this one-time code was used already: wait for the next"
                    )
            elif recovery_code:
                left = self._use_recovery_code(user, recovery_code)
                if left is None:
                    self._failure(username, client, "recovery_invalid")
                    raise LoginRefused("mfa_invalid", "wrong or already used recovery code")
                self._record(MFA_RECOVERY_USED, username, client=client, codes_left=left)
            else:
                self._record(
                    AUTH_LOGIN_FAILED, username, "denied", reason="mfa_required", client=client
                )
                raise LoginRefused(
                    "mfa_required", "a one-time code (otp) or a recovery code is required"
                )
            mfa_passed = True
        self.login_states.success(username)
        self.throttle.success(username)
        session, refresh = self.sessions.create(
            username,
            mfa=mfa_passed,
            client=client,
            now_ns=now,
            lifetime_ns=int(self.settings.session_lifetime_s * _NS),
        )
        pending = self._pending(user, session)
        self._record(
            AUTH_LOGIN, username, session=session.id, client=client, mfa=mfa_passed,
            mfa_enrollment_required=pending,
        )  # fmt: skip
        log.info("user %r logged in from %s", username, client)
        return self._result(user, session, refresh)

    def _result(self, user: User, session: Session, refresh: str) -> LoginResult:
        issued = self.tokens.issue(user.username, session.id)
        return LoginResult(
            access_token=issued.access_token,
            expires_in=issued.expires_in,
            refresh_token=refresh,
            session_id=session.id,
            username=user.username,
            role=user.role,
            scopes=user.scopes,
            mfa=session.mfa,
            mfa_enrollment_required=self._pending(user, session),
            refresh_expires_at=session.expires_ns // _NS,
        )

    def _failure(self, username: str, client: str, reason: str) -> None:
        now = self._now()
        state = self.login_states.failure(
            username, now, self.settings.lockout_attempts, int(self.settings.lockout_s * _NS)
        )
        self.throttle.failure(username)
        log.warning("failed login for user %r from %s (%s)", username, client, reason)
        self._record(
            AUTH_LOGIN_FAILED, username, "denied", reason=reason, client=client,
            failures=state.failures,
        )  # fmt: skip
        if state.locked_until_ns > now and state.failures == self.settings.lockout_attempts:
            log.warning("user %r locked for %.0f s", username, self.settings.lockout_s)
            self._record(
                AUTH_LOCKOUT, username, "denied", client=client, failures=state.failures,
                minutes=self.settings.lockout_s / 60,
            )  # fmt: skip

    def _use_recovery_code(self, user: User, code: str) -> int | None:
        """Consume a recovery code; the number left, or None if it is not one."""
        digest = totp.hash_recovery_code(code)
        left: list[int] = []

        def consume(u: User) -> User:
            if u.mfa is None or digest not in u.mfa.recovery:
                raise NotFound("no such recovery code")
            remaining = tuple(h for h in u.mfa.recovery if h != digest)
            left.append(len(remaining))
            return replace(u, mfa=replace(u.mfa, recovery=remaining))

        try:
            self.users.update(user.username, consume)
        except NotFound:
            return None
        return left[0]

    def refresh(self, refresh_token: str, client: str = "?") -> LoginResult:
        """A new access token and a new refresh token for a valid refresh token (the old
        one is spent).  :class:`InvalidToken` if the session ended; presenting a spent
        token revokes the session (audited ``auth.refresh_reused``)."""
        now = self._now()
        try:
            session, new_refresh = self.sessions.rotate(refresh_token, now)
        except RefreshReused as exc:
            self._record(
                AUTH_REFRESH_REUSED, exc.session.username, "denied", session=exc.session.id,
                client=client,
            )  # fmt: skip
            raise
        except InvalidToken as exc:
            raise self._refuse(str(exc), "?", kind="refresh") from None
        if self._expire(session, now):
            raise InvalidToken("session expired: log in again")
        self._reload_users()
        user = self.users.get(session.username)
        if user is None or user.disabled:
            self.sessions.revoke(session.id, "user_gone" if user is None else "disabled", now)
            raise self._refuse("the session's user is disabled or deleted", session.username)
        return self._result(user, session, new_refresh)

    def logout(self, principal: Principal) -> None:
        if principal.kind != "user" or principal.token_id is None:
            raise Conflict("an API token is not a session: revoke it with DELETE /api/tokens/{id}")
        if self.sessions.revoke(principal.token_id, "logout", self._now()):
            self._record(AUTH_LOGOUT, principal.actor, session=principal.token_id)

    def change_password(self, principal: Principal, current: str, new: str) -> None:
        """A user changes their own password: the other sessions end."""
        user = self._own_user(principal)
        if self.users.verify(user.username, current) is None:
            self._failure(user.username, "password-change", "credentials")
            raise LoginRefused("credentials", "the current password is wrong")
        check_password(new, user.username)
        self._record_change(AUTH_PASSWORD_CHANGED, principal.actor, user=user.username)
        self.users.set_password(user.username, new)
        self.sessions.revoke_user(
            user.username, "password_changed", self._now(), keep=principal.token_id
        )

    # ------------------------------------------------------------------ MFA

    def _own_user(self, principal: Principal) -> User:
        if principal.kind != "user":
            raise Forbidden("an API token has no password or second factor")
        return self.users.require(principal.name)

    def mfa_enroll(self, principal: Principal) -> MfaEnrollment:
        """Start (or restart) enrolment: a new TOTP secret, not active until verified."""
        user = self._own_user(principal)
        if user.mfa_active:
            raise Conflict("MFA is active already: an admin can reset it (reset-mfa)")
        secret = totp.new_secret()
        self._record_change(MFA_ENROLLMENT_STARTED, principal.actor, user=user.username)
        self.users.update(user.username, lambda u: replace(u, mfa=MfaState(secret)))
        uri = totp.provisioning_uri(secret, user.username, self.settings.mfa_issuer)
        return MfaEnrollment(secret, uri, totp.qr_svg(uri), totp.qr_data_uri(uri))

    def mfa_verify(self, principal: Principal, otp: str, *, actor: str | None = None) -> list[str]:
        """Activate the enrolled secret with a current code; returns ten recovery codes
        (shown once).  The calling session counts as having passed MFA."""
        user = self._own_user(principal)
        actor = actor or principal.actor
        if user.mfa is None:
            raise Conflict("no enrolment to verify: POST /api/auth/mfa/enroll first")
        if user.mfa.active:
            raise Conflict("MFA is active already")
        now = self._now()
        step = totp.match_step(user.mfa.secret, otp, now / _NS)
        if step is None or not self.login_states.use_totp_step(user.username, step):
            self._record(MFA_VERIFY_FAILED, actor, "denied", user=user.username)
            raise LoginRefused("mfa_invalid", "wrong one-time code")
        codes = totp.new_recovery_codes()
        hashes = tuple(totp.hash_recovery_code(c) for c in codes)
        secret = user.mfa.secret
        self._record_change(MFA_ENROLLED, actor, user=user.username, recovery_codes=10)
        self.users.update(
            user.username,
            lambda u: replace(u, mfa=MfaState(secret, True, hashes, now)),
        )
        if principal.token_id is not None:
            self.sessions.set_mfa(principal.token_id)
        return codes

    def enroll_offline(self, username: str, *, actor: str) -> tuple[MfaEnrollment, str]:
        """The CLI's enrolment for a user (``isthmus users mfa-enroll``): returns the
        enrolment and the secret to verify with :meth:`verify_offline`."""
        user = self.users.require(username)
        if user.mfa_active:
            raise Conflict(f"MFA of {username!r} is active already: reset-mfa first")
        secret = totp.new_secret()
        self._record_change(MFA_ENROLLMENT_STARTED, actor, user=username)
        self.users.update(username, lambda u: replace(u, mfa=MfaState(secret)))
        uri = totp.provisioning_uri(secret, username, self.settings.mfa_issuer)
        return MfaEnrollment(secret, uri, totp.qr_svg(uri), totp.qr_data_uri(uri)), secret

    def verify_offline(self, username: str, otp: str, *, actor: str) -> list[str]:
        principal = Principal(username, self.users.require(username).role)
        return self.mfa_verify(principal, otp, actor=actor)

    # ------------------------------------------------------------------ admin

    def _check_grant(
        self,
        caller: Principal | None,
        *,
        role: Role | None = None,
        scopes: Iterable[str] | None = None,
        target: User | None = None,
    ) -> None:
        """What a caller of the API may grant: only an admin grants the admin role or
        changes an admin; a scoped caller grants only scopes inside their own and changes
        only users inside them.  The CLI (``caller`` None) is the machine's operator."""
        if caller is None:
            return
        if caller.role is not Role.ADMIN and (
            role is Role.ADMIN or (target is not None and target.role is Role.ADMIN)
        ):
            raise Forbidden("only an admin may grant the admin role or change an admin")
        if caller.scopes:
            if scopes is not None:
                granted = list(scopes)
                if not granted or not all(in_scope(s, caller.scopes) for s in granted):
                    raise Forbidden("you may only grant scopes inside your own")
            if target is not None and not visible_to(caller, target.scopes):
                # Not even its existence is told: it answers like an unknown user.
                raise NotFound(f"no user {target.username!r}")

    def _check_last_admin(self, username: str, *, role: Role | None, disabled: bool) -> None:
        user = self.users.get(username)
        if user is None or user.role is not Role.ADMIN or user.disabled:
            return
        if role in (None, Role.ADMIN) and not disabled:
            return
        others = [
            u for u in self.users.all() if u.role is Role.ADMIN and not u.disabled and u is not user
        ]
        if not others:
            raise Conflict(f"{username!r} is the last enabled admin: add another admin first")

    def list_users(self, caller: Principal | None = None) -> list[UserInfo]:
        """Every user; for a scoped caller, only the users inside its scopes (and itself):
        names of the hierarchy outside them are never shown."""
        self._reload_users()
        return [self.user_info(u.username) for u in self.users.all() if _sees_user(caller, u)]

    def user_info(self, username: str, caller: Principal | None = None) -> UserInfo:
        self._reload_users()
        user = self.users.require(username)
        if not _sees_user(caller, user):
            raise NotFound(f"no user {username!r}")
        state = self.login_states.get(username)
        now = self._now()
        return UserInfo(
            username=user.username,
            role=user.role,
            scopes=user.scopes,
            disabled=user.disabled,
            mfa_active=user.mfa_active,
            mfa_pending=user.mfa is not None and not user.mfa.active,
            recovery_codes_left=len(user.mfa.recovery) if user.mfa is not None else 0,
            locked_until_ns=state.locked_until_ns if state.locked_until_ns > now else None,
            sessions=len(self.sessions.of_user(username)),
            created_ns=user.created_ns,
            changed_ns=user.changed_ns,
        )

    def add_user(
        self,
        username: str,
        password: str,
        role: Role | str,
        scopes: Iterable[str] = (),
        *,
        actor: str,
        caller: Principal | None = None,
    ) -> User:
        role = Role(role)
        scope_tuple = _scopes(scopes)
        self._check_grant(caller, role=role, scopes=scope_tuple if caller else None)
        self._reload_users(force=True)
        check_username(username)
        if self.users.find(username) is not None:
            raise Conflict(f"user {username!r} exists")
        check_password(password, username)
        self._record_change(USER_ADDED, actor, user=username, role=role, scopes=list(scope_tuple))
        return self.users.add(username, password, role, scope_tuple)

    def update_user(
        self,
        username: str,
        *,
        role: Role | str | None = None,
        scopes: Iterable[str] | None = None,
        disabled: bool | None = None,
        actor: str,
        caller: Principal | None = None,
    ) -> User:
        """Change a user's role, scopes or disabled flag (what is not None).  Disabling
        ends the user's sessions; role and scopes apply to their next request."""
        self._reload_users(force=True)
        user = self.users.require(username)
        new_role = None if role is None else Role(role)
        new_scopes = None if scopes is None else _scopes(scopes)
        self._check_grant(caller, role=new_role, scopes=new_scopes, target=user)
        if caller is not None and caller.kind == "user" and caller.name == username:
            if new_role is not None and new_role is not user.role:
                raise Forbidden("you cannot change your own role")
            if disabled:
                raise Forbidden("you cannot disable yourself")
        self._check_last_admin(username, role=new_role, disabled=bool(disabled))
        changes: dict[str, Any] = {}
        if new_role is not None and new_role is not user.role:
            changes["role"] = {"from": user.role, "to": new_role}
        if new_scopes is not None and new_scopes != user.scopes:
            changes["scopes"] = {"from": list(user.scopes), "to": list(new_scopes)}
        if disabled is not None and disabled != user.disabled:
            changes["disabled"] = disabled
        if not changes:
            return user
        self._record_change(USER_CHANGED, actor, user=username, changes=changes)
        updated = self.users.update(
            username,
            lambda u: replace(
                u,
                role=new_role if new_role is not None else u.role,
                scopes=new_scopes if new_scopes is not None else u.scopes,
                disabled=disabled if disabled is not None else u.disabled,
            ),
        )
        if disabled:
            self.sessions.revoke_user(username, "disabled", self._now())
        return updated

    def delete_user(self, username: str, *, actor: str, caller: Principal | None = None) -> None:
        self._reload_users(force=True)
        user = self.users.require(username)
        self._check_grant(caller, target=user)
        if caller is not None and caller.kind == "user" and caller.name == username:
            raise Forbidden("you cannot delete yourself")
        self._check_last_admin(username, role=None, disabled=True)
        self._record_change(USER_DELETED, actor, user=username, role=user.role)
        self.users.delete(username)
        self.sessions.revoke_user(username, "deleted", self._now())
        self.login_states.forget(username)

    def reset_password(
        self,
        username: str,
        password: str | None = None,
        *,
        actor: str,
        caller: Principal | None = None,
    ) -> str | None:
        """Set a new password (a generated one when ``password`` is None: returned, to
        be shown once), end the user's sessions and lift a lockout."""
        self._reload_users(force=True)
        user = self.users.require(username)
        self._check_grant(caller, target=user)
        generated = None
        if password is None:
            generated = password = generate_password()
        check_password(password, username)
        self._record_change(
            USER_PASSWORD_RESET, actor, user=username, generated=generated is not None
        )
        self.users.set_password(username, password)
        self.sessions.revoke_user(username, "password_reset", self._now())
        self.login_states.unlock(username)
        return generated

    def reset_mfa(self, username: str, *, actor: str, caller: Principal | None = None) -> User:
        """Remove a user's second factor (lost phone): their sessions end; they enrol
        again at the next login if their role requires it."""
        self._reload_users(force=True)
        user = self.users.require(username)
        self._check_grant(caller, target=user)
        self._record_change(MFA_RESET, actor, user=username, was_active=user.mfa_active)
        updated = self.users.update(username, lambda u: replace(u, mfa=None))
        self.sessions.revoke_user(username, "mfa_reset", self._now())
        return updated

    # ------------------------------------------------------------------ API tokens

    def create_token(
        self,
        name: str,
        role: Role | str,
        scopes: Iterable[str] = (),
        *,
        expires_in_s: float,
        actor: str,
        caller: Principal | None = None,
    ) -> tuple[ApiToken, str]:
        """A new API token and its text ``ist_<id>_<secret>`` (shown once)."""
        role = Role(role)
        scope_tuple = _scopes(scopes)
        self._check_grant(caller, role=role, scopes=scope_tuple if caller else None)
        if expires_in_s <= 0:
            raise IdentityError("a token's lifetime must be positive", field="expires")
        now = self._now()
        expires = now + int(expires_in_s * _NS)
        check_token_name(name)
        self._record_change(
            TOKEN_CREATED, actor, name=name, role=role, scopes=list(scope_tuple),
            expires_ns=expires,
        )  # fmt: skip
        token, text = self.api_tokens.create(
            name, role, scope_tuple, expires_ns=expires, created_by=actor, now_ns=now
        )
        self._record(TOKEN_CREATED, actor, "issued", id=token.id, name=name)
        return token, text

    def revoke_token(
        self,
        id_or_name: str,
        *,
        actor: str,
        caller: Principal | None = None,
        by_name: bool = True,
    ) -> ApiToken:
        """Revoke a token by id (or by a name only one unrevoked token has, unless
        ``by_name`` is False)."""
        if by_name:
            token = self.api_tokens.find(id_or_name)
        elif (found := self.api_tokens.get(id_or_name)) is not None:
            token = found
        else:
            raise NotFound(f"no token {id_or_name!r}")
        if not visible_to(caller, token.scopes):
            raise NotFound(f"no token {id_or_name!r}")
        if caller is not None and caller.role is not Role.ADMIN and token.role is Role.ADMIN:
            raise Forbidden("only an admin may revoke an admin token")
        if token.revoked_ns is not None:
            return token
        self._record_change(TOKEN_REVOKED, actor, id=token.id, name=token.name)
        return self.api_tokens.revoke(token.id, actor, self._now())

    def list_tokens(self, caller: Principal | None = None) -> list[ApiToken]:
        """Every API token; for a scoped caller, only those inside its scopes."""
        return [t for t in self.api_tokens.all() if visible_to(caller, t.scopes)]

    def issue_local_token(
        self, ttl_s: float, name: str = LOCAL_TOKEN_NAME, role: Role = Role.VIEWER
    ) -> str:
        """The server's token for ``isthmus query`` on this machine: a viewer API token,
        re-issued at every start (the previous one is revoked)."""
        for tid in self.api_tokens.revoke_named(name, SYSTEM_ACTOR, self._now()):
            self._record(TOKEN_REVOKED, SYSTEM_ACTOR, id=tid, name=name, reason="reissued")
        _, text = self.create_token(name, role, (), expires_in_s=ttl_s, actor=SYSTEM_ACTOR)
        return text

    # ------------------------------------------------------------------ start-up

    def warn_admins_without_mfa(self) -> list[str]:
        """Log a warning naming each enabled admin without an active second factor (the
        composition root calls this at start-up); returns their names."""
        names = [
            u.username
            for u in self.users.all()
            if u.role is Role.ADMIN and not u.disabled and not u.mfa_active
        ]
        for name in names:
            log.warning(
                "admin %r has no second factor: enrol MFA (control tower, POST"
                " /api/auth/mfa/enroll, or `isthmus users mfa-enroll %s`)",
                name,
                name,
            )
        return names


def visible_to(caller: Principal | None, scopes: Iterable[str]) -> bool:
    """Whether a caller may see (and manage) a user or token with ``scopes``: an
    unscoped caller (or the CLI) sees all; a scoped one only what lies inside its own
    scopes (an unscoped user or token reaches outside them)."""
    if caller is None or not caller.scopes:
        return True
    granted = list(scopes)
    return bool(granted) and all(in_scope(s, caller.scopes) for s in granted)


def _sees_user(caller: Principal | None, user: User) -> bool:
    own = caller is not None and caller.kind == "user" and caller.name == user.username
    return own or visible_to(caller, user.scopes)


def _scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    try:
        return normalize_scopes(list(scopes))
    except ValueError as exc:
        raise IdentityError(str(exc), field="scopes") from None


# --------------------------------------------------------------------------- first admin


def ensure_admin(
    data_dir: Path,
    env_password: str | None,
    *,
    hasher: PasswordHasher | None = None,
    clock: Clock | None = None,
    audit: AuditSink | None = None,
) -> tuple[str, str | None]:
    """Create the first ``admin`` user when no user has the admin role.

    With ``env_password`` (e.g. ``ISTHMUS_ADMIN_PASSWORD``) that password is used and
    never written to disk (one that fails the password policy is accepted for this
    bootstrap account with a warning, and audited as such); otherwise a long random
    one is generated and written, with the username, to ``admin-credential.txt`` (mode
    0600).  Returns ``(username, generated_password)``; the password is ``None`` unless
    this call generated it.  Raises :class:`IdentityError` for a corrupt users file."""
    data_dir = Path(data_dir)
    users = UserStore(data_dir, hasher, clock)
    if any(u.role is Role.ADMIN for u in users.all()):
        return ADMIN_USERNAME, None
    if users.get(ADMIN_USERNAME) is not None:
        raise IdentityError(
            f"no user has the admin role and {ADMIN_USERNAME!r} exists with another: give one"
            " the admin role with `isthmus users set-role`",
            file=str(users.path),
        )
    generated = None
    weak: str | None = None
    if env_password:
        try:
            check_password(env_password, ADMIN_USERNAME)
        except WeakPassword as exc:
            # The operator chose it explicitly (scripts and demos set it): refusing would
            # leave the plant without an administrator.  It is accepted for this one
            # bootstrap account, loudly, and every other password meets the policy.
            weak = str(exc)
            log.warning(
                "ISTHMUS_ADMIN_PASSWORD does not meet the password policy (%s); accepted for"
                " the first admin only: change it with `isthmus users reset-password %s`",
                weak,
                ADMIN_USERNAME,
            )
        password = env_password
    else:
        generated = password = generate_password()
    if audit is not None:
        details: dict[str, Any] = {"user": ADMIN_USERNAME, "role": Role.ADMIN}
        if weak is not None:
            details["weak_password"] = weak
        try:
            audit.append(USER_ADDED, actor=SYSTEM_ACTOR, **details)
        except Exception as exc:
            raise AuditFailed(f"the audit log cannot be written: {exc}") from None
    users.add(ADMIN_USERNAME, password, Role.ADMIN, check_policy=weak is None)
    if generated is None:
        log.info("created user %r with the password from the environment", ADMIN_USERNAME)
        return ADMIN_USERNAME, None
    write_private(
        data_dir / ADMIN_CREDENTIAL_FILE,
        f"username: {ADMIN_USERNAME}\npassword: {generated}\n".encode(),
    )
    log.info(
        "created user %r with a generated password, see %s",
        ADMIN_USERNAME,
        data_dir / ADMIN_CREDENTIAL_FILE,
    )
    return ADMIN_USERNAME, generated
