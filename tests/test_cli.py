"""The CLI contract other tools rely on: exit codes, JSON shapes, FILE:LINE:COL errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PAYMENTS, ROOT

LICET = [sys.executable, "-m", "licet"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LICET, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(PAYMENTS)
    (tmp_path / "request.json").write_text(json.dumps({
        "principal": {"id": "a1", "role": "ops"}, "action": "payments.transfer",
        "resource": "/accounts/1", "args": {"amount": 1500, "currency": "EUR"}}))
    return tmp_path


def test_keygen_writes_a_private_0600_key(workdir: Path) -> None:
    result = run("keygen", "--out", "k.key", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["key_id"].startswith("ed25519:")
    assert stat.S_IMODE((workdir / "k.key").stat().st_mode) == 0o600
    assert run("keygen", "--out", "k.key", cwd=workdir).returncode != 0  # never overwrites
    other = run("keygen", "--out", "k2.key", "--json", cwd=workdir)
    assert json.loads(other.stdout)["public_key"] != info["public_key"]  # random, not constant


def test_policy_check(workdir: Path) -> None:
    assert run("policy", "check", "policy.yaml", cwd=workdir).returncode == 0
    (workdir / "bad.yaml").write_text("id: x\nrules:\n  - id: a\n    effect: permit\n    action: a\n"
                                      "    when: 'args.x >'\n")
    result = run("policy", "check", "bad.yaml", cwd=workdir)
    assert result.returncode == 1  # the answer to "is it valid?" is no (docs/cli.md)
    assert result.stderr.startswith("bad.yaml:6:")
    assert "rules[0].when" in result.stderr


def test_decide_and_verify(workdir: Path) -> None:
    run("keygen", "--out", "k.key", cwd=workdir)
    result = run("decide", "--policy", "policy.yaml", "--request", "request.json", "--key", "k.key",
                 "--json", cwd=workdir)
    assert result.returncode == 3, result.stderr  # require_approval
    out = json.loads(result.stdout)
    assert out["decision"] == "require_approval" and out["rules"] == ["large-transfer"]
    assert {"decision", "rules", "proof", "certificate"} <= set(out)
    (workdir / "cert.json").write_text(json.dumps(out["certificate"]))

    verified = run("verify", "cert.json", "--public-key", "k.pub", "--policy", "policy.yaml",
                   "--json", cwd=workdir)
    assert verified.returncode == 0, verified.stdout
    report = json.loads(verified.stdout)
    assert report["ok"] and {c["check"] for c in report["checks"]} >= {
        "signature", "theorem_hash", "redecide"}

    tampered = dict(out["certificate"], decision="permit")
    (workdir / "bad.json").write_text(json.dumps(tampered))
    failed = run("verify", "bad.json", "--public-key", "k.pub", "--json", cwd=workdir)
    assert failed.returncode == 1
    assert not json.loads(failed.stdout)["ok"]

    (workdir / "other.yaml").write_text(PAYMENTS.replace("limit: 5000", "limit: 9000"))
    mismatch = run("verify", "cert.json", "--public-key", "k.pub", "--policy", "other.yaml",
                   "--json", cwd=workdir)
    assert mismatch.returncode == 1


def test_decide_rejects_traversal(workdir: Path) -> None:
    (workdir / "evil.json").write_text(json.dumps({"action": "db.delete", "resource": "/a/../../etc"}))
    result = run("decide", "--policy", "policy.yaml", "--request", "evil.json", "--json", cwd=workdir)
    assert result.returncode == 2 and "climbs above the root" in result.stderr


def test_demo_runs_on_the_examples() -> None:
    result = run("demo", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout and "BROKEN" not in result.stdout


def test_plan_verify_cli(workdir: Path) -> None:
    step = {"action": "payments.transfer", "resource": "/accounts/1",
            "args": {"amount": {"symbolic": "int", "min": 0, "max": 2000}, "currency": "EUR"}}
    (workdir / "plan.json").write_text(json.dumps({"principal": {"id": "a1"}, "steps": [step] * 3}))
    result = run("plan", "verify", "--policy", "policy.yaml", "--plan", "plan.json", "--json", cwd=workdir)
    assert result.returncode == 1, result.stderr  # unsafe
    out = json.loads(result.stdout)
    assert out["verdict"] == "unsafe" and out["steps_checked"] == 3
    assert out["counterexample"]["invariant"] == "daily-budget" and out["counterexample"]["step"] == 2
    too_long = run("plan", "verify", "--policy", "policy.yaml", "--plan", "plan.json", "--max-steps", "2",
                   cwd=workdir)
    assert too_long.returncode == 2 and "maximum is 2" in too_long.stderr
    (workdir / "small.json").write_text(json.dumps([{**step, "args": {"amount": 10, "currency": "EUR"}}]))
    safe = json.loads(run("plan", "verify", "--policy", "policy.yaml", "--plan", "small.json", "--json",
                          cwd=workdir).stdout)
    assert safe["verdict"] == "safe"


def test_policy_diff_and_query_cli(workdir: Path) -> None:
    (workdir / "new.yaml").write_text(PAYMENTS.replace('resource: ["/scratch/**"]',
                                                       'resource: ["/scratch/**", "/tmp/**"]'))
    out = json.loads(run("policy", "diff", "policy.yaml", "new.yaml", "--json", cwd=workdir).stdout)
    assert not out["equivalent"] and out["gained"] and not out["lost"]
    same = json.loads(run("policy", "diff", "policy.yaml", "policy.yaml", "--json", cwd=workdir).stdout)
    assert same["equivalent"]
    answer = json.loads(run("policy", "query", "policy.yaml", '{"action": "*.delete", "resource": "/prod/**"}',
                            "--json", cwd=workdir).stdout)
    assert answer["permitted"] is False


def test_delegation_check_cli(workdir: Path) -> None:
    parent = {"id": "g1", "issuer": "alice", "delegate": "bot", "max_depth": 1, "expires_at": "2030-01-01T00:00:00Z",
              "scope": [{"id": "s", "effect": "permit", "action": "payments.transfer", "when": "args.amount <= 500"}]}
    child = {**parent, "id": "g2", "issuer": "bot", "delegate": "sub", "parent": "g1", "max_depth": 0,
             "scope": [{"id": "s", "effect": "permit", "action": "payments.*"}]}
    (workdir / "parent.json").write_text(json.dumps(parent))
    (workdir / "child.json").write_text(json.dumps(child))
    result = run("delegation", "check", "--parent", "parent.json", "--child", "child.json", "--json", cwd=workdir)
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["counterexample"]["request"]["action"].startswith("payments.")
    (workdir / "child.json").write_text(json.dumps({**child, "scope": parent["scope"]}))
    ok = run("delegation", "check", "--parent", "parent.json", "--child", "child.json", "--json", cwd=workdir)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True


def test_verify_with_a_bundle_end_to_end(workdir: Path) -> None:
    """keygen → decide → log append → checkpoint → prove → verify --bundle, and a forged bundle fails."""
    run("keygen", "--out", "k.key", cwd=workdir)
    certs = []
    for amount in (100, 200, 300):
        (workdir / "r.json").write_text(json.dumps({
            "principal": {"id": "a1", "role": "ops"}, "action": "payments.transfer",
            "resource": "/accounts/1", "args": {"amount": amount, "currency": "EUR"}}))
        out = json.loads(run("decide", "--policy", "policy.yaml", "--request", "r.json", "--key", "k.key",
                             "--tenant", "acme", "--json", cwd=workdir).stdout)
        path = workdir / f"cert{amount}.json"
        path.write_text(json.dumps(out["certificate"]))
        certs.append(path.name)
    assert run("log", "append", *certs, "--dir", "log", cwd=workdir).returncode == 0
    assert run("log", "checkpoint", "--key", "k.key", "--dir", "log", cwd=workdir).returncode == 0
    proved = run("log", "prove", "1", "--dir", "log", cwd=workdir)
    assert proved.returncode == 0, proved.stderr
    (workdir / "bundle.txt").write_text(proved.stdout)
    ok = run("verify", "cert200.json", "--public-key", "k.pub", "--bundle", "bundle.txt", "--policy",
             "policy.yaml", "--json", cwd=workdir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    names = {c["check"] for c in json.loads(ok.stdout)["checks"]}
    assert {"signature", "theorem_hash", "inclusion", "checkpoint-signature", "redecide"} <= names
    wrong = run("verify", "cert100.json", "--public-key", "k.pub", "--bundle", "bundle.txt", "--json", cwd=workdir)
    assert wrong.returncode == 1  # a proof for index 1 presented for another certificate
