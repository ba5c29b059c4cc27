"""Approvals: a require_approval decision opens one, bound to the exact normalised request hash, the
tenant and the requesting agent; people vote; a granted approval is consumed once, by the decision it
turns into a permit.

Every function that changes an approval runs synchronously inside one write transaction holding the
tenant's log-head lock (`Tx.begin`, as decisions do): the state change, its audit row, its signed entry
in the tenant's evidence log and its webhook outbox rows commit together or not at all. The jobs a
transaction returns (webhook deliveries, expiry and escalation timers) are enqueued only after the
commit, and nothing depends on them running: a past deadline is refused at use regardless.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from licet import kernel
from licet.kernel.canonical import canonical_json
from licet.kernel.decision import Decision, PresentedApproval
from licet.kernel.delegation import Grant
from licet.kernel.policy import Approval as ApprovalSpec
from licet.server.errors import ApiError, not_found
from licet.server.identity import Caller
from licet.server.logstore import DatabaseLogStore, locked_store
from licet.server.models import (
    ApiKey,
    ApprovalRecord,
    ApprovalSettings,
    ApprovalVote,
    AuditEvent,
    PolicyRecord,
    PolicyVersion,
    Webhook,
    WebhookDelivery,
)
from licet.server.services import Services
from licet.server.time import utcnow

EVENT_VERSION = "licet.approval-event/1"
OPEN = ("pending", "granted")
STATES = ("pending", "granted", "used", "denied", "expired", "cancelled")
# The events a webhook can subscribe to: each happens at most once per approval, so one delivery each.
WEBHOOK_EVENTS = ("opened", "escalated", "granted", "denied", "expired", "cancelled", "used")

JobKind = Literal["deliver", "expire", "escalate"]


@dataclass(frozen=True)
class Job:
    """Work for a worker after the transaction commits: deliver a webhook, expire or escalate an
    approval (not before `at`). Every job is idempotent, so running one twice changes nothing."""

    kind: JobKind
    id: str
    at: datetime | None = None


@dataclass
class Tx:
    """One write transaction on one tenant's approvals, holding its log-head lock."""

    session: Session
    services: Services
    tenant: str
    store: DatabaseLogStore
    now: datetime
    jobs: list[Job] = field(default_factory=list)

    @classmethod
    def begin(cls, session: Session, services: Services, tenant: str, now: datetime | None = None) -> Tx:
        """Take the tenant's append lock (so events and decisions are ordered in its log)."""
        return cls(session, services, tenant, locked_store(session, tenant), now or utcnow())


@dataclass(frozen=True)
class Refusal:
    """Why a presented approval cannot turn this request into a permit (a stable code and a sentence)."""

    code: str
    reason: str


@dataclass(frozen=True)
class Defaults:
    """Where a rule's `approval:` block is silent: the tenant's settings, else the server's."""

    quorum: int
    role: str
    ttl_seconds: int
    deny_quorum: int
    escalate_after_seconds: int
    escalate_role: str


def defaults(session: Session, services: Services, tenant: str) -> Defaults:
    """The tenant's approval defaults (its own settings over the server's)."""
    s = services.settings
    row = session.execute(select(ApprovalSettings).where(ApprovalSettings.tenant_id == tenant)).scalar()

    def pick(name: str, fallback: Any) -> Any:
        value = getattr(row, name) if row is not None else None
        return fallback if value is None else value

    return Defaults(pick("quorum", s.approval_quorum), pick("role", s.approval_role),
                    pick("ttl_seconds", s.approval_ttl_seconds), pick("deny_quorum", s.approval_deny_quorum),
                    pick("escalate_after_seconds", s.approval_escalate_after_seconds),
                    pick("escalate_role", s.approval_escalate_role))


def rfc3339(moment: datetime) -> str:
    """A UTC time as certificates write it."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ the evidence


def signed_event(services: Services, tenant: str, row: ApprovalRecord, event: str, actor: str,
                 details: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An approval state change as a signed record: RFC 8785 canonical JSON signed with Ed25519 by the
    certificate key, exactly like a certificate (the signature covers every other field)."""
    signer = services.signer_at(now)
    body: dict[str, Any] = {
        "version": EVENT_VERSION, "id": kernel.uuid7(now, os.urandom(10)), "tenant": tenant,
        "issued_at": rfc3339(now), "key_id": signer.key_id, "approval": row.id, "event": event,
        "state": row.state, "actor": actor, "request_hash": row.request_hash, "details": details}
    body["signature"] = base64.b64encode(signer.sign(canonical_json(body))).decode()
    return body


def record(tx: Tx, row: ApprovalRecord, event: str, actor: str, **details: Any) -> int:
    """Put an approval event in the audit trail and in the tenant's evidence log (and, for the events
    webhooks see, in the webhook outbox); its log index."""
    signed = signed_event(tx.services, tx.tenant, row, event, actor, details, tx.now)
    index = tx.services.transparency_log(tx.store).append(canonical_json(signed))
    tx.session.execute(insert(AuditEvent).values(
        tenant_id=tx.tenant, at=tx.now, actor=actor, action=f"approval.{event}", target=f"approval:{row.id}",
        details={**details, "state": row.state, "log_index": index, "event_id": signed["id"]}))
    if event in WEBHOOK_EVENTS:
        _outbox(tx, row, event)
    return index


def _outbox(tx: Tx, row: ApprovalRecord, event: str) -> None:
    hooks = tx.session.execute(select(Webhook).where(
        Webhook.tenant_id == tx.tenant, Webhook.disabled_at.is_(None))).scalars().all()
    subscribed = [h for h in hooks if not h.events or event in h.events]
    if not subscribed:
        return
    view = approval_json(row, votes(tx.session, row.id))
    for hook in subscribed:
        delivery = str(uuid.uuid4())
        payload = {"delivery": delivery, "event": f"approval.{event}", "tenant": tx.tenant, "at": rfc3339(tx.now),
                   "approval": view}
        tx.session.execute(insert(WebhookDelivery).values(
            id=delivery, tenant_id=tx.tenant, webhook_id=hook.id, approval_id=row.id, event=event, payload=payload,
            state="pending", attempts=0, created_at=tx.now, next_attempt_at=tx.now))
        tx.jobs.append(Job("deliver", delivery))


# ------------------------------------------------------------------------------- opening and views


def excluded_principals(session: Session, caller: Caller, principal_id: str, chain: Sequence[Grant]) -> list[str]:
    """Who may never vote on a request: the caller, the principal it acts as, the person who made the
    caller's API key (who could otherwise ask through it and approve themselves), and every issuer and
    delegate of its delegation chain."""
    people = {caller.principal_id, principal_id}
    if caller.key_id is not None:
        people.add(session.execute(select(ApiKey.created_by).where(ApiKey.id == caller.key_id)).scalar_one())
    for grant in chain:
        people.update((grant.issuer, grant.delegate))
    return sorted(people)


def open_or_reuse(tx: Tx, caller: Caller, decision: Decision, certificate_id: str,
                  chain: Sequence[Grant]) -> tuple[ApprovalRecord, bool]:
    """The approval this require_approval decision waits for: the caller's open one for the very same
    request if there is one (asking again does not page the approvers again), else a new one."""
    existing = tx.session.execute(select(ApprovalRecord).where(
        ApprovalRecord.tenant_id == tx.tenant, ApprovalRecord.request_hash == decision.request_hash,
        ApprovalRecord.agent_id == caller.principal_id, ApprovalRecord.state.in_(OPEN),
        ApprovalRecord.deadline > tx.now).order_by(ApprovalRecord.created_at.desc()).limit(1)).scalar()
    if existing is not None:
        return existing, True
    spec = decision.approval or ApprovalSpec()
    base = defaults(tx.session, tx.services, tx.tenant)
    roles = sorted(set(spec.role.split(","))) if spec.role else [base.role]
    # Several roles (rules merged strictest): each must be among the approvers, so at least one each.
    quorum = max(spec.quorum or base.quorum, len(roles))
    deadline = tx.now + timedelta(seconds=spec.ttl_seconds or base.ttl_seconds)
    escalate_at = None
    if base.escalate_after_seconds > 0 and tx.now + timedelta(seconds=base.escalate_after_seconds) < deadline:
        escalate_at = tx.now + timedelta(seconds=base.escalate_after_seconds)
    request = decision.request.to_json()
    row = ApprovalRecord(
        id=kernel.uuid7(tx.now, os.urandom(10)), tenant_id=tx.tenant, state="pending", agent_id=caller.principal_id,
        key_id=caller.key_id, principal_id=str(request["principal"].get("id", "")),
        excluded=excluded_principals(tx.session, caller, str(request["principal"].get("id", "")), chain),
        action=decision.request.action, resource=decision.request.resource, request=request,
        request_hash=decision.request_hash, rules=list(decision.rules), policy_hash=decision.policy_hash,
        quorum=quorum, deny_quorum=base.deny_quorum, roles=roles,
        escalate_role=base.escalate_role if escalate_at is not None else None, escalate_at=escalate_at,
        created_at=tx.now, deadline=deadline, opened_certificate_id=certificate_id)
    tx.session.add(row)
    tx.session.flush()
    record(tx, row, "opened", caller.principal_id, certificate_id=certificate_id, quorum=quorum, roles=roles,
           deadline=rfc3339(deadline), rules=list(decision.rules))
    tx.jobs.append(Job("expire", row.id, deadline))
    if escalate_at is not None:
        tx.jobs.append(Job("escalate", row.id, escalate_at))
    return row, False


def votes(session: Session, approval_id: str) -> list[ApprovalVote]:
    """An approval's votes, oldest first."""
    return votes_of(session, [approval_id])[approval_id]


def votes_of(session: Session, approval_ids: Sequence[str]) -> dict[str, list[ApprovalVote]]:
    """The votes of each of `approval_ids`, oldest first, in one query (a page of the queue)."""
    out: dict[str, list[ApprovalVote]] = {i: [] for i in approval_ids}
    for vote in session.execute(select(ApprovalVote).where(ApprovalVote.approval_id.in_(approval_ids))
                                .order_by(ApprovalVote.at)).scalars():
        out[vote.approval_id].append(vote)
    return out


def policy_versions(session: Session, tenant: str, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored version each policy hash is (`{policy_id, name, number}`, the first stored if several)."""
    rows = session.execute(select(PolicyVersion.document_hash, PolicyVersion.policy_id, PolicyRecord.name,
                                  PolicyVersion.number)
                           .join(PolicyRecord, PolicyRecord.id == PolicyVersion.policy_id)
                           .where(PolicyVersion.tenant_id == tenant, PolicyVersion.document_hash.in_(set(hashes)))
                           .order_by(PolicyVersion.number.desc())).all()
    return {h: {"policy_id": policy, "name": name, "number": number}  # the lowest number wins
            for h, policy, name, number in rows}


def approvers(ballots: Iterable[ApprovalVote]) -> list[str]:
    """The principals who approved."""
    return sorted(v.voter for v in ballots if v.vote == "approve")


def approval_json(row: ApprovalRecord, ballots: Sequence[ApprovalVote], viewer: Caller | None = None,
                  versions: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """An approval as the API shows it: the full request, the rules, the requirement and every vote;
    with a `viewer`, whether that caller may approve it now and, if not, why (`your_vote`); with
    `versions` (from `policy_versions`), the stored policy version that asked for it."""
    shown = _approval_fields(row, ballots)
    if versions is not None:
        shown["policy_version"] = versions.get(row.policy_hash)
    if viewer is not None:
        refused = vote_refusal(row, viewer, ballots, utcnow())
        shown["your_vote"] = {"allowed": refused is None, "code": refused.code if refused else None,
                              "reason": refused.message if refused else None}
    return shown


def _approval_fields(row: ApprovalRecord, ballots: Sequence[ApprovalVote]) -> dict[str, Any]:
    return {
        "id": row.id, "state": row.state, "action": row.action, "resource": row.resource, "request": row.request,
        "request_hash": row.request_hash, "rules": row.rules, "policy_hash": row.policy_hash,
        "requested_by": row.agent_id, "principal": row.principal_id, "quorum": row.quorum,
        "deny_quorum": row.deny_quorum, "roles": row.roles, "escalation": {
            "role": row.escalate_role, "at": _time(row.escalate_at), "escalated_at": _time(row.escalated_at)},
        "created_at": rfc3339(row.created_at), "deadline": rfc3339(row.deadline), "closed_at": _time(row.closed_at),
        "reason": row.reason, "approvals": sum(v.vote == "approve" for v in ballots),
        "denials": sum(v.vote == "deny" for v in ballots),
        "votes": [{"voter": v.voter, "role": v.role, "vote": v.vote, "reason": v.reason, "at": rfc3339(v.at)}
                  for v in ballots],
        "opened_certificate_id": row.opened_certificate_id, "used_at": _time(row.used_at),
        "used_certificate_id": row.used_certificate_id}


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)


def summary(row: ApprovalRecord) -> dict[str, Any]:
    """What a decide response says of its approval."""
    return {"id": row.id, "state": row.state, "deadline": rfc3339(row.deadline), "quorum": row.quorum,
            "roles": row.roles}


# ---------------------------------------------------------------------------- presenting (consume)


def check_presented(tx: Tx, caller: Caller, approval_id: str, decision: Decision,
                    chain: Sequence[Grant]) -> ApprovalRecord | Refusal:
    """The granted approval `approval_id` if it may permit this decision's request (made through
    `chain`), else why not. An approval past its deadline is expired here, whether or not a worker got
    to it; one approved by someone the request as made now would exclude (a different delegation
    chain than when it opened) is refused."""
    row = tx.session.execute(select(ApprovalRecord).where(
        ApprovalRecord.tenant_id == tx.tenant, ApprovalRecord.id == approval_id)).scalar()
    if row is None:  # another tenant's id gets exactly what an id that names nothing gets
        return Refusal("approval_unknown", f"there is no approval {approval_id}")
    if row.agent_id != caller.principal_id:
        return Refusal("approval_other_agent", f"approval {approval_id} was requested by another principal; "
                       "an approval is used only by the agent that asked for it")
    if row.request_hash != decision.request_hash:
        where = ", ".join(differences(row.request, decision.request.to_json())) or "its hash"
        return Refusal("approval_request_mismatch", f"this request differs from the one approval {approval_id} "
                       f"was granted for, in {where}; an approval is bound to the exact request")
    if row.state in OPEN and row.deadline <= tx.now:
        expire_row(tx, row, "deadline")
    if row.state != "granted":
        return Refusal(f"approval_{row.state}", _not_granted(row))
    voters = set(approvers(votes(tx.session, row.id)))
    involved = voters & set(excluded_principals(tx.session, caller, str(row.request["principal"].get("id", "")),
                                                chain))
    if involved:
        return Refusal("approval_self_approved", f"approval {approval_id} was approved by "
                       f"{', '.join(sorted(involved))}, who takes part in this request as now made (its "
                       "delegation chain differs from the one it was opened with)")
    return row


def _not_granted(row: ApprovalRecord) -> str:
    if row.state == "pending":
        return f"approval {row.id} is still pending (quorum {row.quorum} not reached)"
    if row.state == "used":
        return (f"approval {row.id} was already used at {rfc3339(row.used_at or row.created_at)} "
                f"(certificate {row.used_certificate_id}); an approval permits one action")
    if row.state == "expired":
        return f"approval {row.id} expired at {rfc3339(row.deadline)}"
    return f"approval {row.id} was {row.state}" + (f": {row.reason}" if row.reason else "")


def differences(approved: Any, presented: Any, path: str = "") -> list[str]:
    """The paths where two requests differ (names only: the approved values are not repeated)."""
    if isinstance(approved, dict) and isinstance(presented, dict):
        found: list[str] = []
        for key in sorted(set(approved) | set(presented), key=str):
            found += differences(approved.get(key, _MISSING), presented.get(key, _MISSING),
                                 f"{path}.{key}" if path else str(key))
        return found
    return [] if approved == presented else [path or "the request"]


_MISSING = object()


def presented(row: ApprovalRecord, session: Session) -> PresentedApproval:
    """What the kernel needs of a granted approval."""
    return PresentedApproval(row.id, row.request_hash, tuple(approvers(votes(session, row.id))))


def consume(tx: Tx, row: ApprovalRecord, certificate_id: str) -> bool:
    """Mark a granted approval used by `certificate_id`: one atomic conditional UPDATE, so of two
    concurrent uses at most one succeeds."""
    used = tx.session.connection().execute(update(ApprovalRecord).where(
        ApprovalRecord.id == row.id, ApprovalRecord.tenant_id == tx.tenant, ApprovalRecord.state == "granted",
        ApprovalRecord.used_at.is_(None), ApprovalRecord.deadline > tx.now,
    ).values(state="used", used_at=tx.now, used_certificate_id=certificate_id))
    if used.rowcount != 1:
        return False
    tx.session.refresh(row)
    record(tx, row, "used", row.agent_id, certificate_id=certificate_id)
    return True


def refused(decision: Decision, approval_id: str, refusal: Refusal) -> Decision:
    """The certified refusal of a presented approval: a deny of the request (whose rules still require
    approval), the reason in the proof, under the theorem hash and signature like any proof."""
    proof = {**decision.proof, "approval_refused": {"id": approval_id, "code": refusal.code,
                                                    "reason": refusal.reason}}
    return replace(decision, outcome="deny", proof=proof, approval=None, approval_used=None)


def current_for(session: Session, tenant: str, agent: str, request_hash: str) -> ApprovalRecord | None:
    """The newest approval of `agent` for this request (what a replayed decide response names)."""
    return session.execute(select(ApprovalRecord).where(
        ApprovalRecord.tenant_id == tenant, ApprovalRecord.agent_id == agent,
        ApprovalRecord.request_hash == request_hash).order_by(ApprovalRecord.created_at.desc()).limit(1)).scalar()


# ---------------------------------------------------------------------------------- state changes


def _load(tx: Tx, approval_id: str) -> ApprovalRecord:
    row = tx.session.execute(select(ApprovalRecord).where(
        ApprovalRecord.tenant_id == tx.tenant, ApprovalRecord.id == approval_id).with_for_update()).scalar()
    if row is None:
        raise not_found("approval")
    return row


def _transition(tx: Tx, row: ApprovalRecord, to: str, *, from_states: Sequence[str] = OPEN,
                **values: Any) -> bool:
    # A conditional UPDATE: whoever changes the state first wins, everyone else sees rowcount 0.
    changed = tx.session.connection().execute(update(ApprovalRecord).where(
        ApprovalRecord.id == row.id, ApprovalRecord.state.in_(from_states)).values(state=to, **values))
    if changed.rowcount != 1:
        return False
    tx.session.refresh(row)
    return True


def vote_refusal(row: ApprovalRecord, caller: Caller, ballots: Sequence[ApprovalVote], now: datetime,
                 approve: bool = True, reason: str | None = None) -> ApiError | None:
    """Why `caller` may not cast this vote on `row` now, or None: the requester and anyone in its
    delegation chain, roles the approval does not name, a second vote of the same person and a closed
    approval are refused (the dashboard shows the same reason beside the buttons it hides)."""
    if caller.user_id is None:
        return ApiError(403, "step_up_required", "only a person signed in with multi-factor authentication votes")
    if caller.principal_id in row.excluded:
        return ApiError(403, "self_approval", "the requester (or anyone acting for it or through whom it acts) "
                        "never approves its own request")
    eligible = set(row.roles) | ({row.escalate_role} if row.escalated_at and row.escalate_role else set())
    if caller.role not in eligible:
        return ApiError(403, "not_an_approver", f"this approval needs a person of role {', '.join(sorted(eligible))}")
    if not approve and not (reason and reason.strip()):
        return ApiError(422, "reason_required", "a denial needs a reason", "reason")
    if row.state != "pending" or row.deadline <= now:
        state = "expired" if row.state == "pending" else row.state  # the sweep records the expiry
        return ApiError(409, "approval_closed", f"approval {row.id} is {state}; votes are closed")
    if any(v.voter == caller.principal_id or v.user_id == caller.user_id for v in ballots):
        return ApiError(409, "already_voted", "each person votes once on an approval")
    return None


def cast_vote(tx: Tx, caller: Caller, approval_id: str, approve: bool, reason: str | None) -> ApprovalRecord:
    """A person's approve or deny, unless `vote_refusal` says why not."""
    row = _load(tx, approval_id)
    refused = vote_refusal(row, caller, votes(tx.session, row.id), tx.now, approve, reason)
    if refused is not None:
        raise refused
    tx.session.add(ApprovalVote(approval_id=row.id, voter=caller.principal_id, tenant_id=tx.tenant,
                                user_id=caller.user_id, session_id=caller.session_id, role=caller.role,
                                vote="approve" if approve else "deny", reason=reason, at=tx.now))
    tx.session.flush()
    record(tx, row, "vote", caller.principal_id, vote="approve" if approve else "deny", reason=reason,
           role=caller.role, session_id=caller.session_id)
    ballots = votes(tx.session, row.id)
    denials = sum(v.vote == "deny" for v in ballots)
    if denials >= row.deny_quorum:
        if _transition(tx, row, "denied", from_states=("pending",), closed_at=tx.now, reason=reason):
            record(tx, row, "denied", caller.principal_id, denials=denials, reason=reason)
    elif _quorum_reached(row, ballots) and _transition(tx, row, "granted", from_states=("pending",),
                                                       closed_at=tx.now):
        record(tx, row, "granted", caller.principal_id, approvers=approvers(ballots))
    return row


def _quorum_reached(row: ApprovalRecord, ballots: Sequence[ApprovalVote]) -> bool:
    yes = [v for v in ballots if v.vote == "approve"]
    if len(yes) < row.quorum:
        return False
    # Every role the rules named must be among the approvers; after escalation the second role's
    # approvers stand in for roles nobody of which approved.
    missing = [r for r in row.roles if not any(v.role == r for v in yes)]
    stand_ins = sum(v.role == row.escalate_role for v in yes) if row.escalated_at else 0
    return len(missing) <= stand_ins


def cancel(tx: Tx, caller: Caller, approval_id: str, reason: str) -> ApprovalRecord:
    """The requester withdraws its request (owners and admins may withdraw any); pending or granted only."""
    row = _load(tx, approval_id)
    if caller.role == "agent" and row.agent_id != caller.principal_id:
        raise not_found("approval")  # an agent sees only its own approvals
    if not _transition(tx, row, "cancelled", closed_at=tx.now, reason=reason):
        raise ApiError(409, "approval_closed", f"approval {row.id} is {row.state}; only an open one can be cancelled")
    record(tx, row, "cancelled", caller.principal_id, reason=reason)
    return row


def expire_row(tx: Tx, row: ApprovalRecord, why: str) -> bool:
    """Close an open approval whose deadline has passed (idempotent)."""
    if row.deadline > tx.now or not _transition(tx, row, "expired", closed_at=tx.now):
        return False
    record(tx, row, "expired", "licet", reason=why, deadline=rfc3339(row.deadline))
    return True


def escalate_row(tx: Tx, row: ApprovalRecord) -> bool:
    """Let the second role vote on a still pending approval once its time has come (idempotent)."""
    if row.escalate_at is None or row.escalate_at > tx.now or row.escalated_at is not None:
        return False
    changed = tx.session.connection().execute(update(ApprovalRecord).where(
        ApprovalRecord.id == row.id, ApprovalRecord.state == "pending", ApprovalRecord.escalated_at.is_(None),
    ).values(escalated_at=tx.now))
    if changed.rowcount != 1:
        return False
    tx.session.refresh(row)
    record(tx, row, "escalated", "licet", role=row.escalate_role)
    return True


def tenant_of(session: Session, approval_id: str) -> str | None:
    """The tenant of an approval (workers act for every tenant)."""
    found: str | None = session.execute(select(ApprovalRecord.tenant_id).where(
        ApprovalRecord.id == approval_id)).scalar()
    return found


def expire(session: Session, services: Services, approval_id: str) -> list[Job]:
    """Worker task body: expire the approval if its deadline has passed."""
    tenant = tenant_of(session, approval_id)
    if tenant is None:
        return []
    tx = Tx.begin(session, services, tenant)
    row = _load(tx, approval_id)
    if row.state in OPEN and row.deadline > tx.now:
        return [Job("expire", row.id, row.deadline)]  # early (clock skew, an early retry): try again then
    expire_row(tx, row, "deadline")
    return tx.jobs


def escalate(session: Session, services: Services, approval_id: str) -> list[Job]:
    """Worker task body: escalate the approval if it is still pending at its escalation time."""
    tenant = tenant_of(session, approval_id)
    if tenant is None:
        return []
    tx = Tx.begin(session, services, tenant)
    row = _load(tx, approval_id)
    if row.state == "pending" and row.escalated_at is None and row.escalate_at is not None and (
            row.escalate_at > tx.now):
        return [Job("escalate", row.id, row.escalate_at)]
    if row.state == "pending":
        escalate_row(tx, row)
    return tx.jobs


def due(session: Session, now: datetime, horizon: timedelta) -> list[Job]:
    """The periodic sweep: every approval past its deadline or escalation time, every timer falling
    within `horizon` (scheduled precisely), and every webhook delivery due and not leased."""
    jobs: list[Job] = []
    for ident, deadline in session.execute(select(ApprovalRecord.id, ApprovalRecord.deadline).where(
            ApprovalRecord.state.in_(OPEN), ApprovalRecord.deadline <= now + horizon)):
        jobs.append(Job("expire", ident, None if deadline <= now else deadline))
    for ident, at in session.execute(select(ApprovalRecord.id, ApprovalRecord.escalate_at).where(
            ApprovalRecord.state == "pending", ApprovalRecord.escalated_at.is_(None),
            ApprovalRecord.escalate_at <= now + horizon)):
        jobs.append(Job("escalate", ident, None if at is None or at <= now else at))
    for (ident,) in session.execute(select(WebhookDelivery.id).where(
            WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now,
            (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now))):
        jobs.append(Job("deliver", ident))
    return jobs
