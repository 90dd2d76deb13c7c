"""The tag catalog: every configured tag with its runtime id and full UNS path.

Built at start-up by the composition root (ids come from the historian so they stay
stable across restarts) and shared by pipeline, API and UI.  It only grows: tags a
source discovers at run time (Sparkplug births) or a hub learns from its sites are
added with :meth:`TagCatalog.extend`, which tells the subscribers (UNS publisher,
Sparkplug edge) about the new entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
        self._listeners: list[Callable[[Sequence[CatalogEntry]], None]] = []

    def subscribe(self, listener: Callable[[Sequence[CatalogEntry]], None]) -> None:
        """Call ``listener`` with the new entries after each :meth:`extend` that adds any."""
        self._listeners.append(listener)

    def extend(self, entries: Iterable[CatalogEntry]) -> int:
        """Add entries whose path and id are both new (a hub learns the tags of the sites
        as they publish); returns how many were added."""
        new = [e for e in entries if e.path not in self._by_path and e.tag_id not in self._by_id]
        for e in new:
            self._by_path[e.path] = e
            self._by_id[e.tag_id] = e
        if new:
            self._entries = sorted([*self._entries, *new], key=lambda e: e.path)
            for listener in self._listeners:
                listener(new)
        return len(new)

    def update(self, entries: Iterable[CatalogEntry]) -> int:
        """Replace the settings of known entries (same path and id) by those given, e.g.
        a hub learning a site's changed command settings; returns how many changed.
        Paths and ids never change, so no subscriber is told."""
        changed = 0
        for e in entries:
            old = self._by_path.get(e.path)
            if old is None or old.tag_id != e.tag_id or old.config == e.config:
                continue
            self._by_path[e.path] = self._by_id[e.tag_id] = e
            changed += 1
        if changed:
            self._entries = sorted(self._by_path.values(), key=lambda x: x.path)
        return changed

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
