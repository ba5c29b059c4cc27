"""Segment-aligned globs: `*` is exactly one segment, `**` any number of segments (even none)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_ACTION_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")


@dataclass(frozen=True)
class Glob:
    """A compiled action (`.`-separated) or resource (`/`-separated) pattern."""

    pattern: str
    separator: str
    segments: tuple[str, ...]

    @property
    def literal_prefix(self) -> tuple[str, ...]:
        """The segments before the first wildcard: every match starts with them (for indexing)."""
        prefix: list[str] = []
        for segment in self.segments:
            if segment in ("*", "**"):
                break
            prefix.append(segment)
        return tuple(prefix)

    @property
    def is_literal(self) -> bool:
        """True when the pattern has no wildcard."""
        return "*" not in self.segments and "**" not in self.segments

    def matches(self, text: str) -> bool:
        """Whole-string, segment-aligned match."""
        return _match(self.segments, tuple(text.split(self.separator)))


def glob_problem(pattern: str, separator: str) -> str | None:
    """Why `pattern` is not a valid glob (None when it is)."""
    if not pattern:
        return "a pattern cannot be empty"
    for segment in pattern.split(separator):
        if "*" in segment and segment not in ("*", "**"):
            return (f"segment {segment!r}: '*' must be a whole segment ('*' for one segment, "
                    "'**' for any number)")
        if separator == "." and segment not in ("*", "**") and not _ACTION_SEGMENT.match(segment):
            return f"segment {segment!r}: action segments are [A-Za-z0-9_-]+, so it could never match"
    return None


def compile_glob(pattern: str, separator: str) -> Glob:
    """Compile a pattern already checked by `glob_problem`."""
    return Glob(pattern, separator, tuple(pattern.split(separator)))


@lru_cache(maxsize=65536)
def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    # Iterative matcher with backtracking over the last `**` (linear for one `**`, and the
    # memoisation bounds pathological patterns).
    p = t = 0
    star_p = star_t = -1
    while t < len(parts):
        if p < len(pattern) and pattern[p] == "**":
            star_p, star_t = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == parts[t] or (pattern[p] == "*" and parts[t])):
            p += 1
            t += 1
        elif star_p >= 0:
            star_t += 1
            p, t = star_p + 1, star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "**":
        p += 1
    return p == len(pattern)
