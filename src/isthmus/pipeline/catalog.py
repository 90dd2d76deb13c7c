"""The tag catalog: every configured tag with its runtime id and full UNS path.

Built once at start-up by the composition root (ids come from the historian so they
stay stable across restarts) and shared read-only by pipeline, API and UI.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from isthmus.model.config import TagConfig


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    tag_id: int
    path: str
    """Full UNS path: enterprise/site/area/line/cell/equipment/tag."""
    source: str
    config: TagConfig


class TagCatalog:
    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._entries = sorted(entries, key=lambda e: e.path)
        self._by_path = {e.path: e for e in self._entries}
        self._by_id = {e.tag_id: e for e in self._entries}
        if len(self._by_path) != len(self._entries) or len(self._by_id) != len(self._entries):
            raise ValueError("tag paths and ids must be unique")

    def by_path(self, path: str) -> CatalogEntry | None:
        return self._by_path.get(path.strip("/"))

    def by_id(self, tag_id: int) -> CatalogEntry | None:
        return self._by_id.get(tag_id)

    @property
    def max_id(self) -> int:
        return max(self._by_id, default=-1)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
