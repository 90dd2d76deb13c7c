"""Retention per tag class for stores without downsampling tiers (SQLite, PostgreSQL):
which tags belong to which class, and where each class's raw samples end.  Pure.

The DuckDB store keeps the classes in its database (it also rolls samples up before
they go, see :mod:`isthmus.historian.duckdb.tiers`); these stores keep raw samples only,
so retention there is a delete per class, and the class map lives in memory (the
maintenance task assigns it when the system starts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from isthmus.model.config import DEFAULT_RETENTION_CLASS, RetentionConfig, StorageConfig

S_NS = 1_000_000_000
MINUTE_NS = 60 * S_NS


def check_classes(retention: RetentionConfig, classes: Mapping[int, str]) -> None:
    known = retention.names()
    unknown = sorted({c for c in classes.values() if c not in known})
    if unknown:
        raise ValueError(
            f"unknown retention class(es) {', '.join(unknown)}; "
            f"storage.retention defines: {', '.join(sorted(known))}"
        )


class InMemoryClasses:
    """The class map of a store without tiers: kept in memory, checked against
    ``storage.retention`` (the maintenance task assigns it when the system starts)."""

    config: StorageConfig
    _retention_classes: dict[int, str] | None = None

    def assign_retention_classes(self, classes: Mapping[int, str]) -> None:
        check_classes(self.config.retention, classes)
        self._retention_classes = {**(self._retention_classes or {}), **classes}


def raw_cutoffs(
    retention: RetentionConfig,
    classes: Mapping[int, str],
    tag_ids: Iterable[int],
    now_ns: int,
) -> list[tuple[list[int], int]]:
    """Per class that expires raw samples: its tags and the cut-off (on the minute grid;
    samples before it go).  Tags without a known class are in the default class."""
    known = retention.names()
    members: dict[str, list[int]] = {}
    for tag in sorted(set(tag_ids)):
        name = classes.get(tag, DEFAULT_RETENTION_CLASS)
        members.setdefault(name if name in known else DEFAULT_RETENTION_CLASS, []).append(tag)
    out: list[tuple[list[int], int]] = []
    for name, tags in sorted(members.items()):
        keep = retention.policy(name).raw
        if keep is None:
            continue
        cut = now_ns - round(keep * S_NS)
        out.append((tags, cut - cut % MINUTE_NS))
    return out
