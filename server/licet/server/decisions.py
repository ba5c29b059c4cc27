"""Deciding a request inside one write transaction: lock the tenant's log, read the session
history, decide with the kernel, sign the certificate, append it to the evidence log and record the
session event and idempotency key, all committed together.

Everything here runs synchronously on the transaction's connection (through `run_sync`): the whole
step holds the tenant's append lock, which is also what makes session budgets race-free (two
concurrent transfers cannot both read the same spent amount).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from licet import kernel
from licet.kernel.decision import Decision, PresentedApproval
from licet.kernel.delegation import Grant, decide_delegated, load_grant
from licet.server import approvals
from licet.server.db import transaction_state
from licet.server.errors import ApiError, not_found
from licet.server.history import record_event, session_state
from licet.server.identity import Caller, KeyCredential, live_key
from licet.server.logstore import locked_store, pending_appends
from licet.server.models import (
    ApiKey,
    AuditEvent,
    Base,
    CertificateRecord,
    GrantRecord,
    IdempotencyRecord,
)
from licet.server.services import Services
from licet.server.time import utcnow

MAX_CHAIN = 32

# The hot path's statements, built once (SQLAlchemy then only binds values to its cached compilation).
_tables = Base.metadata.tables
_tenants, _versions = _tables["tenants"], _tables["policy_versions"]
_certificates, _certificate_rules = _tables["certificates"], _tables["certificate_rules"]
_ACTIVE_VERSION = select(_tenants.c.active_version_id).where(_tenants.c.id == bindparam("tenant"))
_VERSION_SOURCE = select(_versions.c.source).where(_versions.c.id == bindparam("version"))


@dataclass(frozen=True)
class DecideInput:
    """What the agent asked, and what the server knows about the call."""

    caller: Caller
    action: str
    resource: str
    args: dict[str, Any]
    source_ip: str | None
    delegation: str | None = None
    idempotency_key: str | None = None
    approval_id: str | None = None  # a granted approval presented for this exact request

    def fingerprint(self) -> str:
        """Identifies the request an idempotency key was first used with."""
        body = {"action": self.action, "resource": self.resource, "args": self.args, "delegation": self.delegation}
        if self.approval_id is not None:
            body["approval"] = self.approval_id
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class _ReadOnce:
    """What the decisions of one write transaction read once: the rows of the API keys they were
    asked with, and each tenant's active version (read under its log lock, which the transaction
    holds to its end). The units of a group were all submitted before its transaction began
    (server/db.py), so a key revoked or a version activated before any of them was asked is seen."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.versions: dict[str, str | None] = {}


def active_policy(session: Session, services: Services, tenant: str) -> kernel.Policy:
    """The tenant's active policy; 409 if none is active (nothing can be permitted then). Call it
    holding the tenant's log lock."""
    connection = session.connection()
    versions = transaction_state(session, _ReadOnce).versions
    if tenant not in versions:
        versions[tenant] = connection.execute(_ACTIVE_VERSION, {"tenant": tenant}).scalar()
    version_id = versions[tenant]
    if version_id is None:
        raise ApiError(409, "no_active_policy", "this tenant has no active policy: nothing can be permitted")
    policy = services.policies.get(version_id)
    if policy is None:
        source = connection.execute(_VERSION_SOURCE, {"version": version_id}).scalar_one()
        policy = services.policies.load(version_id, source)
    return policy


def decide_as(session: Session, services: Services, credential: Caller | KeyCredential,
              ask: Callable[[Caller], DecideInput]) -> Recorded | ApiError:
    """`decide_and_record` for whom `credential` names, an API key being looked up in this same
    transaction. A refused key is returned, not raised: nothing was written, and the decisions
    committed together with this one (server/db.py) go on."""
    if isinstance(credential, KeyCredential):
        keys = transaction_state(session, _ReadOnce).keys
        if credential.digest not in keys:
            keys[credential.digest] = credential.row(session.connection())
        try:
            credential = credential.admitted(keys[credential.digest])
        except ApiError as refused:
            return refused
    return decide_and_record(session, services, ask(credential))


def decide_and_record(session: Session, services: Services, ask: DecideInput) -> Recorded:
    """Decide `ask` under the tenant's active policy and record the certificate; the response body.
    The policy is read under the append lock, so an activation applies from the next decision on."""
    tenant = ask.caller.tenant_id
    store = locked_store(session, tenant)
    policy = active_policy(session, services, tenant)
    if ask.idempotency_key is not None:
        replay = _replay(session, ask, services.settings.idempotency_ttl_seconds)
        if replay is not None:
            return replay
    now = utcnow()
    at = now.timestamp()
    principal = ask.caller.principal()
    chain: list[Grant] = []
    if ask.delegation is not None:
        chain = _chain(session, tenant, ask.delegation)
        principal = _issuer_principal(session, tenant, chain[0].issuer, now)
    request = {"principal": principal, "action": ask.action, "resource": ask.resource, "args": ask.args,
               "context": {"authenticated": True, "mfa": ask.caller.mfa, "source_ip": ask.source_ip or ""}}
    # Most requests touch no invariant: then there is no session state to read.
    involved = kernel.involved_invariants(policy, request)
    state = (session_state(session, tenant, str(principal["id"]), policy, at, services.coverage) if involved
             else {"summary": {}})

    def decide(approval: PresentedApproval | None = None) -> Decision:
        if chain:
            return decide_delegated(policy, request, chain, agent=ask.caller.principal_id, now=at, state=state,
                                    approval=approval)
        return kernel.decide(policy, request, state=state, now=at, approval=approval)

    decision = decide()
    certificate_id = kernel.uuid7(now, os.urandom(10))
    # Approvals change state in this same transaction (and log head lock): opened, consumed, refused.
    tx = approvals.Tx(session, services, tenant, store, now)
    extra: dict[str, Any] = {}
    if decision.outcome == "require_approval" and ask.approval_id is not None:
        decision, extra = _present(tx, ask, ask.approval_id, decision, certificate_id, decide, chain)
    certificate = kernel.issue_certificate(decision, signer=services.signer_at(now), tenant=tenant, issued_at=now,
                                           certificate_id=certificate_id)
    leaf = kernel.certificate_leaf(certificate)
    index = services.transparency_log(tx.store).append(leaf)
    pending = pending_appends(session)
    pending.add(_certificates, [{
        "id": certificate["id"], "tenant_id": tenant, "log_index": index, "principal_id": str(principal["id"]),
        "action": decision.request.action, "outcome": decision.outcome, "request_hash": decision.request_hash,
        "issued_at": now, "body": leaf.decode()}])
    pending.add(_certificate_rules, [{"tenant_id": tenant, "rule": rule, "log_index": index}
                                     for rule in sorted(set(decision.rules))])
    if decision.outcome == "permit":
        record_event(session, tenant, str(principal["id"]), at, decision.request, policy)
    if decision.outcome == "require_approval":
        row, reused = approvals.open_or_reuse(tx, ask.caller, decision, certificate_id, chain)
        extra = {"approval": {**approvals.summary(row), "reused": reused}}
    if ask.idempotency_key is not None:
        session.execute(insert(IdempotencyRecord).values(
            tenant_id=tenant, principal=idempotency_principal(ask.caller), key=ask.idempotency_key,
            fingerprint=ask.fingerprint(), certificate_id=certificate["id"], created_at=now))
    return response(certificate, leaf, index, replayed=False, extra=extra, jobs=tuple(tx.jobs))


def _present(tx: approvals.Tx, ask: DecideInput, approval_id: str, decision: Decision, certificate_id: str,
             decide: Callable[[PresentedApproval], Decision], chain: list[Grant]) -> tuple[Decision, dict[str, Any]]:
    """The decision for a request presented with an approval: the permit it grants (the approval is
    consumed), or a certified deny saying why the approval cannot be used."""
    found = approvals.check_presented(tx, ask.caller, approval_id, decision, chain)
    if not isinstance(found, approvals.Refusal):
        permitted = decide(approvals.presented(found, tx.session))
        if permitted.outcome != "permit":
            found = approvals.Refusal("approval_not_applicable", f"approval {approval_id} does not permit this "
                                      f"request under the active policy ({permitted.outcome})")
        elif approvals.consume(tx, found, certificate_id):
            return permitted, {"approval": {**approvals.summary(found),
                                            "approvers": list(permitted.approval_used.approvers
                                                              if permitted.approval_used else ())}}
        else:
            found = approvals.Refusal("approval_used", f"approval {approval_id} was used by another decision")
    session = tx.session
    session.execute(insert(AuditEvent).values(
        tenant_id=tx.tenant, at=tx.now, actor=ask.caller.principal_id, action="approval.refused",
        target=f"approval:{approval_id}", details={"code": found.code, "reason": found.reason,
                                                   "certificate_id": certificate_id, "key_id": ask.caller.key_id}))
    return approvals.refused(decision, approval_id, found), {
        "approval_refused": {"id": approval_id, "code": found.code, "reason": found.reason}}


@dataclass(frozen=True)
class Recorded:
    """A certified decision as the API returns it: the outcome, the response body (JSON bytes) and the
    approval jobs to enqueue once the transaction has committed."""

    outcome: str
    body: bytes
    jobs: tuple[approvals.Job, ...] = ()


def response(certificate: dict[str, Any], leaf: bytes, index: int, *, replayed: bool,
             extra: dict[str, Any] | None = None, jobs: tuple[approvals.Job, ...] = ()) -> Recorded:
    """The decide response for a certificate: the certificate is spliced in as its canonical bytes,
    so it is not encoded twice (it is most of the body). `extra`: the approval it opened or used,
    or why a presented approval was refused."""
    head = json.dumps({"decision": certificate["decision"], "rules": certificate["rules"],
                       "proof": certificate["proof"], "diagnostics": certificate["diagnostics"],
                       "certificate_id": certificate["id"], "log_index": index, "replayed": replayed,
                       **(extra or {})})
    return Recorded(certificate["decision"], head[:-1].encode() + b', "certificate": ' + leaf + b"}", jobs)


def idempotency_principal(caller: Caller) -> str:
    """Whose Idempotency-Keys a caller uses: its API key's, or the signed-in person's."""
    if caller.key_id is not None:
        return f"key:{caller.key_id}"
    if caller.user_id is not None:
        return f"user:{caller.user_id}"
    raise ValueError("a caller is an API key or a person")


def _replay(session: Session, ask: DecideInput, ttl_seconds: int) -> Recorded | None:
    same_key = (IdempotencyRecord.tenant_id == ask.caller.tenant_id) & (
        IdempotencyRecord.principal == idempotency_principal(ask.caller)) & (
        IdempotencyRecord.key == ask.idempotency_key)
    found = session.execute(select(IdempotencyRecord).where(same_key)).scalar()
    if found is None:
        return None
    if found.created_at <= utcnow() - timedelta(seconds=ttl_seconds):
        session.execute(delete(IdempotencyRecord).where(same_key))  # expired: the key may be reused
        return None
    if found.fingerprint != ask.fingerprint():
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different request",
                       "Idempotency-Key")
    pending_appends(session).write(session.connection())  # the certificate may be one this transaction holds
    record = session.execute(select(CertificateRecord).where(
        CertificateRecord.id == found.certificate_id)).scalar_one()
    certificate = json.loads(record.body)
    return response(certificate, record.body.encode(), record.log_index, replayed=True,
                    extra=_replayed_approval(session, ask, certificate))


def _replayed_approval(session: Session, ask: DecideInput, certificate: dict[str, Any]) -> dict[str, Any]:
    # What the first response said of approvals, as things stand now.
    refused = certificate["proof"].get("approval_refused") if isinstance(certificate["proof"], dict) else None
    if refused:
        return {"approval_refused": refused}
    used = certificate.get("approval")
    if isinstance(used, dict) and "id" in used:
        return {"approval": {"id": used["id"], "state": "used", "approvers": used.get("approvers", [])}}
    if certificate["decision"] == "require_approval":
        row = approvals.current_for(session, ask.caller.tenant_id, ask.caller.principal_id,
                                    certificate["request_hash"])
        if row is not None:
            return {"approval": {**approvals.summary(row), "reused": True}}
    return {}


def load_grants(session: Session, tenant: str) -> dict[str, GrantRecord]:
    """Every grant of the tenant by id."""
    return {g.id: g for g in session.execute(select(GrantRecord).where(GrantRecord.tenant_id == tenant)).scalars()}


def as_grant(record: GrantRecord) -> Grant:
    """The kernel's grant for a stored one (revocation included)."""
    return load_grant({**record.document, "revoked": record.revoked_at is not None}, f"grant {record.id}")


def _chain(session: Session, tenant: str, leaf_id: str) -> list[Grant]:
    # Root first. The kernel checks every link (expiry, revocation, attenuation, who to whom).
    chain: list[Grant] = []
    current: str | None = leaf_id
    while current is not None:
        record = session.execute(select(GrantRecord).where(
            GrantRecord.tenant_id == tenant, GrantRecord.id == current)).scalar()
        if record is None:
            raise not_found(f"delegation grant {current}")
        if len(chain) == MAX_CHAIN:
            raise ApiError(422, "delegation_too_deep", f"delegation chains are limited to {MAX_CHAIN} links",
                           "delegation")
        chain.append(as_grant(record))
        current = record.parent_id
    return chain[::-1]


def _issuer_principal(session: Session, tenant: str, issuer: str, now: datetime) -> dict[str, Any]:
    # The issuer's identity as the server knows it (its newest key that would authenticate now: neither
    # revoked nor expired); never the agent's claim. With none, no roles or attributes (fail closed).
    key = session.execute(select(ApiKey).where(
        ApiKey.tenant_id == tenant, ApiKey.principal_id == issuer, live_key(now),
    ).order_by(ApiKey.created_at.desc()).limit(1)).scalar()
    if key is None:
        return {"id": issuer, "tenant": tenant, "roles": []}
    return Caller(tenant, key.role, key.principal_id, tuple(key.principal_roles), dict(key.attributes)).principal()
