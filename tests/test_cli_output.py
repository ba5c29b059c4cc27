"""What the CLI prints and reads: unwrapped uncoloured output when piped, decimals, the decision in words,
readable help, several policies / stdin / --json / GitHub annotations in `policy check`, "file not
found", `--version`, delegation grant errors at FILE:LINE:COL with YAML dates, `tenant create` twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from licet.cli import app
from licet.cli_inputs import load_located
from licet.kernel.proof_text import counterexample_value_text
from tests.conftest import PAYMENTS, ROOT

runner = CliRunner()


def licet(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a CI job runs it: a separate process whose output is a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "licet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        input=stdin,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"},
    )


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "invalid.yaml").write_text(
        "id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    when: 'args.x >'\n"
    )
    (tmp_path / "request.json").write_text(
        json.dumps(
            {
                "principal": {"id": "a1", "role": "ops"},
                "action": "payments.transfer",
                "resource": "/accounts/1",
                "args": {"amount": 4999.99, "currency": "EUR"},
            }
        )
    )
    return tmp_path


def test_piped_output_is_neither_wrapped_nor_coloured(work: Path) -> None:
    deep = work / ("a-folder-with-a-rather-long-name-" * 3)
    deep.mkdir()
    (deep / "policy.yaml").write_text(PAYMENTS)
    result = licet("policy", "check", str(deep / "policy.yaml"), cwd=work)
    assert result.returncode == 0
    (line,) = result.stdout.splitlines()
    assert len(line) > 120 and line.startswith(str(deep))
    assert "\x1b[" not in result.stdout + result.stderr
    decided = licet("decide", "--policy", "policy.yaml", "--request", "request.json", cwd=work)
    assert decided.returncode == 3
    assert "\x1b[" not in decided.stdout
    assert any(len(line) > 80 for line in decided.stdout.splitlines())  # sentences stay whole


def test_decide_explains_the_outcome_in_words_with_decimals(work: Path) -> None:
    result = licet(
        "decide", "--policy", "policy.yaml", "--request", "request.json", "--now", "2026-11-22T12:00:00Z", cwd=work
    )
    assert result.returncode == 3
    out = result.stdout
    assert out.startswith("require_approval (rules: large-transfer)\n")
    assert "Outcome require_approval: the rules below apply" in out
    assert "Rule large-transfer requires approval for it: the facts that made it apply." in out
    assert "it says: actions payments.transfer; when args.amount > 1000" in out
    assert "args.amount = 4999.99" in out and "499999/100" not in out
    assert "Needs 2 approval(s) by role approver within 900 s." in out
    assert "{" not in out  # words, not a JSON dump
    raw = json.loads(licet("decide", "--policy", "policy.yaml", "--request", "request.json", "--json", cwd=work).stdout)
    assert raw["proof"]["witnesses"][0]["facts"]  # --json keeps the kernel's exact form


def test_decide_reads_the_request_from_stdin(work: Path) -> None:
    body = (work / "request.json").read_text().replace("4999.99", "10")
    result = runner.invoke(app, ["decide", "--policy", "policy.yaml", "--request", "-", "--json"], input=body)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["decision"] == "permit"


def test_plan_counterexample_values_are_decimals() -> None:
    steps = [{"action": "a", "args": {"amount": {"symbolic": "real", "min": 0}, "note": "1/2"}}]
    assert counterexample_value_text(steps, "steps[0].args.amount", "499999/100") == "4999.99"
    assert counterexample_value_text(steps, "steps[0].args.amount", 7) == "7"
    assert counterexample_value_text(steps, "steps[0].args.note", "1/2") == '"1/2"'  # a string is not a number
    assert counterexample_value_text(steps, "steps[3].args.amount", "1/2") == '"1/2"'  # no such step: shown as it is


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"licet {version('licet')}\n"


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[list[str]]:
    subcommands = getattr(group, "commands", None)
    if not subcommands:
        return [list(path)]
    return [leaf for name, command in subcommands.items() for leaf in _commands(command, (*path, name))]


ALL_COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[" ".join(c) for c in ALL_COMMANDS])
def test_help_shows_readable_metavariables(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for python_type in ("<Path>", "<str>", "<int>", "<bool>", "list[", "PATH", "TEXT", "INTEGER", "<class", "None"):
        assert python_type not in result.stdout, (command, python_type, result.stdout)


def test_policy_check_several_files_folders_and_stdin(work: Path) -> None:
    folder = work / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(PAYMENTS)
    (folder / "b.json").write_text(json.dumps({"id": "b", "rules": []}))
    (folder / "notes.txt").write_text("not a policy")
    result = licet("policy", "check", "policies", "-", cwd=work, stdin=PAYMENTS)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if " ok " in line] == [
        "policies/a.yaml",
        "policies/b.json",
        "<stdin>",
    ]
    checked = json.loads(licet("policy", "check", "policies", "invalid.yaml", "--json", cwd=work).stdout)
    assert [(c["file"], c["valid"]) for c in checked] == [
        ("policies/a.yaml", True),
        ("policies/b.json", True),
        ("invalid.yaml", False),
    ]
    assert checked[2]["errors"] == [
        {"line": 6, "column": 19, "field": "rules[0].when", "message": checked[2]["errors"][0]["message"]}
    ]


def test_policy_check_github_annotations(work: Path) -> None:
    (work / "warns.yaml").write_text(PAYMENTS.replace("role: approver", "role: nobody"))
    result = licet("policy", "check", "invalid.yaml", "warns.yaml", "--format", "github", cwd=work)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("::error file=invalid.yaml,line=6,col=19::rules[0].when: ")
    assert any(line.startswith("::warning file=warns.yaml,line=") and "large-transfer" in line for line in lines)


def test_missing_files_say_file_not_found(work: Path) -> None:
    for args in (
        ["verify", "request.json", "--public-key", "signing.pub"],
        ["decide", "--policy", "nope.yaml", "--request", "request.json"],
        ["policy", "query", "policy.yaml", "pattern.yaml"],
        ["policy", "check", "nope.yaml"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert "file not found" in result.stderr and "base64" not in result.stderr, (args, result.stderr)


PARENT_YAML = """\
id: g1
issuer: alice
delegate: bot
max_depth: 1
expires_at: 2030-01-01
scope:
  - id: s
    effect: permit
    action: payments.transfer
    when: 'args.amount <= 500'
"""


def test_delegation_files_accept_yaml_dates_and_report_located_errors(work: Path) -> None:
    (work / "parent.yaml").write_text(PARENT_YAML)
    (work / "child.yaml").write_text(
        PARENT_YAML.replace("id: g1", "id: g2\nparent: g1")
        .replace("issuer: alice", "issuer: bot")
        .replace("delegate: bot", "delegate: sub")
        .replace("max_depth: 1", "max_depth: 0")
        .replace("2030-01-01", "2029-12-31T23:00:00+01:00")
    )
    ok = runner.invoke(app, ["delegation", "check", "--parent", "parent.yaml", "--child", "child.yaml"])
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    (work / "bad.yaml").write_text(PARENT_YAML.replace("max_depth: 1", "max_depht: 1"))
    bad = runner.invoke(app, ["delegation", "check", "--parent", "bad.yaml", "--child", "child.yaml"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith(
        "bad.yaml:4:1: max_depht: unknown field 'max_depht' (allowed: delegate, "
        "expires_at, id, issuer, max_depth, parent, revoked, scope)"
    ), bad.stderr
    (work / "bad.yaml").write_text(PARENT_YAML.replace("effect: permit", "effect: allow"))
    bad = runner.invoke(app, ["delegation", "check", "--parent", "bad.yaml", "--child", "child.yaml"])
    assert bad.exit_code == 2 and bad.stderr.startswith("bad.yaml:8:5: scope[0].effect: "), bad.stderr


def test_tenant_create_of_an_existing_tenant_says_so(tmp_path: Path) -> None:
    first = runner.invoke(app, ["tenant", "create", "acme", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["tenant", "create", "acme", "--data-dir", str(tmp_path)])
    assert again.exit_code == 2
    assert "tenant acme already exists" in again.stderr


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES))
def test_yaml_timestamps_are_read_as_the_same_instant(moment: datetime) -> None:
    text = f"at: {moment.isoformat()}\nday: [{moment.date().isoformat()}]\nnaive: {moment.replace(tzinfo=None).isoformat()}\n"
    value = load_located(text, "t.yaml").value
    assert datetime.fromisoformat(value["at"]) == moment
    day = datetime.fromisoformat(value["day"][0])
    assert day == datetime(moment.year, moment.month, moment.day, tzinfo=UTC)  # a bare date is UTC midnight
    assert datetime.fromisoformat(value["naive"]) == moment.replace(tzinfo=UTC)  # YAML: no zone means UTC


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON_VALUES, min_size=1, max_size=4))
def test_documents_without_timestamps_read_as_the_kernel_reads_them(document: dict[str, object]) -> None:
    import yaml

    from licet.kernel.document import load_document

    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        expected = load_document(text, "t.yaml").value
    except Exception as exc:  # noqa: BLE001 - whatever the kernel refuses, the CLI refuses alike
        with pytest.raises(type(exc)):
            load_located(text, "t.yaml")
        return
    assert load_located(text, "t.yaml").value == expected


def _github_unescape(text: str) -> str:
    for escaped, raw in (("%0A", "\n"), ("%0D", "\r"), ("%3A", ":"), ("%2C", ","), ("%25", "%")):
        text = text.replace(escaped, raw)
    return text


@given(st.text())
def test_github_annotations_escape_what_github_unescapes(text: str) -> None:
    from licet.cli_policy import _github_escape

    assert _github_unescape(_github_escape(text)) == text and "\n" not in _github_escape(text)
    property_value = _github_escape(text, property_value=True)
    assert _github_unescape(property_value) == text and not {",", ":", "\n"} & set(property_value)
