"""Writes are committed in groups (server/db.py): the units of work that queue up behind a running
transaction (on SQLite any, on PostgreSQL those of one group key) share the next. Each unit must
still commit or fail as if it had run alone, get its own result, and leave nothing behind when it
fails, whichever place it takes in its group: neither its rows nor what it asked to run after the
commit."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from licet.server import db as database
from licet.server.db import after_commit
from licet.server.migrations import upgrade_async
from licet.server.models import AuditEvent
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.tenants import create_tenant
from licet.server.time import utcnow
from tests.server_harness import pg_database

UNITS = 12


class Refused(Exception):
    """What a failing unit raises, after it wrote its row."""


def write(session: Session, name: str, *, done: list[str], fail: bool = False,
          wait: threading.Event | None = None) -> str:
    """A unit of work: one audit row named `name`, and `name` in `done` once committed; raises after
    both when `fail`."""
    if wait is not None:
        assert wait.wait(30)  # holds the SQLite writer thread, so the units submitted meanwhile queue up
    session.execute(insert(AuditEvent).values(tenant_id="acme", at=utcnow(), actor="test", action="write",
                                              target=name, details={}))
    after_commit(session, functools.partial(done.append, name))
    if fail:
        raise Refused(name)
    return f"done {name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
        return
    with pg_database("licet_db_writer") as url:
        yield url


async def _run(url: str, tmp_path: Path, failing: set[int]) -> tuple[list[Any], list[str], list[str], list[Any]]:
    await upgrade_async(url)
    services = Services(Settings(data_dir=tmp_path, database_url=url))
    transactions: list[tuple[int, bool]] = []
    done: list[str] = []
    transaction = database._transaction

    def counting(session: Any, group: list[Any], *args: Any, isolated: bool) -> Any:
        transactions.append((len(group), isolated))
        return transaction(session, group, *args, isolated=isolated)

    try:
        await create_tenant(services, "acme", "Acme")
        gate = threading.Event()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(database, "_transaction", counting)
            # On SQLite the first unit holds the writer thread while the others queue; on PostgreSQL units
            # run on the event loop, so it must not block: it commits alone before the others arrive.
            hold = functools.partial(write, done=done, wait=gate if services.db.is_sqlite else None)
            held = asyncio.ensure_future(services.db.run_write(hold, "held", group="acme"))
            await asyncio.sleep(0.05)
            # Submitted in one go: on PostgreSQL all of them queue before the group's drainer runs.
            pending = [asyncio.ensure_future(services.db.run_write(
                functools.partial(write, done=done, fail=i in failing), f"u{i}", group="acme")) for i in range(UNITS)]
            if services.db.is_sqlite:
                await asyncio.sleep(0.05)
            gate.set()
            outcomes = await asyncio.gather(held, *pending, return_exceptions=True)
        async with services.db.read() as session:
            stored = list((await session.execute(select(AuditEvent.target).where(
                AuditEvent.action == "write").order_by(AuditEvent.id))).scalars())
        return outcomes[1:], stored, sorted(done), transactions
    finally:
        await services.db.dispose()


@pytest.mark.parametrize("failing", [set(), {0}, {5}, {11}, {2, 9}], ids=str)
def test_queued_units_commit_together_and_a_failing_one_alone_is_lost(database_url: str, tmp_path: Path,
                                                                       failing: set[int]) -> None:
    outcomes, stored, done, transactions = asyncio.run(_run(database_url, tmp_path, failing))
    for i, outcome in enumerate(outcomes):
        if i in failing:
            assert isinstance(outcome, Refused) and str(outcome) == f"u{i}"
        else:
            assert outcome == f"done u{i}"
    committed = ["held"] + [f"u{i}" for i in range(UNITS) if i not in failing]
    assert stored == committed and done == sorted(committed)
    # the held unit alone, then the twelve queued behind it in one transaction; if one of them failed,
    # once more with each in a savepoint
    assert transactions == [(1, False), (UNITS, False)] + ([(UNITS, True)] if failing else [])
