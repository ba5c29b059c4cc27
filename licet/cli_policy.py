"""`licet policy`: check policies (several files, folders, stdin; text, JSON or GitHub annotations),
compare two versions, ask whether a pattern can be permitted, and run policy tests."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from licet import kernel
from licet.cli_inputs import STDIN, Unreadable, display_name, load_policy_file, read_document, text_of
from licet.cli_testing import run_policy_tests
from licet.cli_typer import LicetTyper
from licet.output import BAD_INPUT, console, errors, escape, exit_for, fail

policy_app = LicetTyper(help="Check, compare, query and test policies.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
POLICY_SUFFIXES = (".yaml", ".yml", ".json")


class CheckFormat(StrEnum):
    """How `policy check` reports: text (errors on stderr as FILE:LINE:COL) or GitHub annotations."""

    text = "text"
    github = "github"


@dataclass
class CheckedFile:
    """One file's result: the policy it holds, or the errors that make it invalid or unreadable."""

    file: str
    policy: kernel.Policy | None = None
    error: kernel.PolicyError | None = None
    unreadable: str | None = None  # why the file could not be read (bad input, not an invalid policy)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """One entry of `policy check --json`."""
        out: dict[str, Any] = {"file": self.file, "valid": self.policy is not None}
        if self.policy is not None:
            out["policy"] = {
                "id": self.policy.id,
                "version": self.policy.document.get("version"),
                "hash": self.policy.hash,
                "rules": len(self.policy.rules),
                "invariants": len(self.policy.invariants),
            }
        if self.error is not None:
            out["errors"] = [
                {
                    "line": self.error.line,
                    "column": self.error.column,
                    "field": self.error.field,
                    "message": self.error.message,
                }
            ]
        if self.unreadable is not None:
            out["errors"] = [{"line": 0, "column": 0, "field": "", "message": self.unreadable}]
        out["warnings"] = self.warnings
        return out


def policy_files(paths: list[str]) -> list[str]:
    """The files to check: each file as given, each folder's *.yaml, *.yml and *.json files (directly in
    it, sorted: requests and tests kept in subfolders are not policies), `-` for standard input."""
    found: list[str] = []
    for value in paths:
        path = Path(value)
        if value != STDIN and path.is_dir():
            inside = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix in POLICY_SUFFIXES)
            if not inside:
                raise fail(f"{value}: no policy files (*.yaml, *.yml, *.json) in this folder")
            found.extend(inside)
        else:
            found.append(value)
    return found


def _rule_positions(text: str, name: str) -> dict[str, tuple[int, int]]:
    """Where each rule and invariant id is written, for pointing warnings at them."""
    from licet.kernel.document import load_document

    located = load_document(text, name)
    where: dict[str, tuple[int, int]] = {}
    for section in ("rules", "invariants"):
        for index, item in enumerate(located.value.get(section) or []):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                where[item["id"]] = located.positions.get(f"{section}[{index}]", (1, 1))
    return where


def _check_one(value: str) -> CheckedFile:
    from licet.kernel.analysis import check_policy
    from licet.server.roles import PERMISSIONS

    name = display_name(value)
    try:
        text = text_of(value)
    except Unreadable as exc:
        return CheckedFile(name, unreadable=str(exc))
    try:
        policy = kernel.load_policy(text, name)
    except kernel.PolicyError as exc:
        return CheckedFile(name, error=exc)
    positions = _rule_positions(text, name)
    warnings = [
        {
            "rule": item.rule,
            "reason": item.reason,
            "line": positions.get(item.rule, (1, 1))[0],
            "column": positions.get(item.rule, (1, 1))[1],
        }
        for item in check_policy(policy, PERMISSIONS["approvals.vote"])
    ]
    return CheckedFile(name, policy=policy, warnings=warnings)


def _github_escape(text: str, property_value: bool = False) -> str:
    # GitHub's workflow-command escaping: data escapes %, CR and LF; property values also : and ,.
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def _annotation(kind: str, file: str, line: int, column: int, message: str) -> str:
    where = f"file={_github_escape(file, True)},line={max(line, 1)},col={max(column, 1)}"
    return f"::{kind} {where}::{_github_escape(message)}"


def _report_text(result: CheckedFile) -> None:
    if result.unreadable is not None:
        return  # reported on stderr in every format (policy_check)
    if result.error is not None:
        print(result.error.render(), file=sys.stderr)
        return
    policy = result.policy
    assert policy is not None  # a CheckedFile has a policy, an error or an unreadable reason
    console.print(
        f"{escape(result.file)}: ok — policy {policy.id!r}, {len(policy.rules)} rules, "
        f"{len(policy.invariants)} invariants, {policy.hash}",
        highlight=False,
    )
    for item in result.warnings:
        console.print(
            f"{escape(result.file)}:{item['line']}:{item['column']}: [yellow]warning[/] "
            f"{escape(item['rule'])}: {escape(item['reason'])}",
            highlight=False,
        )


def _report_github(result: CheckedFile) -> None:
    if result.error is not None:
        print(
            _annotation(
                "error",
                result.file,
                result.error.line,
                result.error.column,
                f"{result.error.field}: {result.error.message}" if result.error.field else result.error.message,
            )
        )
    elif result.unreadable is not None:
        print(_annotation("error", result.file, 1, 1, result.unreadable))
    for item in result.warnings:
        print(_annotation("warning", result.file, item["line"], item["column"], f"{item['rule']}: {item['reason']}"))


@policy_app.command("check")
def policy_check(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE|FOLDER|-", help="Policy files, folders of them (*.yaml, *.yml, *.json), or - for stdin."
        ),
    ],
    json_out: JsonOption = False,
    output_format: Annotated[
        CheckFormat,
        typer.Option("--format", help="text: FILE:LINE:COL errors on stderr; github: ::error/::warning annotations."),
    ] = CheckFormat.text,
) -> None:
    """Validate policies: exit 0 if all are valid, 1 if one is invalid (FILE:LINE:COL: message), 2 if a
    file cannot be read.

    Warns (exit 0) about rules proved never to apply and about approval roles no person who may
    vote holds — checked against Licet's roles, since the CLI knows no people (the server's
    validate runs the same analysis)."""
    results = [_check_one(value) for value in policy_files(paths)]
    for result in results:
        if result.unreadable is not None:
            errors.print(
                f"[red]error:[/red] policy {escape(result.file)}: {escape(result.unreadable)}", highlight=False
            )
    if json_out:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for result in results:
            (_report_github if output_format is CheckFormat.github else _report_text)(result)
    if any(r.unreadable is not None for r in results):
        raise typer.Exit(BAD_INPUT)
    exit_for("invalid" if any(r.error is not None for r in results) else "valid")


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(metavar="OLD", help="The current policy file.")],
    new: Annotated[Path, typer.Argument(metavar="NEW", help="The proposed policy file.")],
    examples: Annotated[int, typer.Option(metavar="N", help="At most this many examples per direction.")] = 5,
    json_out: JsonOption = False,
) -> None:
    """What NEW permits that OLD did not and the reverse, with concrete example requests.

    Exit 0 if they are equivalent, 1 if they differ, 3 if the solver could not tell."""
    from licet.kernel.analysis import diff

    result = diff(load_policy_file(old), load_policy_file(new), max_examples=examples)
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_diff(result)
    exit_for(result.answer)


def _print_diff(result: Any) -> None:
    if result.answer == "unknown":
        console.print(f"[red]unknown[/]: {escape(str(result.reason))}")
    else:
        console.print("[green]equivalent[/]" if result.equivalent else "[yellow]the versions differ[/]")
    for title, found in (("newly permitted", result.gained), ("no longer permitted", result.lost)):
        for example in found:
            console.print(
                f"[bold]{title}[/]: {escape(json.dumps(example.request))} "
                f"rules={escape(json.dumps(dict(example.rules)))}"
                f" history={len(example.state.get('history', []))} event(s)",
                highlight=False,
            )
    for item in result.never_applies:
        console.print(
            f"[yellow]never applies[/] {escape(item.policy)}:{escape(item.rule)}: {escape(item.reason)}",
            highlight=False,
        )


@policy_app.command("query")
def policy_query(
    policy: Annotated[Path, typer.Argument(metavar="POLICY", help="Policy file.")],
    pattern: Annotated[
        str, typer.Argument(metavar="PATTERN", help="File, - for stdin, or inline JSON/YAML: {action, resource, when}.")
    ],
    json_out: JsonOption = False,
) -> None:
    """Can any request matching PATTERN be permitted? An example, or a proof that none can.

    Exit 0 for yes (an example is printed), 1 for no (proved), 3 if the solver could not tell."""
    from licet.kernel.analysis import query

    document = read_document(pattern, "query")
    if not isinstance(document, dict):
        raise fail("query: expected a mapping with action, resource and/or when")
    loaded = load_policy_file(policy)
    try:
        answer = query(loaded, document)
    except kernel.LicetError as exc:
        raise fail(f"query: {exc}") from exc
    if json_out:
        print(json.dumps(answer.to_json(), indent=2))
    elif answer.answer == "yes" and answer.example is not None:
        console.print(
            f"[yellow]yes[/]: {escape(json.dumps(answer.example.request))} "
            f"(re-decided: permit; history {escape(json.dumps(answer.example.state))})",
            highlight=False,
        )
    elif answer.answer == "no":
        console.print("[green]no[/]: no request matching the pattern can be permitted (unsat)")
    else:
        console.print(f"[red]unknown[/]: {escape(str(answer.reason))}")
    exit_for(answer.answer)


@policy_app.command("test")
def policy_test(
    paths: Annotated[
        list[str], typer.Argument(metavar="FILE|FOLDER", help="Test files, or folders searched for tests/*.yaml.")
    ],
    policy: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The policy under test, for test files that name none.")
    ] = None,
    junit: Annotated[Path | None, typer.Option(metavar="FILE", help="Also write a JUnit XML report here.")] = None,
    json_out: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list passing cases.")] = False,
) -> None:
    """Run policy test files: each case decides a request (with optional session history and time) and
    compares the decision, and optionally its rules and approval, with what the case expects.

    Prints each failure with the actual proof in words, then the rules no case exercised.
    Exit 0 if every case passed, 1 if one failed, 2 if a test file or policy is invalid."""
    report = run_policy_tests(paths, policy)
    report.print(verbose=verbose, json_out=json_out)
    if junit is not None:
        try:
            report.write_junit(junit)
        except OSError as exc:
            raise fail(f"--junit {junit}: {exc.strerror}") from exc
        errors.print(f"JUnit report written to {escape(str(junit))}", highlight=False)
    exit_for("passed" if report.passed else "failed")
