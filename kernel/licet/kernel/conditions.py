"""Conditions: Licet's CEL subset, parsed with Lark into a small typed syntax tree.

Every path gets one type across a whole policy (docs/policy-language.md, "Types"), so parsing is two
passes: `collect_types` gathers the evidence from every condition, then `build` type-checks one
condition against the policy-wide types and lowers it to the tree the compiler consumes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Literal

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from licet.kernel.regex import regex_problem, search

Type = Literal["string", "number", "bool", "list", "sized"]
ROOTS = ("principal", "args", "context")
MACRO_BOUND = 16
"""The most elements a list macro (`all`, `exists`) reads: the conditions are encoded exactly for
lists up to this length, and a request with a longer list where a matching rule or invariant
iterates over it is invalid input (docs/policy-language.md, "List macros")."""
MACROS = ("all", "exists")
ELEMENT = "[]"  # the field standing for "each element" in a macro's body (`args.to[].name`)


class ConditionError(Exception):
    """A condition outside the subset or ill-typed; line and column are inside the condition."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


_INDEX = re.compile(r"\[\d+\]")


def type_name(name: str) -> str:
    """The name a path's type is kept under in a policy: every element index read as `[]` (all the
    elements a macro iterates over share their type: `args.to[3].name` is `args.to[].name`)."""
    return _INDEX.sub(ELEMENT, name)


@dataclass(frozen=True, order=True)
class Attr:
    """A request attribute: `resource`, `action`, or `principal|args|context` and fields."""

    root: str
    fields: tuple[str, ...] = ()  # names, or `[i]` (a list's element i) / `[]` (a macro's element)

    @property
    def name(self) -> str:
        """Dotted name, `args.amount`; list elements as `args.to[3].name`."""
        text = self.root
        for name in self.fields:
            text += name if name.startswith("[") else "." + name
        return text

    @property
    def type_name(self) -> str:
        """The name the policy's types are kept under (see `type_name`)."""
        return type_name(self.name)

    @property
    def always_present(self) -> bool:
        """`resource` and `action` are strings in every valid request."""
        return self.root in ("resource", "action")

    def at(self, index: int) -> Attr:
        """This attribute with its first `[]` (a macro's element) made element `index`."""
        position = self.fields.index(ELEMENT)
        return Attr(self.root, (*self.fields[:position], f"[{index}]", *self.fields[position + 1:]))


@dataclass(frozen=True, order=True)
class SizeOf:
    """`size(p)`: code points of a string, entries of a list or map."""

    attr: Attr


NumLeaf = Attr | SizeOf
Scalar = str | Fraction | bool


@dataclass(frozen=True)
class Linear:
    """Σ coefficient·leaf + constant, over exact rationals."""

    terms: tuple[tuple[NumLeaf, Fraction], ...]
    constant: Fraction

    def plus(self, other: Linear, sign: int = 1) -> Linear:
        """self + sign·other, with like terms merged.

        Terms that cancel stay, with coefficient 0: `args.n - args.n` still reads `args.n`, so an
        absent or mistyped `args.n` still makes it an error (it must never widen access).
        """
        merged: dict[NumLeaf, Fraction] = dict(self.terms)
        for leaf, coeff in other.terms:
            merged[leaf] = merged.get(leaf, Fraction(0)) + sign * coeff
        terms = tuple(sorted(merged.items(), key=_leaf_key))
        return Linear(terms, self.constant + sign * other.constant)

    def scaled(self, factor: Fraction) -> Linear:
        """factor·self (a zero factor keeps the reads, as in `plus`)."""
        return Linear(tuple((k, v * factor) for k, v in self.terms), self.constant * factor)


def _leaf_key(item: tuple[NumLeaf, Fraction]) -> tuple[int, str]:
    leaf = item[0]
    return (1, leaf.attr.name) if isinstance(leaf, SizeOf) else (0, leaf.name)


# Boolean syntax tree. Leaves are the tests the kernel turns into atoms or arithmetic.
@dataclass(frozen=True)
class Const:
    """A constant truth value."""

    value: bool


@dataclass(frozen=True)
class Not:
    """Negation (keeps error as error)."""

    arg: Cond


@dataclass(frozen=True)
class And:
    """Conjunction (false absorbs error)."""

    args: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    """Disjunction (true absorbs error)."""

    args: tuple[Cond, ...]


@dataclass(frozen=True)
class Has:
    """`has(p)`: p is present; never an error."""

    attr: Attr


@dataclass(frozen=True)
class BoolAttr:
    """A bool-typed attribute used as a condition."""

    attr: Attr


StringOp = Literal["eq", "startsWith", "endsWith", "contains", "matches", "in"]


@dataclass(frozen=True)
class StringTest:
    """A test of a string attribute against literals: the kernel's string atoms."""

    op: StringOp
    subject: Attr
    literal: str | tuple[str, ...]


@dataclass(frozen=True)
class ListHas:
    """`lit in p` for a list-typed attribute."""

    attr: Attr
    literal: Scalar


@dataclass(frozen=True)
class SameValue:
    """`p == q` for two string or bool attributes."""

    left: Attr
    right: Attr


CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Compare:
    """`linear op 0` over numbers."""

    op: CompareOp
    expr: Linear


@dataclass(frozen=True)
class ListMacro:
    """`list.all(x, body)` / `list.exists(x, body)`: `body` reads the element through attributes
    below `list[]` (`x.amount` is `args.items[].amount`)."""

    kind: Literal["all", "exists"]
    attr: Attr
    body: Cond


Cond = Const | Not | And | Or | Has | BoolAttr | StringTest | ListHas | SameValue | Compare | ListMacro


def element_body(macro: ListMacro, index: int) -> Cond:
    """The macro's body about element `index` of its list."""
    prefix = (*macro.attr.fields, ELEMENT)

    def element(attr: Attr) -> Attr:
        inside = attr.root == macro.attr.root and attr.fields[:len(prefix)] == prefix
        return attr.at(index) if inside else attr

    return _map_attrs(macro.body, element)


def _map_attrs(cond: Cond, change: Callable[[Attr], Attr]) -> Cond:
    """`cond` with every attribute it reads replaced by `change(attribute)`."""
    if isinstance(cond, Const):
        return cond
    if isinstance(cond, Not):
        return Not(_map_attrs(cond.arg, change))
    if isinstance(cond, And):
        return And(tuple(_map_attrs(a, change) for a in cond.args))
    if isinstance(cond, Or):
        return Or(tuple(_map_attrs(a, change) for a in cond.args))
    if isinstance(cond, Has):
        return Has(change(cond.attr))
    if isinstance(cond, BoolAttr):
        return BoolAttr(change(cond.attr))
    if isinstance(cond, StringTest):
        return StringTest(cond.op, change(cond.subject), cond.literal)
    if isinstance(cond, ListHas):
        return ListHas(change(cond.attr), cond.literal)
    if isinstance(cond, SameValue):
        return SameValue(*sorted((change(cond.left), change(cond.right))))
    if isinstance(cond, Compare):
        terms = {(SizeOf(change(leaf.attr)) if isinstance(leaf, SizeOf) else change(leaf)): coeff
                 for leaf, coeff in cond.expr.terms}
        return Compare(cond.op, Linear(tuple(sorted(terms.items(), key=_leaf_key)), cond.expr.constant))
    return ListMacro(cond.kind, change(cond.attr), cond.body)  # macros do not nest: its body stays


def list_macros(cond: Cond) -> list[ListMacro]:
    """The list macros in a condition."""
    if isinstance(cond, ListMacro):
        return [cond]
    if isinstance(cond, Not):
        return list_macros(cond.arg)
    if isinstance(cond, (And, Or)):
        return [m for arg in cond.args for m in list_macros(arg)]
    return []


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("conditions.lark")).read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(text: str) -> Tree[Token]:
    """Parse a condition into Lark's tree; syntax errors become `ConditionError`."""
    try:
        return _parser().parse(text)
    except UnexpectedEOF as exc:
        lines = text.split("\n")
        raise ConditionError("unexpected end of condition", len(lines), len(lines[-1]) + 1) from exc
    except UnexpectedCharacters as exc:
        raise ConditionError(f"unexpected character {exc.char!r}", exc.line, exc.column) from exc
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        shown = f" {token.value!r}" if token is not None and token.value else ""
        raise ConditionError(f"unexpected token{shown}", exc.line, exc.column) from exc
    except LarkError as exc:
        raise ConditionError(str(exc), 1, 1) from exc


def _pos(node: Tree[Token] | Token) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    return (getattr(meta, "line", 1) or 1, getattr(meta, "column", 1) or 1)


def _fail(node: Tree[Token] | Token, message: str) -> ConditionError:
    line, column = _pos(node)
    return ConditionError(message, line, column)


_COMPATIBLE: dict[tuple[str, str], str] = {
    ("sized", "string"): "string",
    ("sized", "list"): "list",
    ("string", "sized"): "string",
    ("list", "sized"): "list",
}


Evidence = list[tuple[str, Type, tuple[int, int]]]
Links = list[tuple[str, str, tuple[int, int]]]


def merge_types(evidence: Iterable[tuple[str, Type, tuple[int, int]]],
                links: Iterable[tuple[str, str, tuple[int, int]]] = ()) -> dict[str, Type]:
    """One type per path from per-use evidence, spread along `p == q` links; conflicts raise."""
    evidence = list(evidence)
    links = list(links)
    known = _merge(evidence)
    while True:  # `p == q` gives each side the other's type: propagate to a fixpoint
        added = [(b, known[a], pos) for a, b, pos in links if a in known and known.get(b) != known[a]]
        added += [(a, known[b], pos) for a, b, pos in links if b in known and known.get(a) != known[b]]
        if not added:
            return known
        evidence += added
        refined = _merge(evidence)
        if refined == known:
            return known
        known = refined


def _merge(evidence: Iterable[tuple[str, Type, tuple[int, int]]]) -> dict[str, Type]:
    types: dict[str, Type] = {}
    first_use: dict[str, tuple[Type, tuple[int, int]]] = {}
    for name, wanted, pos in evidence:
        have = types.get(name)
        if have is None or have == wanted:
            types[name] = wanted
            first_use.setdefault(name, (wanted, pos))
            continue
        combined = _COMPATIBLE.get((have, wanted))
        if combined is None:
            raise ConditionError(
                f"{name} is used as a {wanted} here but as a {have} elsewhere in this policy",
                *pos,
            )
        types[name] = combined  # type: ignore[assignment]
    return types


_METHODS = ("startsWith", "endsWith", "contains", "matches")


class Checker:
    """Type-checks and lowers one parsed condition; in collecting mode it only gathers evidence."""

    def __init__(self, types: dict[str, Type] | None) -> None:
        self.types = types
        self.evidence: Evidence = []
        self.links: Links = []
        self.element: tuple[str, Attr] | None = None  # inside a macro: its variable and list

    # --- helpers -------------------------------------------------------------------------------
    def _attr(self, node: Tree[Token] | Token) -> Attr | None:
        """The attribute a select chain names, or None if `node` is not one."""
        fields: list[str] = []
        while isinstance(node, Tree) and node.data == "select":
            fields.append(str(node.children[1]))
            node = node.children[0]
        if not (isinstance(node, Tree) and node.data == "ident"):
            return None
        root = str(node.children[0])
        fields.reverse()
        if self.element is not None and root == self.element[0]:
            items = self.element[1]
            return Attr(items.root, (*items.fields, ELEMENT, *fields))
        if root in ("resource", "action"):
            if fields:
                raise _fail(node, f"{root} is a string and has no fields")
            return Attr(root)
        if root in ROOTS:
            if not fields:
                raise _fail(node, f"{root} must be followed by a field, e.g. {root}.name")
            return Attr(root, tuple(fields))
        if root in ("true", "false", "null"):
            return None
        raise _fail(node, f"unknown name {root!r}: conditions read principal.*, args.*, "
                          "context.*, resource and action")

    def _demand(self, attr: Attr, wanted: Type, node: Tree[Token] | Token) -> None:
        if attr.always_present:
            if wanted not in ("string", "sized"):
                raise _fail(node, f"{attr.name} is a string, not a {wanted}")
            return
        if self.types is None:
            self.evidence.append((attr.name, wanted, _pos(node)))

    def _literal(self, node: Tree[Token] | Token) -> Scalar | None:
        if not isinstance(node, Tree):
            return None
        kind = node.data
        if kind == "int_lit":
            return Fraction(int(str(node.children[0]), 0))
        if kind == "float_lit":
            return Fraction(str(node.children[0]))
        if kind == "uint_lit":
            raise _fail(node, "unsigned literals are not supported; write a plain integer")
        if kind == "string_lit":
            return _string_value(node.children[0])
        if kind == "ident" and str(node.children[0]) in ("true", "false"):
            return str(node.children[0]) == "true"
        if kind == "ident" and str(node.children[0]) == "null":
            raise _fail(node, "null is not supported in conditions; use has(...) to test presence")
        if kind == "neg":
            inner = self._literal(node.children[0])
            if isinstance(inner, Fraction):
                return -inner
        return None

    def _type_of(self, attr: Attr) -> Type | None:
        if attr.always_present:
            return "string"
        return None if self.types is None else self.types.get(attr.name)

    # --- lowering ------------------------------------------------------------------------------
    def condition(self, node: Tree[Token] | Token) -> Cond:
        """Lower a Boolean-valued node."""
        if isinstance(node, Token):
            raise _fail(node, "expected a condition")
        kind = node.data
        if kind == "or_":
            return Or((self.condition(node.children[0]), self.condition(node.children[1])))
        if kind == "and_":
            return And((self.condition(node.children[0]), self.condition(node.children[1])))
        if kind == "not_":
            return Not(self.condition(node.children[0]))
        if kind == "compare":
            return self._compare(node)
        if kind == "in_":
            return self._in(node)
        if kind == "method":
            return self._method(node)
        if kind == "call":
            return self._call_bool(node)
        literal = self._literal(node)
        if isinstance(literal, bool):
            return Const(literal)
        attr = self._attr(node)
        if attr is not None:
            self._demand(attr, "bool", node)
            return BoolAttr(attr)
        raise self._unsupported(node, "a condition")

    def _unsupported(self, node: Tree[Token], wanted: str) -> ConditionError:
        kind = node.data
        names = {
            "ternary": "the conditional operator ?:",
            "index": "indexing with [...]",
            "map_lit": "map literals",
            "list_lit": "a list literal here (lists may only follow `in`)",
            "arith": "arithmetic here",
            "neg": "negation here",
        }
        if kind == "arith" and str(node.children[1]) in ("/", "%"):
            return _fail(node, f"operator {node.children[1]} is not in Licet's CEL subset")
        if kind in names:
            return _fail(node, f"{names[kind]} is not supported in Licet's CEL subset"
                         if kind in ("ternary", "index", "map_lit") else f"expected {wanted}, found {names[kind]}")
        return _fail(node, f"expected {wanted}")

    def _compare(self, node: Tree[Token]) -> Cond:
        left, op_token, right = node.children
        op = str(op_token)
        if op in ("==", "!="):
            equal = self._equality(node, left, right)
            return Not(equal) if op == "!=" else equal
        return self._numeric(node, left, op, right)

    def _numeric(self, node: Tree[Token], left: Tree[Token] | Token, op: str,
                 right: Tree[Token] | Token) -> Cond:
        lin = self.linear(left).plus(self.linear(right), -1)
        if not lin.terms:  # constant comparison: fold it
            return Const(_compare_constant(op, lin.constant))
        return Compare(op, lin)  # type: ignore[arg-type]

    def _equality(self, node: Tree[Token], left: Tree[Token] | Token,
                  right: Tree[Token] | Token) -> Cond:
        lit_l, lit_r = self._literal(left), self._literal(right)
        if lit_l is not None and lit_r is not None:
            if type(lit_l) is not type(lit_r):
                raise _fail(node, "comparing values of different types")
            return Const(lit_l == lit_r)
        if lit_l is not None:  # put the literal on the right
            left, right, lit_r = right, left, lit_l
        attr = self._attr(left)
        if isinstance(lit_r, str):
            if attr is None:
                if isinstance(left, Tree) and left.data == "method":
                    self._method(left)  # raises the precise complaint about the method
                raise _fail(left, "a string can only be compared with an attribute")
            self._demand(attr, "string", left)
            return StringTest("eq", attr, lit_r)
        if isinstance(lit_r, bool):
            if attr is None:
                return Not(self.condition(left)) if not lit_r else self.condition(left)
            self._demand(attr, "bool", left)
            return BoolAttr(attr) if lit_r else Not(BoolAttr(attr))
        if isinstance(lit_r, Fraction):
            return self._numeric(node, left, "==", right)
        attr_r = self._attr(right)
        if attr is not None and attr_r is not None:
            return self._same_value(node, attr, attr_r)
        return self._numeric(node, left, "==", right)

    def _same_value(self, node: Tree[Token], left: Attr, right: Attr) -> Cond:
        if self.types is None:
            if not (left.always_present or right.always_present):
                self.links.append((left.name, right.name, _pos(node)))
            elif not left.always_present or not right.always_present:
                other = right if left.always_present else left
                self._demand(other, "string", node)
            return Const(True)  # decided in the typed pass, once every path's type is known
        tl, tr = self._type_of(left), self._type_of(right)
        kind = tl or tr
        if kind is None:
            raise _fail(node, f"cannot infer the types of {left.name} and {right.name}: "
                              "compare one of them with a literal elsewhere")
        if (tl or kind) != (tr or kind):
            raise _fail(node, f"{left.name} is a {tl} but {right.name} is a {tr}")
        if kind == "number":
            return Compare("==", Linear(((left, Fraction(1)),), Fraction(0)).plus(
                Linear(((right, Fraction(1)),), Fraction(0)), -1))
        if kind not in ("string", "bool"):
            raise _fail(node, f"{kind} values cannot be compared with ==")
        for attr in (left, right):
            if self._type_of(attr) is None:
                raise _fail(node, f"cannot infer the type of {attr.name}")
        return SameValue(*sorted((left, right)))

    def _in(self, node: Tree[Token]) -> Cond:
        left, right = node.children
        if isinstance(right, Tree) and right.data == "list_lit":
            items = _arguments(right.children[0])
            values = [self._literal(item) for item in items]
            for item, value in zip(items, values, strict=True):
                if value is None:
                    raise _fail(item, "list elements after `in` must be literals")
            kinds = {type(v) for v in values}
            if len(kinds) > 1:
                raise _fail(right, "list elements after `in` must all have one type")
            if not values:
                return Const(False)
            if isinstance(values[0], str):
                attr = self._attr(left)
                if attr is None:
                    raise _fail(left, "expected an attribute before `in`")
                self._demand(attr, "string", left)
                return StringTest("in", attr, tuple(str(v) for v in values))
            # Numbers and bools: membership is a disjunction of equalities.
            if isinstance(values[0], bool):
                attr = self._attr(left)
                if attr is None:
                    raise _fail(left, "expected an attribute before `in`")
                self._demand(attr, "bool", left)
                return Or(tuple(BoolAttr(attr) if v else Not(BoolAttr(attr)) for v in values))
            base = self.linear(left)
            return Or(tuple(Compare("==", base.plus(Linear((), v), -1))  # type: ignore[arg-type]
                            for v in values))
        literal = self._literal(left)
        attr = self._attr(right)
        if literal is None or attr is None or attr.always_present:
            raise _fail(node, "`in` needs a list literal on its right, or a literal on its left "
                              "and a list attribute on its right")
        self._demand(attr, "list", right)
        return ListHas(attr, literal)

    def _method(self, node: Tree[Token]) -> Cond:
        receiver, name_token, arglist = node.children
        name = str(name_token)
        args = _arguments(arglist)
        if name == "size":
            raise _fail(node, "size() is a number, not a condition")
        if name in MACROS:
            return self._macro(node, receiver, name, args)
        if name not in _METHODS:
            raise _fail(name_token, f"method {name}() is not in Licet's CEL subset "
                                    f"(supported: {', '.join(_METHODS)}, size, {', '.join(MACROS)})")
        if len(args) != 1:
            raise _fail(node, f"{name}() takes exactly one string literal")
        literal = self._literal(args[0])
        if not isinstance(literal, str):
            raise _fail(args[0], f"the argument of {name}() must be a string literal")
        if name == "matches":
            problem = regex_problem(literal)
            if problem:
                raise _fail(args[0], problem)
        receiver_literal = self._literal(receiver)
        if isinstance(receiver_literal, str):
            return Const(_string_method(name, receiver_literal, literal))
        attr = self._attr(receiver)
        if attr is None:
            raise _fail(receiver, f"{name}() applies to a string attribute, resource or action")
        self._demand(attr, "string", receiver)
        return StringTest(name, attr, literal)  # type: ignore[arg-type]

    def _macro(self, node: Tree[Token], receiver: Tree[Token] | Token, name: str,
               args: list[Tree[Token] | Token]) -> Cond:
        if self.element is not None:
            raise _fail(node, f"{name}() inside another list macro is not supported")
        if len(args) != 2:
            raise _fail(node, f"{name}() takes a variable and a condition, e.g. "
                              f"args.to.{name}(r, r.endsWith(\"@example.com\"))")
        variable = args[0]
        if not (isinstance(variable, Tree) and variable.data == "ident"):
            raise _fail(variable, f"the first argument of {name}() must be a variable name")
        var = str(variable.children[0])
        if var in (*ROOTS, "resource", "action", "true", "false", "null"):
            raise _fail(variable, f"{var!r} cannot be a macro's variable: it already names something")
        attr = self._attr(receiver)
        if attr is None or attr.always_present:
            raise _fail(receiver, f"{name}() iterates over a list attribute, e.g. args.to.{name}(r, ...)")
        self._demand(attr, "list", receiver)
        self.element = (var, attr)
        try:
            body = self.condition(args[1])
        finally:
            self.element = None
        return ListMacro(name, attr, body)  # type: ignore[arg-type]

    def _call_bool(self, node: Tree[Token]) -> Cond:
        name_token, arglist = node.children
        name = str(name_token)
        args = _arguments(arglist)
        if name == "has":
            if len(args) != 1:
                raise _fail(node, "has() takes one attribute")
            attr = self._attr(args[0])
            if attr is None or attr.always_present:
                raise _fail(node, "has() takes an attribute with a field, e.g. has(args.url)")
            return Has(attr)
        if name == "size":
            raise _fail(node, "size() is a number, not a condition")
        raise _fail(name_token, f"function {name}() is not in Licet's CEL subset")

    def linear(self, node: Tree[Token] | Token) -> Linear:
        """Lower a number-valued node to a linear expression."""
        literal = self._literal(node)
        if isinstance(literal, Fraction):
            return Linear((), literal)
        if literal is not None:
            raise _fail(node, f"expected a number, found a {type(literal).__name__} literal")
        assert isinstance(node, Tree)
        kind = node.data
        if kind == "arith":
            left, op_token, right = node.children
            op = str(op_token)
            if op == "+":
                return self.linear(left).plus(self.linear(right))
            if op == "-":
                return self.linear(left).plus(self.linear(right), -1)
            if op == "*":
                lit_l, lit_r = self._literal(left), self._literal(right)
                if isinstance(lit_l, Fraction):
                    return self.linear(right).scaled(lit_l)
                if isinstance(lit_r, Fraction):
                    return self.linear(left).scaled(lit_r)
                raise _fail(node, "multiplication needs a numeric literal on one side "
                                  "(conditions stay linear)")
            raise _fail(node, f"operator {op} is not in Licet's CEL subset")
        if kind == "neg":
            return self.linear(node.children[0]).scaled(Fraction(-1))
        if kind in ("call", "method") and self._is_size(node):
            target = node.children[1] if kind == "call" else node.children[0]
            if kind == "call":
                arglist = node.children[1]
                args = _arguments(arglist)
                if len(args) != 1:
                    raise _fail(node, "size() takes one attribute")
                target = args[0]
            elif node.children[2] is not None:
                raise _fail(node, "size() takes no arguments as a method")
            attr = self._attr(target)
            if attr is None:
                raise _fail(node, "size() applies to an attribute")
            self._demand(attr, "sized", target)
            return Linear(((SizeOf(attr), Fraction(1)),), Fraction(0))
        attr = self._attr(node)
        if attr is not None:
            self._demand(attr, "number", node)
            return Linear(((attr, Fraction(1)),), Fraction(0))
        raise self._unsupported(node, "a number")

    @staticmethod
    def _is_size(node: Tree[Token]) -> bool:
        name = node.children[0] if node.data == "call" else node.children[1]
        return str(name) == "size"


def _arguments(arglist: Tree[Token] | Token | None) -> list[Tree[Token] | Token]:
    """The argument nodes of a call (an absent list is no arguments)."""
    return [] if not isinstance(arglist, Tree) else list(arglist.children)


_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "`": "`", "?": "?", "a": "\a", "b": "\b", "f": "\f",
                   "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE = re.compile(r"\\(?:([\\\"'`?abfnrtv])|[xX]([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})"
                     r"|([0-3][0-7]{2})|(.?))", re.DOTALL)


def _string_value(token: Token | Tree[Token]) -> str:
    """A string literal's value with CEL's escapes (docs/policy-language.md, "Conditions"): any other
    backslash is an error, and a UTF-16 surrogate pair (`\\ud83d\\ude00`) is the one code point it
    encodes (a lone surrogate is an error)."""
    text = str(token)[1:-1]

    def unescape(match: re.Match[str]) -> str:
        simple, hex2, hex4, hex8, octal, other = match.groups()
        if simple is not None:
            return _SIMPLE_ESCAPES[simple]
        if other is not None:
            raise _fail(token, f"unknown or malformed escape '\\{other}' in a string literal")
        code = int(octal, 8) if octal else int(hex2 or hex4 or hex8, 16)
        if code > 0x10FFFF:
            raise _fail(token, f"escape '{match.group()}' is beyond U+10FFFF")
        return chr(code)

    value = _ESCAPE.sub(unescape, text)
    try:
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError as exc:
        raise _fail(token, "a lone surrogate in a string literal (only a high-low pair is a code point)") from exc


def _compare_constant(op: str, difference: Fraction) -> bool:
    return {
        "==": difference == 0, "!=": difference != 0, "<": difference < 0,
        "<=": difference <= 0, ">": difference > 0, ">=": difference >= 0,
    }[op]


def _string_method(name: str, subject: str, literal: str) -> bool:
    if name == "startsWith":
        return subject.startswith(literal)
    if name == "endsWith":
        return subject.endswith(literal)
    if name == "contains":
        return literal in subject
    return search(literal, subject)


def collect_types(tree: Tree[Token]) -> tuple[Evidence, Links]:
    """The type evidence (and `p == q` links) one parsed condition gives about its paths."""
    checker = Checker(None)
    checker.condition(tree)
    return checker.evidence, checker.links


def build(tree: Tree[Token], types: dict[str, Type]) -> Cond:
    """Lower a parsed condition to the typed tree, given the policy-wide path types."""
    return Checker(types).condition(tree)


def linear_of(tree: Tree[Token], types: dict[str, Type] | None) -> tuple[Linear, Evidence]:
    """Lower a number-valued expression (an invariant's `sum`) and return its type evidence."""
    checker = Checker(types)
    return checker.linear(tree), checker.evidence
