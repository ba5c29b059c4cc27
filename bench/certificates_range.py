"""`GET /v1/certificates` with a time range, on SQLite: the query `DecisionFilter.query` builds, run
against a scratch database made by the migrations and seeded with SQL (one tenant, N decisions one
second apart, log index in time order).

    .venv/bin/python -P bench/certificates_range.py            # 10^5 decisions (-P: bench/http.py is no stdlib)
    .venv/bin/python -P bench/certificates_range.py --rows 1000000

For each time range: the first page (50 rows) and a page turn (`before` = the first page's last
index), median of 7 runs, in milliseconds (through aiosqlite, as the server runs it), with the plan
SQLite picks alone (the time index, then a sort) and with the plan `DecisionFilter.walks_log`
chooses (its counts included). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from licet.server.identity import Caller
from licet.server.migrations import upgrade
from licet.server.routers.evidence import DecisionFilter

START = datetime(2026, 1, 1, tzinfo=UTC)
OUTCOMES = ("permit", "permit", "permit", "forbid", "deny", "require_approval")


def seed(path: Path, rows: int) -> None:
    """A migrated database with `rows` decisions of tenant `t`, one a second from START."""
    asyncio.run(asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}"))
    engine = create_engine(f"sqlite:///{path}")
    body = '{"rules": ["r"], "request": {"resource": "/accounts/acc-001"}, "request_hash": "sha256:x", "pad": "' \
           + "x" * 1000 + '"}'
    with engine.begin() as db:
        db.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :at)"), {"at": START})
        db.execute(text(
            "INSERT INTO certificates (id, tenant_id, log_index, principal_id, action, outcome, request_hash, "
            "issued_at, body) VALUES (:id, 't', :i, :p, 'payments.transfer', :o, 'sha256:x', :at, :body)"),
            [{"id": f"c{i}", "i": i, "p": f"agent:{i % 50}", "o": OUTCOMES[i % len(OUTCOMES)],
              "at": (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f"), "body": body}
             for i in range(rows)])
    engine.dispose()


async def timed(engine: AsyncEngine, matching: DecisionFilter, before: int | None, *,
                choose: bool) -> tuple[float, list[Any]]:
    """Milliseconds to fetch one page as `GET /v1/certificates` does (`choose`: with the plan choice
    of `DecisionFilter.walks_log`, its counts included; else the time-index plan SQLite picks alone)."""
    caller = Caller("t", "owner", "user:o")
    runs, rows = [], []
    for _ in range(7):
        async with AsyncSession(engine) as session:
            began = time.perf_counter()
            walk = await matching.walks_log(session, caller) if choose else False
            rows = list((await session.execute(matching.page(caller, before=before, limit=50, walk_log=walk))).all())
            runs.append((time.perf_counter() - began) * 1000)
    return statistics.median(runs), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.db"
        began = time.perf_counter()
        seed(path, rows)
        print(f"seeded {rows} decisions in {time.perf_counter() - began:.1f} s")
        asyncio.run(measure(path, rows))


async def measure(path: Path, rows: int) -> None:
    """Print the figures for the seeded database at `path`."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    second = timedelta(seconds=1)
    ranges = {
        "no range": DecisionFilter(),
        "since+until, 98% of rows": DecisionFilter(since=START + rows // 100 * second,
                                                   until=START + rows * 99 // 100 * second),
        "since only, 90%": DecisionFilter(since=START + rows // 10 * second),
        "until only, oldest 50%": DecisionFilter(until=START + rows // 2 * second),
        "1 hour, newest": DecisionFilter(since=START + (rows - 3600) * second),
        "1 hour, oldest": DecisionFilter(since=START, until=START + 3600 * second),
        "1 minute, oldest": DecisionFilter(since=START, until=START + 60 * second),
        "since+until 98%, outcome=deny": DecisionFilter(outcome="deny", since=START + rows // 100 * second,
                                                        until=START + rows * 99 // 100 * second),
    }
    print(f"{'range':32} {'time index: first':>18} {'turn':>9} {'chosen plan: first':>19} {'turn':>9}")
    for name, matching in ranges.items():
        figures = []
        for choose in (False, True):
            first, page = await timed(engine, matching, None, choose=choose)
            turn, _ = await timed(engine, matching, page[-1].log_index if page else None, choose=choose)
            figures.append(f"{first:15.1f} ms {turn:6.1f} ms")
        print(f"{name:32} {figures[0]} {figures[1]}")
    await engine.dispose()


if __name__ == "__main__":
    main()
