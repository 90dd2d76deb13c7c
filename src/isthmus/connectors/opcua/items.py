"""Monitored items from tags (pure): which node each item watches, for which tags.

A tag without ``index`` is one item (its own client handle).  Tags with ``index``
(array elements, including those expanded from ``array_length``) share one item per
(group, node): the whole array is monitored once and split into its element tags.
The client handle of an item is its position in the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from isthmus.connectors.opcua.config import OpcUaTagConfig


@dataclass(frozen=True, slots=True)
class Item:
    node: str
    group: str | None
    tags: tuple[int, ...]
    """Indices of the tags it feeds (one for a scalar)."""
    elements: tuple[int, ...] | None = None
    """Array element read by each of ``tags``; None for a scalar item."""


def plan_items(tags: Sequence[OpcUaTagConfig]) -> list[Item]:
    items: list[Item] = []
    arrays: dict[tuple[str | None, str], tuple[list[int], list[int]]] = {}
    order: list[tuple[str | None, str] | int] = []
    for i, tag in enumerate(tags):
        if tag.index is None:
            order.append(i)
            continue
        key = (tag.group, tag.node)
        if key not in arrays:
            arrays[key] = ([], [])
            order.append(key)
        arrays[key][0].append(i)
        arrays[key][1].append(tag.index)
    for entry in order:
        if isinstance(entry, int):
            tag = tags[entry]
            items.append(Item(tag.node, tag.group, (entry,)))
        else:
            indices, elements = arrays[entry]
            items.append(Item(entry[1], entry[0], tuple(indices), tuple(elements)))
    return items
