"""``isthmus discover``: browse an OPC UA server and write a ready-to-edit plant file.

Two halves:

* :func:`browse` (I/O): from the Objects folder, breadth first, one batched ``Browse``
  per depth level (continuation points followed), then one batched ``Read`` of the
  variables' DataType, ValueRank, ArrayDimensions, AccessLevel and Description, then
  their ``EngineeringUnits`` and ``EURange`` properties, the labels of enumeration
  DataTypes (``EnumStrings``/``EnumValues``) and the current length of arrays whose
  ArrayDimensions are not fixed.  Standard nodes (namespace 0, e.g.
  the ``Server`` object) below Objects are skipped unless ``include_standard``.
* :func:`render_yaml` (pure): the variables as a plant file with a minimal hierarchy
  and one ``type: opcua`` source, commented.

Hierarchy rule (documented in ``docs/connectors/opcua.md``): the browse names of the
containers (objects, folders) above a variable, from below Objects, give its place:

* the **last** container is the *equipment* (the object that owns the variable);
* the **first** container (if there are two or more) is the *area*;
* the second is the *line*, and any containers between the line and the equipment are
  joined with ``.`` into the *cell*;
* missing levels are ``main``; the variable's browse name is the *tag*.

Names are sanitised to the segment rule (letters, digits, ``_ - .``; first character a
letter or digit): other characters become ``_``.  A duplicate full path gets ``_2``,
``_3``... appended to the tag name.

Variables reached through ``HasProperty`` (metadata such as ``EURange``) are not tags.
A one-dimensional array of numbers is written with ``array_length`` (one tag per
element, ``<tag>.<i>``); an enumeration as ``int32`` with its ``enum`` labels; a
scalar String or LocalizedText as ``string``.  Variables whose type is not a number, a
bool, text or an enumeration (a ByteString is binary, not text), arrays of strings,
multi-dimensional arrays, and arrays of unknown length are listed as comments with the
reason.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from isthmus.connectors.opcua.config import MAX_ARRAY_LENGTH, OpcUaSourceConfig
from isthmus.connectors.opcua.nodes import enum_labels
from isthmus.connectors.opcua.security import apply
from isthmus.model.config import SEGMENT, DataType

# Built-in OPC UA DataType node ids (namespace 0) → our DataType.
_BUILTIN: dict[int, DataType] = {
    1: DataType.BOOL,  # Boolean
    2: DataType.INT16,  # SByte
    3: DataType.UINT16,  # Byte
    4: DataType.INT16,  # Int16
    5: DataType.UINT16,  # UInt16
    6: DataType.INT32,  # Int32
    7: DataType.UINT32,  # UInt32
    8: DataType.INT64,  # Int64
    9: DataType.UINT64,  # UInt64
    10: DataType.FLOAT32,  # Float
    11: DataType.FLOAT64,  # Double
    290: DataType.FLOAT64,  # Duration (a Double)
    12: DataType.STRING,  # String
    21: DataType.STRING,  # LocalizedText (its text)
}
_TYPE_NAMES: dict[int, str] = {
    0: "BaseDataType",
    12: "String",
    13: "DateTime",
    14: "Guid",
    15: "ByteString",
    16: "XmlElement",
    17: "NodeId",
    19: "StatusCode",
    20: "QualifiedName",
    21: "LocalizedText",
    22: "Structure",
    24: "BaseDataType",
    26: "Number",
    27: "Integer",
    28: "UInteger",
    29: "Enumeration",
    294: "UtcTime",
}
_CURRENT_WRITE = 0x02
_CHUNK = 200
_NS0 = 0
_OBJECTS = ua.NodeId.from_string("i=85")  # ObjectsFolder
_HIERARCHICAL = ua.NodeId.from_string("i=33")  # HierarchicalReferences
_HAS_PROPERTY = ua.NodeId.from_string("i=46")  # HasProperty
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

Progress = Callable[[int, int, int], None]
"""Called as ``progress(depth, nodes_browsed, variables_found)`` while browsing."""


@dataclass
class Variable:
    """One variable found by :func:`browse`."""

    node_id: str
    containers: tuple[str, ...]
    """Browse names of the objects/folders above it, below Objects."""
    name: str
    data_type: DataType | None = None
    skip_reason: str = ""
    unit: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    description: str = ""
    array_length: int | None = None
    """A one-dimensional array: its number of elements (one tag each)."""
    enum: dict[int, str] | None = None
    """An enumeration: the labels of its values."""
    # Filled by browse; not rendered
    _ua_type: str = field(default="", repr=False)


@dataclass
class Discovery:
    endpoint: str
    namespaces: list[str]
    variables: list[Variable]
    nodes_browsed: int = 0


# ------------------------------------------------------------------------- pure part


def sanitise(name: str) -> str:
    """A browse name as a valid hierarchy segment."""
    out = _UNSAFE.sub("_", name.strip())
    out = out.lstrip("_.-")
    if not out:
        return "x"
    return out if SEGMENT.match(out) else f"x{out}"


def place(containers: Sequence[str]) -> tuple[str, str, str, str]:
    """area, line, cell, equipment from the containers above a variable (see module doc)."""
    names = [sanitise(c) for c in containers]
    if not names:
        return ("main", "main", "main", "main")
    equipment = names[-1]
    if len(names) == 1:
        return ("main", "main", "main", equipment)
    area = names[0]
    middle = names[1:-1]
    line = middle[0] if middle else "main"
    cell = ".".join(middle[1:]) if len(middle) > 1 else "main"
    return (area, line, cell, equipment)


def data_type_of(type_id: Any, value_rank: int | None) -> tuple[DataType | None, str]:
    """Our DataType for an OPC UA DataType node id (of the elements, for a
    array: ValueRank 1, or 0 "one or more dimensions" until its value shows how many),
    or None and why not."""
    if value_rank is not None and value_rank >= 2:
        return None, f"multi-dimensional array (ValueRank {value_rank}): not read as tags"
    ns = getattr(type_id, "NamespaceIndex", None)
    ident = getattr(type_id, "Identifier", None)
    if ns == _NS0 and isinstance(ident, int) and ident in _BUILTIN:
        ours = _BUILTIN[ident]
        if ours is DataType.STRING and value_rank in (0, 1):
            return None, f"array of {_TYPE_NAMES[ident]}: string tags read scalars"
        return ours, ""
    if ns == _NS0 and ident == 15:
        return None, "type ByteString is binary, not a number, a bool or text"
    if ns == _NS0 and isinstance(ident, int):
        name = _TYPE_NAMES.get(ident, f"i={ident}")
    else:
        name = str(type_id.to_string()) if hasattr(type_id, "to_string") else str(type_id)
    return None, f"type {name} is not a number, a bool or text"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def render_yaml(
    discovery: Discovery,
    *,
    source_name: str,
    enterprise: str = "my-company",
    site: str = "my-site",
    security: OpcUaSourceConfig | None = None,
) -> str:
    """The plant file for a discovery: hierarchy + one opcua source with its tag map."""
    paths: set[str] = set()
    hierarchy: dict[str, dict[str, dict[str, list[str]]]] = {}
    tags: list[tuple[str, Variable]] = []
    skipped: list[tuple[str, Variable]] = []
    for var in discovery.variables:
        area, line, cell, equipment = place(var.containers)
        base = f"{area}/{line}/{cell}/{equipment}/{sanitise(var.name)}"
        path, n = base, 1
        while path in paths:
            n += 1
            path = f"{base}_{n}"
        if var.data_type is None:
            skipped.append((path, var))
            continue
        paths.add(path)
        eq = hierarchy.setdefault(area, {}).setdefault(line, {}).setdefault(cell, [])
        if equipment not in eq:
            eq.append(equipment)
        tags.append((path, var))

    w: list[str] = []
    w.append(f"# Written by `isthmus discover {discovery.endpoint}`.")
    w.append(f"# {len(tags)} tag(s), {len(skipped)} variable(s) skipped (listed at the end).")
    w.append("# Edit freely: rename the enterprise, site and hierarchy, drop the tags you do")
    w.append("# not need, add deadband/stale_after/criticality. Then: isthmus check FILE.")
    w.append("#")
    w.append("# Hierarchy rule: the folders/objects above a variable give its place: the last")
    w.append("# one is the equipment, the first the area, the second the line, any between")
    w.append("# the line and the equipment form the cell (joined with '.'), missing levels")
    w.append("# are 'main'. Names are sanitised to letters, digits, '_', '-', '.'.")
    w.append("#")
    w.append("# Server namespaces (node ids use the index; if the server reorders its")
    w.append("# namespaces after an update, re-run discover or fix the ns= numbers):")
    for i, uri in enumerate(discovery.namespaces):
        w.append(f"#   ns={i}: {uri}")
    w.append("version: 1")
    w.append(f"enterprise: {enterprise}")
    w.append(f"site: {site}")
    w.append("hierarchy:  # area → line → cell → [equipment]")
    if not hierarchy:
        hierarchy = {"main": {"main": {"main": ["main"]}}}
    for area, lines in hierarchy.items():
        w.append(f"  {area}:")
        for line, cells in lines.items():
            w.append(f"    {line}:")
            for cell, members in cells.items():
                w.append(f"      {cell}: [{', '.join(members)}]")
    w.append("sources:")
    w.append(f"  - name: {source_name}")
    w.append("    type: opcua")
    w.append(f"    endpoint: {_q(discovery.endpoint)}")
    w.append("    publishing_interval: 100ms  # one batch per publish response")
    w.append("    sampling_interval: 100ms    # how often the server samples each node")
    w.append("    queue_size: 10              # changes kept per item between publishes")
    w.append("    timeout: 4s")
    sec = security or OpcUaSourceConfig(name=source_name, endpoint=discovery.endpoint)
    w.append(f'    security_policy: "{sec.security_policy}"  # never downgraded')
    w.append(f'    security_mode: "{sec.security_mode}"')
    if sec.security_policy != "None" and sec.pki_dir is not None:
        w.append(f"    pki_dir: {_q(sec.pki_dir)}  # our certificate and the trust store")
    w.append(f"    identity: {sec.identity}")
    if sec.identity == "username":
        w.append(f"    username: {_q(sec.username or '')}")
        w.append(f"    password_env: {_q(sec.password_env or '')}  # the password is never here")
    w.append("    reconnect_max: 30s")
    if not tags:
        w.append("    tags: []")
    else:
        w.append("    tags:")
    for path, var in tags:
        assert var.data_type is not None
        w.append(f"      - path: {path}")
        w.append(f"        node: {_q(var.node_id)}")
        w.append(f"        data_type: {var.data_type.value}")
        if var.unit:
            w.append(f"        unit: {_q(var.unit)}")
        if var.range is not None:
            w.append(f"        range: [{_num(var.range[0])}, {_num(var.range[1])}]")
        if var.array_length is not None:
            last = f"{path.rsplit('/', 1)[1]}.{var.array_length - 1}"
            w.append(
                f"        array_length: {var.array_length}  # tags "
                f"{path.rsplit('/', 1)[1]}.0 ... {last}; or index: N for one element"
            )
        if var.enum:
            labels = ", ".join(f"{k}: {_q(v)}" for k, v in sorted(var.enum.items()))
            w.append(f"        enum: {{{labels}}}")
        if var.writable and var.array_length is None:
            w.append("        writable: true  # AccessLevel has CurrentWrite")
        if var.description:
            w.append(f"        description: {_q(var.description)}")
    if skipped:
        w.append("    # Skipped variables (not readable as a number, a bool or text):")
        for path, var in skipped:
            w.append(f"    #   {var.node_id} ({path}): {var.skip_reason}")
    return "\n".join(w) + "\n"


# ------------------------------------------------------------------------- I/O part


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _browse_many(
    client: Any, node_ids: Sequence[Any], ref_type: Any, class_mask: int
) -> list[list[Any]]:
    """Forward references of many nodes, batched, continuation points followed."""
    out: list[list[Any]] = []
    for chunk in _chunks(node_ids):
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = 0
        descs = []
        for nid in chunk:
            d = ua.BrowseDescription()
            d.NodeId = nid
            d.BrowseDirection = ua.BrowseDirection.Forward
            d.ReferenceTypeId = ref_type
            d.IncludeSubtypes = True
            d.NodeClassMask = class_mask
            d.ResultMask = ua.BrowseResultMask.All
            descs.append(d)
        params.NodesToBrowse = descs
        results = await client.uaclient.browse(params)
        for result in results:
            refs = list(result.References or [])
            cp = result.ContinuationPoint
            while cp:
                nxt = ua.BrowseNextParameters()
                nxt.ReleaseContinuationPoints = False
                nxt.ContinuationPoints = [cp]
                more = (await client.uaclient.browse_next(nxt))[0]
                refs.extend(more.References or [])
                cp = more.ContinuationPoint
            out.append(refs)
    return out


async def _read_many(client: Any, items: Sequence[tuple[Any, int]]) -> list[Any]:
    """DataValues of (node id, attribute id) pairs, batched."""
    out: list[Any] = []
    for chunk in _chunks(items, 500):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        to_read = []
        for nid, attr in chunk:
            rv = ua.ReadValueId()
            rv.NodeId = nid
            rv.AttributeId = attr
            to_read.append(rv)
        params.NodesToRead = to_read
        out.extend(await client.uaclient.read(params))
    return out


def _value(dv: Any) -> Any:
    if dv is None or dv.Value is None:
        return None
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    return dv.Value.Value


async def browse(
    client: Any,
    *,
    depth: int = 8,
    include_standard: bool = False,
    progress: Progress | None = None,
) -> Discovery:
    """Browse a connected asyncua ``Client`` from the Objects folder down to ``depth``."""
    namespaces = [str(n) for n in await client.get_namespace_array()]
    found: list[tuple[Any, tuple[str, ...], str]] = []  # node id, containers, browse name
    seen: set[str] = {_OBJECTS.to_string()}
    level: list[tuple[Any, tuple[str, ...]]] = [(_OBJECTS, ())]
    browsed = 0
    mask = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)
    for d in range(1, depth + 1):
        if not level:
            break
        results = await _browse_many(client, [n for n, _ in level], _HIERARCHICAL, mask)
        browsed += len(level)
        nxt: list[tuple[Any, tuple[str, ...]]] = []
        for (_parent, containers), refs in zip(level, results, strict=True):
            for ref in refs:
                if ref.ReferenceTypeId == _HAS_PROPERTY:
                    continue  # metadata (EngineeringUnits, EURange...), not a tag
                nid = ref.NodeId
                if not include_standard and d == 1 and nid.NamespaceIndex == _NS0:
                    continue  # the Server object and other standard nodes
                key = nid.to_string()
                if key in seen:
                    continue
                seen.add(key)
                name = str(ref.BrowseName.Name)
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append((nid, containers, name))
                elif ref.NodeClass == ua.NodeClass.Object:
                    nxt.append((nid, (*containers, name)))
        level = nxt
        if progress is not None:
            progress(d, browsed, len(found))

    variables = [Variable(node_id=nid.to_string(), containers=c, name=n) for nid, c, n in found]
    if not found:
        return Discovery(client.server_url.geturl(), namespaces, variables, browsed)
    attrs = (
        AttributeIds.DataType,
        AttributeIds.ValueRank,
        AttributeIds.AccessLevel,
        AttributeIds.Description,
        AttributeIds.ArrayDimensions,
    )
    k = len(attrs)
    reads = await _read_many(client, [(nid, a) for nid, _, _ in found for a in attrs])
    ranks: list[int | None] = []
    unsized: list[int] = []  # arrays whose length is not fixed: read their value
    for i, var in enumerate(variables):
        dtype, rank, access, desc, dims = (_value(dv) for dv in reads[i * k : i * k + k])
        ranks.append(int(rank) if isinstance(rank, int) else None)
        var.data_type, var.skip_reason = data_type_of(dtype, ranks[-1])
        if dtype is None:
            var.data_type, var.skip_reason = None, "DataType not readable"
        var.writable = isinstance(access, int) and bool(access & _CURRENT_WRITE)
        text = getattr(desc, "Text", None)
        var.description = str(text) if text and text != var.name else ""
        if ranks[-1] in (0, 1) and var.data_type is not None:
            if isinstance(dims, list) and len(dims) >= 2:
                var.data_type = None
                var.skip_reason = f"multi-dimensional array ({len(dims)} dimensions)"
            elif isinstance(dims, list) and dims and isinstance(dims[0], int) and dims[0] > 0:
                var.array_length = dims[0]
            else:
                unsized.append(i)

    # Enumerations: a DataType with EnumStrings or EnumValues; stored as int32 numbers.
    others = [i for i, v in enumerate(variables) if v.data_type is None and _value(reads[i * k])]
    if others:
        ids = [ua.NodeId.from_string(variables[i].node_id) for i in others]
        try:
            found_labels = await enum_labels(client, ids)
        except UaError:  # a server without TranslateBrowsePaths: no enumerations
            found_labels = [None] * len(ids)
        for i, labels in zip(others, found_labels, strict=True):
            if labels and ranks[i] in (None, -3, -2, -1, 0, 1):
                variables[i].data_type, variables[i].skip_reason = DataType.INT32, ""
                variables[i].enum = labels
    if unsized:
        now = await _read_many(
            client,
            [(ua.NodeId.from_string(variables[i].node_id), AttributeIds.Value) for i in unsized],
        )
        for i, dv in zip(unsized, now, strict=True):
            value = _value(dv)
            if isinstance(value, list) and any(isinstance(x, list) for x in value):
                variables[i].data_type = None
                variables[i].skip_reason = "multi-dimensional array: not read as tags"
            elif isinstance(value, list | bytes) and value:
                variables[i].array_length = len(value)
    for var, rank in zip(variables, ranks, strict=True):
        if rank not in (0, 1) or var.data_type is None:
            continue
        if var.array_length is None:
            var.data_type = None
            var.skip_reason = "array of unknown length (empty now): add array_length by hand"
        elif var.array_length > MAX_ARRAY_LENGTH:
            var.data_type = None
            var.skip_reason = f"array of {var.array_length} elements (at most {MAX_ARRAY_LENGTH})"

    # EngineeringUnits and EURange properties of the numeric variables.
    numeric = [
        (i, ua.NodeId.from_string(v.node_id)) for i, v in enumerate(variables) if v.data_type
    ]
    props = await _browse_many(
        client, [nid for _, nid in numeric], _HAS_PROPERTY, int(ua.NodeClass.Variable)
    )
    wanted: list[tuple[int, str, Any]] = []
    for (i, _), refs in zip(numeric, props, strict=True):
        for ref in refs:
            pname = str(ref.BrowseName.Name)
            if pname in ("EngineeringUnits", "EURange"):
                wanted.append((i, pname, ref.NodeId))
    values = await _read_many(client, [(nid, AttributeIds.Value) for _, _, nid in wanted])
    for (i, pname, _), dv in zip(wanted, values, strict=True):
        value = _value(dv)
        var = variables[i]
        if pname == "EngineeringUnits":
            display = getattr(getattr(value, "DisplayName", None), "Text", None)
            if display:
                var.unit = str(display)
        else:
            low, high = getattr(value, "Low", None), getattr(value, "High", None)
            if var.data_type is DataType.STRING:
                continue  # a string tag takes no range
            if isinstance(low, float | int) and isinstance(high, float | int) and low < high:
                var.range = (float(low), float(high))
    return Discovery(client.server_url.geturl(), namespaces, variables, browsed)


def default_source_name(endpoint: str) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).hostname or "server"
    return sanitise(f"opcua-{host}")


async def discover(
    endpoint: str,
    *,
    depth: int = 8,
    include_standard: bool = False,
    request_timeout: float = 10.0,
    progress: Progress | None = None,
    security: OpcUaSourceConfig | None = None,
) -> Discovery:
    """Connect (with ``security``'s policy, mode, identity and trust store when given;
    else None/anonymous), browse, disconnect."""
    import asyncio

    from asyncua.client.client import Client

    from isthmus.model.errors import ConnectionFailed

    client = Client(endpoint, timeout=request_timeout)
    try:
        if security is not None:
            await asyncio.wait_for(apply(client, security), request_timeout * 2)
        await asyncio.wait_for(client.connect(), request_timeout)
    except (OSError, TimeoutError, UaError) as exc:
        raise ConnectionFailed(
            f"cannot connect to {endpoint}: {exc or type(exc).__name__}"
        ) from None
    try:
        found = await browse(
            client, depth=depth, include_standard=include_standard, progress=progress
        )
        found.endpoint = endpoint
        return found
    except (OSError, TimeoutError, UaError) as exc:
        raise ConnectionFailed(f"browsing {endpoint} failed: {exc or type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 2.0)
