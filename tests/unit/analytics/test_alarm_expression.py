"""The alarm expression language: whitelisted ast, no eval, errors with their column."""

from __future__ import annotations

import pytest

from isthmus.analytics.alarms.expression import (
    MAX_LENGTH,
    MAX_NODES,
    ExpressionError,
    parse,
)


def ev(source: str, **values: float) -> object:
    return parse(source).evaluate(values)


def test_arithmetic_comparisons_and_logic() -> None:
    assert ev("a + b * 2 > 10", a=1, b=5) is True
    assert ev("(a + b) * 2 > 13", a=1, b=5) is False
    assert ev("a / b", a=1, b=4) == 0.25
    assert ev("a % 3", a=7) == 1
    assert ev("-a + +b", a=2, b=5) == 3
    assert ev("0 < a <= 5", a=5) is True
    assert ev("0 < a <= 5", a=6) is False
    assert ev("a == 1 and not b", a=1, b=0) is True
    assert ev("a == 2 or b != 0", a=1, b=0) is False
    assert ev("true and not false") is True
    assert ev("True or False") is True


def test_quoted_paths_are_tag_references() -> None:
    expr = parse("'utilities/water/pumping/pump1/flow' > 120 and running")
    assert expr.refs() == ["utilities/water/pumping/pump1/flow", "running"]
    assert expr.evaluate({"utilities/water/pumping/pump1/flow": 121, "running": 1}) is True
    resolved = expr.resolve(lambda ref: "x/" + ref.path)
    assert resolved.refs() == ["x/utilities/water/pumping/pump1/flow", "x/running"]


def test_unknown_values_give_none_not_an_exception() -> None:
    assert ev("a > 1") is None  # no value yet
    assert ev("a / b", a=1, b=0) is None
    assert ev("a % b", a=1, b=0) is None
    assert ev("a > 1", a=float("nan")) is None
    # three-valued logic: a known false decides "and", a known true decides "or"
    assert ev("a > 1 and b > 1", a=0) is False
    assert ev("a > 1 or b > 1", a=2) is True
    assert ev("a > 1 and b > 1", a=2) is None


@pytest.mark.parametrize(
    ("source", "column", "fragment"),
    [
        ("__import__('os').system('x')", 1, "function calls"),
        ("a.b > 1", 1, "attribute access"),
        ("a[0] > 1", 1, "subscripts"),
        ("a ** 2", 1, "Pow"),
        ("a > 1 and (lambda: 1)", 12, "lambdas"),
        ("[x for x in a]", 1, "comprehensions"),
        ("1 if a else 2", 1, "conditional"),
        ("a in b", 1, "comparison In"),
        ("a > ", 4, "syntax error"),
        ("(a > 1", 1, "never closed"),
        ("  a >> 1", 3, "RShift"),
        ("b'x' > 1", 1, "bytes literals"),
        ("(a := 1)", 2, "assignments"),
        ("a > 1\nb", 6, "one line"),
        ("", 1, "empty"),
    ],
)
def test_forbidden_or_malformed_expressions_name_the_column(
    source: str, column: int, fragment: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(source)
    assert fragment in str(info.value)
    assert info.value.column == column, str(info.value)


def test_size_is_bounded() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        parse("a + " * 300 + "a")
    many = " or ".join(["a"] * MAX_NODES)
    assert len(many) < MAX_LENGTH
    with pytest.raises(ExpressionError, match="more than"):
        parse(many)
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("-" * 40 + "a")
