"""Units of work committed together (server/db.py: a group) keep their log appends and session events
in memory until the group commits (logstore.PendingAppends, history.SessionWrites) and read some
things once per transaction. None of that may change what a unit sees or leaves behind: each unit
must read the session state the units before it in the group wrote (or a budget could be spent
twice), its leaf must land at the index it was given, and a unit that fails must leave nothing,
wherever it stands in its group. The oracle is a plain recomputation in commit order.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from licet import kernel
from licet.kernel.log import MemoryLogStore, TransparencyLog, audit_log
from licet.server.history import record_event, session_state
from licet.server.logstore import DatabaseLogStore, locked_store
from licet.server.migrations import upgrade_async
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.tenants import create_tenant
from tests.conftest import NOW
from tests.server_harness import pg_database
from tests.test_session_history import EVENTS, POLICIES, PRINCIPALS, _event, expected


class _Failed(Exception):
    """Raised by a unit after it appended and recorded, to roll it back."""


def _unit(session: Session, services: Services, tenant: str, principal: str, at: float, event: dict[str, Any],
          policy: kernel.Policy, *, fail: bool) -> tuple[dict[str, Any], int]:
    """As a decision does: lock the log, read the session state, record the event, append a leaf."""
    store = locked_store(session, tenant)
    state = session_state(session, tenant, principal, policy, at, services.coverage)
    record_event(session, tenant, principal, at, kernel.normalise_request(event), policy)
    index = services.transparency_log(store).append(_leaf(principal, at))
    if fail:
        raise _Failed(principal)
    return state, index


def _leaf(principal: str, at: float) -> bytes:
    return f"{principal}@{at}".encode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[asyncio.Runner, Services]]:
    data = tmp_path_factory.mktemp(f"groups-{request.param}")
    with asyncio.Runner() as runner:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{data / 'licet.db'}"
            runner.run(upgrade_async(url))
            services = Services(Settings(data_dir=data, database_url=url))
            yield runner, services
            runner.run(services.db.dispose())
            return
        with pg_database("licet_decision_groups") as url:
            runner.run(upgrade_async(url))
            services = Services(Settings(data_dir=data, database_url=url))
            yield runner, services
            runner.run(services.db.dispose())


async def _group(services: Services, tenant: str, units: list[functools.partial[Any]]) -> list[Any]:
    """Run `units` as one group (on SQLite: queued behind a unit that holds the writer; on PostgreSQL:
    submitted together under one group key, behind one that commits first)."""
    gate = threading.Event()

    def hold(session: Session) -> None:
        if services.db.is_sqlite:
            assert gate.wait(30)  # holds the writer thread while the group's units queue up

    held = asyncio.ensure_future(services.db.run_write(hold, group=tenant))
    await asyncio.sleep(0.02)
    pending = [asyncio.ensure_future(services.db.run_write(unit, group=tenant)) for unit in units]
    await asyncio.sleep(0.02)
    gate.set()
    await held
    return await asyncio.gather(*pending, return_exceptions=True)


_TENANTS = itertools.count()
_UNIT = st.tuples(st.sampled_from(PRINCIPALS), st.integers(0, len(EVENTS) - 1), st.integers(1, 700),
                  st.integers(0, 900), st.sampled_from([False, False, False, True]))  # (.., fails)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(st.tuples(st.integers(0, len(POLICIES) - 1), st.lists(_UNIT, min_size=1, max_size=12)),
                       min_size=1, max_size=4))
def test_each_unit_of_a_group_reads_what_the_units_before_it_wrote(
        running: tuple[asyncio.Runner, Services], groups: list[tuple[int, list[tuple[Any, ...]]]]) -> None:
    runner, services = running
    tenant = f"g{next(_TENANTS)}"
    runner.run(create_tenant(services, tenant, tenant))
    committed: list[tuple[str, float, dict[str, Any]]] = []
    leaves: list[bytes] = []
    clock = NOW.timestamp()
    for version, units in groups:
        policy = POLICIES[version]
        planned = []
        for principal, kind, amount, dt, fail in units:
            clock += dt
            planned.append((principal, clock, _event(principal, kind, amount), fail))
        outcomes = runner.run(_group(services, tenant, [
            functools.partial(_unit, services=services, tenant=tenant, principal=principal, at=at, event=event,
                              policy=policy, fail=fail) for principal, at, event, fail in planned]))
        for (principal, at, event, fail), outcome in zip(planned, outcomes, strict=True):
            if fail:
                assert isinstance(outcome, _Failed), outcome
                continue
            state, index = outcome
            assert state == expected(policy, committed, principal, at), (principal, at, committed)
            assert index == len(leaves)
            committed.append((principal, at, event))
            leaves.append(_leaf(principal, at))

    async def stored() -> Any:
        async with services.db.read() as session:
            return await session.run_sync(lambda s: audit_log(DatabaseLogStore(s.connection(), tenant)))

    report = runner.run(stored())
    assert report.ok, report.problems
    rebuilt = TransparencyLog(MemoryLogStore(), "rebuilt")
    rebuilt.append_many(leaves)
    assert report.size == len(leaves) and report.root_hash == rebuilt.root()
