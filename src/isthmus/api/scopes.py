"""Object scopes: what of the plant a principal may see.

A principal limited to hierarchy prefixes (``acme/lyon/utilities``) sees the tags inside
them, the hierarchy nodes on the way down to them, and the events that concern only
those; nothing else, not even a name.  A read of one tag outside the scopes answers
exactly like a read of an unknown tag (404, same detail), so it does not tell the tag
exists; it is audited as ``rbac.denied`` with ``reason: scope`` without delaying the
answer.  A principal without scopes sees the whole enterprise.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from isthmus.api.context import ApiContext
from isthmus.api.deps import audit_soon
from isthmus.api.paths import entries_under
from isthmus.api.problems import ApiProblem
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.events import Event
from isthmus.security.rbac import Principal, in_scope, on_scope_path


def visible_entries(
    catalog: TagCatalog, principal: Principal, prefix: str | None = None
) -> list[CatalogEntry]:
    """The tags under ``prefix`` that ``principal`` may see."""
    entries = entries_under(catalog, prefix)
    if not principal.scopes:
        return entries
    return [e for e in entries if in_scope(e.path, principal.scopes)]


def unknown_tag(path: str) -> ApiProblem:
    return ApiProblem(404, f"unknown tag {path!r}")


def scoped_entry(ctx: ApiContext, principal: Principal, path: str, route: str) -> CatalogEntry:
    """The tag at ``path`` if it exists and ``principal`` may see it; else the same 404."""
    entry = ctx.catalog.by_path(path)
    if entry is None:
        raise unknown_tag(path)
    if not in_scope(entry.path, principal.scopes):
        audit_soon(
            ctx,
            "rbac.denied",
            actor=principal.actor,
            route=route,
            tag=entry.path,
            role=str(principal.role),
            reason="scope",
        )
        raise unknown_tag(path)
    return entry


def scope_mask(catalog: TagCatalog, scopes: Iterable[str]) -> npt.NDArray[np.bool_]:
    """A boolean lookup table by tag id: True for the tags inside ``scopes`` (all when
    there are none)."""
    scopes = tuple(scopes)
    mask = np.zeros(catalog.max_id + 1, dtype=np.bool_)
    for entry in catalog:
        if in_scope(entry.path, scopes):
            mask[entry.tag_id] = True
    return mask


# --------------------------------------------------------------------------- events

TAG_DETAIL_KEYS = ("tag", "tags", "path", "paths")
"""Event details that name UNS paths (a string or a list of strings).  An event that
names tags is shown to a scoped principal only if every tag it names is in scope."""

_PATH_TOKEN = re.compile(r"[^\s'\"`()\[\]{},;=<>]+(?:/[^\s'\"`()\[\]{},;=<>]+)+")


@dataclass(frozen=True, slots=True)
class _Names:
    """Every name of the plant that could appear in an event's text."""

    nodes: frozenset[str]
    """Full paths of every tag and every hierarchy node above one."""
    relative: Mapping[str, frozenset[str]]
    """A tag's configured path (below enterprise/site) and its prefixes → the full paths
    they may stand for."""
    sources: Mapping[str, tuple[str, ...]]
    """A source's name → the full paths of its tags."""


_names_cache: weakref.WeakKeyDictionary[TagCatalog, tuple[int, _Names]] = (
    weakref.WeakKeyDictionary()
)


def _names(catalog: TagCatalog) -> _Names:
    cached = _names_cache.get(catalog)
    if cached is not None and cached[0] == len(catalog):  # a catalog only grows
        return cached[1]
    nodes: set[str] = set()
    relative: dict[str, set[str]] = {}
    sources: dict[str, list[str]] = {}
    for entry in catalog:
        parts = entry.path.split("/")
        nodes.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        rel = entry.config.path.strip("/").split("/")
        base = parts[: len(parts) - len(rel)]
        for i in range(len(rel)):
            full = "/".join(base + rel[: i + 1])
            relative.setdefault("/".join(rel[: i + 1]), set()).add(full)
        sources.setdefault(entry.source, []).append(entry.path)
    names = _Names(
        frozenset(nodes),
        {k: frozenset(v) for k, v in relative.items()},
        {k: tuple(v) for k, v in sources.items()},
    )
    _names_cache[catalog] = (len(catalog), names)
    return names


def _named_in_details(details: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key in TAG_DETAIL_KEYS:
        value = details.get(key)
        if isinstance(value, str):
            out.append(value.strip("/"))
        elif isinstance(value, list | tuple):
            out += [str(v).strip("/") for v in value]
    return out


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _texts(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _texts(v)


def event_visible(event: Event, principal: Principal, catalog: TagCatalog) -> bool:
    """Whether a scoped ``principal`` may see ``event``: it concerns something in scope
    (tags it names, or else the source that raised it has tags in scope) and no text of
    it names anything outside (a tag path, a hierarchy node, a tag's configured path).
    System events (historian, spool, audit...) concern no tag: unscoped principals
    only."""
    scopes = principal.scopes
    if not scopes:
        return True
    names = _names(catalog)
    named = _named_in_details(event.details)
    if named:
        if not all(in_scope(path, scopes) for path in named):
            return False
    else:
        own = names.sources.get(event.source, ())
        if not any(in_scope(path, scopes) for path in own):
            return False
    for text in (event.source, event.message, *_texts(event.details)):
        for token in _PATH_TOKEN.findall(text):
            token = token.strip("/.:")
            if token in names.nodes and not on_scope_path(token, scopes):
                return False
            if not all(on_scope_path(full, scopes) for full in names.relative.get(token, ())):
                return False
    return True
