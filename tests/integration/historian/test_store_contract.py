"""One contract suite for every registered historian backend, on real files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from isthmus.historian.base import Store, StoreFactory, TagMeta
from isthmus.historian.registry import default_stores
from isthmus.historian.text import NotNumericError
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.quality import Quality

S = 1_000_000_000
MINUTE = 60 * S
T0 = 28_333_333 * MINUTE  # 2023-11-14, on the minute grid
BAD = int(Quality.BAD_SENSOR_FAILURE)
UNCERTAIN = int(Quality.UNCERTAIN_LAST_USABLE_VALUE)

BACKENDS = list(default_stores())
VARIANTS = [*BACKENDS, "postgres/rows"]
"""Every backend, and each layout of the PostgreSQL one (``postgres`` is its default)."""


def factory(name: str) -> StoreFactory:
    return default_stores().get(name.split("/")[0])


def config(name: str, path: str | None = None) -> StorageConfig:
    kind, _, layout = name.partition("/")
    return StorageConfig(
        type=kind,
        path=path or f"hist.{kind}",
        memory_limit="64MB",
        layout=layout or "windows",  # type: ignore[arg-type]
    )


@pytest.fixture(params=VARIANTS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend (``postgres/rows``: that layout); for PostgreSQL a fresh database in
    the session's cluster."""
    if str(request.param).startswith("postgres"):
        request.getfixturevalue("pg_dsn")  # sets ISTHMUS_PG_DSN for this test
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    s = factory(backend)(config(backend), tmp_path)
    s.open()
    yield s
    s.close()


def series(tag: int, start: int, n: int, step: int = S, value0: float = 0.0) -> Batch:
    ts = start + np.arange(n, dtype=np.int64) * step
    return Batch.of(np.full(n, tag), ts, value0 + np.arange(n, dtype=np.float64), 0)


def test_registry_has_every_backend() -> None:
    assert sorted(BACKENDS) == ["duckdb", "postgres", "sqlite"]


# -- tags ------------------------------------------------------------------------------


def test_register_tags_ids_are_unique_and_stable(store: Store) -> None:
    ids = store.register_tags([TagMeta("a/b/t1", "float", "degC"), TagMeta("a/b/t2", "bool", "")])
    assert len(set(ids.values())) == 2
    again = store.register_tags(
        [TagMeta("a/b/t2", "bool", ""), TagMeta("a/b/t3", "int", "rpm"), TagMeta("a/b/t1", "x", "")]
    )
    assert again["a/b/t1"] == ids["a/b/t1"]
    assert again["a/b/t2"] == ids["a/b/t2"]
    assert again["a/b/t3"] not in ids.values()
    assert store.register_tags([]) == {}


def test_reopen_keeps_data_and_ids(backend: str, tmp_path: Path) -> None:
    make = factory(backend)
    s = make(config(backend), tmp_path)
    s.open()
    ids = s.register_tags([TagMeta(f"site/t{i}", "float", "") for i in range(5)])
    assert s.write(series(ids["site/t3"], T0, 100)) == 100
    s.close()

    s = make(config(backend), tmp_path)
    s.open()
    try:
        assert s.register_tags([TagMeta(f"site/t{i}", "float", "") for i in range(5)]) == ids
        new = s.register_tags([TagMeta("site/new", "float", "")])
        assert new["site/new"] not in ids.values()
        assert s.count() == 100
        assert s.write(series(ids["site/t3"], T0, 100)) == 0  # still idempotent
        got = s.raw(ids["site/t3"], T0, T0 + 1000 * S)
        np.testing.assert_array_equal(got.value, np.arange(100.0))
        assert s.last([ids["site/t3"]]).ts.tolist() == [T0 + 99 * S]
    finally:
        s.close()


def test_in_memory_store(backend: str, tmp_path: Path) -> None:
    s = factory(backend)(config(backend, ":memory:"), tmp_path)
    s.open()
    try:
        assert s.write(series(1, T0, 10)) == 10
        assert s.count() == 10
    finally:
        s.close()
    assert list(tmp_path.iterdir()) == []


# -- idempotency -----------------------------------------------------------------------


def test_same_batch_twice(store: Store) -> None:
    batch = Batch.concat([series(1, T0, 50), series(2, T0, 50)])
    assert store.write(batch) == 100
    assert store.write(batch) == 0
    assert store.count() == 100


def test_overlapping_batches_first_write_wins(store: Store) -> None:
    assert store.write(series(1, T0, 10, value0=0.0)) == 10
    assert store.write(series(1, T0 + 5 * S, 10, value0=100.0)) == 5
    got = store.raw(1, T0, T0 + 100 * S)
    assert got.ts.tolist() == [T0 + i * S for i in range(15)]
    assert got.value.tolist() == [*range(10), 105.0, 106.0, 107.0, 108.0, 109.0]


def test_duplicates_inside_one_batch_keep_the_first(store: Store) -> None:
    batch = Batch.of(
        [1, 2, 1, 1, 2, 1],
        [T0, T0, T0 + S, T0, T0, T0 + S],
        [1.0, 2.0, 3.0, 9.0, 9.0, 9.0],
        [0, 0, 0, BAD, BAD, BAD],
    )
    assert store.write(batch) == 3
    assert store.count() == 3
    one = store.raw(1, T0, T0 + 10 * S)
    assert one.value.tolist() == [1.0, 3.0]
    assert one.quality.tolist() == [0, 0]
    assert store.raw(2, T0, T0 + 10 * S).value.tolist() == [2.0]
    last = store.last([1, 2])
    assert last.value.tolist() == [3.0, 2.0]


def test_out_of_order_late_data(store: Store) -> None:
    assert store.write(series(1, T0 + 100 * S, 100, value0=100.0)) == 100
    # late data, half of it already stored, in reverse order
    late = series(1, T0 + 50 * S, 100, value0=-1000.0)
    assert store.write(late.select(np.arange(len(late))[::-1])) == 50
    got = store.raw(1, T0, T0 + 1000 * S)
    assert got.ts.tolist() == [T0 + i * S for i in range(50, 200)]
    assert np.all(np.diff(got.ts) > 0)
    assert got.value[:50].tolist() == [-1000.0 + i for i in range(50)]
    assert got.value[50:].tolist() == [100.0 + i for i in range(100)]
    # late data never replaces the newest value
    last = store.last([1])
    assert last.ts.tolist() == [T0 + 199 * S]
    assert last.value.tolist() == [199.0]
    # a late duplicate of the newest sample changes nothing either
    assert store.write(Batch.of([1], [T0 + 199 * S], [-5.0], [BAD])) == 0
    assert store.last([1]).value.tolist() == [199.0]


def test_newer_batch_for_another_tag_then_late_duplicates(store: Store) -> None:
    assert store.write(series(1, T0, 10)) == 10
    assert store.write(series(2, T0 + 20 * S, 10)) == 10
    mixed = Batch.concat([series(1, T0 + 5 * S, 10), series(2, T0 + 25 * S, 10)])
    assert store.write(mixed) == 10
    assert store.count() == 30


def test_empty_batch(store: Store) -> None:
    assert store.write(Batch.empty()) == 0
    assert store.count() == 0


# -- raw ---------------------------------------------------------------------------------


def test_raw_range_is_half_open_oldest_first(store: Store) -> None:
    store.write(series(1, T0, 10))
    store.write(series(2, T0, 10, value0=50.0))
    got = store.raw(1, T0 + 2 * S, T0 + 5 * S)
    assert got.ts.tolist() == [T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]
    assert got.tag_id.tolist() == [1, 1, 1]
    assert got.value.tolist() == [2.0, 3.0, 4.0]
    assert got.tag_id.dtype == np.int32 and got.ts.dtype == np.int64
    assert got.value.dtype == np.float64 and got.quality.dtype == np.uint32
    assert len(store.raw(1, T0 + 2 * S, T0 + 2 * S)) == 0
    assert len(store.raw(1, T0 + 2 * S + 1, T0 + 3 * S)) == 0
    assert store.raw(1, T0 + 2 * S, T0 + 3 * S + 1).ts.tolist() == [T0 + 2 * S, T0 + 3 * S]
    assert len(store.raw(3, T0, T0 + 100 * S)) == 0


def test_before_is_the_sample_in_force_within_the_lookback(store: Store) -> None:
    store.write(series(1, T0, 10))
    store.write(series(2, T0, 10, value0=50.0))
    got = store.before(1, T0 + 5 * S, 60 * S)
    assert got.ts.tolist() == [T0 + 4 * S] and got.value.tolist() == [4.0]
    assert got.tag_id.tolist() == [1] and got.quality.dtype == np.uint32
    assert store.before(1, T0 + 5 * S + 1, 60 * S).ts.tolist() == [T0 + 5 * S]
    assert len(store.before(1, T0, 60 * S)) == 0  # nothing before the first sample
    assert len(store.before(1, T0 + 30 * S, 10 * S)) == 0  # older than the lookback
    assert len(store.before(3, T0 + 5 * S, 60 * S)) == 0


def test_raw_limit_keeps_the_oldest(store: Store) -> None:
    store.write(series(1, T0, 100))
    got = store.raw(1, T0, T0 + 100 * S, limit=7)
    assert got.ts.tolist() == [T0 + i * S for i in range(7)]
    assert len(store.raw(1, T0, T0 + 100 * S, limit=0)) == 0


def test_raw_keeps_quality_and_nan_of_bad_samples(store: Store) -> None:
    store.write(
        Batch.of([1, 1, 1], [T0, T0 + S, T0 + 2 * S], [1.0, np.nan, 3.0], [0, BAD, 0xFFFFFFFF])
    )
    got = store.raw(1, T0, T0 + 10 * S)
    assert got.quality.tolist() == [0, BAD, 0xFFFFFFFF]
    assert got.value[0] == 1.0 and np.isnan(got.value[1]) and got.value[2] == 3.0


# -- last --------------------------------------------------------------------------------


def test_last_value_per_tag(store: Store) -> None:
    store.write(Batch.concat([series(1, T0, 10), series(2, T0, 5, value0=10.0)]))
    store.write(Batch.of([2], [T0 + 100 * S], [-1.0], [BAD]))
    last = store.last([2, 1, 99])
    assert last.tag_id.tolist() == [1, 2]
    assert last.ts.tolist() == [T0 + 9 * S, T0 + 100 * S]
    assert last.value.tolist() == [9.0, -1.0]
    assert last.quality.tolist() == [0, BAD]  # the newest sample, whatever its quality
    assert len(store.last([])) == 0
    assert len(store.last([42])) == 0


# -- buckets -----------------------------------------------------------------------------


def test_buckets_known_values(store: Store) -> None:
    # 3 minutes of 1 s samples, values 0..179
    store.write(series(1, T0, 180))
    agg = store.buckets(1, T0, T0 + 3 * MINUTE, MINUTE)
    assert agg.bucket_ns.tolist() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert agg.count.tolist() == [60, 60, 60]
    assert agg.min.tolist() == [0.0, 60.0, 120.0]
    assert agg.max.tolist() == [59.0, 119.0, 179.0]
    np.testing.assert_allclose(agg.avg, [29.5, 89.5, 149.5])
    assert agg.bucket_ns.dtype == np.int64 and agg.count.dtype == np.int64
    assert agg.avg.dtype == np.float64


def test_buckets_ignore_bad_samples_but_count_uncertain(store: Store) -> None:
    store.write(
        Batch.of(
            [1, 1, 1, 1, 1],
            [T0, T0 + S, T0 + 2 * S, T0 + MINUTE, T0 + MINUTE + S],
            [1.0, 1000.0, 3.0, np.nan, -7.0],
            [0, BAD, UNCERTAIN, BAD, int(Quality.BAD)],
        )
    )
    agg = store.buckets(1, T0, T0 + 10 * MINUTE, MINUTE)
    # the second minute holds only Bad samples: no bucket
    assert agg.bucket_ns.tolist() == [T0]
    assert agg.count.tolist() == [2]
    assert agg.avg.tolist() == [2.0]
    assert agg.min.tolist() == [1.0]
    assert agg.max.tolist() == [3.0]


def test_buckets_are_epoch_aligned_and_range_filtered(store: Store) -> None:
    store.write(series(1, T0, 180))
    # start and end off the bucket grid: buckets stay on multiples of bucket_ns,
    # the samples outside [start, end) are excluded
    agg = store.buckets(1, T0 + 30 * S, T0 + 90 * S, MINUTE)
    assert agg.bucket_ns.tolist() == [T0, T0 + MINUTE]
    assert agg.count.tolist() == [30, 30]
    assert agg.min.tolist() == [30.0, 60.0]
    assert agg.max.tolist() == [59.0, 89.0]
    assert all(b % MINUTE == 0 for b in agg.bucket_ns.tolist())
    odd = store.buckets(1, T0, T0 + 180 * S, 7 * S)
    assert all(b % (7 * S) == 0 for b in odd.bucket_ns.tolist())
    assert int(odd.count.sum()) == 180
    assert len(store.buckets(2, T0, T0 + MINUTE, MINUTE)) == 0


def test_buckets_before_1970_floor(store: Store) -> None:
    store.write(Batch.of([1, 1, 1], [-90 * S, -30 * S, 30 * S], [1.0, 2.0, 3.0], 0))
    agg = store.buckets(1, -10 * MINUTE, 10 * MINUTE, MINUTE)
    assert agg.bucket_ns.tolist() == [-2 * MINUTE, -MINUTE, 0]
    assert agg.count.tolist() == [1, 1, 1]


def test_buckets_reject_bad_width(store: Store) -> None:
    with pytest.raises(ValueError, match="bucket_ns"):
        store.buckets(1, 0, 10, 0)


# -- retention ---------------------------------------------------------------------------


def test_purge_before(store: Store) -> None:
    store.write(Batch.concat([series(1, T0, 100), series(2, T0, 10)]))
    assert store.purge_before(T0 + 50 * S) == 60
    assert store.count() == 50
    assert store.raw(1, 0, T0 + 1000 * S).ts[0] == T0 + 50 * S
    last = store.last([1, 2])
    assert last.tag_id.tolist() == [1]  # tag 2 has no sample left
    assert store.purge_before(T0 + 50 * S) == 0
    # purged samples may be written again (they are new again)
    assert store.write(series(2, T0, 10)) == 10
    assert store.last([2]).ts.tolist() == [T0 + 9 * S]
    assert store.purge_before(T0 + 10_000 * S) == 60
    assert store.count() == 0
    assert store.write(series(1, T0, 100)) == 100


# -- threads -----------------------------------------------------------------------------


def test_concurrent_writes_and_reads(store: Store) -> None:
    tags, steps, rounds = 20, 50, 40
    errors: list[BaseException] = []
    done = threading.Event()
    seen_counts: list[int] = []

    def writer() -> None:
        try:
            tag = np.tile(np.arange(1, tags + 1), steps)
            for r in range(rounds):
                ts = np.repeat(T0 + (r * steps + np.arange(steps)) * S, tags)
                b = Batch.of(tag, ts, np.float64(r), 0)
                assert store.write(b) == tags * steps
                assert store.write(b) == 0
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader(k: int) -> None:
        try:
            previous = 0
            while not done.is_set():
                n = store.count()
                assert n >= previous and n % (tags * steps) == 0  # whole batches only
                previous = n
                seen_counts.append(n)
                raw = store.raw(1 + k, T0, T0 + 10**6 * S)
                assert np.all(np.diff(raw.ts) > 0)
                store.last(list(range(1, tags + 1)))
                agg = store.buckets(1 + k, T0, T0 + 10**6 * S, MINUTE)
                assert int(agg.count.sum()) <= rounds * steps
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(k,)) for k in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert store.count() == tags * steps * rounds
    assert seen_counts
    last = store.last(list(range(1, tags + 1)))
    assert last.ts.tolist() == [T0 + (rounds * steps - 1) * S] * tags


def test_closed_store_refuses_work(backend: str, tmp_path: Path) -> None:
    s = factory(backend)(config(backend), tmp_path)
    s.open()
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        s.write(series(1, T0, 1))


# -- string samples ----------------------------------------------------------------------


def strings(tag: int, start: int, texts: list[str], step: int = S, quality: int = 0) -> Batch:
    ts = start + np.arange(len(texts), dtype=np.int64) * step
    return Batch.of(np.full(len(texts), tag), ts, 0.0, quality, text=texts)


def test_text_samples_round_trip_idempotent(store: Store) -> None:
    texts = ["RECIPE-A", "", "naïve ✓ 日本", "x" * 300, "RECIPE-A"]
    assert store.write(strings(7, T0, texts)) == 5
    assert store.write(strings(7, T0, texts)) == 0  # same (tag, ts): skipped
    assert store.write(strings(7, T0, ["other"] * 5)) == 0  # first written wins
    got = store.raw(7, T0, T0 + 100 * S)
    assert got.texts() == texts
    assert got.ts.tolist() == [T0 + i * S for i in range(5)]
    assert got.tag_id.tolist() == [7] * 5 and got.quality.dtype == np.uint32
    assert np.isnan(got.value).all()
    assert store.count() == 5


def test_text_and_numbers_in_one_batch(store: Store) -> None:
    mixed = Batch.concat([series(1, T0, 3), strings(2, T0, ["a", "b", "c"]), series(3, T0, 2)])
    assert mixed.text is not None
    assert store.write(mixed) == 8
    assert store.write(mixed) == 0
    assert store.count() == 8
    assert store.raw(1, T0, T0 + 10 * S).value.tolist() == [0.0, 1.0, 2.0]
    assert store.raw(1, T0, T0 + 10 * S).text is None  # numeric tags: no text column
    assert store.raw(2, T0, T0 + 10 * S).texts() == ["a", "b", "c"]
    last = store.last([1, 2, 3])
    assert last.tag_id.tolist() == [1, 2, 3]
    assert last.texts() == [None, "c", None]
    assert last.value[0] == 2.0 and last.value[2] == 1.0


def test_text_duplicates_in_one_batch_keep_the_first(store: Store) -> None:
    batch = Batch.of([5, 5, 5], [T0, T0, T0 + S], 0.0, [0, BAD, 0], text=["one", "dup", "two"])
    assert store.write(batch) == 2
    got = store.raw(5, T0, T0 + 10 * S)
    assert got.texts() == ["one", "two"] and got.quality.tolist() == [0, 0]


def test_text_last_raw_limit_and_before(store: Store) -> None:
    store.write(strings(4, T0, [f"v{i}" for i in range(10)], quality=UNCERTAIN))
    store.write(strings(4, T0 - 50 * S, ["late"]))  # late: never replaces the newest
    last = store.last([4, 99])
    assert last.tag_id.tolist() == [4]
    assert last.texts() == ["v9"] and last.ts.tolist() == [T0 + 9 * S]
    assert last.quality.tolist() == [UNCERTAIN]
    assert store.raw(4, T0 - 100 * S, T0 + 100 * S, limit=3).texts() == ["late", "v0", "v1"]
    before = store.before(4, T0 + 5 * S, 60 * S)
    assert before.texts() == ["v4"] and before.ts.tolist() == [T0 + 4 * S]
    assert len(store.before(4, T0 - 50 * S, 10 * S)) == 0


def test_a_tag_that_switched_type_merges_both_tables(store: Store) -> None:
    store.write(series(6, T0, 3))  # numeric first ...
    store.write(strings(6, T0 + 10 * S, ["now text"]))  # ... then reconfigured as a string
    got = store.raw(6, T0, T0 + 100 * S)
    assert got.ts.tolist() == [T0, T0 + S, T0 + 2 * S, T0 + 10 * S]
    assert got.texts() == [None, None, None, "now text"]
    assert store.last([6]).texts() == ["now text"]
    assert store.before(6, T0 + 5 * S, 60 * S).value.tolist() == [2.0]


def test_aggregates_of_a_string_tag_are_refused(store: Store) -> None:
    store.write(Batch.concat([series(1, T0, 120), strings(2, T0, ["a", "b"])]))
    with pytest.raises(NotNumericError, match="tag 2 holds strings; aggregates need a numeric"):
        store.buckets(2, T0, T0 + MINUTE, MINUTE)
    assert store.buckets(1, T0, T0 + 2 * MINUTE, MINUTE).count.tolist() == [60, 60]


def test_purge_includes_text(store: Store) -> None:
    store.write(Batch.concat([series(1, T0, 10), strings(2, T0, ["a", "b", "c", "d"])]))
    assert store.purge_before(T0 + 2 * S) == 4
    assert store.raw(2, 0, T0 + 100 * S).texts() == ["c", "d"]
    assert store.count() == 10
    assert store.purge_before(T0 + 100 * S) == 10
    assert len(store.last([1, 2])) == 0


def test_text_survives_reopen(backend: str, tmp_path: Path) -> None:
    make = factory(backend)
    s = make(config(backend), tmp_path)
    s.open()
    ids = s.register_tags([TagMeta("site/recipe", "string", "")])
    assert s.write(strings(ids["site/recipe"], T0, ["BATCH-001", "BATCH-002"])) == 2
    s.close()
    s = make(config(backend), tmp_path)
    s.open()
    try:
        assert s.last([ids["site/recipe"]]).texts() == ["BATCH-002"]
        assert s.write(strings(ids["site/recipe"], T0, ["BATCH-001", "BATCH-002"])) == 0
    finally:
        s.close()
