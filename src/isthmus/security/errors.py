"""The errors of identity: users, passwords, sessions, MFA and API tokens."""

from __future__ import annotations

from isthmus.model.errors import IsthmusError


class IdentityError(IsthmusError):
    """A users or identity file is unreadable, or a user operation is refused.

    For a corrupt file, ``file``, ``line`` and ``field`` say where (the message too)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.field = field


class NotFound(IdentityError):
    """No such user or API token."""


class Conflict(IdentityError):
    """The change conflicts with the current state (a user exists, MFA is active...)."""


class Forbidden(IdentityError):
    """The caller may not make this change (e.g. grant a role above their own)."""


class WeakPassword(IdentityError):
    """A password the policy refuses; ``reason`` says why (never the password)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"password refused: {reason}", field="password")
        self.reason = reason


class InvalidToken(IsthmusError):
    """A bearer token is malformed, forged, expired or revoked, its session ended, or
    its user is disabled or deleted (HTTP 401)."""


class MfaEnrollmentRequired(InvalidToken):
    """The session's user must enrol a second factor first: the session may only call
    the MFA enrolment routes (``/api/auth/mfa/enroll`` and ``/verify``) until then."""


class LoginRefused(IsthmusError):
    """A login or refresh is refused.  ``reason``: ``credentials`` (wrong username or
    password, or a disabled user: one answer for all), ``locked`` (too many failures;
    ``retry_after`` seconds), ``mfa_required`` (send ``otp`` or ``recovery_code``) or
    ``mfa_invalid`` (wrong, replayed or used code)."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
