"""Regular expressions of conditions as Z3 regular languages, for the policy analysis.

`matches` is decided by Python's `re` on the pattern as `kernel.regex` translates it, so the
translation here reads that same translated pattern with the stdlib parser and builds the Z3 regex
of the language `re.search` accepts. What has no exact Z3 counterpart — word boundaries, anchors
anywhere but at the ends of a top-level alternative, case-insensitive flags, characters beyond Z3's
alphabet — gives None, and the analysis then treats the test as an unknown Boolean (sound, but
answers may become "unknown").
"""

from __future__ import annotations

import re
from re import _constants as sre  # the stdlib regex parser's opcodes
from re import _parser as sre_parse  # the only exact reading of what `re` will run

import z3

from licet.kernel.regex import compile_regex

# Z3's string alphabet ends here (its default "unicode" encoding); patterns naming characters
# beyond it are left to the unknown Boolean.
MAX_CHAR = 0x2FFFF
_ASCII_SPACE = " \t\n\r\f\v"


class _Unsupported(Exception):
    """The pattern uses a construct with no exact Z3 counterpart here."""


def search_language(pattern: str, ctx: z3.Context) -> z3.ReRef | None:
    """The Z3 regex of the strings `matches(pattern)` accepts (partial match), or None."""
    compiled = compile_regex(pattern)
    if compiled.flags & re.IGNORECASE:
        return None
    try:
        parsed = sre_parse.parse(compiled.pattern, re.ASCII)
        if parsed.state.flags & re.IGNORECASE:
            return None
        return _Builder(ctx).search(list(parsed))
    except _Unsupported:
        return None


class _Builder:
    def __init__(self, ctx: z3.Context) -> None:
        self.ctx = ctx
        self.sort = z3.ReSort(z3.StringSort(ctx))
        self.all = z3.Full(self.sort)
        self.char = z3.AllChar(self.sort)

    def search(self, items: list[object]) -> z3.ReRef:
        branches = [items]
        if len(items) == 1 and _op(items[0]) is sre.BRANCH:
            branches = [list(b) for b in items[0][1][1]]  # type: ignore[index]
        parts = []
        for branch in branches:
            start = bool(branch) and _is_anchor(branch[0], start=True)
            rest = branch[1:] if start else branch
            end = bool(rest) and _is_anchor(rest[-1], start=False)
            body = rest[:-1] if end else rest
            parts.append(z3.Concat(
                self.word("") if start else self.all, self.seq(body), self.word("") if end else self.all))
        return parts[0] if len(parts) == 1 else z3.Union(*parts)

    def word(self, text: str) -> z3.ReRef:
        return z3.Re(z3.StringVal(text, self.ctx))

    def seq(self, items: list[object]) -> z3.ReRef:
        if not items:
            return self.word("")
        parts = [self.item(item) for item in items]
        return parts[0] if len(parts) == 1 else z3.Concat(*parts)

    def item(self, item: object) -> z3.ReRef:
        op = _op(item)
        arg = item[1]  # type: ignore[index]
        if op is sre.LITERAL:
            return self.word(_char(arg))
        if op is sre.NOT_LITERAL:
            return z3.Intersect(self.char, z3.Complement(self.word(_char(arg))))
        if op is sre.ANY:
            return z3.Intersect(self.char, z3.Complement(self.word("\n")))
        if op is sre.IN:
            return self.charset(arg)
        if op is sre.BRANCH:
            return z3.Union(*[self.seq(list(b)) for b in arg[1]])
        if op is sre.SUBPATTERN:
            _group, add_flags, _del_flags, sub = arg
            if add_flags & re.IGNORECASE:
                raise _Unsupported
            return self.seq(list(sub))
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = arg
            body = self.seq(list(sub))
            fixed = self.word("") if low == 0 else z3.Loop(body, low, low)
            if high is sre.MAXREPEAT:
                return z3.Concat(fixed, z3.Star(body))
            if high == low:
                return fixed
            return z3.Concat(fixed, z3.Loop(z3.Union(body, self.word("")), high - low, high - low))
        raise _Unsupported  # anchors inside, word boundaries, and anything else

    def charset(self, items: list[tuple[object, object]]) -> z3.ReRef:
        negate = bool(items) and items[0][0] is sre.NEGATE
        pieces = []
        for op, arg in items[1:] if negate else items:
            if op is sre.LITERAL:
                pieces.append(self.word(_char(arg)))
            elif op is sre.RANGE:
                assert isinstance(arg, tuple)
                low, high = int(arg[0]), int(arg[1])
                if high > MAX_CHAR:
                    raise _Unsupported
                pieces.append(z3.Range(chr(low), chr(high), ctx=self.ctx))
            elif op is sre.CATEGORY:
                pieces.append(self.category(arg))
            else:
                raise _Unsupported
        union = z3.Union(*pieces) if len(pieces) > 1 else pieces[0] if pieces else z3.Empty(self.sort)
        return z3.Intersect(self.char, z3.Complement(union)) if negate else union

    def category(self, name: object) -> z3.ReRef:
        ranges = {
            sre.CATEGORY_DIGIT: (False, "09"), sre.CATEGORY_NOT_DIGIT: (True, "09"),
            sre.CATEGORY_WORD: (False, "azAZ09__"), sre.CATEGORY_NOT_WORD: (True, "azAZ09__"),
            sre.CATEGORY_SPACE: (False, None), sre.CATEGORY_NOT_SPACE: (True, None),
        }
        if name not in ranges:
            raise _Unsupported
        negate, spans = ranges[name]
        if spans is None:
            union = z3.Union(*[self.word(c) for c in _ASCII_SPACE])
        else:
            union = z3.Union(*[z3.Range(spans[i], spans[i + 1], ctx=self.ctx) for i in range(0, len(spans), 2)])
        return z3.Intersect(self.char, z3.Complement(union)) if negate else union


def _op(item: object) -> object:
    return item[0] if isinstance(item, tuple) else None


def _is_anchor(item: object, *, start: bool) -> bool:
    if _op(item) is not sre.AT:
        return False
    where = item[1]  # type: ignore[index]
    return where in ((sre.AT_BEGINNING, sre.AT_BEGINNING_STRING) if start else (sre.AT_END_STRING,))


def _char(code: object) -> str:
    assert isinstance(code, int)
    if code > MAX_CHAR:
        raise _Unsupported
    return chr(code)
