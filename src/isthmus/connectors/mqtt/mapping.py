"""Pure mapping of MQTT messages onto tags: JSON paths, topic templates, payload decoding.

No I/O here.  Everything a broker can send (any bytes, any JSON) goes through
:func:`decode_message` without raising; problems come back as rejections with a reason.

JSON path syntax (the whole of it)
----------------------------------

A path starts with ``$`` (the whole payload) followed by steps:

* ``.name`` — the member ``name`` of an object (letters, digits, ``_``, ``-``);
* ``["any name"]`` — a member whose name has other characters (double quotes, no escapes);
* ``[N]`` — element ``N`` of an array (0-based; negative counts from the end);
* ``[?key=value]`` — the first element of an array that is an object whose member
  ``key`` equals ``value`` (compared as text: ``[?id=3]`` matches ``3`` and ``"3"``).

Examples: ``$``, ``$.temperature``, ``$.data.values[2]``, ``$.metrics[?name=Speed].value``.

Values: JSON numbers, ``true``/``false`` (1/0) and strings holding a number
(``"21.5"``); anything else (objects, arrays, null, text) is rejected.  A payload that
is not JSON but is a plain number or ``true``/``false``/``on``/``off`` (``21.5``,
``ON``) is accepted when the path is ``$``.

String tags (``data_type: string``): a JSON string is the text as is, a JSON number or
bool its JSON text (``1234``, ``true``); objects, arrays and null are rejected.  A
payload that is not JSON is, for a string tag at path ``$``, its UTF-8 text with the
surrounding whitespace removed (invalid UTF-8 is rejected).

Timestamps: a number is epoch milliseconds; a string is ISO 8601 (``2024-05-01T12:00:00Z``,
``+02:00`` offsets; no zone means UTC).  Qualities: ``Good``/``Uncertain``/``Bad`` or a
name such as ``Bad_SensorFailure`` (case-insensitive), an integer OPC UA status code, or
a boolean (true = Good, false = Bad).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from isthmus.model.quality import _NAMES, Quality

# ---------------------------------------------------------------------------- JSON paths


@dataclass(frozen=True, slots=True)
class Member:
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    index: int


@dataclass(frozen=True, slots=True)
class Where:
    key: str
    value: str


Step = Member | Index | Where

_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r'\["([^"]*)"\]')
_WHERE = re.compile(r"\[\?([A-Za-z0-9_\-]+)=([^\]]*)\]")
MAX_PATH_STEPS: Final = 32


class PathError(ValueError):
    """A JSON path that does not follow the documented syntax."""


@dataclass(frozen=True, slots=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]

    @property
    def is_root(self) -> bool:
        return not self.steps

    def __str__(self) -> str:
        return self.text


def parse_path(text: str) -> JsonPath:
    """Parse a JSON path; raises :class:`PathError` naming the position of a mistake."""
    if not text.startswith("$"):
        raise PathError(f"{text!r}: a JSON path starts with '$' (e.g. $.temperature)")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        if text[pos] == ".":
            m = _NAME.match(text, pos + 1)
            if not m:
                raise PathError(f"{text!r}: expected a member name after '.' at {pos}")
            steps.append(Member(m.group(0)))
            pos = m.end()
            continue
        for pattern in (_INDEX, _QUOTED, _WHERE):
            m = pattern.match(text, pos)
            if m:
                break
        else:
            raise PathError(
                f"{text!r}: unexpected {text[pos]!r} at {pos}; use .name, [N], "
                '["name"] or [?key=value]'
            )
        if pattern is _INDEX:
            steps.append(Index(int(m.group(1))))
        elif pattern is _QUOTED:
            steps.append(Member(m.group(1)))
        else:
            steps.append(Where(m.group(1), m.group(2)))
        pos = m.end()
    if len(steps) > MAX_PATH_STEPS:
        raise PathError(f"{text!r}: more than {MAX_PATH_STEPS} steps")
    return JsonPath(text, tuple(steps))


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def extract(doc: Any, path: JsonPath) -> Any:
    """The value ``path`` selects in a decoded JSON document, or :data:`MISSING`."""
    node = doc
    for step in path.steps:
        if isinstance(step, Member):
            if not isinstance(node, dict) or step.name not in node:
                return MISSING
            node = node[step.name]
        elif isinstance(step, Index):
            if not isinstance(node, list) or not -len(node) <= step.index < len(node):
                return MISSING
            node = node[step.index]
        else:
            if not isinstance(node, list):
                return MISSING
            for item in node:
                if isinstance(item, dict) and _as_text(item.get(step.key)) == step.value:
                    node = item
                    break
            else:
                return MISSING
    return node


# ----------------------------------------------------------------------- scalar values

_TRUE = frozenset({"true", "on"})
_FALSE = frozenset({"false", "off"})


def to_number(value: Any) -> float | None:
    """A JSON value as a float, or ``None`` when it is not a number, bool or numeric text.
    Non-finite numbers (NaN, inf) are refused."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def plain_number(payload: bytes) -> float | None:
    """A non-JSON plain payload: ``21.5``, ``true``/``false``, ``on``/``off``."""
    if len(payload) > 64:
        return None
    try:
        text = payload.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    return to_number(text) if text else None


_MAX_TS_NS = 2**62  # year ~2116: keeps int64 arithmetic safe


def to_timestamp_ns(value: Any) -> int | None:
    """Epoch milliseconds (number) or ISO 8601 text → UTC nanoseconds; ``None`` if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < _MAX_TS_NS / 1e6:
            return None
        return int(value * 1_000_000)
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        except OverflowError:
            return None
        ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
        return ns if 0 <= ns < _MAX_TS_NS else None
    return None


_QUALITY_NAMES = {name.lower(): code for code, name in _NAMES.items()}


def to_quality(value: Any) -> int | None:
    """A quality field → OPC UA status code, or ``None`` when it is not one."""
    if isinstance(value, bool):
        return int(Quality.GOOD if value else Quality.BAD)
    if isinstance(value, int):
        return value if 0 <= value <= 0xFFFFFFFF else None
    if isinstance(value, str):
        return _QUALITY_NAMES.get(value.strip().lower())
    return None


# ---------------------------------------------------------------------- topic templates

_VAR = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    """A topic or tag template that cannot work."""


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """``plant/{line}/{machine}/telemetry``: ``{name}`` captures one whole topic level;
    ``+`` matches one level without capturing; a final ``#`` matches the rest."""

    text: str
    parts: tuple[str, ...]
    """Each level: a literal, ``+``, ``#`` or ``{name}``."""

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(p[1:-1] for p in self.parts if p.startswith("{"))

    @property
    def subscription(self) -> str:
        """The MQTT topic filter to subscribe to: variables become ``+``."""
        return "/".join("+" if p.startswith("{") else p for p in self.parts)

    def match(self, topic: str) -> dict[str, str] | None:
        """The captured variables when ``topic`` matches, else ``None``."""
        levels = topic.split("/")
        out: dict[str, str] = {}
        for i, part in enumerate(self.parts):
            if part == "#":
                return out
            if i >= len(levels):
                return None
            level = levels[i]
            if part == "+":
                continue
            if part.startswith("{"):
                out[part[1:-1]] = level
            elif part != level:
                return None
        return out if len(levels) == len(self.parts) else None


def parse_topic(text: str) -> TopicTemplate:
    if not text or len(text) > 1024:
        raise TemplateError("a topic must have 1 to 1024 characters")
    parts = tuple(text.split("/"))
    seen: set[str] = set()
    for i, part in enumerate(parts):
        if part in ("+",):
            continue
        if part == "#":
            if i != len(parts) - 1:
                raise TemplateError(f"{text!r}: '#' is only allowed as the last level")
            continue
        m = _VAR.match(part)
        if m:
            if m.group(1) in seen:
                raise TemplateError(f"{text!r}: variable {{{m.group(1)}}} used twice")
            seen.add(m.group(1))
            continue
        if any(c in part for c in "+#{}"):
            raise TemplateError(
                f"{text!r}: level {part!r} mixes text with a wildcard or variable; "
                "a variable or wildcard takes a whole level"
            )
    return TopicTemplate(text, parts)


def template_variables(tag_template: str) -> set[str]:
    return set(_TEMPLATE_VAR.findall(tag_template))


def template_regex(tag_template: str) -> re.Pattern[str]:
    """The tag paths a template can produce: each ``{name}`` is one path segment."""
    parts = _TEMPLATE_VAR.split(tag_template)
    # split() alternates literal text and variable names
    return re.compile(
        "".join(re.escape(p) if k % 2 == 0 else r"[^/{}]+" for k, p in enumerate(parts))
    )


def fill(tag_template: str, variables: Mapping[str, str]) -> str | None:
    """Substitute ``{name}`` in a tag path template; ``None`` if a value is not a valid
    path segment (empty, or holding characters a tag path cannot have)."""
    for value in variables.values():
        if not value or "/" in value or "{" in value:
            return None
    try:
        return _TEMPLATE_VAR.sub(lambda m: variables[m.group(1)], tag_template)
    except KeyError:
        return None


# -------------------------------------------------------------------- message decoding


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One value of a message: where it is (``path``) and which tag gets it (resolved)."""

    path: JsonPath
    tag_id: int | None
    """``None``: the tag path the template produced is not configured."""

    member: str | None = field(init=False, default=None)
    """The name when the path is just ``$.name`` (the fast path), else ``None``."""

    text: bool = False
    """The tag is a string tag: the value is kept as text."""

    def __post_init__(self) -> None:
        steps = self.path.steps
        if len(steps) == 1 and isinstance(steps[0], Member):
            object.__setattr__(self, "member", steps[0].name)


_BAD_DECODING: Final = int(Quality.BAD_DECODING_ERROR)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message decoded: (tag id, value, quality, ts) rows, plus rejections."""

    tag_ids: list[int]
    values: list[float]
    qualities: list[int]
    ts: list[int]
    rejections: list[str]
    """One reason per rejected value (or one for the whole message)."""
    texts: list[tuple[int, str]] = field(default_factory=list)
    """String rows: (row position, text); their value is NaN."""


def to_text(value: Any) -> str | None:
    """A JSON value as a string tag's text: a string as is, a number or bool as its
    JSON text; ``None`` for objects, arrays, null and non-finite numbers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(value)
    return None


def plain_text(payload: bytes) -> str | None:
    """A non-JSON plain payload as text: UTF-8, surrounding whitespace removed."""
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


def decode_message(
    payload: bytes,
    fields: tuple[FieldMap, ...],
    received_ns: int,
    timestamp: JsonPath | None = None,
    quality: JsonPath | None = None,
) -> Decoded:
    """Decode one payload into rows for the configured tags; never raises.

    A value that cannot be read becomes a ``BAD_DECODING_ERROR`` row for its tag (NaN
    value) and a rejection; fields whose tag is not configured produce nothing.
    """
    out = Decoded([], [], [], [], [])
    known = [f for f in fields if f.tag_id is not None]
    doc: Any = MISSING
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        if all(f.path.is_root for f in known):
            _plain(out, payload, known, received_ns)
        else:
            _reject_all(out, known, received_ns, "not JSON and not a plain number")
        return out

    ts = received_ns
    if timestamp is not None:
        raw_ts = extract(doc, timestamp)
        parsed = to_timestamp_ns(raw_ts) if raw_ts is not MISSING else None
        if parsed is None:
            why = "missing" if raw_ts is MISSING else "not ISO 8601 or epoch ms"
            _reject_all(out, known, received_ns, f"timestamp {timestamp} {why}")
            return out
        ts = parsed
    code = int(Quality.GOOD)
    if quality is not None:
        raw_q = extract(doc, quality)
        if raw_q is not MISSING:
            parsed_q = to_quality(raw_q)
            if parsed_q is None:
                _reject_all(out, known, received_ns, f"quality {quality} not understood")
                return out
            code = parsed_q
    # The hot loop (one pass per mapped field): plain appends, a fast path for the
    # common ``$.name`` path and for float values.
    tag_ids, values, qualities, stamps = out.tag_ids, out.values, out.qualities, out.ts
    is_dict = type(doc) is dict
    isfinite = math.isfinite
    number: float | None
    for f in known:
        member = f.member
        raw = doc.get(member, MISSING) if member is not None and is_dict else extract(doc, f.path)
        if f.text:
            _text_row(out, f, raw, code, ts, received_ns)
            continue
        if type(raw) is float:
            number = raw if isfinite(raw) else None
        elif raw is MISSING:
            out.rejections.append(f"field {f.path} missing")
            number = None
        else:
            number = to_number(raw)
        if number is None:
            if raw is not MISSING:
                out.rejections.append(f"field {f.path} is not a number ({type(raw).__name__})")
            tag_ids.append(f.tag_id)  # type: ignore[arg-type]
            values.append(math.nan)
            qualities.append(_BAD_DECODING)
            stamps.append(received_ns)
            continue
        tag_ids.append(f.tag_id)  # type: ignore[arg-type]
        values.append(number)
        qualities.append(code)
        stamps.append(ts)
    return out


def _text_row(out: Decoded, f: FieldMap, raw: Any, code: int, ts: int, received_ns: int) -> None:
    text = None if raw is MISSING else to_text(raw)
    if text is None:
        why = "missing" if raw is MISSING else f"not text ({type(raw).__name__})"
        out.rejections.append(f"field {f.path} {why}")
        _row(out, f.tag_id, math.nan, _BAD_DECODING, received_ns)
        return
    out.texts.append((len(out.tag_ids), text))
    _row(out, f.tag_id, math.nan, code, ts)


def _plain(out: Decoded, payload: bytes, known: list[FieldMap], received_ns: int) -> None:
    """A payload that is not JSON, every field at ``$``: a plain number for numeric
    tags, its text for string tags."""
    if not known:  # nothing to attribute: only say when it is not even a number
        if plain_number(payload) is None:
            out.rejections.append("not JSON and not a plain number")
        return
    number = plain_number(payload) if any(not f.text for f in known) else None
    text = plain_text(payload) if any(f.text for f in known) else None
    rejected = False
    for f in known:
        if f.text and text is not None:
            out.texts.append((len(out.tag_ids), text))
            _row(out, f.tag_id, math.nan, int(Quality.GOOD), received_ns)
        elif not f.text and number is not None:
            _row(out, f.tag_id, number, int(Quality.GOOD), received_ns)
        else:
            _row(out, f.tag_id, math.nan, _BAD_DECODING, received_ns)
            rejected = True
    if rejected:
        out.rejections.append(
            "not JSON and not a plain number"
            if number is None and text is None
            else "not JSON and not a plain number (or UTF-8 text for a string tag)"
        )


def _row(out: Decoded, tag_id: int | None, value: float, quality: int, ts: int) -> None:
    assert tag_id is not None
    out.tag_ids.append(tag_id)
    out.values.append(value)
    out.qualities.append(quality)
    out.ts.append(ts)


def _reject_all(out: Decoded, known: list[FieldMap], ts: int, reason: str) -> None:
    out.rejections.append(reason)
    for f in known:
        _row(out, f.tag_id, math.nan, int(Quality.BAD_DECODING_ERROR), ts)
