"""Session history as the server stores and reads it (server/history.py) must give the summary a
plain recomputation over every committed event gives, whatever happened in between: activations
back and forth between versions with other invariants and windows, a clock stepping back,
transactions rolled back after they stored contributions and moved a process's coverage mark, and
(on PostgreSQL) a second worker process recording events the first never saw.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from licet import kernel
from licet.server.history import record_event, session_state
from licet.server.logstore import lock_head
from licet.server.migrations import upgrade_async
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.tenants import create_tenant
from tests.conftest import NOW, PAYMENTS
from tests.server_harness import pg_database

POLICIES = [
    kernel.load_policy(PAYMENTS, "payments.yaml"),
    # Other windows and limits, an invariant the first version does not have, and every invariant
    # windowed (the first version's flow looks at the whole history).
    kernel.load_policy(PAYMENTS.split("  - id: no-exfiltration")[0]
                       .replace("limit: 5000, window: 24h", "limit: 900, window: 1h")
                       .replace("limit: 3, window: 1h", "limit: 2, window: 10m")
                       + "  - {id: reads, kind: count, action: [api.read], limit: 50, window: 2h}\n", "v2.yaml"),
    kernel.load_policy(PAYMENTS.split("invariants:")[0], "no-invariants.yaml"),  # stores no contributions
]
PRINCIPALS = ("agent-1", "agent-2")
EVENTS = [("payments.transfer", "/accounts/1"), ("db.delete", "/scratch/a"), ("api.read", "/api/x"),
          ("db.read", "/pii/users"), ("http.post", "/hooks")]


class _RolledBack(Exception):
    """Raised inside a write transaction to roll it back."""


def _event(principal: str, kind: int, amount: int) -> dict[str, Any]:
    action, resource = EVENTS[kind]
    return {"principal": {"id": principal, "roles": ["ops"]}, "action": action, "resource": resource,
            "args": {"amount": amount, "currency": "EUR", "url": "https://elsewhere.example/"},
            "context": {"mfa": True}}


def expected(policy: kernel.Policy, history: list[tuple[str, float, dict[str, Any]]], principal: str,
             at: float) -> dict[str, Any]:
    """The summary recomputed from every committed event of `principal`."""
    mine = [(time, kernel.event_contributions(policy, kernel.recorded_request(event)))
            for who, time, event in history if who == principal]
    return {"summary": kernel.summary_from_contributions(policy, mine, at)}


class History:
    """One tenant's history on one server process: what it recorded and reads."""

    def __init__(self, services: Services, tenant: str) -> None:
        self.services, self.tenant = services, tenant

    async def record(self, principal: str, at: float, event: dict[str, Any], policy: kernel.Policy,
                     *, roll_back: bool = False) -> None:
        def write(session: Session) -> None:
            connection = session.connection()
            lock_head(connection, self.tenant)
            # as a decision does: read the state (storing what was unseen), then record the event
            session_state(session, self.tenant, principal, policy, at, self.services.coverage)
            record_event(session, self.tenant, principal, at, kernel.normalise_request(event), policy)
            if roll_back:
                raise _RolledBack

        if roll_back:
            with pytest.raises(_RolledBack):
                await self.services.db.run_write(write)
        else:
            await self.services.db.run_write(write)

    async def state(self, principal: str, policy: kernel.Policy, at: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state a decision reads (marking coverage) and the state a plan reads (no lock, no marks)."""
        def locked(session: Session) -> dict[str, Any]:
            lock_head(session.connection(), self.tenant)
            return session_state(session, self.tenant, principal, policy, at, self.services.coverage)

        written = await self.services.db.run_write(locked)
        async with self.services.db.read() as session:
            read = await session.run_sync(session_state, self.tenant, principal, policy, at, None)
        return written, read


@pytest.fixture(scope="module")
def sqlite_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Services]]:
    data = tmp_path_factory.mktemp("history")
    url = f"sqlite+aiosqlite:///{data / 'licet.db'}"
    with asyncio.Runner() as runner:
        runner.run(upgrade_async(url))
        services = Services(Settings(data_dir=data, database_url=url))
        yield runner, services
        runner.run(services.db.dispose())


_TENANTS = itertools.count()
# Reads just inside and just outside each window (10 min, 1 h, 2 h, 24 h) after an event.
_NEAR_EDGES = st.sampled_from([w + d for w in (600, 3600, 7200, 86_400) for d in (-30, 30)])
_STEP = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(PRINCIPALS), st.integers(0, len(EVENTS) - 1),
              st.integers(1, 700), st.integers(-120, 7200)),
    st.tuples(st.just("rolled_back"), st.sampled_from(PRINCIPALS), st.integers(0, len(EVENTS) - 1),
              st.integers(1, 700), st.integers(0, 600)),
    st.tuples(st.just("activate"), st.integers(0, len(POLICIES) - 1)),
    st.tuples(st.just("read"), st.sampled_from(PRINCIPALS), st.one_of(st.integers(-300, 90_000), _NEAR_EDGES)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=25))
# An event recorded under a version without invariants, then read under v1: from just past its window
# (covering it without storing anything), then, the clock having stepped back, from just inside.
# (v2's longest window is 2 h.)
@example(steps=[("activate", 2), ("event", "agent-1", 2, 300, 0), ("activate", 1),
                ("read", "agent-1", 7_230), ("read", "agent-1", 7_170)])
# A rolled-back decision had stored that event's v2 contributions and covered it.
@example(steps=[("activate", 2), ("event", "agent-1", 2, 300, 0), ("activate", 1),
                ("rolled_back", "agent-1", 0, 10, 5), ("read", "agent-1", 0)])
def test_stored_history_reads_like_a_recomputation(sqlite_services: tuple[asyncio.Runner, Services],
                                                   steps: list[tuple[Any, ...]]) -> None:
    runner, services = sqlite_services
    tenant = f"h{next(_TENANTS)}"
    runner.run(create_tenant(services, tenant, tenant))
    history = History(services, tenant)
    committed: list[tuple[str, float, dict[str, Any]]] = []
    active, clock = POLICIES[0], NOW.timestamp()
    for step in steps:
        if step[0] == "activate":
            active = POLICIES[step[1]]
        elif step[0] in ("event", "rolled_back"):
            _, principal, kind, amount, dt = step
            clock += dt  # a negative step: the clock stepped back
            event = _event(principal, kind, amount)
            runner.run(history.record(principal, clock, event, active, roll_back=step[0] == "rolled_back"))
            if step[0] == "event":
                committed.append((principal, clock, event))
        else:
            _, principal, dt = step
            at = clock + dt
            written, read = runner.run(history.state(principal, active, at))
            want = expected(active, committed, principal, at)
            assert written == want, (step, committed)
            assert read == want



def test_stored_events_are_never_percent_decoded_again(sqlite_services: tuple[asyncio.Runner, Services]) -> None:
    # Issue 15: decided on /pub/%2e%2e/admin/x (under /pub), the event was counted under /admin when
    # its contributions were computed from the stored event, decoded a second time.
    runner, services = sqlite_services
    policy = kernel.load_policy({"id": "escapes", "resource_escapes": "keep", "rules": [
        {"id": "all", "effect": "permit", "action": "**"}], "invariants": [
        {"id": "pub", "kind": "count", "action": "**", "resource": "/pub/**", "limit": 5},
        {"id": "admin", "kind": "count", "action": "**", "resource": "/admin/**", "limit": 5}]})
    tenant = f"h{next(_TENANTS)}"
    runner.run(create_tenant(services, tenant, tenant))
    history, at = History(services, tenant), NOW.timestamp()
    raw = {"principal": {"id": "agent-1"}, "action": "files.read", "resource": "/pub/%252e%252e/admin/x"}
    decided = kernel.decide(policy, raw, now=at).request
    assert decided.resource == "/pub/%2e%2e/admin/x"

    def write(session: Session) -> None:  # recorded without computing contributions (an older policy)
        record_event(session, tenant, "agent-1", at, decided, POLICIES[2])

    runner.run(services.db.run_write(write))
    for state in runner.run(history.state("agent-1", policy, at + 1)):
        assert state["summary"]["pub"]["count"] == 1
        assert state["summary"]["admin"]["count"] == 0

def test_a_second_worker_s_events_and_a_rollback_are_never_missed(tmp_path: Path) -> None:
    # Two server processes on one PostgreSQL database. A covers agent-1's history for v1; B records
    # events under v2 (which store no v1 contributions); A must still count them under v1, even after
    # a transaction of A's that stored those contributions and marked them covered rolled back.
    with pg_database("licet_history_workers") as url:
        asyncio.run(_two_workers(url, tmp_path))


async def _two_workers(url: str, tmp_path: Path) -> None:
    await upgrade_async(url)
    a, b = (Services(Settings(data_dir=tmp_path, database_url=url)) for _ in range(2))
    try:
        await create_tenant(a, "acme", "Acme")
        on_a, on_b = History(a, "acme"), History(b, "acme")
        v1, v2 = POLICIES[0], POLICIES[1]
        committed: list[tuple[str, float, dict[str, Any]]] = []
        at = NOW.timestamp()
        for i, (history, policy) in enumerate([(on_a, v1), (on_a, v1), (on_b, v2), (on_b, v2)]):
            event = _event("agent-1", 0, 100 * (i + 1))
            await history.record("agent-1", at + i, event, policy)
            committed.append(("agent-1", at + i, event))
        # This transaction stores A's v1 contributions of B's events, marks them covered, and rolls back.
        await on_a.record("agent-1", at + 10, _event("agent-1", 0, 4000), v1, roll_back=True)
        written, read = await on_a.state("agent-1", v1, at + 20)
        want = expected(v1, committed, "agent-1", at + 20)
        assert written == want and read == want
        assert want["summary"]["daily-budget"]["spent"] == 1000  # every committed transfer, none rolled back
    finally:
        for services in (a, b):
            await services.db.dispose()
