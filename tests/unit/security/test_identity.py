"""Identity's files and pure parts: passwords and the policy, the users file (version 2,
the upgrade of version 1, corrupt files named by file, line and field, changes seen
across processes), the first admin, the server secret and access tokens."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher

from isthmus.model.clock import ManualClock
from isthmus.security.errors import Conflict, WeakPassword
from isthmus.security.identity import (
    ADMIN_CREDENTIAL_FILE,
    SECRET_FILE,
    USERS_FILE,
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
from isthmus.security.passwords import (
    MIN_LENGTH,
    check_password,
    common_passwords,
    generate_password,
)

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
KEY = b"k" * 32
GOOD = "a long unusual passphrase"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- passwords


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


@pytest.mark.parametrize(
    ("password", "username", "rule"),
    [
        ("short-pw-1", "olga", "at least 12"),
        ("x" * 1025, "olga", "at most"),
        (" " * 14, "olga", "only spaces"),
        ("olga.kowalska", "olga.kowalska", "be the username"),
        ("OLGA.KOWALSKA", "olga.kowalska", "be the username"),
        ("my-name-is-OLGA-ok", "olga", "contain the username"),
        ("test-admin-password-1", "admin", "contain the username"),
        ("1qaz2wsx3edc4rfv", "olga", "common"),
        ("qwertyuiop123", "olga", "common"),
        ("Password123456", "olga", "common"),
        ("Dragon2024!!!!", "olga", "common"),  # a common word with digits and signs around
        ("PASSWORDPASSWORD", "olga", "common"),
    ],
)
def test_policy_refuses(password: str, username: str, rule: str) -> None:
    with pytest.raises(WeakPassword, match=rule) as info:
        check_password(password, username)
    assert password not in str(info.value)


@pytest.mark.parametrize(
    "password", [GOOD, "correct horse battery staple", "Tr0ub4dor&3-lyon", "pw-for-this-test"]
)
def test_policy_accepts(password: str) -> None:
    check_password(password, "olga")


def test_short_usernames_are_only_compared_whole() -> None:
    check_password("a long unusual passphrase", "al")  # contains "al": fine for 2 letters
    with pytest.raises(WeakPassword):
        check_password("al", "al")


def test_common_list_is_shipped_and_large() -> None:
    common = common_passwords()
    assert len(common) > 30_000
    assert {"123456", "password", "qwerty", "iloveyou"} <= common
    print(f"\ncommon passwords shipped: {len(common)}")


def test_generated_passwords_pass_the_policy() -> None:
    for _ in range(50):
        password = generate_password()
        assert len(password) >= 2 * MIN_LENGTH
        check_password(password, "admin")


# --------------------------------------------------------------------------- users file


def test_user_store_persists_with_mode_0600(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", GOOD, Role.OPERATOR, ["acme/lyon/utilities/"])
    path = tmp_path / USERS_FILE
    assert mode(path) == 0o600
    doc = json.loads(path.read_text())
    assert doc["version"] == 2
    entry = doc["users"][0]
    assert (entry["username"], entry["role"], entry["scopes"]) == (
        "olga",
        "operator",
        ["acme/lyon/utilities"],
    )
    assert entry["disabled"] is False and entry["mfa"] is None
    assert GOOD not in path.read_text()
    again = UserStore(tmp_path, FAST)
    assert again.verify("olga", GOOD) is not None
    assert again.verify("olga", GOOD + "x") is None
    assert again.verify("nobody", GOOD) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_user_store_refuses_duplicates_bad_names_and_weak_passwords(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", GOOD)
    with pytest.raises(Conflict):
        users.add("OLGA", GOOD)  # usernames are unique ignoring case
    for bad in (" padded ", "with space", "cli:root", "token:1", "", "x" * 65):
        with pytest.raises(IdentityError):
            users.add(bad, GOOD)
    with pytest.raises(WeakPassword):
        users.add("piotr", "password1234")
    with pytest.raises(IdentityError, match="hierarchy prefix"):
        users.add("piotr", GOOD, Role.VIEWER, ["acme//lyon"])


def test_set_password(tmp_path: Path) -> None:
    users = UserStore(tmp_path, FAST)
    users.add("olga", GOOD)
    users.set_password("olga", "another long phrase")
    assert users.verify("olga", GOOD) is None
    assert users.verify("olga", "another long phrase") is not None


def test_version_1_file_is_upgraded(tmp_path: Path) -> None:
    """The previous release's file: roles admin/operator/viewer keep their names."""
    v1 = {
        "version": 1,
        "users": [
            {"username": "admin", "password_hash": hash_password("pw-one", FAST), "role": "admin"},
            {
                "username": "olga",
                "password_hash": hash_password("pw-two", FAST),
                "role": "operator",
            },
            {"username": "vic", "password_hash": hash_password("pw-three", FAST), "role": "viewer"},
        ],
    }
    (tmp_path / USERS_FILE).write_text(json.dumps(v1, indent=2))
    users = UserStore(tmp_path, FAST)
    assert [(u.username, u.role) for u in users.all()] == [
        ("admin", Role.ADMIN),
        ("olga", Role.OPERATOR),
        ("vic", Role.VIEWER),
    ]
    assert all(u.scopes == () and not u.disabled and u.mfa is None for u in users.all())
    assert users.verify("olga", "pw-two") is not None  # the old hashes still verify
    doc = json.loads((tmp_path / USERS_FILE).read_text())
    assert doc["version"] == 2 and doc["users"][1]["scopes"] == []
    backup = tmp_path / f"{USERS_FILE}.v1.bak"
    assert json.loads(backup.read_text()) == v1 and mode(backup) == 0o600
    assert mode(tmp_path / USERS_FILE) == 0o600


def _corrupt(tmp_path: Path, text: str) -> IdentityError:
    (tmp_path / USERS_FILE).write_text(text)
    with pytest.raises(IdentityError) as info:
        UserStore(tmp_path, FAST)
    return info.value


def test_corrupt_json_names_file_and_line(tmp_path: Path) -> None:
    err = _corrupt(tmp_path, '{\n  "version": 2,\n  "users": [\n    {"username": "olga",,}\n]}\n')
    assert err.file == str(tmp_path / USERS_FILE)
    assert err.line == 4
    assert f"{tmp_path / USERS_FILE}:4:" in str(err)


def test_bad_field_names_file_line_and_field(tmp_path: Path) -> None:
    good = hash_password("pw-one", FAST)
    users = [
        {"username": "olga", "password_hash": good, "role": "operator"},
        {"username": "vic", "password_hash": good, "role": "superuser"},
    ]
    text = json.dumps({"version": 2, "users": users}, indent=2)
    err = _corrupt(tmp_path, text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "superuser" in ln)
    assert (err.line, err.field) == (line, "users[1].role")
    assert f"{USERS_FILE}:{line}: users[1].role: unknown role 'superuser'" in str(err)
    print(f"\ncorrupt users file: {err}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scopes": "acme"}, "users[0].scopes"),
        ({"disabled": "no"}, "users[0].disabled"),
        ({"password_hash": "plain"}, "users[0].password_hash"),
        ({"mfa": {"secret": "not base32!", "active": True, "recovery": []}}, "users[0].mfa.secret"),
        ({"username": 7}, "users[0].username"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, change: dict[str, object], field: str) -> None:
    user = {"username": "olga", "password_hash": hash_password("x", FAST), "role": "viewer"}
    user.update(change)
    err = _corrupt(tmp_path, json.dumps({"version": 2, "users": [user]}, indent=2))
    assert err.field == field and err.line is not None and err.line > 1


def test_unknown_version_and_duplicates_refused(tmp_path: Path) -> None:
    assert _corrupt(tmp_path, '{"version": 3, "users": []}').field == "version"
    h = hash_password("x", FAST)
    dup = [{"username": n, "password_hash": h, "role": "viewer"} for n in ("olga", "Olga")]
    err = _corrupt(tmp_path, json.dumps({"version": 2, "users": dup}, indent=1))
    assert err.field == "users[1].username" and "twice" in str(err)


def test_another_process_change_is_seen_on_reload(tmp_path: Path) -> None:
    clock = ManualClock()
    server = UserStore(tmp_path, FAST, clock)
    server.add("olga", GOOD, Role.VIEWER)
    cli = UserStore(tmp_path, FAST, clock)  # another process, in effect
    cli.update("olga", lambda u: u.__class__(**{**_fields(u), "role": Role.ENGINEER}))
    assert server.reload_if_changed() is True
    assert server.require("olga").role is Role.ENGINEER
    assert server.reload_if_changed() is False  # throttled: at most once a second
    cli.add("piotr", GOOD)
    assert server.reload_if_changed() is False
    clock.advance(1.0)
    assert server.reload_if_changed() is True and server.get("piotr") is not None
    # A change through the store that is stale does not lose the other's change.
    server.update("olga", lambda u: u.__class__(**{**_fields(u), "disabled": True}))
    assert UserStore(tmp_path, FAST).get("piotr") is not None


def _fields(user: object) -> dict[str, object]:
    return {name: getattr(user, name) for name in user.__slots__}  # type: ignore[attr-defined]


def test_corrupt_file_while_running_is_kept_as_error(tmp_path: Path) -> None:
    clock = ManualClock()
    server = UserStore(tmp_path, FAST, clock)
    server.add("olga", GOOD)
    (tmp_path / USERS_FILE).write_text('{"version": 2, "users": [}')
    clock.advance(1.0)
    with pytest.raises(IdentityError, match=":1:"):
        server.reload_if_changed()
    assert server.error is not None
    with pytest.raises(IdentityError):
        server.reload_if_changed()  # still refused until it is fixed
    with pytest.raises(IdentityError):
        server.add("piotr", GOOD)  # and no change overwrites the broken file


# --------------------------------------------------------------------------- first admin


def test_ensure_admin_generates_a_long_password_once(tmp_path: Path) -> None:
    username, password = ensure_admin(tmp_path, None, hasher=FAST)
    assert username == "admin"
    assert password is not None and len(password) >= 24
    check_password(password, "admin")
    cred = tmp_path / ADMIN_CREDENTIAL_FILE
    assert mode(cred) == 0o600
    assert mode(tmp_path / USERS_FILE) == 0o600
    assert password in cred.read_text()
    users = UserStore(tmp_path, FAST)
    assert users.verify("admin", password) is not None
    assert users.require("admin").role is Role.ADMIN
    # A later start keeps the user and its password.
    assert ensure_admin(tmp_path, None, hasher=FAST) == ("admin", None)
    assert ensure_admin(tmp_path, "another long phrase", hasher=FAST) == ("admin", None)
    assert UserStore(tmp_path, FAST).verify("admin", password) is not None


def test_ensure_admin_with_env_password_writes_no_credential(tmp_path: Path) -> None:
    assert ensure_admin(tmp_path, "from-the-env-42", hasher=FAST) == ("admin", None)
    assert not (tmp_path / ADMIN_CREDENTIAL_FILE).exists()
    assert UserStore(tmp_path, FAST).verify("admin", "from-the-env-42") is not None
    for path in tmp_path.iterdir():
        if path.is_file():
            assert b"from-the-env-42" not in path.read_bytes()


def test_a_weak_env_password_is_accepted_for_the_first_admin_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator set it explicitly (the demo's contract keeps ISTHMUS_ADMIN_PASSWORD):
    refusing would leave no administrator, so it is taken, loudly, and audited as weak;
    every other password still meets the policy."""
    from isthmus.security.audit import AuditLog

    audit = AuditLog(tmp_path)
    with caplog.at_level("WARNING"):
        assert ensure_admin(tmp_path, "admin-pass", hasher=FAST, audit=audit) == ("admin", None)
    assert "does not meet the password policy" in caplog.text
    assert "admin-pass" not in caplog.text
    assert UserStore(tmp_path, FAST).verify("admin", "admin-pass") is not None
    added = [r for r in audit.query() if r["action"] == "user.added"]
    assert len(added) == 1 and "weak_password" in added[0]["details"]
    with pytest.raises(IdentityError, match="at least 12"):
        UserStore(tmp_path, FAST).add("second", "short", Role.ADMIN)


def test_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_secret(tmp_path)
    assert len(key) == 32
    assert mode(tmp_path / SECRET_FILE) == 0o600
    assert load_or_create_secret(tmp_path) == key


def test_short_secret_refused(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(IdentityError):
        load_or_create_secret(tmp_path)


# --------------------------------------------------------------------------- access tokens


def test_token_round_trip() -> None:
    clock = ManualClock()
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    issued = tokens.issue("olga", "s1")
    assert issued.expires_in == 60
    claims = tokens.verify(issued.access_token)
    assert (claims.username, claims.session_id) == ("olga", "s1")
    assert claims.expires_at - claims.issued_at == 60
    payload = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert payload["iss"] == "isthmus" and payload["typ"] == "access"
    assert "role" not in payload  # the role is the user's current one, not the token's
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "HS256"


def test_token_expires_with_no_leeway() -> None:
    clock = ManualClock(start_ns=1_700_000_000 * 10**9)
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    token = tokens.issue("olga", "s1").access_token
    clock.advance(59.999)
    tokens.verify(token)
    clock.advance(0.001)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token)


@pytest.mark.parametrize(
    "kind", ["signature", "payload", "other_key", "none_alg", "garbage", "no_sid", "typ"]
)
def test_tampered_tokens_refused(kind: str) -> None:
    clock = ManualClock()
    tokens = TokenService(KEY, ttl_s=60, clock=clock)
    token = tokens.issue("olga", "s1").access_token
    head, body, sig = token.split(".")
    claims: dict[str, object] = {
        "iss": "isthmus", "sub": "olga", "sid": "s1", "typ": "access", "iat": 1, "exp": 2**40,
    }  # fmt: skip
    if kind == "signature":
        bad = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    elif kind == "payload":
        forged = jwt.encode(claims, b"x" * 32, algorithm="HS256")
        bad = f"{head}.{forged.split('.')[1]}.{sig}"
    elif kind == "other_key":
        bad = TokenService(b"o" * 32, 60, clock).issue("olga", "s1").access_token
    elif kind == "none_alg":

        def b64(doc: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

        bad = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    elif kind == "no_sid":
        bad = jwt.encode({k: v for k, v in claims.items() if k != "sid"}, KEY, algorithm="HS256")
    elif kind == "typ":
        bad = jwt.encode({**claims, "typ": "refresh"}, KEY, algorithm="HS256")
    else:
        bad = "not-a-token"
    with pytest.raises(InvalidToken):
        tokens.verify(bad)


def test_token_of_other_issuer_refused() -> None:
    clock = ManualClock()
    other = TokenService(KEY, 60, clock, issuer="someone-else").issue("olga", "s1")
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
