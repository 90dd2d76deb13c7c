"""MQTT commands (pure): the topic and payload templates of a writable tag, and the
message a command becomes.

A writable MQTT tag declares where its commands go::

    command: {topic: "plant/{path}/set", payload: '{"value": {value}, "ts": {ts}}'}

Placeholders (``{name}``; any other brace is literal text, so JSON payloads need no
escaping):

* ``{value}`` — the raw value (the engineering value with the tag's scale/offset
  undone; an integer type rounded half away from zero).  In the payload it is JSON: a
  number, ``true``/``false``, or a quoted string for a string tag; in the topic it is
  plain text (a string tag's text as is);
* ``{path}`` — the tag's path below the site (``area/line/cell/equipment/tag``);
* ``{tag}`` — the tag's name (the last segment of its path);
* ``{ts}`` — the command's time, epoch milliseconds.

An unknown placeholder is a configuration error.  A topic that would be empty or hold a
wildcard (``+``, ``#``) or a NUL after filling is refused at write time (nothing is
sent).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from isthmus.connectors.base import (
    FLOAT32_MAX,
    INT_LIMITS,
    Value,
    raw_integer,
    raw_number,
)
from isthmus.model.config import DataType, TagConfig

PLACEHOLDERS: Final = frozenset({"value", "path", "tag", "ts"})
DEFAULT_PAYLOAD: Final = '{"value": {value}}'
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_template(template: str, what: str) -> str:
    """``template`` if its placeholders are all known; ValueError naming the unknown ones."""
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - PLACEHOLDERS)
    if unknown:
        names = ", ".join("{" + name + "}" for name in unknown)
        known = ", ".join("{" + name + "}" for name in sorted(PLACEHOLDERS))
        raise ValueError(f"{what} {template!r}: unknown placeholder {names}; use {known}")
    return template


def check_topic(template: str) -> str:
    """A command topic template: known placeholders, no wildcard, not empty."""
    check_template(template, "topic")
    if not template:
        raise ValueError("the command topic is empty")
    literal = _PLACEHOLDER.sub("", template)
    if "+" in literal or "#" in literal:
        raise ValueError(f"topic {template!r}: a command topic takes no wildcard (+ or #)")
    if "\0" in literal:
        raise ValueError(f"topic {template!r}: NUL character")
    return template


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each known placeholder replaced (unknown ones were refused when
    the configuration was loaded)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def raw_value(config: TagConfig, value: Value) -> float | int | bool | str:
    """The raw value a command for ``config`` carries; ValueError when it does not fit
    the tag's data type (nothing is sent then)."""
    kind = config.data_type
    if kind is DataType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"a string tag takes text, not {value!r}")
        return value
    if isinstance(value, str):
        raise ValueError(f"{value!r} is text; the tag holds {kind.value}")
    if kind is DataType.BOOL:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"a bool takes true/false (0/1), not {value!r}")
    if kind in INT_LIMITS:
        return raw_integer(config, value, kind)
    raw = raw_number(config, value)
    if kind is DataType.FLOAT32 and abs(raw) > FLOAT32_MAX:
        raise ValueError(f"{value!r} does not fit a float32")
    return raw


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str


def render(topic: str, payload: str, config: TagConfig, value: Value, now_ms: int) -> Message:
    """The message a command becomes; ValueError if the value does not fit the tag or
    the filled topic is not a valid topic name."""
    raw = raw_value(config, value)
    as_json = json.dumps(raw, allow_nan=False)
    plain = raw if isinstance(raw, str) else as_json
    common = {"path": config.path, "tag": config.path.rsplit("/", 1)[-1], "ts": str(now_ms)}
    name = fill(topic, common | {"value": plain})
    if not name or "+" in name or "#" in name or "\0" in name:
        raise ValueError(f"the command topic would be {name!r}: not a topic name")
    return Message(name, fill(payload, common | {"value": as_json}))
