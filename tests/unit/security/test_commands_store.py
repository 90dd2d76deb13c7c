"""DATA_DIR/commands.db: values keep their JSON type, claims are atomic and once only,
scoped lists do not leak through LIKE wildcards, recovery after a restart."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

from isthmus.security.commands import Command, CommandOrder, CommandState, CommandStore
from isthmus.security.commands.store import DB_FILE

NOW = 1_700_000_000_000_000_000


def command(cid: str, tag: str = "acme/lyon/a/l/c/e/t", **kw: object) -> Command:
    base: dict[str, object] = {
        "id": cid,
        "tag": tag,
        "value": 1.5,
        "reason": "r",
        "requested_by": "otto",
        "requested_role": "operator",
        "state": CommandState.APPROVED,
        "created_at_ns": NOW,
        "updated_at_ns": NOW,
    }
    return Command(**{**base, **kw})  # type: ignore[arg-type]


def test_file_is_private_wal_and_full_sync(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    assert (tmp_path / DB_FILE).stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_values_keep_their_type(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    for i, value in enumerate([True, 3, 3.0, "3", 2**63 - 1, -0.5]):
        store.insert(command(f"v{i}", value=value, read_back=value))
        got = store.get(f"v{i}")
        assert got is not None and got.value == value and type(got.value) is type(value)
        assert type(got.read_back) is type(value)


def test_insert_returns_the_existing_command(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    assert store.insert(command("a")) is None
    taken = store.insert(command("a", value=9.0))
    assert taken is not None and taken.value == 1.5


def test_claim_once_even_from_many_threads(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    store.insert(command("a"))
    order = CommandOrder("a", "acme/lyon/a/l/c/e/t", 1.5, "otto")
    results: list[object] = []
    other = CommandStore.open(tmp_path)  # another connection, as another process would

    def claim(s: CommandStore) -> None:
        results.append(s.claim(order, NOW))

    threads = [threading.Thread(target=claim, args=(s,)) for s in [store, other] * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == 1  # exactly one claim
    assert all(r is not None and r.state is CommandState.UNCERTAIN for r in results if r)


def test_claim_of_an_unknown_order_journals_it(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    order = CommandOrder("hub-1", "acme/lyon/a/l/c/e/t", 2.0, "alice", "sam", NOW + 10)
    assert store.claim(order, NOW) is None
    got = store.get("hub-1")
    assert got is not None and got.state is CommandState.WRITING and got.approved_by == "sam"
    again = store.claim(order, NOW)
    assert again is not None and again.state is CommandState.UNCERTAIN


def test_find_scopes_are_segments_not_wildcards(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    store.insert(command("a", tag="acme/lyon/util_x/l/c/e/t"))
    store.insert(command("b", tag="acme/lyon/utilities/l/c/e/t"))
    store.insert(command("c", tag="acme/lyon/util%/l/c/e/t"))
    assert {c.id for c in store.find(scopes=("acme/lyon/util_x",))} == {"a"}
    assert {c.id for c in store.find(scopes=("acme/lyon/util%",))} == {"c"}
    assert {c.id for c in store.find(scopes=("acme/lyon/util",))} == set()
    assert {c.id for c in store.find(tag="acme/lyon/util_x/l")} == {"a"}
    assert {c.id for c in store.find()} == {"a", "b", "c"}


def test_recover(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    store.insert(command("w", state=CommandState.WRITING))
    store.insert(command("a", state=CommandState.APPROVED))
    store.insert(command("live", state=CommandState.WRITING))
    store.insert(command("v", state=CommandState.VERIFIED))
    store.insert(command("q", state=CommandState.AWAITING_APPROVAL))
    changed = {c.id: c.state for c in store.recover(NOW, skip=["live"])}
    assert changed == {"w": CommandState.UNCERTAIN, "a": CommandState.FAILED}
    states = {c.id: c.state for c in store.find()}
    assert states["live"] is CommandState.WRITING and states["v"] is CommandState.VERIFIED
    assert states["q"] is CommandState.AWAITING_APPROVAL
    assert store.recover(NOW) and not store.recover(NOW)  # "live" now, then nothing


def test_transition_is_conditional(tmp_path: Path) -> None:
    store = CommandStore.open(tmp_path)
    cmd = command("a", state=CommandState.AWAITING_APPROVAL)
    store.insert(cmd)
    done = replace(cmd, state=CommandState.REJECTED)
    assert store.transition(done, (CommandState.AWAITING_APPROVAL,))
    assert not store.transition(replace(cmd, state=CommandState.APPROVED),
                                (CommandState.AWAITING_APPROVAL,))  # fmt: skip
    assert store.get("a").state is CommandState.REJECTED  # type: ignore[union-attr]
    assert os.path.exists(tmp_path / DB_FILE)
