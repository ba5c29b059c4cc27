"""The SQLite writer commits the units of work that queue up together (server/db.py): each unit
must still commit or fail as if it had run alone, get its own result, and leave nothing behind when
it fails, whichever place it takes in its group."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from server import db as database
from server.migrations import upgrade_async
from server.models import AuditEvent
from server.services import Services
from server.settings import Settings
from server.tenants import create_tenant
from server.time import utcnow


class Refused(Exception):
    """What a failing unit raises, after it wrote its row."""


def write(session: Session, name: str, *, fail: bool = False, wait: threading.Event | None = None) -> str:
    """A unit of work: one audit row named `name`; raises after writing when `fail`."""
    if wait is not None:
        assert wait.wait(30)  # holds the writer, so the units submitted meanwhile queue up
    session.execute(insert(AuditEvent).values(tenant_id="acme", at=utcnow(), actor="test", action="write",
                                              target=name, details={}))
    if fail:
        raise Refused(name)
    return f"done {name}"


async def _run(tmp_path: Path, failing: set[int], units: int) -> tuple[list[Any], list[str], list[int]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
    await upgrade_async(url)
    services = Services(Settings(data_dir=tmp_path, database_url=url))
    groups: list[int] = []
    commit = database._GroupWriter._commit

    def counting(self: Any, group: list[Any]) -> bool:
        groups.append(len(group))
        return commit(self, group)

    try:
        await create_tenant(services, "acme", "Acme")
        gate = threading.Event()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(database._GroupWriter, "_commit", counting)
            held = asyncio.ensure_future(services.db.run_write(functools.partial(write, wait=gate), "held"))
            await asyncio.sleep(0.05)
            pending = [asyncio.ensure_future(services.db.run_write(functools.partial(write, fail=i in failing), f"u{i}"))
                       for i in range(units)]
            await asyncio.sleep(0.05)
            gate.set()
            outcomes = await asyncio.gather(held, *pending, return_exceptions=True)
        async with services.db.read() as session:
            stored = list((await session.execute(select(AuditEvent.target).where(
                AuditEvent.action == "write").order_by(AuditEvent.id))).scalars())
        return outcomes[1:], stored, groups
    finally:
        await services.db.dispose()


@pytest.mark.parametrize("failing", [set(), {0}, {5}, {11}, {2, 9}], ids=str)
def test_queued_units_commit_together_and_a_failing_one_alone_is_lost(tmp_path: Path, failing: set[int]) -> None:
    outcomes, stored, groups = asyncio.run(_run(tmp_path, failing, 12))
    for i, outcome in enumerate(outcomes):
        if i in failing:
            assert isinstance(outcome, Refused) and str(outcome) == f"u{i}"
        else:
            assert outcome == f"done u{i}"
    assert stored == ["held"] + [f"u{i}" for i in range(12) if i not in failing]
    assert groups[0] == 1 and groups[1] == 12  # the twelve queued behind the held unit: one group
    # a failed group is run again one unit per transaction; a clean one is not
    assert groups[2:] == ([1] * 12 if failing else [])
