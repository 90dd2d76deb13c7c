"""The fast publish hook: installed once per session, only on a checked asyncua."""

from __future__ import annotations

from typing import Any

import pytest
from asyncua.client.ua_client import UaClient

from isthmus.connectors.opcua import fastsubscription


def test_installs_once_per_session_object() -> None:
    session: Any = UaClient().session
    assert fastsubscription.supported()
    assert fastsubscription.install(session)
    hooked = session.publish
    assert fastsubscription.install(session)  # idempotent: not wrapped twice
    assert session.publish is hooked
    other: Any = UaClient().session
    assert other.publish != hooked  # the class is untouched


def test_other_asyncua_version_keeps_asyncua_decoder(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastsubscription, "TESTED_ASYNCUA", ("0.0.",))
    monkeypatch.setattr(fastsubscription, "_warned", False)
    session: Any = UaClient().session
    original = session.publish
    assert not fastsubscription.supported()
    assert not fastsubscription.install(session)
    assert not fastsubscription.install(UaClient().session)
    assert session.publish == original
    warnings = [r for r in caplog.records if "fast publish decoding disabled" in r.getMessage()]
    assert len(warnings) == 1  # once, not per subscription
