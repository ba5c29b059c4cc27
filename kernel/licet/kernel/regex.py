"""Regular expressions in conditions: a documented RE2-compatible subset, run with RE2 meaning.

Python's `re` differs from RE2 in a few places that matter for a policy: `$` also matches before
a final newline, `\\d` `\\w` `\\s` are Unicode-aware, and `\\v` counts as space. Patterns are checked
against the subset and translated so that `re` gives RE2's answers: `$` and `\\z` mean the end of
the text, classes are ASCII, and `\\s` is RE2's `[\\t\\n\\f\\r ]`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from re import _parser as sre_parse  # the stdlib regex parser: the only exact way to vet a pattern

_FORBIDDEN = {
    sre_parse.GROUPREF: "backreferences",
    sre_parse.GROUPREF_EXISTS: "conditionals",
    sre_parse.ASSERT: "lookaround",
    sre_parse.ASSERT_NOT: "lookaround",
    sre_parse.ATOMIC_GROUP: "atomic groups",
    sre_parse.POSSESSIVE_REPEAT: "possessive repeats",
}
_SPACE = "\\t\\n\\f\\r "


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped == "Z":
                raise ValueError("\\Z is not RE2: use \\z or $ for the end of the text")
            if escaped == "z":
                out.append("\\Z")
            elif escaped in "sS":
                if in_class and escaped == "S":
                    raise ValueError("\\S inside a character class is not supported")
                out.append(_SPACE if in_class else f"[{'^' if escaped == 'S' else ''}{_SPACE}]")
            else:
                out.append(pattern[i: i + 2])
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A leading ^ and a leading ] belong to the class itself.
            if i < len(pattern) and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < len(pattern) and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        elif char == "$":
            out.append("\\Z")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is outside the supported subset (None when it is inside)."""
    try:
        translated = _translate(pattern)
        parsed = sre_parse.parse(translated, re.ASCII)
    except (re.error, ValueError) as exc:
        return f"invalid regular expression: {exc}"
    stack: list[object] = [parsed]
    while stack:
        item = stack.pop()
        if isinstance(item, sre_parse.SubPattern):
            stack.extend(item.data)
        elif isinstance(item, tuple) and len(item) == 2:
            op, argument = item
            if op in _FORBIDDEN:
                return f"regular expressions with {_FORBIDDEN[op]} are not supported"
            stack.append(argument)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return None


@lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> re.Pattern[str]:
    """The compiled form of a pattern already accepted by `regex_problem`, with RE2 meaning."""
    return re.compile(_translate(pattern), re.ASCII)


def search(pattern: str, text: str) -> bool:
    """RE2 partial match: does `pattern` match anywhere in `text`?"""
    return compile_regex(pattern).search(text) is not None
