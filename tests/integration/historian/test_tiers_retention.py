"""Retention per tag class on every backend: a fast-class tag loses its raw samples
after its horizon while a default-class tag keeps them (DuckDB also keeps rollups)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from isthmus.historian.base import Maintainable, Store, TagMeta
from isthmus.historian.registry import default_stores
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 10**9
MINUTE = 60 * S
DAY = 86_400 * S
T0 = 19_675 * DAY  # 2023-11-14 00:00 UTC
RETENTION = {
    "default": {"raw": "3d"},
    "classes": {"fast": {"raw": "1d"}, "keep": {"raw": None, "1m": None, "1h": None}},
}


@pytest.fixture(params=sorted(default_stores()))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    name = str(request.param)
    if name == "postgres":
        request.getfixturevalue("pg_dsn")  # a fresh schema on the session's cluster
    config = StorageConfig.model_validate(
        {"type": name, "path": f"h.{name}", "memory_limit": "64MB", "retention": RETENTION}
    )
    s = default_stores().get(name)(config, tmp_path)
    s.open()
    yield s
    s.close()


def test_each_class_expires_on_its_own(store: Store) -> None:
    ids = store.register_tags([TagMeta(f"a/b/c/d/t{i}", "float64", "") for i in range(3)])
    tags = [ids[f"a/b/c/d/t{i}"] for i in range(3)]
    n = 5 * 24 * 60  # one sample a minute for 5 days
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    for tag in tags:
        store.write(Batch.of(np.full(n, tag), ts, np.arange(n, dtype=np.float64), 0))
    assert isinstance(store, Maintainable)
    store.assign_retention_classes({tags[1]: "fast", tags[2]: "keep"})
    now = T0 + 5 * DAY
    report = store.maintain(now)
    oldest = [int(store.raw(t, 0, now, 1).ts[0]) for t in tags]
    assert oldest == [now - 3 * DAY, now - DAY, T0]
    assert report.rows_deleted["raw"] == 2 * 24 * 60 + 4 * 24 * 60
    assert store.maintain(now).rows_deleted["raw"] == 0  # twice equals once
    # string samples follow their tag's class too
    text_tag = store.register_tags([TagMeta("a/b/c/d/lot", "string", "")])["a/b/c/d/lot"]
    store.assign_retention_classes({text_tag: "fast"})
    at = np.array([T0, now - 2 * DAY, now - 12 * 3600 * S, now - MINUTE], dtype=np.int64)
    names = [f"lot-{i}" for i in range(4)]
    store.write(Batch.of(np.full(4, text_tag), at, np.zeros(4), 0, text=names))
    assert store.maintain(now).rows_deleted["raw"] == 2
    kept = store.raw(text_tag, 0, now, 10)
    assert kept.text is not None and kept.text.tolist() == ["lot-2", "lot-3"]
    with pytest.raises(ValueError, match="unknown retention class"):
        store.assign_retention_classes({tags[0]: "nope"})


def test_postgres_drops_the_partitions_every_class_expired(pg_dsn: str, tmp_path: Path) -> None:
    from isthmus.historian.postgres.store import PostgresStore

    config = StorageConfig.model_validate(
        {
            "type": "postgres",
            "retention": {"default": {"raw": "3d"}, "classes": {"fast": {"raw": "1d"}}},
        }
    )
    store = PostgresStore(config, tmp_path)
    store.open()
    try:
        ids = store.register_tags([TagMeta(f"a/b/c/d/t{i}", "float64", "") for i in (1, 2)])
        assert sorted(ids.values()) == [1, 2]
        n = 5 * 24 * 60
        ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
        for tag in (1, 2):
            store.write(Batch.of(np.full(n, tag), ts, np.arange(n, dtype=np.float64), 0))
        assert len(store._partitions) == 5
        store.assign_retention_classes({2: "fast"})
        now = T0 + 5 * DAY
        report = store.maintain(now)
        assert report.rows_deleted["raw"] == 2 * 24 * 60 + 4 * 24 * 60
        # days 1 and 2 are older than every class keeps: their partitions are gone
        assert sorted(store._partitions) == [T0 // DAY + d for d in (2, 3, 4)]
        assert [int(store.raw(t, 0, now, 1).ts[0]) for t in (1, 2)] == [now - 3 * DAY, now - DAY]
    finally:
        store.close()
