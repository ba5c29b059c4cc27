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
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select
from sqlalchemy.orm import Session

import kernel
from kernel.delegation import Grant, decide_delegated, load_grant
from server.errors import ApiError, not_found
from server.identity import Caller
from server.logstore import DatabaseLogStore, lock_head
from server.models import (
    ApiKey,
    Base,
    CertificateRecord,
    GrantRecord,
    IdempotencyRecord,
)
from server.services import Services
from server.time import utcnow

MAX_CHAIN = 32

# The hot path's statements, built once (SQLAlchemy then only binds values to its cached compilation).
_tables = Base.metadata.tables
_tenants, _versions = _tables["tenants"], _tables["policy_versions"]
_certificates, _events, _contributions = _tables["certificates"], _tables["session_events"], _tables[
    "session_contributions"]
_ACTIVE_VERSION = select(_tenants.c.active_version_id).where(_tenants.c.id == bindparam("tenant"))
_VERSION_SOURCE = select(_versions.c.source).where(_versions.c.id == bindparam("version"))
_INSERT_CERTIFICATE = insert(_certificates)
_INSERT_EVENT = insert(_events).returning(_events.c.id)
_INSERT_CONTRIBUTIONS = insert(_contributions)
_SEEN = and_(_events.c.tenant_id == bindparam("tenant"), _events.c.principal_id == bindparam("principal"),
             _events.c.time > bindparam("since"))
_FOR_POLICY = and_(_contributions.c.event_id == _events.c.id, _contributions.c.policy_hash == bindparam("policy"))
_STORED = select(_events.c.time, _contributions.c.contributions).join(_contributions, _FOR_POLICY).where(
    _SEEN, _contributions.c.relevant)
# Events no decision under this policy version has looked at yet (after an activation).
_UNSEEN = select(_events.c.id, _events.c.time, _events.c.event).where(
    _SEEN, ~select(_contributions.c.event_id).where(_FOR_POLICY).exists())


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


def active_policy(session: Session, services: Services, tenant: str) -> kernel.Policy:
    """The tenant's active policy; 409 if none is active (nothing can be permitted then)."""
    connection = session.connection()
    version_id = connection.execute(_ACTIVE_VERSION, {"tenant": tenant}).scalar()
    if version_id is None:
        raise ApiError(409, "no_active_policy", "this tenant has no active policy: nothing can be permitted")
    policy = services.policies.get(version_id)
    if policy is None:
        source = connection.execute(_VERSION_SOURCE, {"version": version_id}).scalar_one()
        policy = services.policies.load(version_id, source)
    return policy


def decide_and_record(session: Session, services: Services, ask: DecideInput) -> Recorded:
    """Decide `ask` under the tenant's active policy and record the certificate; the response body.
    The policy is read under the append lock, so an activation applies from the next decision on."""
    tenant = ask.caller.tenant_id
    connection = session.connection()
    size = lock_head(connection, tenant)
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
        principal = _issuer_principal(session, tenant, chain[0].issuer)
    request = {"principal": principal, "action": ask.action, "resource": ask.resource, "args": ask.args,
               "context": {"authenticated": True, "mfa": ask.caller.mfa, "source_ip": ask.source_ip or ""}}
    # Most requests touch no invariant: then there is no session state to read.
    involved = kernel.involved_invariants(policy, request)
    state = session_state(session, tenant, str(principal["id"]), policy, at) if involved else {"summary": {}}
    if chain:
        decision = decide_delegated(policy, request, chain, agent=ask.caller.principal_id, now=at, state=state)
    else:
        decision = kernel.decide(policy, request, state=state, now=at)
    certificate = kernel.issue_certificate(decision, signer=services.signer, tenant=tenant, issued_at=now,
                                           certificate_id=kernel.uuid7(now, os.urandom(10)))
    leaf = kernel.certificate_leaf(certificate)
    index = services.transparency_log(DatabaseLogStore(connection, tenant, size)).append(leaf)
    connection.execute(_INSERT_CERTIFICATE, {
        "id": certificate["id"], "tenant_id": tenant, "log_index": index, "principal_id": str(principal["id"]),
        "action": decision.request.action, "outcome": decision.outcome, "request_hash": decision.request_hash,
        "issued_at": now, "body": leaf.decode()})
    if decision.outcome == "permit":
        event = decision.request.to_json()
        event_id = connection.execute(_INSERT_EVENT, {
            "tenant_id": tenant, "principal_id": str(principal["id"]), "time": at, "event": event}).scalar_one()
        if policy.invariants:
            stored = kernel.event_contributions(policy, event)
            connection.execute(_INSERT_CONTRIBUTIONS, {
                "event_id": event_id, "policy_hash": policy.hash, "contributions": stored, "relevant": bool(stored)})
    if ask.idempotency_key is not None and ask.caller.key_id is not None:
        session.execute(insert(IdempotencyRecord).values(
            tenant_id=tenant, api_key_id=ask.caller.key_id, key=ask.idempotency_key,
            fingerprint=ask.fingerprint(), certificate_id=certificate["id"], created_at=now))
    return response(certificate, leaf, index, replayed=False)


@dataclass(frozen=True)
class Recorded:
    """A certified decision as the API returns it: the outcome and the response body (JSON bytes)."""

    outcome: str
    body: bytes


def response(certificate: dict[str, Any], leaf: bytes, index: int, *, replayed: bool) -> Recorded:
    """The decide response for a certificate: the certificate is spliced in as its canonical bytes,
    so it is not encoded twice (it is most of the body)."""
    head = json.dumps({"decision": certificate["decision"], "rules": certificate["rules"],
                       "proof": certificate["proof"], "diagnostics": certificate["diagnostics"],
                       "certificate_id": certificate["id"], "log_index": index, "replayed": replayed})
    return Recorded(certificate["decision"], head[:-1].encode() + b', "certificate": ' + leaf + b"}")


def _replay(session: Session, ask: DecideInput, ttl_seconds: int) -> Recorded | None:
    same_key = (IdempotencyRecord.tenant_id == ask.caller.tenant_id) & (
        IdempotencyRecord.api_key_id == ask.caller.key_id) & (IdempotencyRecord.key == ask.idempotency_key)
    found = session.execute(select(IdempotencyRecord).where(same_key)).scalar()
    if found is None:
        return None
    if found.created_at <= utcnow() - timedelta(seconds=ttl_seconds):
        session.execute(delete(IdempotencyRecord).where(same_key))  # expired: the key may be reused
        return None
    if found.fingerprint != ask.fingerprint():
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different request",
                       "Idempotency-Key")
    record = session.execute(select(CertificateRecord).where(
        CertificateRecord.id == found.certificate_id)).scalar_one()
    return response(json.loads(record.body), record.body.encode(), record.log_index, replayed=True)


def session_state(session: Session, tenant: str, principal_id: str, policy: kernel.Policy,
                  at: float, *, remember: bool = True) -> dict[str, Any]:
    """The principal's session state for `policy` as a kernel summary, from the stored contributions
    of the events some invariant's window still sees (computed once per event and policy version)."""
    if not policy.invariants:
        return {"summary": {}}
    windows = [inv.window_seconds for inv in policy.invariants]
    since = at - max(w for w in windows if w is not None) if all(w is not None for w in windows) else -1.0
    where = {"tenant": tenant, "principal": principal_id, "since": since, "policy": policy.hash}
    connection = session.connection()
    events: list[tuple[float, dict[str, Any]]] = [(t, c) for t, c in connection.execute(_STORED, where)]
    rows = []
    for event_id, time, event in connection.execute(_UNSEEN, where):
        stored = kernel.event_contributions(policy, event)
        events.append((time, stored))
        rows.append({"event_id": event_id, "policy_hash": policy.hash, "contributions": stored,
                     "relevant": bool(stored)})
    if rows and remember:
        connection.execute(_INSERT_CONTRIBUTIONS, rows)
    return {"summary": kernel.summary_from_contributions(policy, events, at)}


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
