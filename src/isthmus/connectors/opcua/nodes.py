"""Node metadata read in batches: enumeration labels and EURange presence.

Used by the source at subscribe time and by ``isthmus discover``.  Every function
sends a few batched requests whatever the number of nodes (chunked by ``_CHUNK``).

An enumeration is recognised by its DataType node carrying an ``EnumStrings``
property (labels by position: value 0, 1, 2...) or an ``EnumValues`` property
(``EnumValueType`` entries: value, display name): that is what OPC UA Part 3 §8.14
requires of every Enumeration subtype, so no walk of the type hierarchy is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from asyncua import ua
from asyncua.ua.attribute_ids import AttributeIds

_CHUNK = 500
_HAS_PROPERTY = ua.NodeId.from_string("i=46")  # HasProperty
# Built-in DataTypes (namespace 0, ids 1..25) are never enumerations.
_BUILTIN_MAX = 25


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _good_value(dv: Any) -> Any:
    if dv is None or dv.Value is None:
        return None
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value


async def read_attribute(client: Any, node_ids: Sequence[Any], attribute: int) -> list[Any]:
    """The value of one attribute of many nodes (None where unreadable)."""
    out: list[Any] = []
    for chunk in _chunks(node_ids):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        for nid in chunk:
            rv = ua.ReadValueId()
            rv.NodeId = nid
            rv.AttributeId = attribute
            params.NodesToRead.append(rv)
        out.extend(_good_value(dv) for dv in await client.uaclient.read(params))
    return out


async def properties(client: Any, node_ids: Sequence[Any], name: str) -> list[Any | None]:
    """The NodeId of the property ``name`` (e.g. ``EURange``) of each node, or None."""
    out: list[Any | None] = []
    for chunk in _chunks(node_ids):
        paths = []
        for nid in chunk:
            element = ua.RelativePathElement()
            element.ReferenceTypeId = _HAS_PROPERTY
            element.IsInverse = False  # type: ignore[assignment]
            element.IncludeSubtypes = False  # type: ignore[assignment]
            element.TargetName = ua.QualifiedName(name, 0)
            path = ua.BrowsePath()
            path.StartingNode = nid
            path.RelativePath = ua.RelativePath()
            path.RelativePath.Elements = [element]
            paths.append(path)
        results = await client.uaclient.translate_browsepaths_to_nodeids(paths)
        for result in results:
            targets = result.Targets or []
            good = result.StatusCode is None or result.StatusCode.is_good()
            if good and targets:
                target = targets[0].TargetId  # an ExpandedNodeId: keep the NodeId part
                out.append(ua.NodeId(target.Identifier, target.NamespaceIndex))
            else:
                out.append(None)
    return out


def _labels(enum_strings: Any, enum_values: Any) -> dict[int, str] | None:
    if isinstance(enum_strings, list) and enum_strings:
        return {i: str(getattr(t, "Text", t) or "") for i, t in enumerate(enum_strings)}
    if isinstance(enum_values, list) and enum_values:
        out: dict[int, str] = {}
        for entry in enum_values:
            value = getattr(entry, "Value", None)
            name = getattr(getattr(entry, "DisplayName", None), "Text", None)
            if isinstance(value, int) and name is not None:
                out[int(value)] = str(name)
        return out or None
    return None


async def enum_labels(client: Any, node_ids: Sequence[Any]) -> list[dict[int, str] | None]:
    """For each variable: its enumeration's labels by value, or None (not an enum)."""
    types = await read_attribute(client, node_ids, AttributeIds.DataType)
    candidates: dict[str, Any] = {}
    for t in types:
        if t is None:
            continue
        if t.NamespaceIndex == 0 and isinstance(t.Identifier, int) and t.Identifier <= _BUILTIN_MAX:
            continue
        candidates.setdefault(t.to_string(), t)
    if not candidates:
        return [None] * len(node_ids)
    keys = list(candidates)
    type_ids = [candidates[k] for k in keys]
    strings = await properties(client, type_ids, "EnumStrings")
    values = await properties(client, type_ids, "EnumValues")
    wanted = [p for p in (*strings, *values) if p is not None]
    read = await read_attribute(client, wanted, AttributeIds.Value) if wanted else []
    by_prop = {p.to_string(): v for p, v in zip(wanted, read, strict=True)}
    labels: dict[str, dict[int, str] | None] = {}
    for key, s, v in zip(keys, strings, values, strict=True):
        labels[key] = _labels(
            by_prop.get(s.to_string()) if s is not None else None,
            by_prop.get(v.to_string()) if v is not None else None,
        )
    return [None if t is None else labels.get(t.to_string()) for t in types]
