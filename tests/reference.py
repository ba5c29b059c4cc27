"""An independent reference evaluator for the Licet policy language.

Written only from `docs/policy-language.md` (the normative spec), never from the kernel's code, so
that the kernel (Z3-backed) and this plain-Python evaluator are two independent implementations.
`tests/test_reference_agreement.py` checks that they agree; a disagreement is a bug in one of them.

Everything here is deliberately naive: a hand-written tokenizer and recursive-descent parser for the
CEL subset, a direct segment-list glob matcher, a character-by-character percent decoder, a small
position-set regex matcher with RE2 semantics, and rational (`Fraction`) arithmetic throughout.

Where the spec is silent the choices are marked `ASSUMPTION:`; the strategies avoid generating those
cases, so they do not decide agreement.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from typing import Any, Final

__all__ = [
    "CompiledPolicy",
    "ReferenceInvalid",
    "ReferencePolicyError",
    "action_glob_match",
    "compile_policy",
    "evaluate_condition",
    "normalise_resource",
    "reference_decide",
    "regex_search",
    "resource_glob_match",
]

MAX_SAFE_INT: Final = 2**53 - 1


class ReferenceInvalid(Exception):
    """The request is invalid per the spec (the kernel must raise `kernel.InvalidRequest`)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ReferencePolicyError(Exception):
    """The policy document is invalid per the spec (the kernel must raise `kernel.PolicyError`)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------------
# Three-valued logic
# --------------------------------------------------------------------------------------------------


class _Error:
    """The *error* truth value (and error value of any type)."""

    _instance: _Error | None = None

    def __new__(cls) -> _Error:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ERROR"


ERROR: Final = _Error()


def _and(a: object, b: object) -> object:
    if a is False or b is False:
        return False
    if a is ERROR or b is ERROR:
        return ERROR
    return True


def _or(a: object, b: object) -> object:
    if a is True or b is True:
        return True
    if a is ERROR or b is ERROR:
        return ERROR
    return False


# --------------------------------------------------------------------------------------------------
# Resources and globs
# --------------------------------------------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"
# RFC 3986: the authority ends at the first `/`, `?` or `#`.
_URI_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)


def _percent_decode(s: str) -> str:
    """Decode `%XX` escapes once, as UTF-8 bytes. Raw characters are kept as they are."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "%" and i + 2 < len(s) and s[i + 1] in _HEX and s[i + 2] in _HEX:
            out.append(int(s[i + 1 : i + 3], 16))
            i += 3
        else:
            # ASSUMPTION: a `%` not followed by two hex digits stays literal.
            out.extend(c.encode("utf-8", "surrogatepass"))
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        # ASSUMPTION: percent-escapes that do not form UTF-8 are invalid input.
        raise ReferenceInvalid("resource", "percent-escapes are not UTF-8") from exc


def _is_control(ch: str) -> bool:
    # ASSUMPTION: "control characters" = Unicode category Cc (C0, DEL and C1).
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


def _normalise_path(path: str) -> str | None:
    """`/`-rooted path: fold `//`, resolve `.`/`..`, drop trailing `/`. None = climbs above root."""
    stack: list[str] = []
    for seg in path.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if not stack:
                return None
            stack.pop()
        else:
            stack.append(seg)
    return "/" + "/".join(stack)


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _fold(s: str) -> str:
    # resource_case: insensitive is Unicode full case folding (str.casefold), kept in NFC.
    return _nfc(s.casefold())


def _has_surviving_escape(s: str) -> bool:
    return any(s[i] == "%" and s[i + 1] in _HEX and s[i + 2] in _HEX for i in range(len(s) - 2))


def normalise_resource(value: object, *, insensitive: bool, decode: bool = True,
                       keep_escapes: bool = False) -> str:
    """Normalise a request resource (or, with `decode=False`, a resource pattern or a recorded one).

    Raises `ReferenceInvalid` when the spec calls the input invalid.
    """
    if not isinstance(value, str):
        raise ReferenceInvalid("resource", "not a string")
    s = _percent_decode(value) if decode else value
    if decode and not keep_escapes and _has_surviving_escape(s):
        raise ReferenceInvalid("resource", "an escape survives the one decode")
    if any(_is_control(ch) for ch in s):
        raise ReferenceInvalid("resource", "control character")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in s):
        raise ReferenceInvalid("resource", "lone surrogate")
    s = s.replace("\\", "/")
    m = _URI_RE.fullmatch(s)
    if m is not None:
        scheme, authority, path = m.group(1), m.group(2), m.group(3)
        if authority == "":
            # ASSUMPTION: a URI needs an authority (`file:///x` is not supported).
            raise ReferenceInvalid("resource", "URI without authority")
        if not path.startswith("/"):
            path = "/" + path  # `https://host` is `https://host/`, `https://host?q` is `https://host/?q`.
        norm = _normalise_path(path)
        if norm is None:
            raise ReferenceInvalid("resource", "'..' climbs above the root")
        result = f"{_fold(scheme)}://{_fold(authority)}{norm}"
    elif s.startswith("/"):
        norm = _normalise_path(s)
        if norm is None:
            raise ReferenceInvalid("resource", "'..' climbs above the root")
        result = norm
    else:
        raise ReferenceInvalid("resource", "neither an absolute path nor a URI")
    return _fold(result) if insensitive else _nfc(result)


def _glob_match(pattern: list[str], subject: list[str]) -> bool:
    """Segment-list glob: `*` = exactly one non-empty segment, `**` = zero or more segments."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(pattern):
            res = j == len(subject)
        elif pattern[i] == "**":
            res = go(i + 1, j) or (j < len(subject) and go(i, j + 1))
        elif j == len(subject):
            res = False
        elif pattern[i] == "*":
            res = subject[j] != "" and go(i + 1, j + 1)
        else:
            res = pattern[i] == subject[j] and go(i + 1, j + 1)
        memo[key] = res
        return res

    return go(0, 0)


def action_glob_match(pattern: str, action: str) -> bool:
    """Whole-string, `.`-segment-aligned action glob match (case-sensitive)."""
    return _glob_match(pattern.split("."), action.split("."))


def resource_glob_match(pattern: str, resource: str) -> bool:
    """Whole-string, `/`-segment-aligned glob match of a normalised pattern and resource."""
    return _glob_match(pattern.split("/"), resource.split("/"))


_ACTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _valid_action(value: object) -> bool:
    if not isinstance(value, str) or value == "":
        return False
    return all(seg != "" and all(c in _ACTION_CHARS for c in seg) for seg in value.split("."))


# --------------------------------------------------------------------------------------------------
# Regular expressions: RE2 semantics (search), over a small subset, by position sets
# --------------------------------------------------------------------------------------------------

_CharPred = Callable[[str], bool]


@dataclass(frozen=True)
class _RChar:
    pred: _CharPred


@dataclass(frozen=True)
class _RSeq:
    items: tuple[object, ...]


@dataclass(frozen=True)
class _RAlt:
    options: tuple[object, ...]


@dataclass(frozen=True)
class _RRepeat:
    item: object
    lo: int
    hi: int | None


@dataclass(frozen=True)
class _RAnchor:
    start: bool  # True = `^` (beginning of text), False = `$` (end of text)


class _RegexUnsupported(Exception):
    pass


_DIGITS = frozenset("0123456789")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SPACE = frozenset("\t\n\f\r ")  # RE2's \s
_REGEX_META = frozenset(r"\.^$|?*+()[]{}-/")
_PERL_CLASSES: dict[str, tuple[frozenset[str], bool]] = {
    "d": (_DIGITS, False),
    "D": (_DIGITS, True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}


def _is(c: str) -> _CharPred:
    return lambda ch: ch == c


def _member(chars: frozenset[str], negated: bool) -> _CharPred:
    return lambda ch: (ch in chars) != negated


def _between(lo: str, hi: str) -> _CharPred:
    return lambda ch: lo <= ch <= hi


class _RegexParser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0

    def parse(self) -> object:
        node = self.alt()
        if self.i != len(self.src):
            raise _RegexUnsupported(f"unexpected {self.src[self.i]!r} at {self.i}")
        return node

    def peek(self) -> str | None:
        return self.src[self.i] if self.i < len(self.src) else None

    def alt(self) -> object:
        options = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.seq())
        return options[0] if len(options) == 1 else _RAlt(tuple(options))

    def seq(self) -> object:
        items: list[object] = []
        while (c := self.peek()) is not None and c not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return _RSeq(tuple(items))

    def quantified(self, atom: object) -> object:
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{" and re.match(r"\{\d+(,\d*)?\}", self.src[self.i :]):
                m = re.match(r"\{(\d+)(,(\d*))?\}", self.src[self.i :])
                assert m is not None
                self.i += m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if hi is not None and hi < lo:
                    raise _RegexUnsupported("bad repetition range")
            else:
                return atom
            if isinstance(atom, _RAnchor):
                raise _RegexUnsupported("quantified anchor")
            if self.peek() == "?":  # lazy: irrelevant for a yes/no search
                self.i += 1
            atom = _RRepeat(atom, lo, hi)

    def atom(self) -> object:
        c = self.src[self.i]
        if c == "(":
            self.i += 1
            if self.src.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise _RegexUnsupported("lookaround, conditional or flag group")
            inner = self.alt()
            if self.peek() != ")":
                raise _RegexUnsupported("unbalanced (")
            self.i += 1
            return inner
        if c == "[":
            return self.char_class()
        if c == ".":
            self.i += 1
            return _RChar(lambda ch: ch != "\n")
        if c == "^":
            self.i += 1
            return _RAnchor(True)
        if c == "$":
            self.i += 1
            return _RAnchor(False)
        if c == "\\":
            return self.escape()
        if c in "*+?{":
            raise _RegexUnsupported("nothing to repeat")
        if c == ")":
            raise _RegexUnsupported("unbalanced )")
        self.i += 1
        return _RChar(_is(c))

    def escape(self) -> _RChar:
        if self.i + 1 >= len(self.src):
            raise _RegexUnsupported("trailing backslash")
        e = self.src[self.i + 1]
        self.i += 2
        if e in _PERL_CLASSES:
            chars, negated = _PERL_CLASSES[e]
            return _RChar(_member(chars, negated))
        if e in _SIMPLE_ESCAPES:
            lit = _SIMPLE_ESCAPES[e]
            return _RChar(_is(lit))
        if e in _REGEX_META:
            return _RChar(_is(e))
        # Backreferences (\1), \b, \A, \z, \p{..} ...: outside the subset this evaluator knows.
        raise _RegexUnsupported(f"escape \\{e}")

    def char_class(self) -> _RChar:
        self.i += 1  # [
        negated = False
        if self.peek() == "^":
            negated = True
            self.i += 1
        preds: list[_CharPred] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise _RegexUnsupported("unterminated [")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "\\":
                esc = self.escape()
                preds.append(esc.pred)
                continue
            self.i += 1
            if self.peek() == "-" and self.i + 1 < len(self.src) and self.src[self.i + 1] != "]":
                hi = self.src[self.i + 1]
                if hi == "\\":
                    raise _RegexUnsupported("escaped range end")
                self.i += 2
                if ord(hi) < ord(c):
                    raise _RegexUnsupported("bad range")
                preds.append(_between(c, hi))
            else:
                preds.append(_is(c))
        return _RChar(lambda ch: any(p(ch) for p in preds) != negated)


def _compile_regex(src: str) -> object:
    return _RegexParser(src).parse()


def _rmatch(node: object, text: str, starts: frozenset[int]) -> frozenset[int]:
    if not starts:
        return starts
    if isinstance(node, _RChar):
        return frozenset(i + 1 for i in starts if i < len(text) and node.pred(text[i]))
    if isinstance(node, _RSeq):
        cur = starts
        for item in node.items:
            cur = _rmatch(item, text, cur)
        return cur
    if isinstance(node, _RAlt):
        out: set[int] = set()
        for opt in node.options:
            out |= _rmatch(opt, text, starts)
        return frozenset(out)
    if isinstance(node, _RAnchor):
        target = 0 if node.start else len(text)
        return frozenset(i for i in starts if i == target)
    if isinstance(node, _RRepeat):
        cur = starts
        for _ in range(node.lo):
            cur = _rmatch(node.item, text, cur)
        acc = set(cur)
        if node.hi is None:
            frontier = cur
            while frontier:
                frontier = _rmatch(node.item, text, frontier) - acc
                acc |= frontier
        else:
            for _ in range(node.hi - node.lo):
                cur = _rmatch(node.item, text, cur)
                acc |= cur
        return frozenset(acc)
    raise AssertionError(f"unknown regex node {node!r}")


def regex_search(pattern: str, text: str) -> bool:
    """RE2 partial-match semantics: does `pattern` match anywhere in `text`?"""
    return bool(_rmatch(_compile_regex(pattern), text, frozenset(range(len(text) + 1))))


# --------------------------------------------------------------------------------------------------
# The CEL subset: tokenizer, parser, checker
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # num | str | ident | op | eof
    text: str
    value: object
    pos: int


_OPS = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")",
        "[", "]", ",", ".", "?", ":", "{", "}")
_STR_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "`": "`", "?": "?", "n": "\n", "t": "\t", "r": "\r",
                "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_HEX_ESCAPES = {"x": 2, "X": 2, "u": 4, "U": 8}


def _escape_at(src: str, j: int) -> tuple[int, int]:
    """The code point of the escape starting at `src[j] == "\\"` and its length (CEL's escapes)."""
    e = src[j + 1] if j + 1 < len(src) else ""
    if e in _STR_ESCAPES:
        return ord(_STR_ESCAPES[e]), 2
    if e in _HEX_ESCAPES:
        digits = src[j + 2 : j + 2 + _HEX_ESCAPES[e]]
        if len(digits) == _HEX_ESCAPES[e] and all(c in _HEX for c in digits):
            return int(digits, 16), 2 + len(digits)
    elif e in "0123" and len(src) > j + 3 and all(c in "01234567" for c in src[j + 2 : j + 4]):
        return int(src[j + 1 : j + 4], 8), 4
    raise ReferencePolicyError(f"col {j + 1}", "unsupported escape")


def _code_points(units: list[int], col: int) -> str:
    """Join code points, a high surrogate followed by a low one being one code point."""
    out: list[str] = []
    i = 0
    while i < len(units):
        u = units[i]
        if 0xD800 <= u <= 0xDBFF and i + 1 < len(units) and 0xDC00 <= units[i + 1] <= 0xDFFF:
            out.append(chr(0x10000 + ((u - 0xD800) << 10) + (units[i + 1] - 0xDC00)))
            i += 2
            continue
        if 0xD800 <= u <= 0xDFFF or u > 0x10FFFF:
            raise ReferencePolicyError(f"col {col}", "lone surrogate or beyond U+10FFFF")
        out.append(chr(u))
        i += 1
    return "".join(out)


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c.isdigit() and c.isascii():
            j = i
            while j < len(src) and src[j].isascii() and src[j].isdigit():
                j += 1
            if j + 1 < len(src) and src[j] == "." and src[j + 1].isascii() and src[j + 1].isdigit():
                j += 1
                while j < len(src) and src[j].isascii() and src[j].isdigit():
                    j += 1
            if j < len(src) and (src[j].isalpha() or src[j] == "_"):
                raise ReferencePolicyError(f"col {j + 1}", "malformed number")
            toks.append(_Tok("num", src[i:j], Fraction(src[i:j]), i))
            i = j
            continue
        if c in "\"'":
            j = i + 1
            units: list[int] = []
            while True:
                if j >= len(src) or src[j] == "\n":
                    raise ReferencePolicyError(f"col {i + 1}", "unterminated string")
                ch = src[j]
                if ch == c:
                    j += 1
                    break
                if ch == "\\":
                    code, length = _escape_at(src, j)
                    units.append(code)
                    j += length
                    continue
                units.append(ord(ch))
                j += 1
            toks.append(_Tok("str", src[i:j], _code_points(units, i + 1), i))
            i = j
            continue
        if c.isalpha() or c == "_":
            j = i
            while j < len(src) and (src[j].isalnum() or src[j] == "_"):
                j += 1
            toks.append(_Tok("ident", src[i:j], src[i:j], i))
            i = j
            continue
        for op in _OPS:
            if src.startswith(op, i):
                toks.append(_Tok("op", op, op, i))
                i += len(op)
                break
        else:
            raise ReferencePolicyError(f"col {i + 1}", f"unexpected character {c!r}")
    toks.append(_Tok("eof", "", None, len(src)))
    return toks


# Raw parse tree (untyped)
@dataclass(frozen=True)
class _Lit:
    value: object  # str | Fraction | bool | None
    type: str  # string | number | bool | null


@dataclass(frozen=True)
class _ListLit:
    items: tuple[_Lit, ...]


@dataclass(frozen=True)
class _Ident:
    name: str


@dataclass(frozen=True)
class _Select:
    operand: object
    field: str


@dataclass(frozen=True)
class _Call:
    name: str
    target: object | None  # receiver for method-style calls
    args: tuple[object, ...]


@dataclass(frozen=True)
class _Unary:
    op: str
    operand: object


@dataclass(frozen=True)
class _Binary:
    op: str
    left: object
    right: object


class _Parser:
    """Recursive descent with CEL's precedence: || < && < relations < + - < * < unary < member."""

    def __init__(self, src: str) -> None:
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text in ops

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            raise ReferencePolicyError(f"col {tok.pos + 1}", f"expected {op!r}")

    def parse(self) -> object:
        node = self.or_()
        tok = self.peek()
        if tok.kind != "eof":
            raise ReferencePolicyError(f"col {tok.pos + 1}", f"unexpected {tok.text!r}")
        return node

    def or_(self) -> object:
        node = self.and_()
        while self.at_op("||"):
            self.take()
            node = _Binary("||", node, self.and_())
        return node

    def and_(self) -> object:
        node = self.rel()
        while self.at_op("&&"):
            self.take()
            node = _Binary("&&", node, self.rel())
        return node

    def rel(self) -> object:
        """Relations are left-associative in CEL: `a == b == c` is `(a == b) == c`."""
        node = self.add()
        while True:
            tok = self.peek()
            if not ((tok.kind == "op" and tok.text in ("==", "!=", "<", "<=", ">", ">="))
                    or (tok.kind == "ident" and tok.text == "in")):
                return node
            self.take()
            node = _Binary(tok.text, node, self.add())

    def add(self) -> object:
        node = self.mul()
        while self.at_op("+", "-"):
            op = self.take().text
            node = _Binary(op, node, self.mul())
        return node

    def mul(self) -> object:
        node = self.unary()
        while self.at_op("*", "/", "%"):
            tok = self.take()
            if tok.text != "*":
                raise ReferencePolicyError(f"col {tok.pos + 1}", f"operator {tok.text} unsupported")
            node = _Binary("*", node, self.unary())
        return node

    def unary(self) -> object:
        if self.at_op("!"):
            self.take()
            return _Unary("!", self.unary())
        if self.at_op("-"):
            self.take()
            operand = self.unary()
            if isinstance(operand, _Lit) and operand.type == "number":
                assert isinstance(operand.value, Fraction)
                return _Lit(-operand.value, "number")
            return _Unary("-", operand)
        return self.member()

    def member(self) -> object:
        node = self.primary()
        while self.at_op("."):
            self.take()
            tok = self.take()
            if tok.kind != "ident":
                raise ReferencePolicyError(f"col {tok.pos + 1}", "expected a field name")
            is_call = self.at_op("(")
            node = _Call(tok.text, node, self.call_args()) if is_call else _Select(node, tok.text)
        return node

    def call_args(self) -> tuple[object, ...]:
        self.expect("(")
        args: list[object] = []
        if not self.at_op(")"):
            args.append(self.or_())
            while self.at_op(","):
                self.take()
                args.append(self.or_())
        self.expect(")")
        return tuple(args)

    def primary(self) -> object:
        tok = self.take()
        if tok.kind == "num":
            return _Lit(tok.value, "number")
        if tok.kind == "str":
            return _Lit(tok.value, "string")
        if tok.kind == "ident":
            if tok.text == "true":
                return _Lit(True, "bool")
            if tok.text == "false":
                return _Lit(False, "bool")
            if tok.text == "null":
                return _Lit(None, "null")
            if tok.text == "in":
                raise ReferencePolicyError(f"col {tok.pos + 1}", "unexpected 'in'")
            if self.at_op("("):
                return _Call(tok.text, None, self.call_args())
            return _Ident(tok.text)
        if tok.kind == "op" and tok.text == "(":
            node = self.or_()
            self.expect(")")
            return node
        if tok.kind == "op" and tok.text == "[":
            items: list[_Lit] = []
            if not self.at_op("]"):
                items.append(self.list_item())
                while self.at_op(","):
                    self.take()
                    items.append(self.list_item())
            self.expect("]")
            return _ListLit(tuple(items))
        raise ReferencePolicyError(f"col {tok.pos + 1}", f"unexpected {tok.text or 'end'!r}")

    def list_item(self) -> _Lit:
        node = self.unary()
        if not isinstance(node, _Lit):
            raise ReferencePolicyError(f"col {self.peek().pos + 1}", "list items must be literals")
        return node


# Checked expression tree
@dataclass(frozen=True)
class Path:
    """`principal.a.b`, `args.x`, `context.y` (fields non-empty), or `resource` / `action`."""

    root: str
    fields: tuple[str, ...] = ()

    def key(self) -> str:
        return ".".join((self.root, *self.fields))


@dataclass(frozen=True)
class Elem:
    """Inside `list.all(x, ...)` / `list.exists(x, ...)`: the element `x`, or a field below it."""

    items: Path  # the list iterated over
    fields: tuple[str, ...] = ()

    def key(self) -> str:
        # One type for every element of a list: `args.to[]`, `args.items[].amount`.
        return self.items.key() + "[]" + "".join("." + f for f in self.fields)


@dataclass(frozen=True)
class Macro:
    kind: str  # all | exists
    items: Path
    body: object


MACRO_BOUND = 16  # the longest list a macro reads (docs/policy-language.md); longer: invalid input


@dataclass(frozen=True)
class Const:
    value: object  # str | Fraction | bool


@dataclass(frozen=True)
class Not:
    operand: object


@dataclass(frozen=True)
class Neg:
    operand: object


@dataclass(frozen=True)
class BinOp:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class InList:
    subject: object
    items: tuple[object, ...]


@dataclass(frozen=True)
class LitInPath:
    literal: str
    path: Path


@dataclass(frozen=True)
class Size:
    path: Path


@dataclass(frozen=True)
class Has:
    path: Path


@dataclass(frozen=True)
class StrFn:
    fn: str  # startsWith | endsWith | contains | matches
    subject: Path
    arg: str


_ROOTS = ("principal", "args", "context")
_STR_FNS = ("startsWith", "endsWith", "contains", "matches")
_SCALARS = ("string", "number", "bool")


Scope = tuple[str, Path] | None  # inside a macro: its variable and the list it iterates over


def _as_path(node: object, *, need_field: bool, scope: Scope = None) -> Path | Elem:
    fields: list[str] = []
    while isinstance(node, _Select):
        fields.append(node.field)
        node = node.operand
    if not isinstance(node, _Ident):
        raise ReferencePolicyError("expr", "expected an attribute path")
    fields.reverse()
    if scope is not None and node.name == scope[0]:
        return Elem(scope[1], tuple(fields))
    if node.name in ("resource", "action"):
        if fields or need_field:
            raise ReferencePolicyError("expr", f"{node.name} has no fields")
        return Path(node.name)
    if node.name not in _ROOTS:
        raise ReferencePolicyError("expr", f"unknown identifier {node.name!r}")
    if not fields:
        raise ReferencePolicyError("expr", f"{node.name} needs at least one field")
    return Path(node.name, tuple(fields))


def _is_num_lit(node: object) -> bool:
    return isinstance(node, Const) and isinstance(node.value, Fraction)


def _resolve(node: object, scope: Scope = None) -> object:
    """Raw parse tree -> checked tree (shape rules only; typing happens in `_Typer`)."""
    if isinstance(node, _Lit):
        if node.type == "null":
            # ASSUMPTION: no operator accepts null (== / != take string, number, bool).
            raise ReferencePolicyError("expr", "null literal has no usable type")
        return Const(node.value)
    if isinstance(node, _ListLit):
        raise ReferencePolicyError("expr", "list literal only as the right operand of 'in'")
    if isinstance(node, _Ident | _Select):
        return _as_path(node, need_field=False, scope=scope)
    if isinstance(node, _Unary):
        inner = _resolve(node.operand, scope)
        return Not(inner) if node.op == "!" else Neg(inner)
    if isinstance(node, _Call):
        return _resolve_call(node, scope)
    if isinstance(node, _Binary):
        if node.op == "in":
            if isinstance(node.right, _ListLit):
                if not node.right.items:
                    raise ReferencePolicyError("expr", "empty list: element type unknown")
                items = []
                for it in node.right.items:
                    if it.type == "null":
                        raise ReferencePolicyError("expr", "null in list")
                    items.append(Const(it.value))
                return InList(_resolve(node.left, scope), tuple(items))
            if isinstance(node.left, _Lit) and node.left.type == "string":
                assert isinstance(node.left.value, str)
                path = _as_path(node.right, need_field=True, scope=scope)
                return LitInPath(node.left.value, path)
            raise ReferencePolicyError("expr", "'in' needs a list literal or '\"lit\" in path'")
        left, right = _resolve(node.left, scope), _resolve(node.right, scope)
        if node.op == "*" and not (_is_num_lit(left) or _is_num_lit(right)):
            raise ReferencePolicyError("expr", "'*' needs a numeric literal operand")
        return BinOp(node.op, left, right)
    raise AssertionError(f"unknown node {node!r}")


def _resolve_call(node: _Call, scope: Scope) -> object:
    if node.target is None:
        if node.name == "size" and len(node.args) == 1:
            return Size(_as_path(node.args[0], need_field=False, scope=scope))
        if node.name == "has" and len(node.args) == 1:
            return Has(_as_path(node.args[0], need_field=True, scope=scope))
        raise ReferencePolicyError("expr", f"unknown function {node.name!r}")
    if node.name == "size" and not node.args:
        return Size(_as_path(node.target, need_field=False, scope=scope))
    if node.name in ("all", "exists"):
        if scope is not None:
            raise ReferencePolicyError("expr", "nested list macros")
        if len(node.args) != 2 or not isinstance(node.args[0], _Ident):
            raise ReferencePolicyError("expr", f"{node.name}(variable, condition)")
        var = node.args[0].name
        if var in (*_ROOTS, "resource", "action", "true", "false", "null", "in"):
            raise ReferencePolicyError("expr", f"{var!r} cannot be a macro variable")
        items = _as_path(node.target, need_field=True)
        assert isinstance(items, Path)
        return Macro(node.name, items, _resolve(node.args[1], (var, items)))
    if node.name in _STR_FNS and len(node.args) == 1:
        arg = node.args[0]
        if not (isinstance(arg, _Lit) and arg.type == "string"):
            raise ReferencePolicyError("expr", f"{node.name} needs a string literal")
        assert isinstance(arg.value, str)
        if node.name == "matches":
            try:
                _compile_regex(arg.value)
            except _RegexUnsupported as exc:
                raise ReferencePolicyError("expr", f"regex: {exc}") from exc
        return StrFn(node.name, _as_path(node.target, need_field=False, scope=scope), arg.value)
    raise ReferencePolicyError("expr", f"unknown method {node.name!r}")


def _meet(a: str, b: str) -> str | None:
    if a == b:
        return a
    # ASSUMPTION: `size(p)` constrains p to string|list|map; other uses refine it.
    if a == "sized" and b in ("string", "list"):
        return b
    if b == "sized" and a in ("string", "list"):
        return a
    return None


class _Typer:
    """Per-policy type inference with unification of path-to-path comparisons."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.type: dict[str, str] = {}  # class representative -> type
        self.scalar_eq: set[str] = set()  # classes that must be string/number/bool

    def find(self, k: str) -> str:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def constrain(self, t: object, want: str, where: str) -> None:
        if isinstance(t, str):
            if _meet(t, want) != t:
                raise ReferencePolicyError(where, f"expected {want}, got {t}")
            return
        assert isinstance(t, Path | Elem)
        r = self.find(t.key())
        cur = self.type.get(r)
        new = want if cur is None else _meet(cur, want)
        if new is None:
            raise ReferencePolicyError(where, f"{t.key()} used as {cur} and as {want}")
        self.type[r] = new

    def unify(self, a: object, b: object, where: str) -> None:
        if isinstance(a, str) and isinstance(b, str):
            if a != b or a not in _SCALARS:
                raise ReferencePolicyError(where, f"cannot compare {a} with {b}")
            return
        if isinstance(a, str):
            a, b = b, a
        assert isinstance(a, Path | Elem)
        if isinstance(b, str):
            if b not in _SCALARS:
                raise ReferencePolicyError(where, f"cannot compare with {b}")
            self.constrain(a, b, where)
            self.scalar_eq.add(self.find(a.key()))
            return
        assert isinstance(b, Path | Elem)
        ra, rb = self.find(a.key()), self.find(b.key())
        if ra == rb:
            self.scalar_eq.add(ra)
            return
        ta, tb = self.type.get(ra), self.type.get(rb)
        self.parent[rb] = ra
        self.scalar_eq.discard(rb)
        self.scalar_eq.add(ra)
        self.type.pop(rb, None)
        if ta is not None and tb is not None:
            m = _meet(ta, tb)
            if m is None:
                raise ReferencePolicyError(where, f"{a.key()}: {ta} compared with {tb}")
            self.type[ra] = m
        elif tb is not None:
            self.type[ra] = tb

    def infer(self, node: object, where: str) -> object:
        """Type of `node`: a type name, or a Path (its type variable)."""
        if isinstance(node, Const):
            if isinstance(node.value, bool):
                return "bool"
            if isinstance(node.value, Fraction):
                return "number"
            return "string"
        if isinstance(node, Elem):
            self.find(node.key())
            return node
        if isinstance(node, Macro):
            self.constrain(self.infer(node.items, where), "list", where)
            self.constrain(self.infer(node.body, where), "bool", where)
            return "bool"
        if isinstance(node, Path):
            if node.root in ("resource", "action"):
                return "string"
            self.find(node.key())
            return node
        if isinstance(node, Not):
            self.constrain(self.infer(node.operand, where), "bool", where)
            return "bool"
        if isinstance(node, Neg):
            self.constrain(self.infer(node.operand, where), "number", where)
            return "number"
        if isinstance(node, BinOp):
            lt, rt = self.infer(node.left, where), self.infer(node.right, where)
            if node.op in ("&&", "||"):
                self.constrain(lt, "bool", where)
                self.constrain(rt, "bool", where)
                return "bool"
            if node.op in ("==", "!="):
                self.unify(lt, rt, where)
                return "bool"
            self.constrain(lt, "number", where)
            self.constrain(rt, "number", where)
            return "bool" if node.op in ("<", "<=", ">", ">=") else "number"
        if isinstance(node, InList):
            item_types = {self.infer(it, where) for it in node.items}
            if len(item_types) != 1:
                raise ReferencePolicyError(where, "list literal of mixed types")
            (item_t,) = item_types
            self.unify(self.infer(node.subject, where), item_t, where)
            return "bool"
        if isinstance(node, LitInPath):
            self.constrain(self.infer(node.path, where), "list", where)
            return "bool"
        if isinstance(node, Size):
            self.constrain(self.infer(node.path, where), "sized", where)
            return "number"
        if isinstance(node, Has):
            return "bool"
        if isinstance(node, StrFn):
            self.constrain(self.infer(node.subject, where), "string", where)
            return "bool"
        raise AssertionError(f"unknown node {node!r}")

    def finish(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k in list(self.parent):
            r = self.find(k)
            t = self.type.get(r)
            if t is None:
                raise ReferencePolicyError(k, "type cannot be inferred")
            if r in self.scalar_eq and t not in _SCALARS:
                raise ReferencePolicyError(k, f"{t} compared with ==")
            out[k] = t
        return out


def _parse_condition(src: object, where: str) -> object:
    if not isinstance(src, str):
        raise ReferencePolicyError(where, "condition must be a string")
    try:
        return _resolve(_Parser(src).parse())
    except ReferencePolicyError as exc:
        raise ReferencePolicyError(f"{where} {exc.where}", str(exc)) from exc


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _num(v: object) -> Fraction:
    """A JSON number as an exact rational. ASSUMPTION: a float means its shortest decimal repr
    (the RFC 8785 serialisation of the request), so 0.1 is exactly 1/10."""
    if isinstance(v, int):
        return Fraction(v)
    assert isinstance(v, float)
    return Fraction(repr(v))


def _type_ok(v: object, t: str) -> bool:
    if t == "string":
        return isinstance(v, str)
    if t == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t == "bool":
        return isinstance(v, bool)
    if t == "list":
        return isinstance(v, list)
    if t == "sized":
        return isinstance(v, str | list | dict)
    raise AssertionError(t)


@dataclass(frozen=True)
class _Env:
    values: Mapping[str, object]  # principal/args/context dicts, resource and action strings
    types: Mapping[str, str]
    element: object = None  # inside a macro's body: the element at hand
    # A request (not a history event) must not reach a macro over a list longer than the bound.
    refuse_long: bool = False


_MISSING: Final = object()


def _lookup(env: _Env, path: Path | Elem) -> object:
    cur: object = env.element if isinstance(path, Elem) else env.values.get(path.root, {})
    for f in path.fields:
        if not isinstance(cur, dict) or f not in cur:
            return _MISSING
        cur = cur[f]
    return cur


def _read(env: _Env, path: Path | Elem) -> object:
    """The path's value, or ERROR when absent or not of the path's type."""
    v = _lookup(env, path)
    if v is _MISSING:
        return ERROR
    t = "string" if isinstance(path, Path) and path.root in ("resource", "action") else env.types[path.key()]
    if not _type_ok(v, t):
        return ERROR
    if t == "number":
        return _num(v)
    return v


def _eval(node: object, env: _Env) -> object:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Path | Elem):
        return _read(env, node)
    if isinstance(node, Macro):
        items = _read(env, node.items)
        if items is ERROR:
            return ERROR
        assert isinstance(items, list)
        if len(items) > MACRO_BOUND:
            if env.refuse_long:
                raise ReferenceInvalid(node.items.key(), f"more than {MACRO_BOUND} elements")
            return ERROR  # a history event's long list: an error, so forbid-style matching holds
        results = [_eval(node.body, replace(env, element=item)) for item in items]
        # CEL's macros are its commutative && and ||: false (true) wins over an element's error.
        decisive, neutral = (False, True) if node.kind == "all" else (True, False)
        if decisive in results:
            return decisive
        return ERROR if ERROR in results else neutral
    if isinstance(node, Not):
        v = _eval(node.operand, env)
        return ERROR if v is ERROR else not v
    if isinstance(node, Neg):
        v = _eval(node.operand, env)
        return ERROR if v is ERROR else -v  # type: ignore[operator]
    if isinstance(node, BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if node.op == "&&":
            return _and(left, right)
        if node.op == "||":
            return _or(left, right)
        if left is ERROR or right is ERROR:
            return ERROR
        a: Any = left
        b: Any = right
        ops: dict[str, Callable[[Any, Any], object]] = {
            "==": lambda x, y: x == y,
            "!=": lambda x, y: x != y,
            "<": lambda x, y: x < y,
            "<=": lambda x, y: x <= y,
            ">": lambda x, y: x > y,
            ">=": lambda x, y: x >= y,
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
        }
        return ops[node.op](a, b)
    if isinstance(node, InList):
        v = _eval(node.subject, env)
        if v is ERROR:
            return ERROR
        return any(v == _eval(it, env) for it in node.items)
    if isinstance(node, LitInPath):
        lst = _read(env, node.path)
        if lst is ERROR:
            return ERROR
        assert isinstance(lst, list)
        # Only a string element can equal the string literal (bool/number never equal a string).
        return any(isinstance(x, str) and x == node.literal for x in lst)
    if isinstance(node, Size):
        v = _read(env, node.path)
        if v is ERROR:
            return ERROR
        assert isinstance(v, str | list | dict)
        return Fraction(len(v))
    if isinstance(node, Has):
        return _lookup(env, node.path) is not _MISSING
    if isinstance(node, StrFn):
        s = _read(env, node.subject)
        if s is ERROR:
            return ERROR
        assert isinstance(s, str)
        if node.fn == "startsWith":
            return s.startswith(node.arg)
        if node.fn == "endsWith":
            return s.endswith(node.arg)
        if node.fn == "contains":
            return node.arg in s
        return regex_search(node.arg, s)
    raise AssertionError(f"unknown node {node!r}")


def evaluate_condition(
    condition: str, values: Mapping[str, object], types: Mapping[str, str] | None = None
) -> object:
    """Evaluate one condition alone (types inferred from it): True, False or `ERROR`. For tests."""
    node = _parse_condition(condition, "when")
    if types is None:
        typer = _Typer()
        typer.constrain(typer.infer(node, "when"), "bool", "when")
        types = typer.finish()
    return _eval(node, _Env(values, types))


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Selector:
    actions: tuple[str, ...]
    resources: tuple[str, ...] | None  # normalised patterns; None = any resource
    when: object | None

    def glob_match(self, action: str, resource: str) -> bool:
        if not any(action_glob_match(p, action) for p in self.actions):
            return False
        if self.resources is None:
            return True
        return any(resource_glob_match(p, resource) for p in self.resources)

    def matches_forbid_style(self, env: _Env) -> bool:
        a, r = env.values["action"], env.values["resource"]
        assert isinstance(a, str) and isinstance(r, str)
        if not self.glob_match(a, r):
            return False
        return self.when is None or _eval(self.when, env) is not False


@dataclass(frozen=True)
class _Rule:
    id: str
    effect: str
    selector: _Selector


@dataclass(frozen=True)
class _Invariant:
    id: str
    kind: str
    selector: _Selector | None  # budget, count
    source: _Selector | None  # flow
    sink: _Selector | None  # flow
    limit: Fraction | None
    window: int | None
    sum: object | None
    effect: str = "forbid"  # what a violation decides: forbid | require_approval


@dataclass(frozen=True)
class CompiledPolicy:
    id: str
    insensitive: bool
    rules: tuple[_Rule, ...]
    invariants: tuple[_Invariant, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    keep_escapes: bool = False


_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_DURATION_RE = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = {"id", "version", "description", "resource_case", "resource_escapes", "rules", "invariants"}
_RULE_KEYS = {"id", "effect", "action", "resource", "when", "description", "approval"}
_APPROVAL_KEYS = {"quorum", "role", "ttl"}
_INV_EFFECT_KEYS = {"effect", "approval"}
_INV_KEYS = {
    "budget": {"id", "kind", "action", "resource", "when", "limit", "window", "sum"} | _INV_EFFECT_KEYS,
    "count": {"id", "kind", "action", "resource", "when", "limit", "window"} | _INV_EFFECT_KEYS,
    # ASSUMPTION: flow takes an optional window ("some in-window event matched source").
    "flow": {"id", "kind", "source", "sink", "window"} | _INV_EFFECT_KEYS,
}
_SEL_KEYS = {"action", "resource", "when"}


def _duration(v: object, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str):
        m = _DURATION_RE.fullmatch(v)
        if m:
            return int(m.group(1)) * _UNIT[m.group(2)]
    raise ReferencePolicyError(where, f"bad duration {v!r}")


def _check_keys(d: object, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ReferencePolicyError(where, "must be a mapping")
    unknown = set(d) - allowed
    if unknown:
        raise ReferencePolicyError(where, f"unknown field(s) {sorted(map(str, unknown))}")
    return d


def _str_or_list(v: object, where: str) -> list[str]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ReferencePolicyError(where, "must be a string or a non-empty list of strings")
    return items


def _action_pattern(p: str, where: str) -> str:
    # The spec makes only an empty pattern and `*` inside a literal segment errors. ASSUMPTION: other
    # literal segments (`db read`, `db..x`) are accepted; they simply never match a valid action.
    if p == "":
        raise ReferencePolicyError(where, "empty action glob")
    for seg in p.split("."):
        if "*" in seg and seg not in ("*", "**"):
            raise ReferencePolicyError(where, f"'*' inside a segment of {p!r}")
    return p


def _resource_pattern(p: str, insensitive: bool, where: str) -> str:
    try:
        norm = normalise_resource(p, insensitive=insensitive, decode=False)
    except ReferenceInvalid as exc:
        raise ReferencePolicyError(where, f"bad resource glob {p!r}: {exc}") from exc
    # The pattern as written (backslashes being separators): `.`/`..` do not hide a bad `*`.
    for seg in p.replace("\\", "/").split("/"):
        if "*" in seg and seg not in ("*", "**"):
            raise ReferencePolicyError(where, f"'*' inside a segment of {p!r}")
    return norm


def _selector(d: dict[str, Any], insensitive: bool, where: str, exprs: list[tuple[object, str]]
              ) -> _Selector:
    if "action" not in d:
        raise ReferencePolicyError(where, "action is required")
    actions = tuple(_action_pattern(p, f"{where}.action") for p in _str_or_list(d["action"], where))
    resources = None
    if "resource" in d:
        resources = tuple(
            _resource_pattern(p, insensitive, f"{where}.resource")
            for p in _str_or_list(d["resource"], f"{where}.resource")
        )
    when = None
    if "when" in d:
        when = _parse_condition(d["when"], f"{where}.when")
        exprs.append((when, f"{where}.when"))
    return _Selector(actions, resources, when)


def _approval_block(item: dict[str, Any], effect: object, where: str) -> None:
    """A rule's or invariant's `approval` block: only with require_approval, keys all optional."""
    if "approval" not in item:
        return
    if effect != "require_approval":
        raise ReferencePolicyError(f"{where}.approval", "only with require_approval")
    ap = _check_keys(item["approval"], _APPROVAL_KEYS, f"{where}.approval")
    q = ap.get("quorum", 1)
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ReferencePolicyError(f"{where}.approval.quorum", "positive integer")
    if "role" in ap and not isinstance(ap["role"], str):
        raise ReferencePolicyError(f"{where}.approval.role", "string")
    if "ttl" in ap:
        _duration(ap["ttl"], f"{where}.approval.ttl")


def compile_policy(doc: object) -> CompiledPolicy:
    """Validate a parsed policy document; raise `ReferencePolicyError` when it is invalid."""
    d = _check_keys(doc, _TOP_KEYS, "policy")
    pid = d.get("id")
    if not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise ReferencePolicyError("id", "required, [A-Za-z0-9_.-]+")
    version = d.get("version", "")
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise ReferencePolicyError("version", "string or integer")
    if "description" in d and not isinstance(d["description"], str):
        raise ReferencePolicyError("description", "string")
    case = d.get("resource_case", "sensitive")
    if case not in ("sensitive", "insensitive"):
        raise ReferencePolicyError("resource_case", "sensitive | insensitive")
    insensitive = case == "insensitive"
    escapes = d.get("resource_escapes", "refuse")
    if escapes not in ("refuse", "keep"):
        raise ReferencePolicyError("resource_escapes", "refuse | keep")
    raw_rules = d.get("rules", [])
    raw_invs = d.get("invariants", [])
    if not isinstance(raw_rules, list):
        raise ReferencePolicyError("rules", "must be a list")
    if not isinstance(raw_invs, list):
        raise ReferencePolicyError("invariants", "must be a list")

    exprs: list[tuple[object, str]] = []  # (expression, where); the bool-typed ones
    num_exprs: list[tuple[object, str]] = []
    seen: set[str] = set()

    def take_id(item: dict[str, Any], where: str) -> str:
        rid = item.get("id")
        if not isinstance(rid, str) or not rid:
            raise ReferencePolicyError(f"{where}.id", "required string")
        if rid in seen:
            raise ReferencePolicyError(f"{where}.id", f"duplicate id {rid!r}")
        seen.add(rid)
        return rid

    rules: list[_Rule] = []
    for i, raw in enumerate(raw_rules):
        where = f"rules[{i}]"
        r = _check_keys(raw, _RULE_KEYS, where)
        rid = take_id(r, where)
        effect = r.get("effect")
        if effect not in ("permit", "forbid", "require_approval"):
            raise ReferencePolicyError(f"{where}.effect", "permit | forbid | require_approval")
        if "description" in r and not isinstance(r["description"], str):
            raise ReferencePolicyError(f"{where}.description", "string")
        _approval_block(r, effect, where)
        rules.append(_Rule(rid, effect, _selector(r, insensitive, where, exprs)))

    invariants: list[_Invariant] = []
    for i, raw in enumerate(raw_invs):
        where = f"invariants[{i}]"
        if not isinstance(raw, dict):
            raise ReferencePolicyError(where, "must be a mapping")
        kind = raw.get("kind")
        if kind not in _INV_KEYS:
            raise ReferencePolicyError(f"{where}.kind", "budget | count | flow")
        inv = _check_keys(raw, _INV_KEYS[kind], where)
        iid = take_id(inv, where)
        inv_effect = inv.get("effect", "forbid")
        if inv_effect not in ("forbid", "require_approval"):
            raise ReferencePolicyError(f"{where}.effect", "forbid | require_approval")
        _approval_block(inv, inv_effect, where)
        window = _duration(inv["window"], f"{where}.window") if "window" in inv else None
        if kind == "flow":
            if "source" not in inv or "sink" not in inv:
                raise ReferencePolicyError(where, "flow needs source and sink")
            src = _selector(_check_keys(inv["source"], _SEL_KEYS, f"{where}.source"),
                            insensitive, f"{where}.source", exprs)
            snk = _selector(_check_keys(inv["sink"], _SEL_KEYS, f"{where}.sink"),
                            insensitive, f"{where}.sink", exprs)
            invariants.append(_Invariant(iid, kind, None, src, snk, None, window, None, inv_effect))
            continue
        limit = inv.get("limit")
        if (isinstance(limit, bool) or not isinstance(limit, int | float)
                or not math.isfinite(limit) or limit < 0):
            raise ReferencePolicyError(f"{where}.limit", "a non-negative number")
        sel = _selector(inv, insensitive, where, exprs)
        total = None
        if kind == "budget":
            if "sum" not in inv:
                raise ReferencePolicyError(f"{where}.sum", "required for budget")
            total = _parse_condition(inv["sum"], f"{where}.sum")
            num_exprs.append((total, f"{where}.sum"))
        invariants.append(_Invariant(iid, kind, sel, None, None, _num(limit), window, total, inv_effect))

    typer = _Typer()
    for node, where in exprs:
        typer.constrain(typer.infer(node, where), "bool", where)
    for node, where in num_exprs:
        typer.constrain(typer.infer(node, where), "number", where)
    types = typer.finish()
    return CompiledPolicy(pid, insensitive, tuple(rules), tuple(invariants), types, escapes == "keep")


# --------------------------------------------------------------------------------------------------
# Requests and decisions
# --------------------------------------------------------------------------------------------------


def _check_numbers(v: object, where: str) -> None:
    if isinstance(v, bool):
        return
    if isinstance(v, int):
        if abs(v) > MAX_SAFE_INT:
            raise ReferenceInvalid(where, "integer outside ±(2^53-1)")
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ReferenceInvalid(where, "non-finite number")
        if abs(v) > MAX_SAFE_INT:
            raise ReferenceInvalid(where, "number outside ±(2^53-1)")
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_numbers(x, f"{where}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_numbers(x, f"{where}[{i}]")


_REQUEST_KEYS = frozenset({"principal", "action", "resource", "args", "context"})


def _request_values(request: object, insensitive: bool, keep_escapes: bool) -> dict[str, object]:
    if not isinstance(request, dict):
        raise ReferenceInvalid("request", "not an object")
    # ASSUMPTION: "anything else is an invalid request" covers unknown top-level fields too.
    unknown = set(request) - _REQUEST_KEYS
    if unknown:
        raise ReferenceInvalid(str(sorted(map(str, unknown))[0]), "unknown request field")
    values: dict[str, object] = {}
    for part in ("principal", "args", "context"):
        v = request.get(part, {})
        if not isinstance(v, dict):
            raise ReferenceInvalid(part, "not an object")
        _check_numbers(v, part)
        values[part] = v
    action = request.get("action")
    if not _valid_action(action):
        raise ReferenceInvalid("action", "dot-separated [A-Za-z0-9_-]+ segments")
    values["action"] = action
    # ASSUMPTION: a request without a resource is invalid (the generators always send one).
    values["resource"] = normalise_resource(request.get("resource"), insensitive=insensitive,
                                            keep_escapes=keep_escapes)
    return values


def _in_window(t: Fraction, now: Fraction, window: int | None) -> bool:
    if window is None:
        return t <= now  # ASSUMPTION: no window = the whole session up to now (T <= now).
    return now - window < t <= now


def _event_env(event: Mapping[str, Any], request: Mapping[str, object], insensitive: bool,
               types: Mapping[str, str]) -> _Env:
    # History events are recorded (normalised) requests: their resource is never decoded again. An
    # event without its own (non-empty) principal or context reads the current request's.
    return _Env(
        {"principal": event.get("principal") or request["principal"],
         "context": event.get("context") or request["context"], "args": event.get("args", {}),
         "action": event["action"],
         "resource": normalise_resource(event["resource"], insensitive=insensitive, decode=False)},
        types,
    )


def _violated(inv: _Invariant, env: _Env, events: list[tuple[Fraction, _Env]], now: Fraction
              ) -> bool:
    in_window = [e for t, e in events if _in_window(t, now, inv.window)]
    if inv.kind == "flow":
        assert inv.source is not None and inv.sink is not None
        if not inv.sink.matches_forbid_style(env):
            return False
        return any(inv.source.matches_forbid_style(e) for e in in_window)
    assert inv.selector is not None and inv.limit is not None
    if not inv.selector.matches_forbid_style(env):
        return False
    matching = [e for e in in_window if inv.selector.matches_forbid_style(e)]
    if inv.kind == "count":
        return len(matching) + 1 > inv.limit
    total = Fraction(0)
    for e in [*matching, env]:
        v = _eval(inv.sum, e)
        if v is ERROR:
            return True
        assert isinstance(v, Fraction)
        if v < 0:
            return True
        total += v
    return total > inv.limit


_CACHE: dict[str, CompiledPolicy] = {}


def _compiled(policy: Mapping[str, Any]) -> CompiledPolicy:
    key = json.dumps(policy, sort_keys=True, default=repr)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 512:
            _CACHE.clear()
        hit = compile_policy(policy)
        _CACHE[key] = hit
    return hit


def reference_decide(
    policy: Mapping[str, Any], request: Mapping[str, Any], *, state: Mapping[str, Any] | None,
    now: float | datetime,
) -> tuple[str, frozenset[str]]:
    """Decide `request` under `policy` per the spec: (outcome, ids listed in `Decision.rules`).

    Raises `ReferencePolicyError` for an invalid policy, `ReferenceInvalid` for an invalid request.
    """
    cp = _compiled(policy)
    values = _request_values(request, cp.insensitive, cp.keep_escapes)
    env = _Env(values, cp.types, refuse_long=True)
    now_q = _num(now.timestamp() if isinstance(now, datetime) else now)
    history = (state or {}).get("history", [])
    events = [(_num(ev["time"]), _event_env(ev, values, cp.insensitive, cp.types)) for ev in history]

    applying: dict[str, set[str]] = {"permit": set(), "forbid": set(), "require_approval": set()}
    for rule in cp.rules:
        a, r = values["action"], values["resource"]
        assert isinstance(a, str) and isinstance(r, str)
        if not rule.selector.glob_match(a, r):
            continue
        verdict = True if rule.selector.when is None else _eval(rule.selector.when, env)
        if verdict is True or (rule.effect != "permit" and verdict is ERROR):
            applying[rule.effect].add(rule.id)
    for inv in cp.invariants:
        if _violated(inv, env, events, now_q):
            applying[inv.effect].add(inv.id)

    for outcome in ("forbid", "require_approval", "permit"):
        if applying[outcome]:
            return outcome, frozenset(applying[outcome])
    return "deny", frozenset()
