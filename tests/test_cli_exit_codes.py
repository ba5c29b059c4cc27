"""Every command follows one exit-code table (docs/cli.md): 0 the positive answer, 1 the negative answer,
2 bad input or usage, 3 require_approval / needs_approval / unknown, 4 Licet itself failed.

Each command runs on a positive, a negative, a bad-input and (where it has one) an approval/unknown
case, with and without --json. No small input makes Z3 give up on `policy diff`, `policy query` or
`delegation check` within the analysis budget, so their "unknown" cases replace the analysis result
(a real `PolicyDiff`/`QueryAnswer`/`Attenuation` with answer "unknown") and check the mapping to 3.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from licet import kernel
from licet.cli import app
from licet.output import ANSWER_CODES
from tests.conftest import NOW, PAYMENTS, ROOT

runner = CliRunner()

REQUEST = {"principal": {"id": "a1", "role": "ops"}, "action": "payments.transfer", "resource": "/accounts/1"}
PARENT = {
    "id": "g1",
    "issuer": "alice",
    "delegate": "bot",
    "max_depth": 1,
    "expires_at": "2030-01-01T00:00:00Z",
    "scope": [{"id": "s", "effect": "permit", "action": "payments.transfer", "when": "args.amount <= 500"}],
}
CHILD = {**PARENT, "id": "g2", "issuer": "bot", "delegate": "sub", "parent": "g1", "max_depth": 0}


def _write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return path.name


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "wider.yaml").write_text(
        PAYMENTS.replace('resource: ["/scratch/**"]', 'resource: ["/scratch/**", "/tmp/**"]')
    )
    (tmp_path / "invalid.yaml").write_text(
        "id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n    when: 'args.x >'\n"
    )
    transfer = {**REQUEST, "args": {"amount": 500, "currency": "EUR"}}
    _write_json(tmp_path / "permit.json", transfer)
    _write_json(tmp_path / "approval.json", {**REQUEST, "args": {"amount": 1500, "currency": "EUR"}})
    _write_json(tmp_path / "forbid.json", {"principal": {"id": "a1"}, "action": "db.delete", "resource": "/prod/x"})
    _write_json(
        tmp_path / "deny.json",
        {
            "principal": {"id": "a1", "role": "guest"},
            "action": "api.read",
            "resource": "/api/x",
            "context": {"mfa": True},
        },
    )
    _write_json(tmp_path / "invalid.json", {"action": "db.delete", "resource": "/a/../../etc"})
    step = {"action": "payments.transfer", "resource": "/accounts/1", "args": {"amount": 10, "currency": "EUR"}}
    symbolic = {**step, "args": {"amount": {"symbolic": "int", "min": 0, "max": 2000}, "currency": "EUR"}}
    _write_json(tmp_path / "safe-plan.json", {"principal": {"id": "a1"}, "steps": [step]})
    _write_json(tmp_path / "unsafe-plan.json", {"principal": {"id": "a1"}, "steps": [symbolic] * 3})
    _write_json(
        tmp_path / "approval-plan.json",
        {"principal": {"id": "a1"}, "steps": [{**step, "args": {"amount": 1500, "currency": "EUR"}}]},
    )
    _write_json(tmp_path / "parent.json", PARENT)
    _write_json(tmp_path / "narrower.json", CHILD)
    _write_json(
        tmp_path / "wider-child.json", {**CHILD, "scope": [{"id": "s", "effect": "permit", "action": "payments.*"}]}
    )
    signer = kernel.Signer(os.urandom(32))
    (tmp_path / "k.pub").write_text(json.dumps(signer.public_key.to_json()))
    policy = kernel.load_policy(PAYMENTS)
    certificate = kernel.issue_certificate(
        kernel.decide(policy, transfer, now=NOW),
        signer=signer,
        tenant="t",
        issued_at=NOW,
        certificate_id=kernel.uuid7(NOW, os.urandom(10)),
    )
    _write_json(tmp_path / "cert.json", certificate)
    _write_json(tmp_path / "tampered.json", {**certificate, "decision": "forbid"})
    (tmp_path / "passing-tests.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - {name: small, request: permit.json, decision: permit, rules: [transfer]}\n"
        "  - {name: large, request: approval.json, decision: require_approval, approval: {quorum: 2}}\n"
    )
    (tmp_path / "failing-tests.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - {name: prod-delete, request: forbid.json, decision: permit}\n"
    )
    (tmp_path / "broken-tests.yaml").write_text(
        "policy: policy.yaml\ncases:\n  - {name: x, request: permit.json, decision: permit, expect: permit}\n"
    )
    return tmp_path


def _unknown_diff(*_: Any, **__: Any) -> Any:
    from licet.kernel.analysis import PolicyDiff

    return PolicyDiff(False, (), (), answer="unknown", reason="the solver gave up (replaced in this test)")


def _unknown_query(*_: Any, **__: Any) -> Any:
    from licet.kernel.analysis import QueryAnswer

    return QueryAnswer(False, None, {}, answer="unknown", reason="the solver gave up (replaced in this test)")


def _unknown_attenuation(*_: Any, **__: Any) -> Any:
    from licet.kernel.delegation import Attenuation

    return Attenuation(False, ("could not prove (replaced in this test)",), None, answer="unknown")


UNKNOWN: dict[str, tuple[str, Callable[..., Any]]] = {
    "policy diff": ("licet.kernel.analysis.diff", _unknown_diff),
    "policy query": ("licet.kernel.analysis.query", _unknown_query),
    "delegation check": ("licet.kernel.delegation.check_attenuation", _unknown_attenuation),
}

QUERY_YES = '{"action": "payments.transfer"}'
QUERY_NO = '{"action": "*.delete", "resource": "/prod/**"}'

# (command, case, arguments, expected exit code, has --json)
CASES: list[tuple[str, str, list[str], int, bool]] = [
    ("decide", "permit", ["decide", "--policy", "policy.yaml", "--request", "permit.json"], 0, True),
    ("decide", "forbid", ["decide", "--policy", "policy.yaml", "--request", "forbid.json"], 1, True),
    ("decide", "deny", ["decide", "--policy", "policy.yaml", "--request", "deny.json"], 1, True),
    ("decide", "invalid request", ["decide", "--policy", "policy.yaml", "--request", "invalid.json"], 2, True),
    ("decide", "invalid policy", ["decide", "--policy", "invalid.yaml", "--request", "permit.json"], 2, True),
    ("decide", "missing file", ["decide", "--policy", "policy.yaml", "--request", "nope.json"], 2, True),
    ("decide", "require_approval", ["decide", "--policy", "policy.yaml", "--request", "approval.json"], 3, True),
    ("plan verify", "safe", ["plan", "verify", "--policy", "policy.yaml", "--plan", "safe-plan.json"], 0, True),
    ("plan verify", "unsafe", ["plan", "verify", "--policy", "policy.yaml", "--plan", "unsafe-plan.json"], 1, True),
    (
        "plan verify",
        "too long",
        ["plan", "verify", "--policy", "policy.yaml", "--plan", "unsafe-plan.json", "--max-steps", "2"],
        2,
        True,
    ),
    (
        "plan verify",
        "needs_approval",
        ["plan", "verify", "--policy", "policy.yaml", "--plan", "approval-plan.json"],
        3,
        True,
    ),
    ("policy check", "valid", ["policy", "check", "policy.yaml", "wider.yaml"], 0, True),
    ("policy check", "invalid", ["policy", "check", "policy.yaml", "invalid.yaml"], 1, True),
    ("policy check", "missing file", ["policy", "check", "invalid.yaml", "nope.yaml"], 2, True),
    ("policy test", "passed", ["policy", "test", "passing-tests.yaml"], 0, True),
    ("policy test", "failed", ["policy", "test", "passing-tests.yaml", "failing-tests.yaml"], 1, True),
    ("policy test", "invalid test file", ["policy", "test", "broken-tests.yaml"], 2, True),
    ("policy diff", "equivalent", ["policy", "diff", "policy.yaml", "policy.yaml"], 0, True),
    ("policy diff", "differs", ["policy", "diff", "policy.yaml", "wider.yaml"], 1, True),
    ("policy diff", "missing file", ["policy", "diff", "policy.yaml", "nope.yaml"], 2, True),
    ("policy diff", "unknown", ["policy", "diff", "policy.yaml", "wider.yaml"], 3, True),
    ("policy query", "yes", ["policy", "query", "policy.yaml", QUERY_YES], 0, True),
    ("policy query", "no", ["policy", "query", "policy.yaml", QUERY_NO], 1, True),
    ("policy query", "missing pattern file", ["policy", "query", "policy.yaml", "pattern.yaml"], 2, True),
    ("policy query", "unknown", ["policy", "query", "policy.yaml", QUERY_YES], 3, True),
    (
        "delegation check",
        "attenuates",
        ["delegation", "check", "--parent", "parent.json", "--child", "narrower.json"],
        0,
        True,
    ),
    (
        "delegation check",
        "widens",
        ["delegation", "check", "--parent", "parent.json", "--child", "wider-child.json"],
        1,
        True,
    ),
    (
        "delegation check",
        "missing file",
        ["delegation", "check", "--parent", "parent.json", "--child", "nope.json"],
        2,
        True,
    ),
    (
        "delegation check",
        "unknown",
        ["delegation", "check", "--parent", "parent.json", "--child", "narrower.json"],
        3,
        True,
    ),
    ("verify", "verified", ["verify", "cert.json", "--public-key", "k.pub"], 0, True),
    ("verify", "failed", ["verify", "tampered.json", "--public-key", "k.pub"], 1, True),
    ("verify", "missing key file", ["verify", "cert.json", "--public-key", "nope.pub"], 2, True),
    (
        "verify",
        "re-decided under another policy",
        ["verify", "cert.json", "--public-key", "k.pub", "--policy", "wider.yaml"],
        1,
        True,
    ),
    ("keygen", "created", ["keygen", "--out", "new.key"], 0, True),
    ("keygen", "refuses to overwrite", ["keygen", "--out", "policy.yaml"], 2, True),
    ("serve", "several workers on SQLite", ["serve", "--workers", "2", "--data-dir", "data"], 2, False),
    ("mcp serve", "neither transport", ["mcp", "serve"], 2, False),
    ("usage", "unknown option", ["decide", "--no-such-option"], 2, False),
    ("usage", "missing argument", ["policy", "diff", "policy.yaml"], 2, False),
]


RUNS = [(*c[:4], json_out) for c in CASES for json_out in ((False, True) if c[4] else (False,))]


@pytest.mark.parametrize(
    ("command", "case", "args", "code", "json_out"), RUNS, ids=[f"{r[0]}:{r[1]}{':json' if r[4] else ''}" for r in RUNS]
)
def test_every_command_follows_the_exit_code_table(
    work: Path, monkeypatch: pytest.MonkeyPatch, command: str, case: str, args: list[str], code: int, json_out: bool
) -> None:
    if case == "unknown":
        target, replacement = UNKNOWN[command]
        monkeypatch.setattr(target, replacement)
    result = runner.invoke(app, [*args, "--json"] if json_out else args)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if json_out and code in (0, 1, 3):
        json.loads(result.stdout)  # the answer is one JSON document, whatever it is
    if code == 2:
        assert result.stderr.strip(), "bad input is explained on stderr"


def test_the_documented_table_is_the_one_the_commands_use() -> None:
    """docs/cli.md's exit-code table lists exactly the answers `licet.output.ANSWER_CODES` maps."""
    text = (ROOT / "docs" / "cli.md").read_text()
    documented: dict[str, int] = {}
    for code, answers in re.findall(r"^\| (\d) \| the (?:positive|negative) answer \| ([^|]+) \|$", text, re.M):
        documented.update(dict.fromkeys((a.strip() for a in answers.split(",")), int(code)))
    approval = re.search(r"^\| 3 \| [^|]+ \| ([^|]+) \|$", text, re.M)
    assert approval is not None
    documented.update(dict.fromkeys((a.strip() for a in approval.group(1).split(",")), 3))
    assert documented == ANSWER_CODES


def test_a_crash_exits_4_not_1(work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An uncaught exception is a bug in Licet, never read as a "forbid" or a "no"."""

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("licet.kernel.decision.decide", broken)
    monkeypatch.setattr(kernel, "decide", broken, raising=False)
    with pytest.raises(SystemExit) as info:
        app(["decide", "--policy", "policy.yaml", "--request", "permit.json"], prog_name="licet")
    assert info.value.code == 4
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "this is a bug" in err
