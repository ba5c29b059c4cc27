"""Approvals, end to end over real HTTP: how long from the quorum being reached to the agent holding
its permit, and from an approval's deadline to its expiry.

    .venv/bin/python bench/approvals.py                    # both setups, 20 approvals each, ~1 min
    .venv/bin/python bench/approvals.py --setups celery --count 50

Setups: `celery` is production-shaped (PostgreSQL, a Redis broker, one `celery worker` and `celery
beat` processes, sweep every 15 s as by default); `embedded` is `licet serve` alone on SQLite, whose
in-process worker runs the same jobs. In each, a tenant with the payments policy (invariants
dropped so every transfer can be permitted) and three approvers signed in with TOTP.

quorum → permit: the second approver's vote returns (quorum reached, approval granted); the agent,
polling its approval every `--poll` seconds, then re-submits the exact request with the approval id
and gets the permit certificate. Timed from the vote's answer to the permit's answer, as the agent
and approvers would see it. deadline → expiry: approvals opened with a 2 s ttl and left alone; the
expiry time recorded by the server minus the deadline (no polling in the figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.conftest import PAYMENTS  # noqa: E402
from tests.server_harness import Server, Tenant, drop_pg_database, fresh_pg_database, launch  # noqa: E402

console = Console(width=150)
POLICY = PAYMENTS.split("invariants:")[0]
SHORT = POLICY.replace("ttl: 15m", "ttl: 2")
REQUEST = {"action": "payments.transfer", "resource": "/accounts/acc-1", "args": {"amount": 2000, "currency": "EUR"}}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def quorum_to_permit(tenant: Tenant, count: int, poll: float) -> tuple[list[float], list[float]]:
    """(quorum → permit seconds, the permit request's own round trip) per approval."""
    a, b = tenant.person("approver"), tenant.person("approver")
    totals, resubmits = [], []
    with tenant.server.client(tenant.key()) as agent, a.client() as first, b.client() as second:
        for _ in range(count):
            approval = agent.post("/v1/decide", json=REQUEST).json()["approval"]["id"]
            assert first.post(f"/v1/approvals/{approval}/approve", json={}).status_code == 200
            result: dict[str, float] = {}
            token = agent.headers["Authorization"].split()[1]
            waiter = threading.Thread(target=_wait_and_use, args=(tenant, token, approval, poll, result))
            waiter.start()
            reply = second.post(f"/v1/approvals/{approval}/approve", json={})
            quorum = time.perf_counter()
            assert reply.json()["state"] == "granted", reply.text
            waiter.join(30)
            totals.append(result["done"] - quorum)
            resubmits.append(result["resubmit"])
    return totals, resubmits


def _wait_and_use(tenant: Tenant, token: str, approval_id: str, poll: float, result: dict[str, float]) -> None:
    # The agent: poll its approval, then re-submit the exact request with the approval id.
    with tenant.server.client(token) as own:
        while own.get(f"/v1/approvals/{approval_id}").json()["state"] != "granted":
            time.sleep(poll)
        start = time.perf_counter()
        reply = own.post("/v1/decide", json={**REQUEST, "approval": approval_id}).json()
        result["done"] = time.perf_counter()
        result["resubmit"] = result["done"] - start
        assert reply["decision"] == "permit", reply


def deadline_to_expiry(tenant: Tenant, count: int) -> list[float]:
    """Seconds from each approval's deadline to the expiry the server recorded."""
    tenant.activate(SHORT)
    ids = []
    with tenant.server.client(tenant.key()) as agent:
        for i in range(count):
            ids.append(agent.post("/v1/decide", json={**REQUEST, "args": {"amount": 2000 + i, "currency": "EUR"}})
                       .json()["approval"]["id"])
            time.sleep(0.05)  # spread the deadlines a little
    lags: list[float] = []
    with tenant.owner() as owner:
        deadline = time.monotonic() + 120
        while len(lags) < count:
            assert time.monotonic() < deadline, "approvals did not expire"
            lags = []
            for approval in ids:
                found = owner.get(f"/v1/approvals/{approval}").json()
                if found["state"] == "expired":
                    lags.append(_epoch(found["closed_at"]) - _epoch(found["deadline"]))
            time.sleep(0.5)
    return lags


def run(setup: str, count: int, poll: float, tmp: Path) -> dict[str, Any]:
    data_dir = tmp / f"data-{setup}"
    env: dict[str, str] = {}
    helpers: list[subprocess.Popen[bytes]] = []
    database = None
    if setup == "celery":
        database = f"licet_bench_approvals_{uuid.uuid4().hex[:6]}"
        database_url = fresh_pg_database(database)
        env = {"LICET_BROKER_URL": os.environ.get("LICET_BENCH_REDIS", "redis://127.0.0.1:6379/7"),
               "LICET_TASK_QUEUE": f"licet-bench-{uuid.uuid4().hex[:8]}", "LICET_DATABASE_URL": database_url,
               "LICET_DATA_DIR": str(data_dir)}
    else:
        database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
    process, url = launch(database_url, data_dir, tmp / f"server-{setup}.log", env)
    try:
        if setup == "celery":
            for role, extra in (("worker", ["--pool=solo", "-Q", env["LICET_TASK_QUEUE"], "--without-gossip",
                                            "--without-mingle"]), ("beat", ["-s", str(tmp / "beat-schedule")])):
                helpers.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "licet.server.workers", role, "--loglevel=WARNING", *extra],
                    env={**os.environ, **env}, stdout=(tmp / f"{role}.log").open("wb"), stderr=subprocess.STDOUT))
        server = Server("postgresql" if setup == "celery" else "sqlite", url, database_url, data_dir, process)
        tenant = server.new_tenant()
        tenant.activate(POLICY)
        totals, resubmits = quorum_to_permit(tenant, count, poll)
        lags = deadline_to_expiry(tenant, count)
        return {"setup": setup, "totals": totals, "resubmits": resubmits, "lags": lags}
    finally:
        for proc in (*helpers, process):
            proc.terminate()
            proc.wait(10)
        if database is not None:
            drop_pg_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="+", default=["celery", "embedded"], choices=["celery", "embedded"])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--poll", type=float, default=0.05, help="How often the agent polls its approval (s).")
    options = parser.parse_args()
    table = Table(title=f"approvals: {options.count} per setup, agent polls every {options.poll * 1000:.0f} ms")
    for column in ("setup", "quorum → permit p50", "p95", "max", "permit request p50", "deadline → expiry p50",
                   "p95", "max"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for setup in options.setups:
            r = run(setup, options.count, options.poll, Path(tmp))
            ms = [f"{_pct(r['totals'], q) * 1000:.1f} ms" for q in (0.5, 0.95, 1.0)]
            lag = [f"{_pct(r['lags'], q) * 1000:.0f} ms" for q in (0.5, 0.95, 1.0)]
            table.add_row(setup, *ms, f"{statistics.median(r['resubmits']) * 1000:.1f} ms", *lag)
    console.print(table)


if __name__ == "__main__":
    main()
