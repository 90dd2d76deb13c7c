"""Roles, the permission matrix and hierarchy scopes: the pure core of access control.

One matrix (role, resource, action) decides every route; scopes (hierarchy prefixes)
decide every object.  The API declares each route's permission with one dependency
(``isthmus.api.deps.require``), the command gate asks :func:`may_command`, and
``docs/permissions.md`` is generated from :data:`MATRIX` (``isthmus.docgen``).

Roles map to the OPC UA Part 3 well-known roles (§4.9): viewer → Observer,
operator → Operator, engineer → Engineer, supervisor → Supervisor,
security_admin → SecurityAdmin, admin → ConfigureAdmin (plus everything else).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from isthmus.model.config import Criticality


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    SUPERVISOR = "supervisor"
    SECURITY_ADMIN = "security_admin"
    ADMIN = "admin"


OPCUA_ROLE: Mapping[Role, str] = {
    Role.VIEWER: "Observer",
    Role.OPERATOR: "Operator",
    Role.ENGINEER: "Engineer",
    Role.SUPERVISOR: "Supervisor",
    Role.SECURITY_ADMIN: "SecurityAdmin",
    Role.ADMIN: "ConfigureAdmin",
}


class Resource(StrEnum):
    SYSTEM = "system"
    """Health details, metrics, sources' status."""
    TAGS = "tags"
    """The tag catalog, the hierarchy and last values."""
    HISTORY = "history"
    """Raw, bucketed and interpolated history."""
    LIVE = "live"
    """The live WebSocket stream."""
    EVENTS = "events"
    """The event log (outages, rejected frames)."""
    EXPORT = "export"
    """Bulk export of history (data lake)."""
    COMMANDS = "commands"
    """Commands to machines through the command gate."""
    APPROVALS = "approvals"
    """Second-person approval of critical commands."""
    USERS = "users"
    TOKENS = "tokens"
    """API tokens for machines (MES, ERP, scripts)."""
    AUDIT = "audit"


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    """Create or change: send a command, add a user, create a token."""
    APPROVE = "approve"


Permission = tuple[Resource, Action]

_READ_DATA: frozenset[Permission] = frozenset(
    {
        (Resource.SYSTEM, Action.READ),
        (Resource.TAGS, Action.READ),
        (Resource.HISTORY, Action.READ),
        (Resource.LIVE, Action.READ),
        (Resource.EVENTS, Action.READ),
    }
)
_COMMAND: frozenset[Permission] = frozenset(
    {(Resource.COMMANDS, Action.READ), (Resource.COMMANDS, Action.WRITE)}
)
_MANAGE_IDENTITY: frozenset[Permission] = frozenset(
    {
        (Resource.USERS, Action.READ),
        (Resource.USERS, Action.WRITE),
        (Resource.TOKENS, Action.READ),
        (Resource.TOKENS, Action.WRITE),
        (Resource.AUDIT, Action.READ),
    }
)

MATRIX: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: _READ_DATA,
    Role.OPERATOR: _READ_DATA | _COMMAND,
    Role.ENGINEER: _READ_DATA | _COMMAND | {(Resource.EXPORT, Action.READ)},
    Role.SUPERVISOR: _READ_DATA
    | _COMMAND
    | {(Resource.EXPORT, Action.READ), (Resource.APPROVALS, Action.READ)}
    | {(Resource.APPROVALS, Action.APPROVE), (Resource.AUDIT, Action.READ)},
    Role.SECURITY_ADMIN: _READ_DATA | _MANAGE_IDENTITY | {(Resource.COMMANDS, Action.READ)},
    Role.ADMIN: frozenset((r, a) for r in Resource for a in Action),
}
"""Who may do what.  Object scopes narrow every permission further (see :func:`in_scope`)."""

COMMAND_CRITICALITY: Mapping[Role, frozenset[Criticality]] = {
    Role.VIEWER: frozenset(),
    Role.OPERATOR: frozenset({Criticality.LOW, Criticality.MEDIUM}),
    Role.ENGINEER: frozenset({Criticality.LOW, Criticality.MEDIUM, Criticality.HIGH}),
    Role.SUPERVISOR: frozenset(Criticality),
    Role.SECURITY_ADMIN: frozenset(),
    Role.ADMIN: frozenset(Criticality),
}
"""The criticalities of the tags a role may command (``criticality: critical`` also
needs a second person's approval, whoever asks)."""

APPROVER_ROLES: frozenset[Role] = frozenset({Role.SUPERVISOR, Role.ADMIN})
"""Who may approve or reject a command awaiting approval (never their own)."""


def allowed(role: Role, resource: Resource, action: Action) -> bool:
    return (resource, action) in MATRIX[role]


def may_command(role: Role, criticality: Criticality) -> bool:
    return criticality in COMMAND_CRITICALITY[role]


def may_approve(role: Role) -> bool:
    return role in APPROVER_ROLES and allowed(role, Resource.APPROVALS, Action.APPROVE)


# --------------------------------------------------------------------------- scopes


def normalize_scope(text: str) -> str:
    """``acme/lyon/utilities/`` → ``acme/lyon/utilities``; empty segments are refused."""
    scope = text.strip().strip("/")
    if not scope or any(not part for part in scope.split("/")):
        raise ValueError(f"{text!r} is not a hierarchy prefix (e.g. acme/lyon/utilities)")
    return scope


def in_scope(path: str, scopes: Iterable[str]) -> bool:
    """Whether the UNS ``path`` lies inside one of the hierarchy prefixes ``scopes``
    (segment-wise: ``acme/lyon/util`` does not cover ``acme/lyon/utilities``).  No scopes
    means the whole enterprise."""
    any_scope = False
    for scope in scopes:
        any_scope = True
        if path == scope or path.startswith(scope + "/"):
            return True
    return not any_scope


def on_scope_path(path: str, scopes: Iterable[str]) -> bool:
    """Whether a hierarchy node ``path`` (enterprise, site, area...) may be shown: it is
    inside a scope, or an ancestor of one (the way down to what the caller may see)."""
    any_scope = False
    for scope in scopes:
        any_scope = True
        if path == scope or path.startswith(scope + "/") or scope.startswith(path + "/"):
            return True
    return not any_scope


# --------------------------------------------------------------------------- principal


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (logged in) or an API token (a machine), with its role and
    scopes.  What every permission check and every audit record uses."""

    name: str
    """The username; for an API token, the token's owner-chosen name."""
    role: Role
    scopes: tuple[str, ...] = ()
    kind: str = "user"
    """``user`` or ``token``."""
    token_id: str | None = None
    """The API token's id (kind ``token``) or the login session's id (kind ``user``)."""
    mfa: bool = False
    """Whether this session passed a second factor."""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """How the audit log names this caller: ``alice`` or ``token:<id>``."""
        return f"token:{self.token_id}" if self.kind == "token" else self.name

    def can(self, resource: Resource, action: Action) -> bool:
        return allowed(self.role, resource, action)

    def sees(self, path: str) -> bool:
        return in_scope(path, self.scopes)
