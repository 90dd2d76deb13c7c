"""The reference pages are generated from the code: keep the files in step."""

from __future__ import annotations

from pathlib import Path

from isthmus.docgen import permissions, reference
from isthmus.security.rbac import MATRIX, OPCUA_ROLE, Role

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration-reference.md"


def test_configuration_reference_is_up_to_date() -> None:
    assert DOC.read_text() == reference(), (
        "docs/configuration-reference.md is stale: run "
        "`.venv/bin/python -m isthmus.docgen > docs/configuration-reference.md`"
    )


def test_reference_covers_every_connector_and_section() -> None:
    text = reference()
    for heading in ("## Source `type: opcua`", "## Source `type: modbus`", "## `storage`"):
        assert heading in text
    assert "| `word_order` |" in text and "| `node` |" in text


PERMISSIONS = DOC.parent / "permissions.md"


def test_permissions_page_is_up_to_date() -> None:
    assert PERMISSIONS.read_text() == permissions(), (
        "docs/permissions.md is stale: run "
        "`.venv/bin/python -m isthmus.docgen permissions > docs/permissions.md`"
    )


def test_permissions_page_covers_roles_matrix_and_every_route() -> None:
    text = permissions()
    for role in Role:
        assert f"| `{role.value}` | {OPCUA_ROLE[role]} |" in text
    for role_perms in MATRIX.values():
        for resource, action in role_perms:
            if (resource, action) in MATRIX[Role.VIEWER] | MATRIX[Role.SECURITY_ADMIN]:
                assert f"`{resource.value}:{action.value}`" in text
    for path in ("`/api/tags/{path}/samples`", "`/api/stream`", "`/health`", "`/api/events`"):
        assert path in text
    assert "**undeclared**" not in text
    assert "| `critical` | — | — | — | ✓ | — | ✓ |" in text
