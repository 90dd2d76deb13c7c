"""Type coercion of OPC UA writes (pure)."""

from __future__ import annotations

import math

import pytest
from asyncua import ua

from isthmus.connectors.opcua.source import OpcUaWriteError, coerce
from isthmus.model.errors import IsthmusError

V = ua.VariantType


def test_numbers_become_the_node_type() -> None:
    assert coerce(450, V.Double) == 450.0 and isinstance(coerce(450, V.Double), float)
    assert isinstance(coerce(True, V.Float), float)
    assert coerce(3.0, V.Int32) == 3 and isinstance(coerce(3.0, V.Int32), int)
    assert coerce(1, V.Boolean) is True
    assert coerce(False, V.Boolean) is False
    assert coerce(65535, V.UInt16) == 65535
    assert coerce(-128, V.SByte) == -128
    assert coerce(2**64 - 1, V.UInt64) == 2**64 - 1


def test_text_becomes_a_string_or_localized_text() -> None:
    assert coerce("LOT-42", V.String) == "LOT-42"
    assert coerce("", V.String) == ""
    label = coerce("Rinse", V.LocalizedText)
    assert isinstance(label, ua.LocalizedText) and label.Text == "Rinse"


@pytest.mark.parametrize(
    ("value", "vtype", "match"),
    [
        (2.5, V.Int32, "whole number"),
        (65536, V.UInt16, "range"),
        (-1, V.UInt32, "range"),
        (2, V.Boolean, "not a bool"),
        (math.nan, V.Boolean, "not a bool"),
        (1e39, V.Float, "Float range"),
        ("1", V.Double, "not a number"),
        (1, V.String, "not text"),
        (1.5, V.LocalizedText, "not text"),
        (1, V.DateTime, "cannot be written"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    value: object, vtype: ua.VariantType, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        coerce(value, vtype)  # type: ignore[arg-type]


def test_error_class_is_an_isthmus_error() -> None:
    assert issubclass(OpcUaWriteError, IsthmusError)
