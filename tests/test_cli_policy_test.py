"""`licet policy test`: the examples' expected-outcome tables run as policy tests through the CLI (as a CI
job would), failures print the actual proof in words, coverage names the rules no case exercised, JUnit
XML for CI panels, and every mistake in a test file is a FILE:LINE:COL error naming the field."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from licet.cli import app
from tests.conftest import PAYMENTS, ROOT

runner = CliRunner()
EXAMPLES = ROOT / "examples"
EXAMPLE_POLICIES = ("payments-agent", "devops-agent", "support-agent")


def licet(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "licet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _readme_rows(policy: str) -> dict[str, tuple[str, list[str]]]:
    """examples/README.md's table for `policy`: request -> (expected decision, rules)."""
    section = (EXAMPLES / "README.md").read_text().split(f"### {policy}\n", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            expected = cells[2].strip("*")
            rows[cells[0].strip("`")] = (
                "invalid" if expected == "invalid request" else expected,
                [r.strip() for r in cells[3].split(",") if r.strip()],
            )
    return rows


@pytest.mark.parametrize("policy", EXAMPLE_POLICIES)
def test_the_example_test_files_restate_the_readme_tables(policy: str) -> None:
    """Every row of the README's table is a case with the same decision and rules (and nothing else)."""
    import yaml

    document = yaml.safe_load((EXAMPLES / policy / "tests" / "expected-outcomes.yaml").read_text())
    cases = {case["name"]: (case["decision"], case.get("rules", [])) for case in document["cases"]}
    assert cases == _readme_rows(policy)
    requests = {p.stem for p in (EXAMPLES / "requests" / policy).glob("*.json") if ".state" not in p.name}
    assert set(cases) == requests  # one case per example request


def test_the_examples_pass_through_the_cli_with_coverage_and_junit(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = licet("policy", "test", "examples/", "--junit", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed: 64 of 64 cases passed in 3 file(s)" in result.stdout
    for policy in EXAMPLE_POLICIES:
        assert re.search(
            rf"^coverage {policy} \(.*{policy}\.yaml\): \d+/\d+ rules and invariants exercised", result.stdout, re.M
        ), result.stdout
    suites = ET.parse(report).getroot()
    assert suites.tag == "testsuites" and suites.get("tests") == "64" and suites.get("failures") == "0"
    assert sorted(s.get("name", "") for s in suites) == sorted(
        f"examples/{p}/tests/expected-outcomes.yaml" for p in EXAMPLE_POLICIES
    )
    assert len(suites.findall(".//testcase")) == 64 and not suites.findall(".//failure")


def test_coverage_names_the_rules_no_case_exercised() -> None:
    out = json.loads(licet("policy", "test", "examples/payments-agent/tests/expected-outcomes.yaml", "--json").stdout)
    (coverage,) = out["coverage"]
    # `exercised` and `never` partition the policy's rules and invariants.
    every = {
        "read-accounts",
        "transfer",
        "refund",
        "large-transfer",
        "large-refund",
        "money-needs-mfa",
        "sanctioned-countries",
        "blocked-currencies",
        "no-account-admin",
        "daily-transfer-budget",
        "hourly-refund-count",
    }
    assert set(coverage["exercised"]) | set(coverage["never"]) == every
    assert not set(coverage["exercised"]) & set(coverage["never"])
    assert coverage["never"] == []  # the README's table exercises every rule of the payments policy


FAILING = """\
policy: policy.yaml
now: 2026-11-22T12:00:00Z
cases:
  - name: large transfer is fine
    request:
      principal: {id: a1, role: ops}
      action: payments.transfer
      resource: /accounts/1
      args: {amount: 4999.99, currency: EUR}
    decision: permit
  - name: small transfer
    request: {principal: {id: a1}, action: payments.transfer, resource: /accounts/1,
              args: {amount: 10, currency: EUR}}
    decision: permit
    rules: [transfer]
"""


def test_a_failing_case_prints_the_actual_proof_in_words_and_fails_the_job(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "transfers.yaml").write_text(FAILING.replace("policy.yaml", "../policy.yaml"))
    result = licet("policy", "test", ".", "--junit", "report.xml", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "FAIL tests/transfers.yaml:4 large transfer is fine" in out
    assert "expected permit, got require_approval" in out
    # The proof in words, numbers in decimals (the kernel's proof holds "499999/100").
    assert "Rule large-transfer requires approval for it" in out
    assert "args.amount = 4999.99" in out and "499999/100" not in out
    assert "Needs 2 approval(s) by role approver within 900 s." in out
    assert "FAILED: 1 of 2 cases passed in 1 file(s)" in out
    assert re.search(r"^coverage payments-agent .*: 2/8 rules and invariants exercised; never: read-api, ", out, re.M)
    assert "\x1b[" not in out  # piped: no colour
    failure = ET.parse(tmp_path / "report.xml").getroot().find(".//testcase[@name='large transfer is fine']/failure")
    assert failure is not None and failure.get("message") == "expected permit, got require_approval"
    assert "args.amount = 4999.99" in (failure.text or "")


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("decision: require_approval\n    approval: {quorum: 3}", "expected approval quorum 3, got 2"),
        (
            "decision: require_approval\n    approval: {role: approver, ttl_seconds: 900}\n    rules: [transfer]",
            "expected rules [transfer], got [large-transfer]",
        ),
    ],
)
def test_approval_and_rule_expectations_are_checked(tmp_path: Path, case: str, expect: str) -> None:
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "t.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - name: c\n    request: {principal: {id: a}, action: payments.transfer, "
        "resource: /accounts/1, args: {amount: 1500, currency: EUR}}\n    " + case + "\n"
    )
    result = runner.invoke(app, ["policy", "test", str(tmp_path / "t.yaml")])
    assert result.exit_code == 1 and expect in result.stdout
    passing = case.replace("quorum: 3", "quorum: 2").replace("rules: [transfer]", "rules: [large-transfer]")
    (tmp_path / "t.yaml").write_text((tmp_path / "t.yaml").read_text().replace(case, passing))
    assert runner.invoke(app, ["policy", "test", str(tmp_path / "t.yaml")]).exit_code == 0


def test_inline_history_with_yaml_dates_and_invalid_requests(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "t.yaml").write_text("""\
policy: policy.yaml
now: 2026-11-22T12:00:00Z
cases:
  - name: over budget after this morning's transfers
    request: {principal: {id: a}, action: payments.transfer, resource: /accounts/1, args: {amount: 900, currency: EUR}}
    state:
      history:
        - {time: 2026-11-22T08:00:00Z, action: payments.transfer, resource: /accounts/1, args: {amount: 4500}}
    decision: forbid
    rules: [daily-budget]
  - name: a day later the window has passed
    request: {principal: {id: a}, action: payments.transfer, resource: /accounts/1, args: {amount: 900, currency: EUR}}
    state: {history: [{time: 2026-11-22T08:00:00Z, action: payments.transfer, resource: /accounts/1, args: {amount: 4500}}]}
    now: 2026-11-24  # a bare date: midnight UTC, 40 hours after the transfer
    decision: permit
  - name: traversal
    request: {action: db.delete, resource: /a/../../etc}
    decision: invalid
    error: climbs above the root
""")
    result = runner.invoke(app, ["policy", "test", str(tmp_path / "t.yaml"), "-v"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.count("ok   ") == 3


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "policy: policy.yaml\ncases:\n  - {name: a, request: r.json, decison: permit}\n",
            "t.yaml:3:32: cases[0].decison: unknown field 'decison' (allowed: approval, decision, description, error, "
            "name, now, request, rules, state)",
        ),
        (
            "policy: policy.yaml\ncases:\n  - name: a\n    request: r.json\n    decision: allow\n",
            "t.yaml:5:5: cases[0].decision: must be one of permit, forbid, deny, require_approval, invalid",
        ),
        (
            "policy: policy.yaml\ncases:\n  - name: a\n    request: r.json\n    decision: forbid\n    rules: [no-such]\n",
            "t.yaml:6:13: cases[0].rules[0]: policy payments-agent has no rule or invariant 'no-such'",
        ),
        (
            "policy: policy.yaml\ncases:\n  - name: a\n    request: nope.json\n    decision: permit\n",
            "t.yaml:4:5: cases[0].request: ",
        ),
        (
            "policy: policy.yaml\ncases:\n  - name: a\n    request: r.json\n    decision: permit\n    approval: {quorum: 2}\n",
            "t.yaml:6:5: cases[0].approval: only a require_approval decision has an approval",
        ),
        (
            "policy: policy.yaml\nnow: 2026-11-22T12:00:00\ncases:\n  - {name: a, request: r.json, decision: permit}\n",
            None,
        ),  # a YAML time without a zone is UTC: valid
        (
            "policy: policy.yaml\nnow: tomorrow\ncases:\n  - {name: a, request: r.json, decision: permit}\n",
            "t.yaml:2:1: now: not epoch seconds or an ISO 8601 time: 'tomorrow'",
        ),
        (
            "cases:\n  - {name: a, request: r.json, decision: permit}\n",
            "t.yaml:1:1: names no policy: add `policy: <file>` or pass --policy",
        ),
        (
            "policy: policy.yaml\ncases:\n  - {name: a, request: r.json, decision: permit}\n"
            "  - {name: a, request: r.json, decision: permit}\n",
            "t.yaml:4:6: cases[1].name: a second case named 'a'",
        ),
    ],
)
def test_test_file_mistakes_are_located_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, error: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "principal": {"id": "a"},
                "action": "payments.transfer",
                "resource": "/accounts/1",
                "args": {"amount": 5, "currency": "EUR"},
            }
        )
    )
    (tmp_path / "t.yaml").write_text(text)
    result = runner.invoke(app, ["policy", "test", "t.yaml"])
    if error is None:
        assert result.exit_code == 0, result.stderr
    else:
        assert result.exit_code == 2
        assert result.stderr.startswith(error), result.stderr


def test_the_format_in_docs_cli_md_runs(tmp_path: Path) -> None:
    """The example test file of docs/cli.md passes against the example policy it names."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    example = doc.split("```yaml\n# examples/payments-agent/tests/expected-outcomes.yaml\n", 1)[1].split("```", 1)[0]
    folder = tmp_path / "payments-agent" / "tests"
    folder.mkdir(parents=True)
    (tmp_path / "payments-agent.yaml").symlink_to(EXAMPLES / "payments-agent.yaml")
    (tmp_path / "requests").symlink_to(EXAMPLES / "requests")
    (folder / "doc.yaml").write_text(example)
    result = runner.invoke(app, ["policy", "test", str(tmp_path)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "passed: 4 of 4 cases" in result.stdout
