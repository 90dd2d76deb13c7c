"""A small safe expression language for alarm conditions and suppression.

Grammar (a subset of Python's expression syntax, parsed with :mod:`ast` and then copied
into a whitelisted tree; nothing is ever passed to ``eval``)::

    expr     := expr ("or" | "and") expr | "not" expr | comparison
    comparison := arith (("<" | "<=" | ">" | ">=" | "==" | "!=") arith)*
    arith    := arith ("+" | "-" | "*" | "/" | "%") arith | ("-" | "+") arith | atom
    atom     := NUMBER | true | false | TAG | "(" expr ")"
    TAG      := a quoted path ('utilities/water/pumping/pump1/flow') or a bare name (flow)

A tag reference is a quoted string (an UNS path, a path relative to the site, or a path
relative to the alarm's equipment) or a bare identifier (a tag of the alarm's
equipment).  No attribute access, subscripts, calls, lambdas, comprehensions or loops;
the source length, node count and nesting depth are bounded.  Errors carry the 1-based
column of the offending part.

Values are floats (booleans are 0/1, as in a batch).  ``and``/``or``/``not`` and
comparisons give booleans; a division by zero or a missing tag value makes the result
unknown (``None``), never an exception at run time.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

MAX_LENGTH = 1000
MAX_NODES = 200
MAX_DEPTH = 32

Value = float | bool


class ExpressionError(ValueError):
    """A malformed or forbidden expression; ``column`` is 1-based (0: unknown)."""

    def __init__(self, message: str, column: int = 0) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} (at column {column})" if column else message)


@dataclass(frozen=True, slots=True)
class Const:
    value: float | bool


@dataclass(frozen=True, slots=True)
class Ref:
    path: str
    column: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not", "-", "+"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "+", "-", "*", "/", "%"
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Compare:
    left: Node
    ops: tuple[str, ...]
    comparators: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "and", "or"
    values: tuple[Node, ...]


Node = Const | Ref | Unary | Binary | Compare | Logic

_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_UNARY = {ast.Not: "not", ast.USub: "-", ast.UAdd: "+"}
_BIN_FN: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_CMP_FN: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_NAMES = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression: its source text and its whitelisted tree."""

    source: str
    tree: Node

    def refs(self) -> list[str]:
        """The tag paths referenced, in order of first appearance, without repeats."""
        seen: dict[str, None] = {}
        for ref in iter_refs(self.tree):
            seen.setdefault(ref.path, None)
        return list(seen)

    def resolve(self, fn: Callable[[Ref], str]) -> Expression:
        """The same expression with every tag reference replaced by ``fn(ref)``."""
        return Expression(self.source, _map_refs(self.tree, fn))

    def evaluate(self, values: Mapping[str, float]) -> Value | None:
        """The value against ``values`` (tag path → value); ``None`` when unknown."""
        return evaluate(self.tree, values)


def parse(source: str) -> Expression:
    """Parse and check ``source``; raises :class:`ExpressionError` with the column."""
    if not isinstance(source, str):
        raise ExpressionError("an expression is a string")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    if not source.strip():
        raise ExpressionError("empty expression", 1)
    if "\n" in source or "\r" in source:
        raise ExpressionError("an expression is one line", source.find("\n") + 1 or 1)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        if not isinstance(exc, SyntaxError):
            raise ExpressionError(f"cannot parse: {exc}", 1) from None
        lead = len(source) - len(source.lstrip())
        offset = exc.offset or len(source.strip()) + 1  # 0: at the end of the input
        raise ExpressionError(f"syntax error: {exc.msg}", offset + lead) from None
    lead = len(source) - len(source.lstrip())
    builder = _Builder(lead)
    return Expression(source, builder.build(tree.body, 1))


class _Builder:
    def __init__(self, lead: int) -> None:
        self.lead = lead
        self.nodes = 0

    def column(self, node: ast.AST) -> int:
        return int(getattr(node, "col_offset", 0)) + 1 + self.lead

    def build(self, node: ast.expr, depth: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"expression has more than {MAX_NODES} parts", self.column(node))
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH}", self.column(node))
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                return Const(value)
            if isinstance(value, int | float):
                number = float(value)
                if not math.isfinite(number):
                    raise ExpressionError("number out of range", self.column(node))
                return Const(number)
            if isinstance(value, str):
                path = value.strip().strip("/")
                if not path:
                    raise ExpressionError("empty tag reference", self.column(node))
                return Ref(path, self.column(node))
            raise ExpressionError(
                f"{type(value).__name__} literals are not allowed", self.column(node)
            )
        if isinstance(node, ast.Name):
            if node.id.lower() in _NAMES:
                return Const(_NAMES[node.id.lower()])
            return Ref(node.id, self.column(node))
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            return Logic(op, tuple(self.build(v, depth + 1) for v in node.values))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return Unary(_UNARY[type(node.op)], self.build(node.operand, depth + 1))
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BIN:
                raise ExpressionError(
                    f"operator {type(node.op).__name__} is not allowed (use + - * / %)",
                    self.column(node),
                )
            return Binary(
                _BIN[type(node.op)],
                self.build(node.left, depth + 1),
                self.build(node.right, depth + 1),
            )
        if isinstance(node, ast.Compare):
            ops: list[str] = []
            for cmp in node.ops:
                if type(cmp) not in _CMP:
                    raise ExpressionError(
                        f"comparison {type(cmp).__name__} is not allowed (use < <= > >= == !=)",
                        self.column(node),
                    )
                ops.append(_CMP[type(cmp)])
            return Compare(
                self.build(node.left, depth + 1),
                tuple(ops),
                tuple(self.build(c, depth + 1) for c in node.comparators),
            )
        kind = {
            ast.Call: "function calls",
            ast.Attribute: "attribute access",
            ast.Subscript: "subscripts",
            ast.Lambda: "lambdas",
            ast.IfExp: "conditional expressions",
            ast.ListComp: "comprehensions",
            ast.GeneratorExp: "comprehensions",
            ast.SetComp: "comprehensions",
            ast.DictComp: "comprehensions",
            ast.NamedExpr: "assignments",
        }.get(type(node), type(node).__name__)
        raise ExpressionError(f"{kind} are not allowed", self.column(node))


def iter_refs(node: Node) -> Iterator[Ref]:
    if isinstance(node, Ref):
        yield node
    elif isinstance(node, Unary):
        yield from iter_refs(node.operand)
    elif isinstance(node, Binary):
        yield from iter_refs(node.left)
        yield from iter_refs(node.right)
    elif isinstance(node, Compare):
        yield from iter_refs(node.left)
        for c in node.comparators:
            yield from iter_refs(c)
    elif isinstance(node, Logic):
        for v in node.values:
            yield from iter_refs(v)


def _map_refs(node: Node, fn: Callable[[Ref], str]) -> Node:
    if isinstance(node, Ref):
        return Ref(fn(node), node.column)
    if isinstance(node, Unary):
        return Unary(node.op, _map_refs(node.operand, fn))
    if isinstance(node, Binary):
        return Binary(node.op, _map_refs(node.left, fn), _map_refs(node.right, fn))
    if isinstance(node, Compare):
        return Compare(
            _map_refs(node.left, fn), node.ops, tuple(_map_refs(c, fn) for c in node.comparators)
        )
    if isinstance(node, Logic):
        return Logic(node.op, tuple(_map_refs(v, fn) for v in node.values))
    return node


def _num(value: Value) -> float:
    return float(value)


def evaluate(node: Node, values: Mapping[str, float]) -> Value | None:
    """Evaluate ``node``; ``None`` when a tag has no value, a value is not finite or a
    division by zero happens (unknown, not false)."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Ref):
        value = values.get(node.path)
        if value is None or not math.isfinite(value):
            return None
        return float(value)
    if isinstance(node, Unary):
        operand = evaluate(node.operand, values)
        if operand is None:
            return None
        if node.op == "not":
            return not operand
        return -_num(operand) if node.op == "-" else _num(operand)
    if isinstance(node, Binary):
        left = evaluate(node.left, values)
        right = evaluate(node.right, values)
        if left is None or right is None:
            return None
        a, b = _num(left), _num(right)
        if node.op in ("/", "%"):
            if b == 0:
                return None
            result = a / b if node.op == "/" else math.fmod(a, b)
        else:
            result = _BIN_FN[node.op](a, b)
        return result if math.isfinite(result) else None
    if isinstance(node, Compare):
        left = evaluate(node.left, values)
        if left is None:
            return None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = evaluate(comparator, values)
            if right is None:
                return None
            if not _CMP_FN[op](_num(left), _num(right)):
                return False
            left = right
        return True
    # Logic: short-circuit, but an unknown operand that could decide the result is unknown
    # (``x and unknown`` is unknown unless x is false): three-valued, like SQL.
    unknown = False
    for part in node.values:
        value = evaluate(part, values)
        if value is None:
            unknown = True
        elif node.op == "and" and not value:
            return False
        elif node.op == "or" and value:
            return True
    if unknown:
        return None
    return node.op == "and"
