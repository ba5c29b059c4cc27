"""Reading the CLI's inputs: files or standard input (`-`), inline documents, policies, times.

Every failure here is bad input (exit 2) and names the file and what is wrong with it; a path that does
not exist says "file not found" rather than whatever an inline reading of the same text would say.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from licet import kernel
from licet.kernel.document import Located, load_document
from licet.output import BAD_INPUT, fail

STDIN = "-"
# Inline keys are JSON or long texts without a file suffix (base64 of 32 bytes is 44 characters, a note
# verifier key longer still): anything shorter, or named like a file, that names no file was meant as one.
INLINE_KEY_LENGTH = 40
T = TypeVar("T")


class Unreadable(Exception):
    """A file that cannot be read; the message says why ("file not found", ...)."""


def text_of(path: Path | str) -> str:
    """The text of `path`, or of standard input when it is `-`; raises `Unreadable`."""
    if str(path) == STDIN:
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise Unreadable("file not found") from exc
    except IsADirectoryError as exc:
        raise Unreadable("is a folder, not a file") from exc
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise Unreadable("not UTF-8 text") from exc


def read_text(path: Path | str, what: str) -> str:
    """The text of `path`, or of standard input when it is `-`; a file that cannot be read is bad input."""
    try:
        return text_of(path)
    except Unreadable as exc:
        raise fail(f"{what} {path}: {exc}") from exc


def display_name(path: Path | str) -> str:
    """How a file is named in messages: `<stdin>` for `-`."""
    return "<stdin>" if str(path) == STDIN else str(path)


def read_json(path: Path | str, what: str) -> Any:
    """A JSON document from a file (or `-`)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise fail(f"{what} {display_name(path)}: not valid JSON ({exc})") from exc


def read_document(value: str, what: str) -> Any:
    """A JSON/YAML document from a file, `-` (standard input), or given inline. An inline document is a
    mapping or a list: anything else that names no file is reported as a file not found."""
    import yaml

    if value != STDIN and not Path(value).is_file():
        return _inline_document(value, what)
    text = read_text(value, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(f"{what} {display_name(value)}: not valid JSON/YAML ({exc})") from exc


def _inline_document(value: str, what: str) -> Any:
    import yaml

    try:
        document = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        if value.lstrip().startswith(("{", "[")):
            raise fail(f"{what} (inline): not valid JSON/YAML ({exc})") from exc
        raise fail(f"{what} {value}: file not found") from exc
    if not isinstance(document, (dict, list)):
        raise fail(f"{what} {value}: file not found (nor an inline JSON/YAML mapping)")
    return document


def file_or_inline(value: str, what: str, parse: Callable[[str], T]) -> T:
    """`parse` applied to the file named `value`, or to `value` itself when no such file exists (a key
    given inline). A value that is neither says "file not found" unless it looks like an inline key."""
    path = Path(value)
    if path.is_file() or value == STDIN:
        text = read_text(value, what)
        try:
            return parse(text)
        except kernel.LicetError as exc:
            raise fail(f"{what} {display_name(value)}: {exc}") from exc
    try:
        return parse(value)
    except kernel.LicetError as exc:
        if value.lstrip().startswith("{") or (len(value) >= INLINE_KEY_LENGTH and not path.suffix):
            raise fail(f"{what}: not a valid inline {what} ({exc}), nor a file") from exc
        raise fail(f"{what} {value}: file not found") from exc


def load_policy_text(text: str, name: str) -> kernel.Policy:
    """Validate a policy; errors are printed as FILE:LINE:COL and exit 2."""
    try:
        return kernel.load_policy(text, name)
    except kernel.PolicyError as exc:
        print(exc.render(), file=sys.stderr)
        raise typer.Exit(BAD_INPUT) from exc


def load_policy_file(path: Path | str) -> kernel.Policy:
    """Read and validate a policy file (or `-`); errors are printed as FILE:LINE:COL and exit 2."""
    return load_policy_text(read_text(path, "policy"), display_name(path))


def moment(value: Any) -> datetime:
    """A moment from epoch seconds, an ISO 8601 text with a zone, or a YAML timestamp (a YAML time
    without a zone, or a bare date, is UTC by the YAML specification); ValueError says what is wrong."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return _iso_time(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"{value!r} is not a representable time") from exc
    raise ValueError(f"not epoch seconds or an ISO 8601 time: {value!r}")


def _iso_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not epoch seconds or an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (write e.g. 2026-11-22T12:00:00Z)")
    return parsed


def parse_now(value: str | None) -> datetime:
    """`--now`: epoch seconds or ISO 8601 with a zone; the current time when not given."""
    if value is None:
        return datetime.now(UTC)
    try:
        return moment(value)
    except ValueError as exc:
        raise fail(f"--now: {exc}") from exc


def _timestamps_as_text(text: str) -> str:
    """`text` with each plain YAML timestamp (`2030-01-01`, `2030-01-01T00:00:00Z`) written as a quoted
    ISO 8601 text with its zone (UTC when it has none, as YAML specifies). The kernel's document reader
    keeps to JSON's types and refuses timestamps; test and grant files date things, and people write
    dates unquoted. Text that does not parse is returned as it is, for that reader to report."""
    import yaml
    from yaml.constructor import SafeConstructor

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return text
    spans: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if id(node) in seen:  # an alias: the document reader refuses those with a position
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            pending.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp" and not node.style:
            try:
                shown = moment(SafeConstructor().construct_yaml_timestamp(node)).isoformat()
            except ValueError:  # shaped like a date but not one (2030-02-30): a text, refused where it is read
                shown = node.value
            spans.append((node.start_mark.index, node.end_mark.index, json.dumps(shown)))
    for start, end, quoted in sorted(spans, reverse=True):
        text = text[:start] + quoted + text[end:]
    return text


def load_located(text: str, name: str) -> Located:
    """A YAML/JSON document with the position of every value (kernel.document), YAML timestamps read as
    ISO 8601 texts; raises `kernel.PolicyError` (FILE:LINE:COL)."""
    return load_document(_timestamps_as_text(text), name)
