"""UNS path prefixes, as the tag list, the last values and the stream filter them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from isthmus.model.catalog import CatalogEntry, TagCatalog


def normalise_prefix(prefix: str | None) -> str:
    return (prefix or "").strip().strip("/")


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, segment-wise (``a/b`` is not under
    ``a/bc``).  The empty prefix matches everything."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


def entries_under(catalog: TagCatalog, prefix: str | None) -> list[CatalogEntry]:
    p = normalise_prefix(prefix)
    return [e for e in catalog if under(e.path, p)]


def id_mask(catalog: TagCatalog, prefixes: Iterable[str] | None) -> npt.NDArray[np.bool_]:
    """A boolean lookup table by tag id: True for tags under any prefix (all if None)."""
    mask = np.zeros(catalog.max_id + 1, dtype=np.bool_)
    wanted = None if prefixes is None else [normalise_prefix(p) for p in prefixes]
    for entry in catalog:
        if wanted is None or any(under(entry.path, p) for p in wanted):
            mask[entry.tag_id] = True
    return mask
