"""Output shared by the CLI's command groups: consoles, error exits, verification tables."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from licet.kernel.report import Check, all_ok

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    errors.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def print_checks(checks: list[Check], json_out: bool, extra: dict[str, Any] | None = None) -> None:
    """Print verification checks as JSON or a table; exit 1 unless all passed."""
    ok = all_ok(checks)
    if json_out:
        print(json.dumps({"ok": ok, **(extra or {}), "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        table = Table("check", "result", "detail")
        for c in checks:
            table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
        console.print(table)
    if not ok:
        raise typer.Exit(1)
