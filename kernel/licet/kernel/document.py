"""YAML/JSON documents read into plain values that remember where each value came from."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from licet.kernel.errors import PolicyError


@dataclass(frozen=True)
class Located:
    """A parsed document plus the (line, column) of every value, keyed by its field path."""

    value: Any
    positions: Mapping[str, tuple[int, int]]
    file: str
    # Where a string value's first character sits and how many columns its quote adds, for
    # pointing inside it (a condition's own line/column): (line, column, quote_width, block).
    text_starts: Mapping[str, tuple[int, int, int, bool]] = field(default_factory=dict)

    def inner_position(self, field: str, line: int, column: int) -> tuple[int, int]:
        """File position of (line, column) inside the string value at `field` (both 1-based)."""
        start = self.text_starts.get(field)
        if start is None:
            return self.positions.get(field, (1, 1))
        first_line, first_column, quote, block = start
        if block:
            return first_line + line, column + first_column - 1
        if line == 1:
            return first_line, first_column + quote + column - 1
        return first_line + line - 1, column

    def error(self, field: str, message: str) -> PolicyError:
        """A `PolicyError` pointing at `field` (or its nearest located ancestor)."""
        probe = field
        while probe and probe not in self.positions:
            probe = _parent(probe)
        line, column = self.positions.get(probe, (1, 1))
        return PolicyError(message, file=self.file, line=line, column=column, field=field)


def _parent(field: str) -> str:
    cut = max(field.rfind("."), field.rfind("["))
    return field[:cut] if cut > 0 else ""


def child(path: str, key: str | int) -> str:
    """The field path of `key` inside `path` (`rules[2].when`)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_BOOLS = {"true": True, "false": False}
# YAML 1.1 line breaks that YAML 1.2 reads as ordinary characters (PyYAML speaks 1.1: it folds a raw
# NEL inside a quoted scalar to a space and counts all three as new lines).
_YAML11_BREAKS = "\x85\u2028\u2029"


def _shield_breaks(text: str) -> tuple[str, dict[int, str]]:
    """`text` with each YAML 1.1-only line break replaced by a private-use character absent from it
    (one for one, so positions hold), and the table that puts them back."""
    present = [c for c in _YAML11_BREAKS if c in text]
    if not present:
        return text, {}
    free = (chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
    stand_ins = {c: next(free) for c in present}
    return text.translate({ord(c): v for c, v in stand_ins.items()}), {ord(v): c for c, v in stand_ins.items()}


def _code_points(text: str, where: str, doc_error: Any, node: yaml.Node) -> str:
    # JSON writes a character beyond the BMP as a surrogate pair of escapes, which YAML decodes one
    # escape at a time: a pair is the one code point it encodes, a lone surrogate is an error.
    if text.isascii() or not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError as exc:
        raise doc_error(where, "a lone surrogate escape (only a high-low pair is a code point)", node) from exc


def _scalar(node: yaml.ScalarNode, where: str, doc_error: Any, breaks: dict[int, str]) -> Any:
    # YAML 1.2 core schema: only true/false are booleans, so `no` or `on` stay strings.
    tag, text = node.tag, _code_points(node.value.translate(breaks), where, doc_error, node)
    if node.style in ("'", '"'):  # libyaml gives plain scalars the style '', PyYAML None
        return text
    if tag.endswith(":bool"):
        return _BOOLS.get(text.lower(), text)
    if tag.endswith(":int"):
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            return text
    if tag.endswith(":float"):
        try:
            value = float(text.replace("_", ""))
        except ValueError:  # YAML 1.1's .inf and .nan, or a base-60 1:30.5: not finite, or a string (1.2)
            if text.lstrip("+-").lower() in (".inf", ".nan"):
                raise doc_error(where, f"number {text!r} is not finite") from None
            return text
        if not math.isfinite(value):
            raise doc_error(where, f"number {text!r} is not finite")
        return value
    if tag.endswith(":null"):
        return None
    if tag.endswith(":str"):
        return text
    raise doc_error(where, f"unsupported YAML tag {tag}")


MAX_DEPTH = 64


# Where libyaml and PyYAML were seen to differ (tests/test_document_parsers.py): libyaml accepts tabs
# PyYAML refuses, reads tags, a byte-order mark, document markers, directives and explicit keys ("? ")
# elsewhere, and puts some nodes at other columns. A document holding any of these is read by PyYAML.
_PYYAML_ONLY = re.compile(r"[\t\r\ufeff%!]|^(?:---|\.\.\.)|(?:^|[\s\[{,])\?(?:\s|$)", re.MULTILINE)


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree. libyaml (C, when PyYAML was built with it) composes a large policy
    about nine times faster than PyYAML's Python parser, which stays the reference: libyaml reads only
    documents free of the constructs where the two differ, and a document it refuses (it also refuses
    the surrogate-pair escapes JSON writes for characters beyond the BMP) is composed again by PyYAML,
    whose answer and error messages are the ones given. Both nest at most 1 000 levels deep, so
    neither recurses without bound."""
    if yaml.__with_libyaml__ and not _PYYAML_ONLY.search(text):
        with contextlib.suppress(yaml.YAMLError, UnicodeError):
            return _compose_with(yaml.CSafeLoader, text)
    return _compose_with(yaml.SafeLoader, text)


def _compose_with(loader_class: Any, text: str) -> yaml.Node | None:
    loader = loader_class(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def load_document(text: str, file: str) -> Located:
    """Parse YAML (and so JSON) text; duplicate keys and anchors/aliases are errors."""
    positions: dict[str, tuple[int, int]] = {}
    text_starts: dict[str, tuple[int, int, int, bool]] = {}

    def fail(where: str, message: str, node: yaml.Node | None = None) -> PolicyError:
        if node is not None:
            return PolicyError(
                message, file=file, line=node.start_mark.line + 1,
                column=node.start_mark.column + 1, field=where,
            )
        return Located(None, positions, file).error(where, message)

    seen: set[int] = set()

    def build(node: yaml.Node, where: str, depth: int = 0) -> Any:
        # The composer hands back the anchored node itself for every alias; refusing a second
        # visit rules out alias bombs and shared structure alike.
        if depth > MAX_DEPTH:
            raise fail(where, f"nested more than {MAX_DEPTH} levels deep", node)
        if id(node) in seen:
            raise fail(where, "YAML aliases are not allowed in policies", node)
        seen.add(id(node))
        positions[where] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            style = node.style or ""
            text_starts[where] = (node.start_mark.line + 1, node.start_mark.column + 1,
                                  1 if style in ("'", '"') and style else 0, style in ("|", ">") and bool(style))
            return _scalar(node, where, fail, breaks)
        if isinstance(node, yaml.SequenceNode):
            return [build(item, child(where, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise fail(where, "mapping keys must be strings", key_node)
                key = _code_points(key_node.value.translate(breaks), child(where, key_node.value), fail, key_node)
                if key in out:
                    raise fail(child(where, key), f"duplicate key {key!r}", key_node)
                out[key] = build(value_node, child(where, key), depth + 1)
                # Point errors about a field at its key, where a reader looks for it.
                positions[child(where, key)] = (key_node.start_mark.line + 1,
                                                key_node.start_mark.column + 1)
            return out
        raise fail(where, "unsupported YAML node", node)

    shielded, breaks = _shield_breaks(text)
    try:
        root = _compose(shielded)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyError(f"not valid YAML/JSON: {exc.problem or exc}", file=file,
                          line=line, column=column) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML/JSON: {exc}", file=file, line=1, column=1) from exc
    except RecursionError as exc:  # the YAML composer recurses once per nesting level
        raise PolicyError(f"nested more than {MAX_DEPTH} levels deep", file=file, line=1, column=1) from exc
    if root is None:
        raise PolicyError("the document is empty", file=file, line=1, column=1)
    return Located(build(root, ""), positions, file, text_starts)


def locate_value(value: Any, file: str) -> Located:
    """Wrap an already-parsed document (no positions are known; errors point at line 1)."""
    return Located(value, {}, file)
