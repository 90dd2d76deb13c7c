"""A stored sample value (float64, or the text of a string sample) as its tag's JSON value."""

from __future__ import annotations

import math

from isthmus.model.config import DataType

JsonValue = bool | int | float | str | None

INTEGER_TYPES = frozenset(
    {
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.INT64,
        DataType.UINT64,
    }
)


def typed_value(value: float, data_type: DataType, text: str | None = None) -> JsonValue:
    """The text of a string sample (``text``, from the batch's ``text`` column); bool
    for bool tags, int for integral values of integer tags, else float; ``None`` when
    the value is not a finite number (or a string tag's sample has no text, e.g. Bad).
    Pass the tag's ``value_type``."""
    if text is not None:
        return text
    if data_type is DataType.STRING:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if data_type is DataType.BOOL:
        return value != 0.0
    if data_type in INTEGER_TYPES and value.is_integer():
        return int(value)
    return value
