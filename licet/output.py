"""Output shared by the CLI's command groups: consoles, the exit-code table, error exits, check tables."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape as escape  # re-exported: every command group escapes user text with it
from rich.table import Table

from licet.kernel.report import Check, all_ok

# The exit-code table every command follows (docs/cli.md): a CI step can tell the answer to the
# question the command asked from bad input, and both from "a person must decide" or "could not tell".
POSITIVE = 0
NEGATIVE = 1
BAD_INPUT = 2
UNDECIDED = 3
# Licet itself failed (an uncaught exception, i.e. a bug): kept apart from NEGATIVE so a crash is
# never read as a "no" or a "forbid".
INTERNAL_ERROR = 4

ANSWER_CODES: dict[str, int] = {
    **dict.fromkeys(("permit", "safe", "equivalent", "yes", "valid", "verified", "attenuates", "passed"), POSITIVE),
    **dict.fromkeys(("forbid", "deny", "unsafe", "differs", "no", "invalid", "failed", "widens"), NEGATIVE),
    **dict.fromkeys(("require_approval", "needs_approval", "unknown"), UNDECIDED),
}


def exit_for(answer: str) -> None:
    """Exit with the table's code for `answer` (return normally, i.e. 0, on a positive answer)."""
    code = ANSWER_CODES[answer]
    if code != POSITIVE:
        raise typer.Exit(code)


# Piped to a file or another program, output is for that program: one line per line (no wrapping at
# the 80 columns rich assumes without a terminal) and no colour. On a terminal rich uses its width
# and colour (honouring NO_COLOR). The width is decided once, from the real streams at start-up.
UNWRAPPED = 1 << 20
PIPED = not os.isatty(1)  # standard output goes to a file or a program, not a person's terminal


def _console(stderr: bool) -> Console:
    if not os.isatty(2 if stderr else 1):
        return Console(stderr=stderr, width=UNWRAPPED, soft_wrap=True, color_system=None, highlight=False)
    return Console(stderr=stderr)


console = _console(stderr=False)
errors = _console(stderr=True)


def fail(message: str, code: int = BAD_INPUT) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


def print_checks(checks: list[Check], json_out: bool, extra: dict[str, Any] | None = None) -> None:
    """Print verification checks as JSON or a table; exit 1 unless all passed."""
    ok = all_ok(checks)
    if json_out:
        print(json.dumps({"ok": ok, **(extra or {}), "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        table = Table("check", "result", "detail")
        for c in checks:
            table.add_row(escape(c.name), "[green]pass[/]" if c.ok else "[red]FAIL[/]", escape(c.detail))
        console.print(table)
    exit_for("verified" if ok else "failed")
