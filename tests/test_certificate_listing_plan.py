"""`GET /v1/certificates` with a time range on SQLite: for a wide range the listing walks the log
index instead of sorting the whole range (EXPLAIN shows no sort), and either plan returns exactly
the same rows, even when issue times are not in log order (bench/certificates_range.py has the
timings)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from licet.server.identity import Caller
from licet.server.migrations import upgrade
from licet.server.routers.evidence import DecisionFilter

START = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 3000
OWNER = Caller("t", "owner", "user:o")
OUTCOMES = ("permit", "forbid", "deny", "require_approval")


def _seed(path: Path) -> None:
    upgrade(f"sqlite+aiosqlite:///{path}")
    shuffle = random.Random(7)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as db:
        db.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', :at)"), {"at": START})
        db.execute(text(
            "INSERT INTO certificates (id, tenant_id, log_index, principal_id, action, outcome, request_hash, "
            "issued_at, body) VALUES (:id, 't', :i, :p, 'a.b', :o, 'h', :at, '{}')"),
            # issue times mostly in log order, some a minute out of it (clocks of several servers)
            [{"id": f"c{i}", "i": i, "p": f"agent:{i % 7}", "o": OUTCOMES[i % 4],
              "at": (START + timedelta(seconds=i + shuffle.choice((0, 0, 0, -60, 60)))).strftime(
                  "%Y-%m-%d %H:%M:%S.%f")} for i in range(ROWS)])
    engine.dispose()


DB = Path(__import__("tempfile").mkdtemp()) / "listing.db"
_seed(DB)
SYNC = create_engine(f"sqlite:///{DB}")


def _rows(matching: DecisionFilter, walk: bool, before: int | None = None) -> list[int]:
    query = matching.query(OWNER, walk_log=walk)
    if before is not None:
        query = query.where(text(f"log_index < {before}"))
    with SYNC.connect() as db:
        return [r.log_index for r in db.execute(query.limit(50))]


def _plan(matching: DecisionFilter, walk: bool) -> str:
    with SYNC.connect() as db:
        compiled = matching.query(OWNER, walk_log=walk).limit(50).compile(SYNC, compile_kwargs={"literal_binds": True})
        return " ".join(str(r[3]) for r in db.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))


def _walks(matching: DecisionFilter) -> bool:
    async def ask() -> bool:
        engine = create_async_engine(f"sqlite+aiosqlite:///{DB}")
        async with AsyncSession(engine) as session:
            chosen = await matching.walks_log(session, OWNER)
        await engine.dispose()
        return chosen
    return asyncio.run(ask())


def test_a_wide_range_walks_the_log_index_and_a_narrow_one_the_time_index() -> None:
    wide = DecisionFilter(since=START + timedelta(seconds=30), until=START + timedelta(seconds=ROWS - 30))
    assert _walks(wide)
    assert "TEMP B-TREE" in _plan(wide, walk=False)  # SQLite alone: scan the range, then sort it
    assert "TEMP B-TREE" not in _plan(wide, walk=True)
    assert not _walks(DecisionFilter(since=START, until=START + timedelta(seconds=100)))  # few rows
    assert not _walks(DecisionFilter(until=START + timedelta(seconds=100)))  # most rows newer than it
    assert not _walks(DecisionFilter())


@settings(max_examples=60, deadline=None)
@given(since=st.none() | st.integers(-100, ROWS + 100), span=st.none() | st.integers(0, ROWS + 200),
       outcome=st.none() | st.sampled_from(OUTCOMES), before=st.none() | st.integers(0, ROWS))
def test_both_plans_list_exactly_the_same_rows(since: int | None, span: int | None, outcome: str | None,
                                               before: int | None) -> None:
    since_at = None if since is None else START + timedelta(seconds=since)
    until_at = None if span is None else START + timedelta(seconds=(since or 0) + span)
    matching = DecisionFilter(outcome=outcome, since=since_at, until=until_at)  # type: ignore[arg-type]
    assert _rows(matching, walk=True, before=before) == _rows(matching, walk=False, before=before)
