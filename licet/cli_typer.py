"""The Typer app class every `licet` command group uses: help that names values by their metavariables,
and an uncaught exception that exits 4 (docs/cli.md, "Exit codes")."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand

from licet.output import INTERNAL_ERROR, errors


class _NamedArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        # Typer writes an argument's Python type next to its name (`POLICY <Path>`, `FILE... <list[str]>`):
        # the metavariable (POLICY, FILE...) and the help say what to give.
        return None


class LicetCommand(TyperCommand):
    """A command whose help shows each value as its metavariable (FILE, POLICY, N), never a Python type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _NamedArgument  # same fields; only how help names the type differs


class LicetTyper(typer.Typer):
    """A command group whose commands are `LicetCommand`s and whose help is plain text: flags without a
    type, paragraphs re-flowed, no box drawing when piped. Called as the program (`licet`), an uncaught
    exception (a bug) prints its traceback and exits 4, never 1, which a caller would read as "no"."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(rich_markup_mode=None, **kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[Any], Any]:
        return super().command(name, cls=kwargs.pop("cls", LicetCommand), **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the last resort: whatever escaped is reported, never exit 1
            traceback.print_exc()
            errors.print(
                "[red]licet failed unexpectedly[/] (exit 4): this is a bug; please report it with the traceback above",
                highlight=False,
            )
            sys.exit(INTERNAL_ERROR)
