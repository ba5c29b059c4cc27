"""`scripts/stack --short`: the production stack (a private PostgreSQL, Redis, `licet serve --workers 2`,
Celery worker and beat, and the SQLite variant on a small tmpfs) under load and faults, audited.

It needs PostgreSQL's programs (initdb, pg_ctl), redis-server, and root for the tmpfs (PostgreSQL itself
runs as the `postgres` user). Locally a missing program skips; under CI=true it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.server_harness import IN_CI

# The checks every run prints (tenant-labelled ones once per tenant of the PostgreSQL stack).
AUDIT_LINES = ("final-tree", "certificates-in-log", "no-unanswered-decisions", "checkpoints-consistent",
               "inclusion-proofs", "approvals-used-once", "invariant-daily-budget", "invariant-max-deletes",
               "idempotent-retries", "webhooks-delivered", "delivery-rows", "approvals-expired",
               "postgresql errors-only-in-fault-windows", "postgresql no-lost-requests", "postgresql api-up",
               "backup-restore same-log", "sqlite disk-full-refused", "sqlite errors-only-in-fault-windows")
FAULTS = ("api-worker-kill-9", "postgres-restart-fast", "celery-worker-kill-9", "sqlite-volume-full")


def _missing() -> list[str]:
    missing = [name for name in ("redis-server", "runuser", "mount") if shutil.which(name) is None]
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("initdb") is None:
        missing.append("initdb")
    if os.geteuid() != 0:
        missing.append("root (for the tmpfs)")
    return missing


def test_the_stack_survives_its_faults_and_the_audit_passes() -> None:
    missing = _missing()
    if missing and not IN_CI:
        pytest.skip(f"scripts/stack needs {', '.join(missing)}")
    run = subprocess.run([str(ROOT / "scripts" / "stack"), "--short"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-8000:]
    audit = out[out.index("== audit"):].splitlines()[1:]
    passed = [row.split(":", 1)[0] for row in audit if row.startswith("PASS ")]
    for check in AUDIT_LINES:
        assert any(name.endswith(check) for name in passed), (check, audit)
    assert not [row for row in audit if row.startswith("FAIL")], audit
    for fault in FAULTS:
        assert f"fault {fault}:" in out, (fault, out[-4000:])
