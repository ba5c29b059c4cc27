"""Replay: the tenant's recorded decisions re-decided against another policy version.

Each recorded certificate is decided again by the kernel under the version being tried, from what
the certificate recorded: the normalised request, the decision time, the session facts its
invariants read, the approval it presented and the delegation chain it came through. A replay of
the version that made the decisions therefore changes nothing; a replay of a draft answers "what
would this version have decided". Decisions whose session facts the certificate cannot supply (the
draft reads an invariant the recorded version did not, or one that accumulates differently) are
reported as undetermined with the reason, never guessed.

Bounded per call: a window of at most MAX_DAYS, at most MAX_DECISIONS decisions and a time budget;
pages follow the log, newest first, with a keyset cursor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from licet import kernel
from licet.kernel.conditions import SizeOf
from licet.kernel.decision import PresentedApproval
from licet.kernel.delegation import Grant
from licet.kernel.errors import LicetError
from licet.kernel.policy import Invariant
from licet.server.decisions import as_grant
from licet.server.errors import ApiError
from licet.server.identity import Caller
from licet.server.models import GrantRecord, PolicyVersion
from licet.server.routers.evidence import DecisionFilter
from licet.server.services import Services
from licet.server.time import utcnow

MAX_DAYS = 90
MAX_DECISIONS = 5000
DEFAULT_DECISIONS = 1000
MAX_BUDGET_MS = 20_000
DEFAULT_BUDGET_MS = 5_000
MAX_LISTED = 500  # changed and undetermined decisions listed per page (all are counted)

Outcome = Literal["permit", "forbid", "require_approval", "deny"]


# ------------------------------------------------------------------------------------ the answer


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplayedVersion(_Model):
    id: str | None = Field(description="The stored version replayed (null for an inline document)")
    number: int | None
    hash: str


class Verdict(_Model):
    outcome: Outcome
    rules: list[str]


class Transition(_Model):
    old: Outcome
    new: Outcome
    count: int


class Change(_Model):
    certificate_id: str
    log_index: int
    issued_at: str
    principal_id: str
    request: dict[str, Any] = Field(description="The request as certified (normalised)")
    old: Verdict
    new: Verdict


class Undetermined(_Model):
    certificate_id: str
    log_index: int
    reason: str


class ReplayAnswer(_Model):
    version: ReplayedVersion
    since: str = Field(description="The window's start (RFC 3339); the cursor keeps it")
    replayed: int = Field(description="Decisions re-decided in this page")
    changed: int = Field(description="Of these, decisions whose outcome would change")
    rules_changed: int = Field(description="Same outcome, other deciding rules")
    undetermined: int = Field(description="Decisions the recorded session facts cannot re-decide")
    counts: list[Transition] = Field(description="Re-decided decisions by old and new outcome (unchanged included)")
    changes: list[Change] = Field(description=f"The changed decisions, newest first (at most {MAX_LISTED})")
    undetermined_decisions: list[Undetermined] = Field(description=f"Why (at most {MAX_LISTED})")
    stopped: Literal["limit", "time"] | None = Field(
        description="Why the page ended before the window did: its decision limit or its time budget"
    )
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null once the window is done")
    seconds: float


# ------------------------------------------------------------------------------------ the cursor


@dataclass(frozen=True)
class Window:
    """Where a page starts: decisions issued at or after `since`, with a log index below `before`."""

    since: datetime
    before: int | None = None

    def cursor(self, before: int) -> str:
        text = json.dumps({"since": self.since.isoformat(), "before": before}, separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @staticmethod
    def last_days(days: int) -> Window:
        return Window(utcnow() - timedelta(days=days))

    @staticmethod
    def from_cursor(cursor: str) -> Window:
        """The window a `next_cursor` continues; 422 naming `cursor` for anything else."""
        try:
            found = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            since = datetime.fromisoformat(found["since"])
            before = found["before"]
            if since.tzinfo is None or isinstance(before, bool) or not isinstance(before, int) or before < 0:
                raise ValueError(cursor)
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ApiError(422, "invalid_input", "not a cursor a replay returned", "cursor") from None
        return Window(since.astimezone(UTC), before)


# ------------------------------------------------------------------------------------ re-deciding


@dataclass(frozen=True)
class Recorded:
    """A recorded decision: its certificate as stored."""

    id: str
    log_index: int
    principal_id: str
    certificate: dict[str, Any]


@dataclass(frozen=True)
class Known:
    """What the database holds that re-deciding needs: the tenant's versions by hash (the version
    that made each decision) and the grants of the delegation chains by id."""

    versions: Mapping[str, kernel.Policy]
    grants: Mapping[str, Grant]


def _accumulates(policy: kernel.Policy, invariant: Invariant) -> tuple[Any, ...]:
    # What an invariant's session facts depend on: everything but its limit (the types its sum reads
    # with included; its selectors hold their conditions already typed).
    read = (
        [(leaf.attr if isinstance(leaf, SizeOf) else leaf).name for leaf, _ in invariant.sum.terms]
        if invariant.sum
        else []
    )
    return (
        invariant.kind,
        invariant.selector,
        invariant.window_seconds,
        invariant.sum,
        invariant.source,
        policy.lower_resources,
        tuple((name, policy.types.get(name)) for name in read),
    )


def _session_state(
    draft: kernel.Policy,
    recorded: kernel.Policy | None,
    certificate: Mapping[str, Any],
    request: kernel.NormalisedRequest,
) -> dict[str, Any] | str:
    """The recorded session facts as the draft reads them, or why they cannot be."""
    summary = certificate.get("session") or {}
    if certificate["policy"]["hash"] == draft.hash:
        return {"summary": summary}
    involved = kernel.involved_invariants(draft, request)
    if not involved:
        return {"summary": summary}
    if recorded is None:
        return f"the version that made it (hash {certificate['policy']['hash']}) is not stored"
    before = {inv.id: inv for inv in recorded.invariants}
    for inv_id in involved:
        old = before.get(inv_id)
        now = draft.rule(inv_id)
        if (
            inv_id not in summary
            or old is None
            or not isinstance(now, Invariant)
            or _accumulates(recorded, old) != _accumulates(draft, now)
        ):
            return f"invariant {inv_id}: its session facts under this version were not recorded"
    return {"summary": summary}


def redecide(draft: kernel.Policy, item: Recorded, known: Known) -> tuple[str, tuple[str, ...]] | str:
    """The outcome and deciding rules `draft` gives the recorded decision, or why it cannot say."""
    try:
        return _redecide(draft, item.certificate, known)
    except (LicetError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"could not re-decide: {exc}"


def _redecide(draft: kernel.Policy, certificate: Mapping[str, Any], known: Known) -> tuple[str, tuple[str, ...]] | str:
    # The server's order: decide (through the delegation chain), then a presented approval.
    request = kernel.recorded_request(certificate["request"])
    at = datetime.fromisoformat(str(certificate["issued_at"]).replace("Z", "+00:00"))
    state = _session_state(draft, known.versions.get(str(certificate["policy"]["hash"])), certificate, request)
    if isinstance(state, str):
        return state
    used = certificate.get("approval")
    presented = (
        PresentedApproval(str(used["id"]), str(certificate["request_hash"]), tuple(used.get("approvers", ())))
        if isinstance(used, Mapping) and "id" in used
        else None
    )
    again = kernel.decide(draft, request, state=state, now=at, approval=presented)
    outcome: str = again.outcome
    rules = again.rules
    proof = certificate.get("proof")
    chain = certificate.get("delegation") or []
    if chain and outcome != "forbid":
        delegated = _delegated(request, at, chain, proof, known, outcome, rules)
        if isinstance(delegated, str):
            return delegated
        outcome, rules = delegated
    if isinstance(proof, Mapping) and proof.get("approval_refused") and outcome == "require_approval":
        # The server refused the approval presented with it, and would again: a deny naming the rules.
        return "deny", rules
    return outcome, rules


def _delegated(
    request: kernel.NormalisedRequest,
    at: datetime,
    chain: Sequence[Any],
    proof: Any,
    known: Known,
    outcome: str,
    rules: tuple[str, ...],
) -> tuple[str, tuple[str, ...]] | str:
    # As decide_delegated: a chain that was bad then denies; a good one denies what a scope leaves out.
    recorded = proof.get("delegation", {}) if isinstance(proof, Mapping) else {}
    if recorded.get("problems"):
        return "deny", ()
    if outcome not in ("permit", "require_approval"):
        return outcome, rules
    for link in chain:
        grant = known.grants.get(str(link.get("id")))
        if grant is None or grant.scope.hash != link.get("scope_hash"):
            return f"delegation grant {link.get('id')} is no longer stored as it was"
        if kernel.decide(grant.scope, request, now=at).outcome != "permit":
            return "deny", ()
    return outcome, rules


@dataclass
class Page:
    """One page's tally."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes: list[dict[str, Any]] = field(default_factory=list)
    undetermined: list[dict[str, Any]] = field(default_factory=list)
    changed: int = 0
    rules_changed: int = 0
    last_index: int | None = None
    done: int = 0


def _old(certificate: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    return str(certificate["decision"]), tuple(certificate.get("rules") or ())


def replay_rows(draft: kernel.Policy, rows: Sequence[Recorded], known: Known, deadline: float) -> Page:
    """Re-decide `rows` in order until they end or the clock passes `deadline` (one at least)."""
    page = Page()
    for item in rows:
        if page.done and time.monotonic() > deadline:
            break
        again = redecide(draft, item, known)
        page.done += 1
        page.last_index = item.log_index
        if isinstance(again, str):
            if len(page.undetermined) < MAX_LISTED:
                page.undetermined.append({"certificate_id": item.id, "log_index": item.log_index, "reason": again})
            continue
        old = _old(item.certificate)
        page.counts[(old[0], again[0])] += 1
        if old[0] != again[0]:
            page.changed += 1
            if len(page.changes) < MAX_LISTED:
                page.changes.append(
                    {
                        "certificate_id": item.id,
                        "log_index": item.log_index,
                        "issued_at": str(item.certificate.get("issued_at")),
                        "principal_id": item.principal_id,
                        "request": item.certificate.get("request", {}),
                        "old": {"outcome": old[0], "rules": list(old[1])},
                        "new": {"outcome": again[0], "rules": list(again[1])},
                    }
                )
        elif old[1] != again[1]:
            page.rules_changed += 1
    return page


# ------------------------------------------------------------------------------------ the database


async def _known(session: AsyncSession, services: Services, tenant: str, rows: Sequence[Recorded]) -> Known:
    hashes = {str(r.certificate.get("policy", {}).get("hash")) for r in rows}
    versions: dict[str, kernel.Policy] = {}
    for version in (
        await session.execute(
            select(PolicyVersion).where(PolicyVersion.tenant_id == tenant, PolicyVersion.document_hash.in_(hashes))
        )
    ).scalars():
        versions.setdefault(version.document_hash, services.policies.load(version.id, version.source))
    grant_ids = {
        str(link.get("id"))
        for r in rows
        for link in (r.certificate.get("delegation") or [])
        if isinstance(link, Mapping)
    }
    grants: dict[str, Grant] = {}
    if grant_ids:
        grants = {
            g.id: as_grant(g)
            for g in (
                await session.execute(
                    select(GrantRecord).where(GrantRecord.tenant_id == tenant, GrantRecord.id.in_(grant_ids))
                )
            ).scalars()
        }
    return Known(versions, grants)


async def load_page(services: Services, caller: Caller, window: Window, limit: int) -> tuple[list[Recorded], Known]:
    """The page's recorded decisions (newest first; one more than `limit` if there are more) and what
    re-deciding them needs."""
    matching = DecisionFilter(since=window.since)
    async with services.db.read() as session:
        walk = await matching.walks_log(session, caller)
        found = (await session.execute(matching.page(caller, before=window.before, limit=limit + 1,
                                                     walk_log=walk))).all()
        # Thousands of certificates to parse: off the event loop.
        rows = await asyncio.to_thread(
            lambda: [Recorded(r.id, r.log_index, r.principal_id, json.loads(r.body)) for r in found]
        )
        return rows, await _known(session, services, caller.tenant_id, rows[:limit])


def answer(
    draft: kernel.Policy,
    version: dict[str, Any],
    window: Window,
    rows: Sequence[Recorded],
    known: Known,
    limit: int,
    budget_ms: int,
) -> dict[str, Any]:
    """Re-decide a loaded page within the time budget: the response body (runs in a worker thread)."""
    started = time.monotonic()
    page = replay_rows(draft, rows[:limit], known, started + budget_ms / 1000)
    stopped: Literal["limit", "time"] | None = None
    if page.done < min(len(rows), limit):
        stopped = "time"
    elif len(rows) > limit:
        stopped = "limit"
    return {
        "version": version,
        "since": window.since.isoformat(),
        "replayed": page.done,
        "changed": page.changed,
        "rules_changed": page.rules_changed,
        "undetermined": page.done - sum(page.counts.values()),
        "counts": [{"old": old, "new": new, "count": n} for (old, new), n in sorted(page.counts.items())],
        "changes": page.changes,
        "undetermined_decisions": page.undetermined,
        "stopped": stopped,
        "next_cursor": window.cursor(page.last_index) if stopped and page.last_index is not None else None,
        "seconds": round(time.monotonic() - started, 6),
    }
