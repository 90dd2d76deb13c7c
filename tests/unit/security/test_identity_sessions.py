"""Identity against a manual clock: lockout, sessions (idle expiry, lifetime, refresh
rotation and reuse, logout), TOTP MFA with recovery codes, MFA required per role, API
tokens, and the audit records of all of it (a real audit log)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from isthmus.model.clock import ManualClock
from isthmus.security import mfa as totp
from isthmus.security.audit import AuditLog
from isthmus.security.errors import (
    Conflict,
    Forbidden,
    InvalidToken,
    LoginRefused,
    MfaEnrollmentRequired,
    NotFound,
)
from isthmus.security.identity import Identity, IdentitySettings, LoginResult
from isthmus.security.rbac import Principal, Role
from isthmus.security.sessions import RefreshReused
from isthmus.security.store import DB_FILE

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PW = "a long unusual passphrase"
T0 = 1_700_000_000 * 10**9
CLI = "cli:tester"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ns=T0)


@pytest.fixture
def audit(tmp_path: Path, clock: ManualClock) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path, clock=clock)
    yield log
    log.close()


def make(
    tmp_path: Path, clock: ManualClock, audit: AuditLog | None, **settings: object
) -> Identity:
    s = IdentitySettings(**settings)  # type: ignore[arg-type]
    return Identity.open(tmp_path, clock=clock, hasher=FAST, settings=s, audit=audit)


@pytest.fixture
def identity(tmp_path: Path, clock: ManualClock, audit: AuditLog) -> Iterator[Identity]:
    ident = make(tmp_path, clock, audit)
    ident.add_user("olga", PW, Role.OPERATOR, ["acme/lyon/utilities"], actor=CLI)
    yield ident
    ident.close()


def actions(audit: AuditLog, prefix: str = "") -> list[str]:
    return [str(r["action"]) for r in audit.query(action=prefix or None)]


def records(audit: AuditLog, action: str) -> list[dict[str, object]]:
    return [r for r in audit.query(action=action) if r["action"] == action]


# --------------------------------------------------------------------------- login


def test_login_gives_a_session_whose_token_authenticates(
    identity: Identity, audit: AuditLog
) -> None:
    result = identity.login("olga", PW, "10.0.0.7")
    p = identity.authenticate(result.access_token)
    assert (p.name, p.role, p.scopes, p.kind) == (
        "olga",
        Role.OPERATOR,
        ("acme/lyon/utilities",),
        "user",
    )
    assert p.token_id == result.session_id and p.mfa is False and p.actor == "olga"
    assert result.expires_in == 15 * 60 and not result.mfa_enrollment_required
    login = records(audit, "auth.login")[-1]
    assert login["actor"] == "olga" and login["details"]["client"] == "10.0.0.7"  # type: ignore[index]
    assert (
        PW
        not in (Path(audit.data_dir) / "audit")
        .joinpath(next(p.name for p in (Path(audit.data_dir) / "audit").glob("audit-*")))
        .read_text()
    )


def test_wrong_password_unknown_and_disabled_users_answer_alike(
    identity: Identity, audit: AuditLog
) -> None:
    identity.add_user("dora", PW, Role.VIEWER, actor=CLI)
    identity.update_user("dora", disabled=True, actor=CLI)
    messages = set()
    for name, pw in (("olga", "wrong password 1"), ("nobody", PW), ("dora", PW)):
        with pytest.raises(LoginRefused) as info:
            identity.login(name, pw)
        assert info.value.reason == "credentials"
        messages.add(str(info.value))
    assert len(messages) == 1
    reasons = [r["details"]["reason"] for r in records(audit, "auth.login_failed")]  # type: ignore[index]
    assert reasons == ["credentials", "credentials", "disabled"]


def test_lockout_after_n_failures_and_unlock_after_m_minutes(
    tmp_path: Path, clock: ManualClock, audit: AuditLog
) -> None:
    identity = make(tmp_path, clock, audit, lockout_attempts=3, lockout_s=10 * 60.0)
    identity.add_user("olga", PW, Role.OPERATOR, actor=CLI)
    for _ in range(3):
        with pytest.raises(LoginRefused, match="wrong"):
            identity.login("olga", "not the password")
    # Locked: even the right password is refused, without being checked.
    with pytest.raises(LoginRefused) as info:
        identity.login("olga", PW)
    assert info.value.reason == "locked" and info.value.retry_after == pytest.approx(600)
    assert len(records(audit, "auth.lockout")) == 1
    assert identity.user_info("olga").locked_until_ns == T0 + 600 * 10**9
    clock.advance(9 * 60 + 59)
    with pytest.raises(LoginRefused, match="try again in 1 s"):
        identity.login("olga", PW)
    clock.advance(1)
    assert identity.login("olga", PW).username == "olga"  # unlocked after M minutes
    # The counter started again: one failure does not lock.
    with pytest.raises(LoginRefused, match="wrong"):
        identity.login("olga", "not the password")
    identity.login("olga", PW)
    print(f"\nlockout: 3 failures -> locked 600 s; audit: {actions(audit, 'auth')}")


def test_unknown_usernames_lock_too(identity: Identity) -> None:
    for _ in range(5):
        with pytest.raises(LoginRefused, match="wrong"):
            identity.login("ghost", PW)
    with pytest.raises(LoginRefused) as info:
        identity.login("ghost", PW)
    assert info.value.reason == "locked"  # the same answer as for a real user


def test_failures_far_apart_do_not_lock(identity: Identity, clock: ManualClock) -> None:
    for _ in range(10):
        with pytest.raises(LoginRefused, match="wrong"):
            identity.login("olga", "not the password")
        clock.advance(16 * 60)
    identity.login("olga", PW)


def test_reset_password_lifts_a_lockout_and_ends_sessions(identity: Identity) -> None:
    session = identity.login("olga", PW)
    for _ in range(5):
        with pytest.raises(LoginRefused):
            identity.login("olga", "not the password")
    generated = identity.reset_password("olga", actor=CLI)
    assert generated is not None
    with pytest.raises(InvalidToken, match="password_reset"):
        identity.authenticate(session.access_token)
    identity.login("olga", generated)


# --------------------------------------------------------------------------- sessions


def test_idle_session_expires_and_its_tokens_stop(
    identity: Identity, clock: ManualClock, audit: AuditLog
) -> None:
    result = identity.login("olga", PW)
    for _ in range(4):  # activity keeps it alive past the idle timeout
        clock.advance(14 * 60)
        result = identity.refresh(result.refresh_token)
        identity.authenticate(result.access_token)
    clock.advance(30 * 60)
    with pytest.raises(InvalidToken, match="expired"):
        identity.authenticate(result.access_token)  # not expired itself: the session is
    with pytest.raises(InvalidToken):
        identity.refresh(result.refresh_token)
    assert records(audit, "auth.session_expired")[0]["details"]["reason"] == "idle"  # type: ignore[index]


def test_requests_count_as_activity(tmp_path: Path, clock: ManualClock, audit: AuditLog) -> None:
    identity = make(tmp_path, clock, audit, token_ttl_s=7200.0, idle_timeout_s=1800.0)
    identity.add_user("olga", PW, Role.VIEWER, actor=CLI)
    result = identity.login("olga", PW)
    clock.advance(20 * 60)
    identity.authenticate(result.access_token)
    clock.advance(20 * 60)
    identity.authenticate(result.access_token)  # 40 min after the login, 20 idle
    clock.advance(30 * 60)
    with pytest.raises(InvalidToken, match="session expired"):
        identity.authenticate(result.access_token)


def test_access_token_expires_and_refresh_rotates(identity: Identity, clock: ManualClock) -> None:
    first = identity.login("olga", PW)
    clock.advance(15 * 60)
    with pytest.raises(InvalidToken, match="token expired"):
        identity.authenticate(first.access_token)
    second = identity.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.session_id == first.session_id
    assert identity.authenticate(second.access_token).token_id == first.session_id
    third = identity.refresh(second.refresh_token)
    identity.authenticate(third.access_token)


def test_refresh_reuse_revokes_the_session(identity: Identity, audit: AuditLog) -> None:
    first = identity.login("olga", PW)
    second = identity.refresh(first.refresh_token)
    with pytest.raises(RefreshReused):
        identity.refresh(first.refresh_token)  # a copy of the spent token: stolen
    for token in (second.access_token,):
        with pytest.raises(InvalidToken, match="refresh_reused"):
            identity.authenticate(token)
    with pytest.raises(InvalidToken):
        identity.refresh(second.refresh_token)  # the thief's (or owner's) new one too
    assert len(records(audit, "auth.refresh_reused")) == 1


@pytest.mark.parametrize(
    "bad", ["", "isr_", "isr_" + "0" * 32 + "_" + "A" * 43, "garbage", "isr_x_y"]
)
def test_bad_refresh_tokens(identity: Identity, bad: str) -> None:
    with pytest.raises(InvalidToken):
        identity.refresh(bad)


def test_session_lifetime(tmp_path: Path, clock: ManualClock, audit: AuditLog) -> None:
    identity = make(tmp_path, clock, audit, session_lifetime_s=3600.0, idle_timeout_s=1800.0)
    identity.add_user("olga", PW, Role.VIEWER, actor=CLI)
    result = identity.login("olga", PW)
    for _ in range(4):
        clock.advance(14 * 60)
        result = identity.refresh(result.refresh_token)
    clock.advance(14 * 60)  # 70 min after the login: past the lifetime, never idle
    with pytest.raises(InvalidToken, match="session expired"):
        identity.refresh(result.refresh_token)


def test_logout_revokes_at_once(identity: Identity, audit: AuditLog) -> None:
    result = identity.login("olga", PW)
    other = identity.login("olga", PW)
    principal = identity.authenticate(result.access_token)
    identity.logout(principal)
    with pytest.raises(InvalidToken, match="logout"):
        identity.authenticate(result.access_token)
    with pytest.raises(InvalidToken):
        identity.refresh(result.refresh_token)
    identity.authenticate(other.access_token)  # another session lives on
    assert records(audit, "auth.logout")[0]["actor"] == "olga"


def test_disabled_or_deleted_users_tokens_are_refused(identity: Identity, audit: AuditLog) -> None:
    identity.add_user("dora", PW, Role.VIEWER, actor=CLI)
    olga, dora = identity.login("olga", PW), identity.login("dora", PW)
    identity.update_user("olga", disabled=True, actor=CLI)
    with pytest.raises(InvalidToken):
        identity.authenticate(olga.access_token)
    identity.update_user("olga", disabled=False, actor=CLI)
    with pytest.raises(InvalidToken):  # disabling ended the session for good
        identity.authenticate(olga.access_token)
    identity.delete_user("dora", actor=CLI)
    with pytest.raises(InvalidToken):
        identity.authenticate(dora.access_token)
    refused = records(audit, "auth.token_refused")
    assert refused and all(r["outcome"] == "denied" for r in refused)


def test_disabled_in_the_file_alone_is_enough(
    identity: Identity, clock: ManualClock, tmp_path: Path
) -> None:
    """Another process marks the user disabled in users.json only: refused within 1 s."""
    from dataclasses import replace

    from isthmus.security.users import UserStore

    result = identity.login("olga", PW)
    UserStore(tmp_path, FAST, clock).update("olga", lambda u: replace(u, disabled=True))
    clock.advance(1.0)
    with pytest.raises(InvalidToken, match="disabled"):
        identity.authenticate(result.access_token)


def test_role_and_scope_changes_apply_to_the_next_request(identity: Identity) -> None:
    result = identity.login("olga", PW)
    identity.update_user("olga", role=Role.ENGINEER, scopes=["acme/paris"], actor=CLI)
    p = identity.authenticate(result.access_token)
    assert (p.role, p.scopes) == (Role.ENGINEER, ("acme/paris",))


def test_malformed_and_forged_tokens_are_refused_and_audited(
    identity: Identity, audit: AuditLog, clock: ManualClock
) -> None:
    for bad in ("", "x" * 5000, "not-a-token", "a.b.c", "ist_nope", "ist_" + "0" * 12 + "_x"):
        with pytest.raises(InvalidToken):
            identity.authenticate(bad)
        clock.advance(1.0)
    assert len(records(audit, "auth.token_refused")) == 6


def test_users_file_corrupt_while_running_refuses_every_session(
    identity: Identity, clock: ManualClock, tmp_path: Path
) -> None:
    result = identity.login("olga", PW)
    (tmp_path / "users.json").write_text("{")
    clock.advance(1.0)
    with pytest.raises(InvalidToken, match="unreadable"):
        identity.authenticate(result.access_token)


# --------------------------------------------------------------------------- MFA


def enrol(identity: Identity, result: LoginResult, clock: ManualClock) -> tuple[str, list[str]]:
    principal = identity.authenticate(result.access_token, allow_pending=True)
    enrollment = identity.mfa_enroll(principal)
    assert enrollment.otpauth_uri.startswith("otpauth://totp/")
    assert f"secret={enrollment.secret}" in enrollment.otpauth_uri
    assert enrollment.qr_svg.lstrip().startswith("<svg") and "<path" in enrollment.qr_svg
    assert enrollment.qr_data_uri.startswith("data:image/svg+xml")
    now_step = clock.now_ns() // 10**9 // totp.STEP_S
    codes = identity.mfa_verify(principal, totp.code_at(enrollment.secret, now_step))
    return enrollment.secret, codes


def test_mfa_enrolment_and_login_with_totp(
    identity: Identity, clock: ManualClock, audit: AuditLog, tmp_path: Path
) -> None:
    secret, codes = enrol(identity, identity.login("olga", PW), clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    users_text = (tmp_path / "users.json").read_text()
    assert not any(c in users_text for c in codes)  # stored hashed
    assert identity.user_info("olga").mfa_active
    assert len(records(audit, "mfa.enrolled")) == 1
    clock.advance(60)
    with pytest.raises(LoginRefused) as info:
        identity.login("olga", PW)
    assert info.value.reason == "mfa_required"
    step = clock.now_ns() // 10**9 // 30
    with pytest.raises(LoginRefused) as info:
        identity.login("olga", PW, otp=totp.code_at(secret, step + 5))
    assert info.value.reason == "mfa_invalid"
    result = identity.login("olga", PW, otp=totp.code_at(secret, step - 1))  # ±1 step
    assert result.mfa and identity.authenticate(result.access_token).mfa


def test_replayed_totp_is_refused(identity: Identity, clock: ManualClock) -> None:
    secret, _ = enrol(identity, identity.login("olga", PW), clock)
    clock.advance(90)
    code = totp.code_at(secret, clock.now_ns() // 10**9 // 30)
    identity.login("olga", PW, otp=code)
    clock.advance(5)  # still inside the code's window
    with pytest.raises(LoginRefused, match="used already"):
        identity.login("olga", PW, otp=code)
    # An older step than the last used is refused too.
    older = totp.code_at(secret, clock.now_ns() // 10**9 // 30 - 1)
    with pytest.raises(LoginRefused):
        identity.login("olga", PW, otp=older)
    clock.advance(30)
    identity.login("olga", PW, otp=totp.code_at(secret, clock.now_ns() // 10**9 // 30))


def test_the_enrolment_code_cannot_log_in_again(identity: Identity, clock: ManualClock) -> None:
    result = identity.login("olga", PW)
    principal = identity.authenticate(result.access_token)
    enrollment = identity.mfa_enroll(principal)
    code = totp.code_at(enrollment.secret, clock.now_ns() // 10**9 // 30)
    identity.mfa_verify(principal, code)
    with pytest.raises(LoginRefused, match="used already"):
        identity.login("olga", PW, otp=code)


def test_recovery_code_works_once(identity: Identity, clock: ManualClock, audit: AuditLog) -> None:
    _, codes = enrol(identity, identity.login("olga", PW), clock)
    result = identity.login("olga", PW, recovery_code=codes[3].upper().replace("-", " "))
    assert result.mfa
    with pytest.raises(LoginRefused) as info:
        identity.login("olga", PW, recovery_code=codes[3])
    assert info.value.reason == "mfa_invalid"
    identity.login("olga", PW, recovery_code=codes[4])
    assert identity.user_info("olga").recovery_codes_left == 8
    used = records(audit, "mfa.recovery_used")
    assert [r["details"]["codes_left"] for r in used] == [9, 8]  # type: ignore[index]


def test_wrong_codes_count_towards_the_lockout(identity: Identity, clock: ManualClock) -> None:
    enrol(identity, identity.login("olga", PW), clock)
    for _ in range(5):
        with pytest.raises(LoginRefused, match="wrong"):
            identity.login("olga", PW, otp="000000")
    with pytest.raises(LoginRefused) as info:
        identity.login("olga", PW)
    assert info.value.reason == "locked"


def test_verify_with_a_wrong_code_keeps_mfa_inactive(identity: Identity, audit: AuditLog) -> None:
    principal = identity.authenticate(identity.login("olga", PW).access_token)
    identity.mfa_enroll(principal)
    with pytest.raises(LoginRefused):
        identity.mfa_verify(principal, "123456x")
    info = identity.user_info("olga")
    assert info.mfa_pending and not info.mfa_active
    identity.login("olga", PW)  # no second factor asked yet
    assert len(records(audit, "mfa.verify_failed")) == 1


def test_enrolling_twice_and_tokens_refused(identity: Identity, clock: ManualClock) -> None:
    result = identity.login("olga", PW)
    enrol(identity, result, clock)
    principal = identity.authenticate(result.access_token)
    with pytest.raises(Conflict):
        identity.mfa_enroll(principal)
    robot = Principal("mes", Role.VIEWER, kind="token", token_id="abc")
    with pytest.raises(Forbidden):
        identity.mfa_enroll(robot)


def test_reset_mfa(identity: Identity, clock: ManualClock, audit: AuditLog) -> None:
    result = identity.login("olga", PW)
    enrol(identity, result, clock)
    identity.reset_mfa("olga", actor=CLI)
    with pytest.raises(InvalidToken, match="mfa_reset"):
        identity.authenticate(result.access_token)
    assert identity.login("olga", PW).mfa is False  # the password alone again
    assert records(audit, "mfa.reset")[0]["actor"] == CLI


def test_mfa_required_by_role(tmp_path: Path, clock: ManualClock, audit: AuditLog) -> None:
    identity = make(tmp_path, clock, audit, mfa_required_roles=frozenset({Role.ADMIN}))
    identity.add_user("root", PW, Role.ADMIN, actor=CLI)
    identity.add_user("vic", PW, Role.VIEWER, actor=CLI)
    assert identity.warn_admins_without_mfa() == ["root"]
    assert not identity.login("vic", PW).mfa_enrollment_required
    result = identity.login("root", PW)
    assert result.mfa_enrollment_required
    # The session may only enrol: every other use is refused.
    with pytest.raises(MfaEnrollmentRequired):
        identity.authenticate(result.access_token)
    pending = identity.authenticate(result.access_token, allow_pending=True)
    assert pending.extra == {"mfa_enrollment_required": "true"}
    enrol(identity, result, clock)
    assert identity.authenticate(result.access_token).mfa  # enrolled: a full session now
    assert identity.warn_admins_without_mfa() == []


def test_warn_admins_without_mfa_logs_each_name(
    identity: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    identity.add_user("root", PW, Role.ADMIN, actor=CLI)
    identity.add_user("boss", PW, Role.ADMIN, actor=CLI)
    with caplog.at_level("WARNING", logger="isthmus.security.identity"):
        assert identity.warn_admins_without_mfa() == ["boss", "root"]
    assert "'root' has no second factor" in caplog.text and "'boss'" in caplog.text


# --------------------------------------------------------------------------- API tokens


def test_api_token_create_use_list_revoke(
    identity: Identity, clock: ManualClock, audit: AuditLog, tmp_path: Path
) -> None:
    token, text = identity.create_token(
        "mes-lyon", Role.OPERATOR, ["acme/lyon"], expires_in_s=90 * 86400, actor=CLI
    )
    assert text.startswith(f"ist_{token.id}_") and len(text) == 4 + 12 + 1 + 43
    db = (tmp_path / DB_FILE).read_bytes()
    assert text.split("_", 2)[2].encode() not in db  # only the hash is stored
    assert stat.S_IMODE((tmp_path / DB_FILE).stat().st_mode) == 0o600
    p = identity.authenticate(text)
    assert (p.name, p.role, p.scopes, p.kind, p.token_id) == (
        "mes-lyon",
        Role.OPERATOR,
        ("acme/lyon",),
        "token",
        token.id,
    )
    assert p.actor == f"token:{token.id}"
    for _ in range(5):
        identity.authenticate(text)
    clock.advance(61)
    identity.authenticate(text)
    assert len(records(audit, "token.used")) == 2  # at most once a minute
    listed = identity.list_tokens()
    assert [(t.id, t.state(clock.now_ns())) for t in listed] == [(token.id, "active")]
    assert listed[0].last_used_ns == clock.now_ns()
    identity.revoke_token(token.id, actor=CLI)
    with pytest.raises(InvalidToken, match="revoked"):
        identity.authenticate(text)
    assert identity.list_tokens()[0].state(clock.now_ns()) == "revoked"
    assert [r["details"]["id"] for r in records(audit, "token.revoked")] == [token.id]  # type: ignore[index]
    with pytest.raises(NotFound):
        identity.revoke_token("000000000000", actor=CLI)


def test_api_token_expires(identity: Identity, clock: ManualClock) -> None:
    _, text = identity.create_token("script", Role.VIEWER, expires_in_s=3600, actor=CLI)
    clock.advance(3599)
    identity.authenticate(text)
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        identity.authenticate(text)
    assert identity.list_tokens()[0].state(clock.now_ns()) == "expired"


def test_api_token_wrong_secret_is_refused(identity: Identity) -> None:
    token, text = identity.create_token("script", Role.VIEWER, expires_in_s=3600, actor=CLI)
    forged = f"ist_{token.id}_" + ("B" * 43 if not text.endswith("B" * 43) else "C" * 43)
    with pytest.raises(InvalidToken, match="wrong"):
        identity.authenticate(forged)


def test_local_token_is_reissued(identity: Identity) -> None:
    first = identity.issue_local_token(3600)
    assert identity.authenticate(first).role is Role.VIEWER
    second = identity.issue_local_token(3600)
    with pytest.raises(InvalidToken, match="revoked"):
        identity.authenticate(first)
    assert identity.authenticate(second).name == "local-cli"


# --------------------------------------------------------------------------- admin rules


def test_only_an_admin_grants_admin_and_scoped_callers_stay_inside(identity: Identity) -> None:
    secadm = Principal("sa", Role.SECURITY_ADMIN)
    with pytest.raises(Forbidden):
        identity.add_user("x1", PW, Role.ADMIN, actor="sa", caller=secadm)
    identity.add_user("x1", PW, Role.ENGINEER, actor="sa", caller=secadm)
    with pytest.raises(Forbidden):
        identity.create_token("t", Role.ADMIN, expires_in_s=60, actor="sa", caller=secadm)
    scoped = Principal("sb", Role.SECURITY_ADMIN, ("acme/lyon",))
    with pytest.raises(Forbidden):
        identity.add_user("x2", PW, Role.VIEWER, [], actor="sb", caller=scoped)
    with pytest.raises(Forbidden):
        identity.add_user("x2", PW, Role.VIEWER, ["acme/paris"], actor="sb", caller=scoped)
    identity.add_user("x2", PW, Role.VIEWER, ["acme/lyon/utilities"], actor="sb", caller=scoped)
    # x1 (unscoped) is outside sb's reach: not even listed.
    assert {u.username for u in identity.list_users(scoped)} == {"olga", "x2"}
    with pytest.raises(NotFound):
        identity.update_user("x1", disabled=True, actor="sb", caller=scoped)


def test_the_last_admin_is_kept(identity: Identity) -> None:
    identity.add_user("root", PW, Role.ADMIN, actor=CLI)
    for change in (
        lambda: identity.update_user("root", disabled=True, actor=CLI),
        lambda: identity.update_user("root", role=Role.VIEWER, actor=CLI),
        lambda: identity.delete_user("root", actor=CLI),
    ):
        with pytest.raises(Conflict, match="last enabled admin"):
            change()
    identity.add_user("boss", PW, Role.ADMIN, actor=CLI)
    identity.update_user("root", disabled=True, actor=CLI)


def test_no_change_without_an_audit_record(identity: Identity, audit: AuditLog) -> None:
    class Broken:
        def append(self, action: str, **kwargs: object) -> None:
            raise OSError("disk full")

    identity.audit = Broken()
    with pytest.raises(Exception, match="nothing was changed"):
        identity.add_user("piotr", PW, Role.VIEWER, actor=CLI)
    assert identity.users.get("piotr") is None
    with pytest.raises(Exception, match="nothing was changed"):
        identity.create_token("t", Role.VIEWER, expires_in_s=60, actor=CLI)
    assert identity.list_tokens() == []
    identity.login("olga", PW)  # logins go on (the failure is logged)


# --------------------------------------------------------------------------- files


def test_corrupt_identity_db_is_named(tmp_path: Path, clock: ManualClock) -> None:
    from isthmus.security.errors import IdentityError

    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(IdentityError, match=DB_FILE) as info:
        Identity.open(tmp_path, clock=clock, hasher=FAST)
    assert info.value.file == str(tmp_path / DB_FILE)


def test_authenticate_cost(identity: Identity) -> None:
    """What every request pays: a JWT check, one indexed SQLite read, a stat per second."""
    import time

    session = identity.login("olga", PW).access_token
    _, token = identity.create_token("bench", Role.VIEWER, expires_in_s=3600, actor=CLI)
    figures = {}
    for name, bearer in (("session", session), ("API token", token)):
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            identity.authenticate(bearer)
        figures[name] = (time.perf_counter() - start) / n * 1e6
    print("\nauthenticate: " + ", ".join(f"{k} {v:.0f} µs" for k, v in figures.items()))
    assert max(figures.values()) < 2000
