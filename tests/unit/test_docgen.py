"""The configuration reference is generated from the models: keep the file in step."""

from __future__ import annotations

from pathlib import Path

from isthmus.docgen import reference

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
