from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher

from isthmus.model.clock import ManualClock
from isthmus.security.identity import (
    ADMIN_CREDENTIAL_FILE,
    SECRET_FILE,
    USERS_FILE,
    Identity,
    IdentityError,
    InvalidToken,
    LoginThrottle,
    Role,
    TokenService,
    UserStore,
    ensure_admin,
    hash_password,
    load_or_create_secret,
    verify_password,
)

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
KEY = b"k" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hash_is_argon2id_and_verifies() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert "s3cret" not in hashed
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not a hash", "s3cret")


def test_empty_password_refused() -> None:
    with pytest.raises(IdentityError):
        hash_password("")


def test_user_store_persists_with_mode_0600(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", "pw-1", Role.OPERATOR)
    path = tmp_path / USERS_FILE
    assert mode(path) == 0o600
    doc = json.loads(path.read_text())
    assert doc["users"][0]["username"] == "olga"
    assert doc["users"][0]["role"] == "operator"
    assert "pw-1" not in path.read_text()
    again = UserStore(tmp_path, FAST)
    assert again.verify("olga", "pw-1") is not None
    assert again.verify("olga", "pw-2") is None
    assert again.verify("nobody", "pw-1") is None
    assert not list(tmp_path.glob("*.tmp"))


def test_user_store_refuses_duplicates_and_bad_names(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", "pw")
    with pytest.raises(IdentityError):
        users.add("olga", "pw")
    with pytest.raises(IdentityError):
        users.add(" padded ", "pw")


def test_set_password(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", "old")
    users.set_password("olga", "new")
    assert users.verify("olga", "old") is None
    assert users.verify("olga", "new") is not None


def test_corrupt_users_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / USERS_FILE).write_text("{not json")
    with pytest.raises(IdentityError, match=USERS_FILE):
        UserStore(tmp_path, FAST)


def test_ensure_admin_generates_password_once(tmp_path: Path) -> None:
    username, password = ensure_admin(tmp_path, None, hasher=FAST)
    assert username == "admin"
    assert password is not None and len(password) >= 16
    cred = tmp_path / ADMIN_CREDENTIAL_FILE
    assert mode(cred) == 0o600
    assert mode(tmp_path / USERS_FILE) == 0o600
    text = cred.read_text()
    assert "admin" in text and password in text
    assert UserStore(tmp_path, FAST).verify("admin", password) is not None
    user = UserStore(tmp_path, FAST).get("admin")
    assert user is not None and user.role is Role.ADMIN
    # A later start keeps the user and its password.
    assert ensure_admin(tmp_path, None, hasher=FAST) == ("admin", None)
    assert ensure_admin(tmp_path, "other", hasher=FAST) == ("admin", None)
    assert UserStore(tmp_path, FAST).verify("admin", password) is not None


def test_ensure_admin_with_env_password_writes_no_credential(tmp_path: Path) -> None:
    assert ensure_admin(tmp_path, "from-env-42", hasher=FAST) == ("admin", None)
    assert not (tmp_path / ADMIN_CREDENTIAL_FILE).exists()
    assert UserStore(tmp_path, FAST).verify("admin", "from-env-42") is not None
    for path in tmp_path.iterdir():
        assert b"from-env-42" not in path.read_bytes()


def test_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_secret(tmp_path)
    assert len(key) == 32
    assert mode(tmp_path / SECRET_FILE) == 0o600
    assert load_or_create_secret(tmp_path) == key


def test_short_secret_refused(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(IdentityError):
        load_or_create_secret(tmp_path)


def test_token_round_trip() -> None:
    clock = ManualClock()
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    issued = tokens.issue("olga", Role.OPERATOR)
    assert issued.expires_in == 60
    claims = tokens.verify(issued.access_token)
    assert claims.username == "olga"
    assert claims.role is Role.OPERATOR
    assert claims.expires_at - claims.issued_at == 60
    payload = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert payload["iss"] == "isthmus"
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "HS256"


def test_token_expires_with_no_leeway() -> None:
    clock = ManualClock(start_ns=1_700_000_000 * 10**9)
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    token = tokens.issue("olga", Role.VIEWER).access_token
    clock.advance(59.999)
    tokens.verify(token)
    clock.advance(0.001)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token)


@pytest.mark.parametrize("kind", ["signature", "payload", "other_key", "none_alg", "garbage"])
def test_tampered_tokens_refused(kind: str) -> None:
    clock = ManualClock()
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    token = tokens.issue("olga", Role.VIEWER).access_token
    head, body, sig = token.split(".")
    if kind == "signature":
        bad = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    elif kind == "payload":
        forged = jwt.encode(
            {"iss": "isthmus", "sub": "olga", "role": "admin", "iat": 1, "exp": 2**40},
            b"x" * 32,
            algorithm="HS256",
        )
        bad = f"{head}.{forged.split('.')[1]}.{sig}"
    elif kind == "other_key":
        bad = TokenService(b"o" * 32, 60, clock).issue("olga", Role.ADMIN).access_token
    elif kind == "none_alg":

        def b64(doc: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

        claims = {"iss": "isthmus", "sub": "olga", "role": "admin", "iat": 1, "exp": 2**40}
        bad = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    else:
        bad = "not-a-token"
    with pytest.raises(InvalidToken):
        tokens.verify(bad)


def test_token_of_other_issuer_refused() -> None:
    clock = ManualClock()
    other = TokenService(KEY, 60, clock, issuer="someone-else").issue("olga", Role.ADMIN)
    with pytest.raises(InvalidToken):
        TokenService(KEY, 60, clock).verify(other.access_token)


def test_throttle_grows_and_decays() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, base_s=0.5, max_s=4.0)
    assert throttle.delay("olga") == 0.0
    throttle.failure("olga")
    assert throttle.delay("olga") == pytest.approx(0.5)
    throttle.failure("olga")
    throttle.failure("olga")
    assert throttle.delay("olga") == pytest.approx(2.0)
    assert throttle.delay("other") == 0.0
    clock.advance(1.5)
    assert throttle.delay("olga") == pytest.approx(0.5)
    for _ in range(10):
        throttle.failure("olga")
    assert throttle.delay("olga") == pytest.approx(4.0)
    throttle.success("olga")
    assert throttle.delay("olga") == 0.0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(ManualClock(), max_users=3)
    for name in "abcde":
        throttle.failure(name)
    assert throttle.delay("a") == 0.0
    assert throttle.delay("e") > 0.0


def test_identity_login_logs_failures_without_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    identity = Identity.open(tmp_path, token_ttl_s=60, clock=clock, hasher=FAST)
    identity.users.add("olga", "right-pw", Role.OPERATOR)
    with caplog.at_level(logging.INFO, logger="isthmus.security.identity"):
        assert identity.login("olga", "wrong-pw", "10.0.0.7") is None
    assert "olga" in caplog.text and "10.0.0.7" in caplog.text
    assert "wrong-pw" not in caplog.text
    assert identity.login_delay("olga") > 0
    issued = identity.login("olga", "right-pw")
    assert issued is not None
    assert identity.login_delay("olga") == 0.0
    claims = identity.verify_token(issued.access_token)
    assert claims.username == "olga"


def test_identity_refuses_token_of_deleted_user(tmp_path: Path) -> None:
    clock = ManualClock()
    a = Identity.open(tmp_path / "a", 60, clock, FAST)
    b = Identity.open(tmp_path / "b", 60, clock, FAST)
    # Same key, user known only in a.
    b.tokens = TokenService(load_or_create_secret(tmp_path / "a"), 60, clock)
    a.users.add("olga", "pw")
    token = a.login("olga", "pw")
    assert token is not None
    with pytest.raises(InvalidToken, match="no longer exists"):
        b.verify_token(token.access_token)
