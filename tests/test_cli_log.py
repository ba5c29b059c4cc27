"""`licet log`: append, checkpoint, prove, consistency and audit over a local log directory."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from licet import kernel
from licet.cli_log import bundle_checks, log_app
from licet.kernel.bundle import verify_bundle
from licet.kernel.report import all_ok
from licet.sdk.logstore import LOG_FILE
from tests.conftest import issue

ORIGIN = "licet.example/licet/acme"
runner = CliRunner()


class Workspace:
    def __init__(self, root: Path, policy: kernel.Policy) -> None:
        self.root = root
        self.policy = policy
        self.signer = kernel.Signer(os.urandom(32))
        self.key = root / "signing.key"
        self.key.write_text(json.dumps(self.signer.to_json()))
        self.public = root / "signing.pub"
        self.public.write_text(json.dumps(self.signer.public_key.to_json()))
        self.dir = root / "log"
        self.count = 0

    def cert_files(self, n: int, tenant: str = "acme") -> list[Path]:
        files = []
        for _ in range(n):
            cert = issue(self.policy, self.signer, tenant, 100 + self.count)
            path = self.root / f"cert-{self.count}.json"
            path.write_text(json.dumps(cert, indent=2))  # not canonical on disk: the log canonicalises
            files.append(path)
            self.count += 1
        return files

    def run(self, *args: str, code: int = 0) -> str:
        result = runner.invoke(log_app, [*args, "--dir", str(self.dir)])
        assert result.exit_code == code, result.output
        return result.output


@pytest.fixture
def ws(tmp_path: Path, payments: kernel.Policy) -> Workspace:
    return Workspace(tmp_path, payments)


def test_full_flow(ws: Workspace) -> None:
    files = ws.cert_files(5)
    out = ws.run("append", *map(str, files[:3]), "--origin", ORIGIN, "--json")
    assert [row["index"] for row in json.loads(out)["appended"]] == [0, 1, 2]
    first = ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "cp1"))
    assert first.startswith(f"{ORIGIN}\n3\n")
    ws.run("append", *map(str, files[3:]))
    ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "cp2"))

    bundle = ws.run("prove", "1")
    assert bundle.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 1\n" in bundle
    cert = json.loads(files[1].read_text())
    assert all_ok(verify_bundle(cert, bundle, [ws.signer.public_key]))
    (ws.root / "b1").write_text(bundle)
    assert all_ok(bundle_checks(cert, ws.root / "b1", [str(ws.public)]))
    assert all_ok(bundle_checks(cert, ws.root / "b1", [], [ws.signer.public_key]))
    assert not all_ok(bundle_checks(json.loads(files[2].read_text()), ws.root / "b1", [str(ws.public)]))

    out = json.loads(ws.run("consistency", str(ws.root / "cp1"), str(ws.root / "cp2"), "--json"))
    assert out["ok"] and (out["old_size"], out["new_size"]) == (3, 5) and out["proof"]
    audit = json.loads(ws.run("audit", "--deep", "--checkpoint", str(ws.root / "cp1"), "--json"))
    assert audit["ok"] and audit["size"] == 5 and audit["checkpoints_checked"] == 2


def test_swapped_checkpoints_fail(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(2)), "--origin", ORIGIN)
    ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "old"))
    ws.run("append", *map(str, ws.cert_files(3)))
    ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "new"))
    out = json.loads(ws.run("consistency", str(ws.root / "new"), str(ws.root / "old"), "--json", code=1))
    failing = {c["check"]: c["detail"] for c in out["checks"] if not c["ok"]}
    assert "smaller tree (2 < 5)" in failing["not-smaller"]


def test_audit_reports_the_first_bad_entry(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(6)), "--origin", ORIGIN)
    ws.run("checkpoint", "--key", str(ws.key))
    db = sqlite3.connect(ws.dir / LOG_FILE)
    with db:
        data = db.execute("SELECT data FROM leaves WHERE idx = 4").fetchone()[0]
        db.execute("UPDATE leaves SET data = ? WHERE idx = 4", (data.replace(b'"permit"', b'"forbid"'),))
    db.close()
    out = ws.run("audit", code=1)
    assert "first bad entry: 4" in out and "entry 4: the stored entry does not hash" in out
    report = json.loads(ws.run("audit", "--json", code=1))
    assert report["first_bad_index"] == 4 and not report["ok"]
    # The bundle of the changed entry is refused: the stored tree no longer matches the checkpoint.
    result = runner.invoke(log_app, ["prove", "4", "--dir", str(ws.dir)])
    assert result.exit_code == 1 and "does not match the checkpoint" in result.output


def test_audit_detects_dropped_entries(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(4)), "--origin", ORIGIN)
    ws.run("checkpoint", "--key", str(ws.key))
    db = sqlite3.connect(ws.dir / LOG_FILE)
    with db:
        db.execute("DELETE FROM leaves WHERE idx = 3")
    db.close()
    report = json.loads(ws.run("audit", "--json", code=1))
    assert report["first_bad_index"] == 3 and any("dropped" in p for p in report["problems"])
    assert "refusing to sign" in ws.run("checkpoint", "--key", str(ws.key), code=1)


def test_append_refuses_another_tenants_certificate(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(1)), "--origin", ORIGIN)
    other = ws.cert_files(1, tenant="globex")
    out = ws.run("append", str(other[0]), code=2)
    assert "tenant 'globex'" in out and ORIGIN in out


def test_new_log_origin_defaults_from_the_tenant(ws: Workspace) -> None:
    out = json.loads(ws.run("append", *map(str, ws.cert_files(1)), "--json"))
    assert out["origin"] == "localhost/licet/acme"


def test_prove_needs_a_checkpoint_covering_the_entry(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(2)), "--origin", ORIGIN)
    assert "no checkpoint" in ws.run("prove", "0", code=2)
    ws.run("checkpoint", "--key", str(ws.key))
    ws.run("append", *map(str, ws.cert_files(1)))
    assert "not in the checkpointed tree of 2" in ws.run("prove", "2", code=2)


def test_consistency_with_a_checkpoint_of_a_rewritten_log(ws: Workspace, tmp_path: Path) -> None:
    files = ws.cert_files(4)
    ws.run("append", *map(str, files), "--origin", ORIGIN)
    ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "held"))
    # A second log (same origin, same key) where certificate 1 was replaced: its head is a fork.
    (tmp_path / "fork").mkdir()
    forked = Workspace(tmp_path / "fork", ws.policy)
    forked.key.write_text(ws.key.read_text())
    swapped = ws.cert_files(1)[0]
    forked.run("append", str(files[0]), str(swapped), str(files[2]), str(files[3]), "--origin", ORIGIN)
    forked.run("checkpoint", "--key", str(forked.key), "--out", str(ws.root / "forked-head"))
    out = json.loads(forked.run("consistency", str(ws.root / "held"), str(ws.root / "forked-head"), "--json", code=1))
    failing = {c["check"]: c["detail"] for c in out["checks"] if not c["ok"]}
    assert list(failing) == ["consistency"] and "forked" in failing["consistency"]


def test_log_key_options(ws: Workspace) -> None:
    ws.run("append", *map(str, ws.cert_files(3)), "--origin", ORIGIN)
    note = ws.run("checkpoint", "--key", str(ws.key), "--out", str(ws.root / "cp"))
    assert note.startswith(ORIGIN)
    stranger = kernel.Signer(os.urandom(32))
    (ws.root / "stranger.pub").write_text(json.dumps(stranger.public_key.to_json()))
    out = json.loads(ws.run("audit", "--log-key", str(ws.root / "stranger.pub"), "--json", code=1))
    assert any("not signed by any trusted key" in p for p in out["problems"])
    ok = json.loads(ws.run("audit", "--log-key", str(ws.public), "--json"))
    assert ok["ok"]


def test_log_app_is_registered_in_the_main_cli() -> None:
    from licet.cli import app

    result = runner.invoke(app, ["log", "--help"])
    assert result.exit_code == 0 and "audit" in result.output and "consistency" in result.output
