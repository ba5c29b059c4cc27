"""Facts: the truth of each atom and the value of each number, read off one concrete request.

The solver reasons over Booleans and rationals only. Every string test (globs, equality,
startsWith, regexes, list membership) and every presence/type test is evaluated here, on concrete
strings, and handed to Z3 as a Boolean atom (DESIGN.md, "Keep Z3 in fast theories").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from licet.kernel.conditions import Attr, Linear, ListHas, SameValue, Scalar, SizeOf, StringTest, Type
from licet.kernel.globs import Glob
from licet.kernel.numbers import exact
from licet.kernel.regex import search

Missing = object()  # sentinel: the attribute is absent


@dataclass(frozen=True)
class Subject:
    """What facts are read from: a request's five parts (history events reuse the shape)."""

    principal: Mapping[str, Any]
    action: str
    resource: str
    args: Mapping[str, Any]
    context: Mapping[str, Any]

    def lookup(self, attr: Attr) -> Any:
        """The attribute's value, or `Missing`."""
        if attr.root == "resource":
            return self.resource
        if attr.root == "action":
            return self.action
        value: Any = getattr(self, attr.root)
        for name in attr.fields:
            if name.startswith("["):  # a list's element (a macro's slot), never a map key
                index = int(name[1:-1])
                if not isinstance(value, list) or index >= len(value):
                    return Missing
                value = value[index]
            elif not isinstance(value, Mapping) or name not in value:
                return Missing
            else:
                value = value[name]
        return value


def has_type(value: Any, kind: Type) -> bool:
    """True when a present JSON value is of the path's type (a bool is not a number)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    return isinstance(value, (str, list, dict))  # sized


def string_test(test: StringTest, value: str) -> bool:
    """The truth of a string atom on a concrete string."""
    return string_holds(test.op, value, test.literal)


def string_holds(op: str, value: str, literal: str | tuple[str, ...]) -> bool:
    """`value op literal` for a string test (eq, in, startsWith, endsWith, contains, matches)."""
    if op == "eq":
        return value == literal
    if op == "in":
        return value in literal
    assert isinstance(literal, str)
    if op == "startsWith":
        return value.startswith(literal)
    if op == "endsWith":
        return value.endswith(literal)
    if op == "contains":
        return literal in value
    return search(literal, value)


def same_json(a: Any, b: Scalar | Any) -> bool:
    """JSON equality that never equates a bool with a number, comparing numbers exactly."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float, Fraction)) and isinstance(b, (int, float, Fraction)):
        return exact(a) == exact(b)
    return type(a) is type(b) and bool(a == b)


def list_has(test: ListHas, value: list[Any]) -> bool:
    """`lit in list` on a concrete list."""
    return any(same_json(item, test.literal) for item in value)


def same_value(test: SameValue, left: Any, right: Any) -> bool:
    """`p == q` on two concrete values already known to be of the paths' type."""
    return same_json(left, right)


def size_of(value: Any) -> int:
    """`size()`: code points of a string, entries of a list or map."""
    return len(value)


def number(value: Any) -> Fraction:
    """A JSON number as an exact rational (see `kernel.numbers.exact`)."""
    return exact(value)


def glob_fact(glob: Glob, text: str) -> bool:
    """Whether an action/resource glob matches."""
    return glob.matches(text)


def linear_value(expr: Linear, subject: Subject, types: Mapping[str, Type]) -> Fraction | None:
    """The value of a linear expression, or None when some operand is absent or mistyped."""
    total = expr.constant
    for leaf, coeff in expr.terms:
        attr = leaf.attr if isinstance(leaf, SizeOf) else leaf
        value = subject.lookup(attr)
        kind = "string" if attr.always_present else types.get(attr.type_name, "number")
        if value is Missing or not has_type(value, kind):
            return None
        total += coeff * (size_of(value) if isinstance(leaf, SizeOf) else number(value))
    return total


CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]


def compare_zero(op: str, value: Fraction) -> bool:
    """`value op 0`."""
    if op == "==":
        return value == 0
    if op == "!=":
        return value != 0
    if op == "<":
        return value < 0
    if op == "<=":
        return value <= 0
    if op == ">":
        return value > 0
    return value >= 0
