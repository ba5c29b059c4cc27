"""Session history: the permitted requests invariants (budgets, counts, flows) read, and what each
adds to the invariants of a policy version.

Each event's contributions are computed once per policy version and stored with the event's tenant,
principal and time, so a decision reads only the relevant rows of one index range, however long the
principal's history. Events no decision under a version has looked at yet (recorded under another
version, before an activation) get their contributions on first read. Which events were already
looked at is remembered per process (`Coverage`), once the transaction that stored their
contributions has committed, so that look-up covers only events newer than the last one, not the
whole window again.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select
from sqlalchemy.orm import Session

from licet import kernel
from licet.server.db import after_commit, transaction_state
from licet.server.models import Base

_tables = Base.metadata.tables
_events, _contributions = _tables["session_events"], _tables["session_contributions"]
_PRINCIPAL = and_(_events.c.tenant_id == bindparam("tenant"), _events.c.principal_id == bindparam("principal"))
_INSERT_EVENTS = insert(_events).returning(_events.c.id, sort_by_parameter_order=True)
_INSERT_CONTRIBUTIONS = insert(_contributions)
_STORED = select(_contributions.c.time, _contributions.c.contributions).where(
    _contributions.c.tenant_id == bindparam("tenant"), _contributions.c.principal_id == bindparam("principal"),
    _contributions.c.policy_hash == bindparam("policy"), _contributions.c.relevant,
    _contributions.c.time > bindparam("since"))
_LAST_EVENT = select(func.max(_events.c.id)).where(_PRINCIPAL)
# Events in the window after `after` that no decision under this policy version has looked at yet.
_UNSEEN = select(_events.c.id, _events.c.time, _events.c.event).where(
    _PRINCIPAL, _events.c.id > bindparam("after"), _events.c.time > bindparam("since"),
    ~select(_contributions.c.event_id).where(_contributions.c.event_id == _events.c.id,
                                             _contributions.c.policy_hash == bindparam("policy")).exists())
MAX_COVERED = 65_536


@dataclass(frozen=True)
class Covered:
    """Every event of the principal up to `through` (its id) that was inside a window starting at
    `since` has stored contributions for the policy version."""

    through: int
    since: float


class Coverage:
    """Per process: how far each principal's history is covered for each policy version (bounded,
    least recently used out). Ids grow in commit order within a tenant, because each tenant's
    writes hold its log lock, so an event recorded later never falls below a mark. Marks are made
    only after the transaction that stored their rows has committed (`server.db.after_commit`): a
    transaction that takes the lock next either sees those rows or an older mark."""

    def __init__(self, size: int = MAX_COVERED) -> None:
        self._marks: OrderedDict[tuple[str, str, str], Covered] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, tenant: str, principal: str, policy_hash: str) -> Covered | None:
        """The mark of a principal's history for a policy version, if one is kept."""
        with self._lock:
            found = self._marks.get((tenant, principal, policy_hash))
            if found is not None:
                self._marks.move_to_end((tenant, principal, policy_hash))
            return found

    def mark(self, tenant: str, principal: str, policy_hash: str, covered: Covered) -> None:
        """Remember `covered` (once the contributions it stands for are committed)."""
        with self._lock:
            self._marks[(tenant, principal, policy_hash)] = covered
            self._marks.move_to_end((tenant, principal, policy_hash))
            while len(self._marks) > self._size:
                self._marks.popitem(last=False)


@dataclass
class _Window:
    since: float  # the window read starts after this time
    events: list[tuple[float, dict[str, Any]]]  # (time, stored contributions) of the relevant events in it


class SessionWrites:
    """The events a write transaction records, written together just before it commits
    (`db.transaction_state`), and the principals' histories it read under the tenant's log lock, kept up
    to date with those events. While the lock is held nobody else records the tenant's events, so a
    second decision of a principal in the same transaction reads nothing again."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str, str], _Window] = {}  # (tenant, principal, policy hash)
        self.pending: list[tuple[dict[str, Any], dict[str, Any] | None]] = []  # (event row, contributions row)

    def record(self, tenant: str, principal: str, at: float, event: kernel.NormalisedRequest,
               policy: kernel.Policy) -> None:
        """Keep an event and its contributions under `policy`, for `write` and for later reads."""
        row = {"tenant_id": tenant, "principal_id": principal, "time": at, "event": event.to_json()}
        contributions = None
        if policy.invariants:
            stored = kernel.event_contributions(policy, event)
            contributions = _contribution_row(policy, tenant, principal, 0, at, stored)
            window = self.windows.get((tenant, principal, policy.hash))
            if window is not None and stored:
                window.events.append((at, stored))
        self.pending.append((row, contributions))

    def write(self, connection: Connection) -> None:
        """Insert the events kept (one statement), then their contributions (one more)."""
        if not self.pending:
            return
        ids = connection.execute(_INSERT_EVENTS, [row for row, _ in self.pending]).scalars().all()
        rows = [{**contributions, "event_id": event_id}
                for (_, contributions), event_id in zip(self.pending, ids, strict=True) if contributions]
        if rows:
            connection.execute(_INSERT_CONTRIBUTIONS, rows)
        self.pending.clear()


def record_event(session: Session, tenant: str, principal: str, at: float, event: kernel.NormalisedRequest,
                 policy: kernel.Policy) -> None:
    """Keep a permitted request (normalised, as decided) as history, with its contributions under the
    policy that permitted it; written when the write transaction commits (`SessionWrites`)."""
    transaction_state(session, SessionWrites).record(tenant, principal, at, event, policy)


def session_state(session: Session, tenant: str, principal: str, policy: kernel.Policy, at: float,
                  coverage: Coverage | None) -> dict[str, Any]:
    """The principal's session state for `policy` at `at` as a kernel summary. With `coverage` (a write
    transaction holding the tenant's log lock) contributions computed now are stored, and marked once
    committed; without it (a read) they are computed and dropped, and the whole window is looked through."""
    if not policy.invariants:
        return {"summary": {}}
    windows = [inv.window_seconds for inv in policy.invariants]
    since = at - max(w for w in windows if w is not None) if all(w is not None for w in windows) else -1.0
    if coverage is None:
        return {"summary": kernel.summary_from_contributions(policy, _read(session, tenant, principal, policy,
                                                                           since, None), at)}
    writes = transaction_state(session, SessionWrites)
    window = writes.windows.get((tenant, principal, policy.hash))
    if window is None or window.since > since:  # a clock stepping back widens the window
        writes.write(session.connection())  # what the read must see
        window = writes.windows[(tenant, principal, policy.hash)] = _Window(
            since, _read(session, tenant, principal, policy, since, coverage))
    return {"summary": kernel.summary_from_contributions(policy, window.events, at)}


def _read(session: Session, tenant: str, principal: str, policy: kernel.Policy, since: float,
          coverage: Coverage | None) -> list[tuple[float, dict[str, Any]]]:
    # The relevant events of the window from the database (see `session_state`).
    connection = session.connection()
    where = {"tenant": tenant, "principal": principal, "since": since, "policy": policy.hash}
    events: list[tuple[float, dict[str, Any]]] = [(t, c) for t, c in connection.execute(_STORED, where)]
    covered = coverage.get(tenant, principal, policy.hash) if coverage is not None else None
    # A mark holds for windows starting no earlier than its own (a clock stepping back widens the window).
    after = covered.through if covered is not None and covered.since <= since else 0
    last = connection.execute(_LAST_EVENT, where).scalar() if coverage is not None else None
    rows = []
    for event_id, time, event in connection.execute(_UNSEEN, {**where, "after": after}):
        stored = kernel.event_contributions(policy, kernel.recorded_request(event))
        rows.append(_contribution_row(policy, tenant, principal, event_id, time, stored))
        if stored:
            events.append((time, stored))
    if coverage is not None:
        if rows:
            connection.execute(_INSERT_CONTRIBUTIONS, rows)
        if last is not None:
            after_commit(session, functools.partial(coverage.mark, tenant, principal, policy.hash,
                                                    Covered(int(last), since)))
    return events


def _contribution_row(policy: kernel.Policy, tenant: str, principal: str, event_id: int, time: float,
                      stored: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": event_id, "policy_hash": policy.hash, "tenant_id": tenant, "principal_id": principal,
            "time": time, "contributions": stored, "relevant": bool(stored)}
