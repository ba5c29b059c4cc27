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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

import kernel
from kernel.delegation import Grant, decide_delegated, load_grant
from kernel.log import TransparencyLog
from server.errors import ApiError, not_found
from server.identity import Caller
from server.logstore import DatabaseLogStore, lock_head
from server.models import ApiKey, CertificateRecord, GrantRecord, IdempotencyRecord, SessionEvent
from server.services import Services
from server.time import utcnow

MAX_CHAIN = 32


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

    def fingerprint(self) -> str:
        """Identifies the request an idempotency key was first used with."""
        body = {"action": self.action, "resource": self.resource, "args": self.args, "delegation": self.delegation}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def decide_and_record(session: Session, services: Services, policy: kernel.Policy, ask: DecideInput) -> dict[str, Any]:
    """Decide `ask` under `policy` and record the certificate; the API response body."""
    tenant = ask.caller.tenant_id
    connection = session.connection()
    lock_head(connection, tenant)
    if ask.idempotency_key is not None:
        replay = _replay(session, ask)
        if replay is not None:
            return replay
    now = utcnow()
    at = now.timestamp()
    principal = ask.caller.principal()
    chain: list[Grant] = []
    if ask.delegation is not None:
        chain = _chain(session, tenant, ask.delegation)
        principal = _issuer_principal(session, tenant, chain[0].issuer)
    request = {"principal": principal, "action": ask.action, "resource": ask.resource, "args": ask.args,
               "context": {"authenticated": True, "mfa": ask.caller.mfa, "source_ip": ask.source_ip or ""}}
    state = session_history(session, tenant, str(principal["id"]), policy, at)
    if chain:
        decision = decide_delegated(policy, request, chain, agent=ask.caller.principal_id, now=at, state=state)
    else:
        decision = kernel.decide(policy, request, state=state, now=at)
    certificate = kernel.issue_certificate(decision, signer=services.signer, tenant=tenant, issued_at=now,
                                           certificate_id=kernel.uuid7(now, os.urandom(10)))
    leaf = kernel.certificate_leaf(certificate)
    index = TransparencyLog(DatabaseLogStore(connection, tenant), services.origin(tenant)).append(leaf)
    session.execute(insert(CertificateRecord).values(
        id=certificate["id"], tenant_id=tenant, log_index=index, principal_id=str(principal["id"]),
        action=decision.request.action, outcome=decision.outcome, request_hash=decision.request_hash,
        issued_at=now, body=leaf.decode()))
    if decision.outcome == "permit":
        event = {"action": decision.request.action, "resource": decision.request.resource,
                 "args": decision.request.args}
        session.execute(insert(SessionEvent).values(tenant_id=tenant, principal_id=str(principal["id"]),
                                                    time=at, event=event))
    if ask.idempotency_key is not None and ask.caller.key_id is not None:
        session.execute(insert(IdempotencyRecord).values(
            tenant_id=tenant, api_key_id=ask.caller.key_id, key=ask.idempotency_key,
            fingerprint=ask.fingerprint(), certificate_id=certificate["id"], created_at=now))
    return response(certificate, index, replayed=False)


def response(certificate: dict[str, Any], index: int, *, replayed: bool) -> dict[str, Any]:
    """The body of a decide response for a certificate."""
    return {"decision": certificate["decision"], "rules": certificate["rules"], "proof": certificate["proof"],
            "diagnostics": certificate["diagnostics"], "certificate_id": certificate["id"], "log_index": index,
            "certificate": certificate, "replayed": replayed}


def _replay(session: Session, ask: DecideInput) -> dict[str, Any] | None:
    found = session.execute(select(IdempotencyRecord).where(
        IdempotencyRecord.tenant_id == ask.caller.tenant_id, IdempotencyRecord.api_key_id == ask.caller.key_id,
        IdempotencyRecord.key == ask.idempotency_key)).scalar()
    if found is None:
        return None
    if found.fingerprint != ask.fingerprint():
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different request",
                       "Idempotency-Key")
    record = session.execute(select(CertificateRecord).where(
        CertificateRecord.id == found.certificate_id)).scalar_one()
    return response(json.loads(record.body), record.log_index, replayed=True)


def session_history(session: Session, tenant: str, principal_id: str, policy: kernel.Policy,
                    at: float) -> dict[str, Any]:
    """The principal's session history as the kernel reads it (only what some window still sees)."""
    if not policy.invariants:
        return {"history": []}
    windows = [inv.window_seconds for inv in policy.invariants]
    query = select(SessionEvent.time, SessionEvent.event).where(
        SessionEvent.tenant_id == tenant, SessionEvent.principal_id == principal_id)
    if all(w is not None for w in windows):
        query = query.where(SessionEvent.time > at - max(w for w in windows if w is not None))
    rows = session.execute(query.order_by(SessionEvent.id))
    return {"history": [{"time": time, **event} for time, event in rows]}


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


def _issuer_principal(session: Session, tenant: str, issuer: str) -> dict[str, Any]:
    # The issuer's identity as the server knows it (its newest live key); never the agent's claim.
    key = session.execute(select(ApiKey).where(
        ApiKey.tenant_id == tenant, ApiKey.principal_id == issuer, ApiKey.revoked_at.is_(None),
    ).order_by(ApiKey.created_at.desc()).limit(1)).scalar()
    if key is None:
        return {"id": issuer, "tenant": tenant, "roles": []}
    return Caller(tenant, key.role, key.principal_id, tuple(key.principal_roles), dict(key.attributes)).principal()
