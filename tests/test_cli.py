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
    assert result.returncode == 2
    assert result.stderr.startswith("bad.yaml:6:")
    assert "rules[0].when" in result.stderr


def test_decide_and_verify(workdir: Path) -> None:
    run("keygen", "--out", "k.key", cwd=workdir)
    result = run("decide", "--policy", "policy.yaml", "--request", "request.json", "--key", "k.key",
                 "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
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
