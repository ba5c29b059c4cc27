"""Policies with immutable versions: validate, create, diff, replay, query, activate, roll back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from licet import kernel
from licet.kernel.analysis import check_policy, diff, query, unapprovable
from licet.kernel.document import load_document
from licet.kernel.errors import PolicyError
from licet.server import audit, replay, responses
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, require
from licet.server.models import PolicyActivation, PolicyRecord, PolicyVersion, Tenant
from licet.server.roles import PERMISSIONS
from licet.server.routers import INT32_MAX, JsonObject, Text
from licet.server.routers.decide import services_of
from licet.server.services import Services
from licet.server.time import utcnow

router = APIRouter(prefix="/v1/policies", tags=["policies"])

MAX_SOURCE = 512 * 1024
EXAMPLE = ("id: payments\nversion: 1\nrules:\n"
           "  - {id: read, effect: permit, action: [api.read], resource: ['/api/**']}\n")


class SourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=MAX_SOURCE, description="The policy document, YAML or JSON.",
                        examples=[EXAMPLE])


class ValidateBody(SourceBody):
    analysis: StrictBool = Field(True, description="false: load and type-check only, answered at once (an editor "
                           "checks each keystroke so, and asks for the analysis when typing pauses).")


class DiffBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=INT32_MAX, description="The version to compare (default: the newest).")
    against: int | None = Field(None, ge=1, le=INT32_MAX,
                                description="The version to compare with (default: the active one).")
    max_examples: int = Field(5, ge=1, le=50)


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=INT32_MAX,
                                description="The stored version to replay (default: the newest); not with `source`.")
    source: str | None = Field(None, min_length=1, max_length=MAX_SOURCE,
                               description="A document to replay instead of a stored version (YAML or JSON).")
    days: int = Field(7, ge=1, le=replay.MAX_DAYS, description="Replay the decisions of the last `days` days.")
    limit: int = Field(replay.DEFAULT_DECISIONS, ge=1, le=replay.MAX_DECISIONS,
                       description="At most this many decisions in this page.")
    budget_ms: int = Field(replay.DEFAULT_BUDGET_MS, ge=1, le=replay.MAX_BUDGET_MS,
                           description="Stop re-deciding after this many milliseconds (at least one decision).")
    cursor: str | None = Field(None, max_length=500,
                               description="A `next_cursor`: the next page of the same window (`days` is then unused).")


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: JsonObject = Field(examples=[{"action": "*.delete", "resource": "/prod/**",
                                               "when": '"analyst" in principal.roles'}])
    version_id: Text | None = Field(None, max_length=36, description="Default: the active version.")


class ActivateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field("", max_length=500)


MAX_NAME = 200  # the policies.name column


VersionNumber = Annotated[int, Path(ge=1, le=INT32_MAX)]


def _load(source: str) -> kernel.Policy:
    try:
        policy = kernel.load_policy(source, "source")
    except RecursionError:  # a document nested deeper than the YAML parser can follow
        raise PolicyError("nested too deeply", file="source", line=1, column=1) from None
    if len(policy.id) > MAX_NAME:
        raise load_document(source, "source").error("id", f"at most {MAX_NAME} characters")
    return policy


def _version_json(version: PolicyVersion, active: str | None, *, source: bool = False) -> dict[str, Any]:
    out = {"id": version.id, "policy_id": version.policy_id, "number": version.number, "hash": version.document_hash,
           "created_by": version.created_by, "created_at": version.created_at.isoformat(),
           "activated_at": version.activated_at.isoformat() if version.activated_at else None,
           "activated_by": version.activated_by, "active": version.id == active}
    if source:
        out["source"] = version.source
    return out


async def _active_id(session: AsyncSession, tenant: str) -> str | None:
    return (await session.execute(select(Tenant.active_version_id).where(Tenant.id == tenant))).scalar()


async def _rollback_target(session: AsyncSession, tenant: str) -> PolicyVersion | None:
    """The version a roll-back re-activates: the one active before the current one, walking back through
    the activations (activations push, roll-backs pop); None when there is none."""
    history = (await session.execute(select(PolicyActivation.version_id, PolicyActivation.rollback).where(
        PolicyActivation.tenant_id == tenant).order_by(PolicyActivation.id))).all()
    stack: list[str] = []
    for version_id, was_rollback in history:
        if was_rollback:
            stack.pop()
        else:
            stack.append(version_id)
    if len(stack) < 2:
        return None
    return (await session.execute(select(PolicyVersion).where(PolicyVersion.id == stack[-2]))).scalar_one()


async def _policy(session: AsyncSession, tenant: str, policy_id: str) -> PolicyRecord:
    found = (await session.execute(select(PolicyRecord).where(
        PolicyRecord.tenant_id == tenant, PolicyRecord.id == policy_id))).scalar()
    if found is None:
        raise not_found("policy")
    return found


async def _version(session: AsyncSession, tenant: str, policy_id: str, number: int | None) -> PolicyVersion:
    query_ = select(PolicyVersion).where(PolicyVersion.tenant_id == tenant, PolicyVersion.policy_id == policy_id)
    query_ = query_.where(PolicyVersion.number == number) if number is not None else query_.order_by(
        PolicyVersion.number.desc()).limit(1)
    found = (await session.execute(query_)).scalar()
    if found is None:
        raise not_found("policy version")
    return found


@router.post("/validate", summary="Validate a policy without storing it",
             responses=raises("invalid_policy", "kernel_fault"), response_model=responses.Validated)
async def validate(body: ValidateBody, caller: Annotated[Caller, require("policies.write")]) -> dict[str, Any]:
    """Load and type-check the document; with `analysis`, report rules proved never to apply and approval
    roles no person who may vote holds (the analysis `licet policy check` runs)."""
    policy = _load(body.source)
    never = await asyncio.to_thread(check_policy, policy, PERMISSIONS["approvals.vote"]) if body.analysis else []
    return {"valid": True, "id": policy.id, "version": policy.version, "hash": policy.hash,
            "rules": len(policy.rules), "invariants": len(policy.invariants), "analysed": body.analysis,
            "never_applying": [n.to_json() for n in never]}


@router.post("", status_code=201, summary="Store a new version of a policy (a draft until activated)",
             responses=raises("invalid_policy"), response_model=responses.CreatedVersion)
async def create(body: SourceBody, request: Request, caller: Annotated[Caller, require("policies.write")],
                 ) -> dict[str, Any]:
    """The document's `id` names the policy; each upload becomes its next immutable version."""
    policy = _load(body.source)
    services = services_of(request)
    now = utcnow()
    async with services.db.write() as session:
        record = (await session.execute(select(PolicyRecord).where(
            PolicyRecord.tenant_id == caller.tenant_id, PolicyRecord.name == policy.id))).scalar()
        if record is None:
            record = PolicyRecord(id=str(uuid.uuid4()), tenant_id=caller.tenant_id, name=policy.id, created_at=now)
            session.add(record)
            await session.flush()
        number = (await session.execute(select(func.coalesce(func.max(PolicyVersion.number), 0)).where(
            PolicyVersion.policy_id == record.id))).scalar_one() + 1
        version = PolicyVersion(id=str(uuid.uuid4()), tenant_id=caller.tenant_id, policy_id=record.id,
                                number=number, source=body.source, document_hash=policy.hash,
                                created_by=caller.principal_id, created_at=now)
        session.add(version)
        await session.flush()
        await audit.record(session, caller, "policy.version.create", version.id, policy=policy.id, number=number)
        active = await _active_id(session, caller.tenant_id)
    return {"policy": {"id": record.id, "name": record.name}, "version": _version_json(version, active)}


@router.get("", summary="List the tenant's policies", response_model=responses.PolicyList)
async def list_policies(request: Request, caller: Annotated[Caller, require("policies.read")]) -> dict[str, Any]:
    """Every policy with its newest version number, the active version and the one a roll-back would
    re-activate (so its impact can be shown before it is done)."""
    async with services_of(request).db.read() as session:
        active = await _active_id(session, caller.tenant_id)
        rows = (await session.execute(select(PolicyRecord, func.max(PolicyVersion.number)).join(
            PolicyVersion, PolicyVersion.policy_id == PolicyRecord.id).where(
            PolicyRecord.tenant_id == caller.tenant_id).group_by(PolicyRecord.id).order_by(PolicyRecord.name))).all()
        active_version = None
        if active is not None:
            found = (await session.execute(select(PolicyVersion).where(PolicyVersion.id == active))).scalar_one()
            active_version = _version_json(found, active)
        target = await _rollback_target(session, caller.tenant_id)
    return {"policies": [{"id": p.id, "name": p.name, "latest": n} for p, n in rows], "active": active_version,
            "rollback_to": _version_json(target, active) if target is not None else None}


@router.get("/{policy_id}", responses=raises("not_found"), summary="A policy and its versions",
            response_model=responses.PolicyDetail)
async def get_policy(policy_id: Text, request: Request, caller: Annotated[Caller, require("policies.read")],
                     ) -> dict[str, Any]:
    """The policy's versions, newest first."""
    async with services_of(request).db.read() as session:
        record = await _policy(session, caller.tenant_id, policy_id)
        active = await _active_id(session, caller.tenant_id)
        versions = (await session.execute(select(PolicyVersion).where(
            PolicyVersion.policy_id == record.id).order_by(PolicyVersion.number.desc()))).scalars()
        return {"id": record.id, "name": record.name, "versions": [_version_json(v, active) for v in versions]}


@router.get("/{policy_id}/versions/{number}", responses=raises("not_found"), summary="One version, with its source",
            response_model=responses.PolicyVersionSource)
async def get_version(policy_id: Text, number: VersionNumber, request: Request,
                      caller: Annotated[Caller, require("policies.read")]) -> dict[str, Any]:
    """The stored document exactly as uploaded."""
    async with services_of(request).db.read() as session:
        await _policy(session, caller.tenant_id, policy_id)
        version = await _version(session, caller.tenant_id, policy_id, number)
        return _version_json(version, await _active_id(session, caller.tenant_id), source=True)


@router.post("/{policy_id}/diff", summary="What a version permits that another does not, and the reverse",
             responses=raises("not_found", "no_active_policy", "kernel_fault"), response_model=responses.PolicyDiff)
async def diff_versions(policy_id: Text, body: DiffBody, request: Request,
                        caller: Annotated[Caller, require("policies.read")]) -> dict[str, Any]:
    """Compare a version (default: newest) with another (default: the active one), proved by Z3."""
    services = services_of(request)
    async with services.db.read() as session:
        await _policy(session, caller.tenant_id, policy_id)
        new = await _version(session, caller.tenant_id, policy_id, body.version)
        if body.against is not None:
            old = await _version(session, caller.tenant_id, policy_id, body.against)
        else:
            active = await _active_id(session, caller.tenant_id)
            if active is None:
                raise ApiError(409, "no_active_policy", "no active version to compare with; name one in 'against'",
                               "against")
            old = (await session.execute(select(PolicyVersion).where(PolicyVersion.id == active))).scalar_one()
    result = await asyncio.to_thread(diff, services.policies.load(old.id, old.source),
                                     services.policies.load(new.id, new.source), max_examples=body.max_examples)
    return {"old": {"id": old.id, "number": old.number}, "new": {"id": new.id, "number": new.number},
            **result.to_json()}


@router.post("/{policy_id}/replay", summary="Re-decide the tenant's recent decisions under a version",
             responses=raises("not_found", "invalid_policy"), response_model=replay.ReplayAnswer)
async def replay_decisions(policy_id: Text, body: ReplayBody, request: Request,
                           caller: Annotated[Caller, require("policies.read")]) -> dict[str, Any]:
    """What a version (default: the newest; or an inline `source`) would have decided for each
    decision the tenant recorded in the last `days` days, newest first: counts by old and new
    outcome and the changed decisions. Each is decided from its certificate (request, time, session
    facts, approval, delegation), so replaying the version that decided it changes nothing. Paged:
    at most `limit` decisions and `budget_ms` per call; continue with `cursor` = `next_cursor`."""
    if body.source is not None and body.version is not None:
        raise ApiError(422, "invalid_input", "give either a stored 'version' or a 'source', not both", "source")
    services = services_of(request)
    window = replay.Window.from_cursor(body.cursor) if body.cursor else replay.Window.last_days(body.days)
    async with services.db.read() as session:
        await _policy(session, caller.tenant_id, policy_id)
        stored = await _version(session, caller.tenant_id, policy_id, body.version) if body.source is None else None
    if stored is not None:
        draft = services.policies.load(stored.id, stored.source)
        version: dict[str, Any] = {"id": stored.id, "number": stored.number, "hash": draft.hash}
    else:
        draft = _load(body.source or "")
        version = {"id": None, "number": None, "hash": draft.hash}
    rows, known = await replay.load_page(services, caller, window, body.limit)
    return await asyncio.to_thread(replay.answer, draft, version, window, rows, known, body.limit, body.budget_ms)


@router.post("/query", summary="Can any request matching a pattern be permitted?",
             responses=raises("not_found", "no_active_policy", "invalid_policy", "invalid_request", "kernel_fault"),
             response_model=responses.QueryAnswer)
async def query_policy(body: QueryBody, request: Request, caller: Annotated[Caller, require("policies.read")],
                       ) -> dict[str, Any]:
    """An example request, or Z3's proof that none exists."""
    services = services_of(request)
    async with services.db.read() as session:
        version_id = body.version_id or await _active_id(session, caller.tenant_id)
        if version_id is None:
            raise ApiError(409, "no_active_policy", "no active version; name one in 'version_id'", "version_id")
        found = (await session.execute(select(PolicyVersion).where(
            PolicyVersion.tenant_id == caller.tenant_id, PolicyVersion.id == version_id))).scalar()
    if found is None:
        raise not_found("policy version")
    answer = await asyncio.to_thread(query, services.policies.load(found.id, found.source), body.pattern)
    return {"version_id": found.id, **answer.to_json()}


def _refuse_unapprovable(policy: kernel.Policy, source: str) -> None:
    """Refuse a version (`policy`, loaded from `source`) with a require_approval rule or invariant whose
    role no person who may vote holds: its requests would wait for a vote nobody can cast until they
    expire. The first such rule is named with its role and where its `approval.role` is."""
    found = unapprovable(policy, PERMISSIONS["approvals.vote"])
    if not found:
        return
    item, role = found[0]
    document = load_document(source, "source")
    field = next((f"{section}[{index}].approval.role" for section in ("rules", "invariants")
                  for index, entry in enumerate(document.value.get(section) or [])
                  if isinstance(entry, dict) and entry.get("id") == item.id), "source")
    where = document.error(field, "")
    voters = ", ".join(sorted(PERMISSIONS["approvals.vote"]))
    raise ApiError(422, "unapprovable_policy", f"rule {item.id!r} asks for approval by role {role!r}, which no "
                   f"person who may vote holds (roles that may: {voters}): its requests could never be approved, "
                   "so this version is not activated", field,
                   {"rule": item.id, "role": role, "line": where.line, "column": where.column})


async def _activate(session: AsyncSession, services: Services, caller: Caller, version: PolicyVersion,
                    reason: str, *, rollback: bool = False) -> dict[str, Any]:
    _refuse_unapprovable(services.policies.load(version.id, version.source), version.source)
    now = utcnow()
    await session.execute(update(Tenant).where(Tenant.id == caller.tenant_id).values(active_version_id=version.id))
    if version.activated_at is None:
        version.activated_at, version.activated_by = now, caller.principal_id
    session.add(PolicyActivation(tenant_id=caller.tenant_id, version_id=version.id, at=now, by=caller.principal_id,
                                 reason=reason, rollback=rollback))
    await audit.record(session, caller, "policy.rollback" if rollback else "policy.activate", version.id,
                       number=version.number, reason=reason)
    return {"active": _version_json(version, version.id), "activated_at": now.isoformat(),
            "activated_by": caller.principal_id}


@router.post("/{policy_id}/versions/{number}/activate", summary="Make a version the tenant's active policy",
             responses=raises("not_found", "unapprovable_policy"), response_model=responses.Activation)
async def activate(policy_id: Text, number: VersionNumber, body: ActivateBody, request: Request,
                   caller: Annotated[Caller, require("policies.activate", step_up=True)]) -> dict[str, Any]:
    """Decisions already running finish on the version they started with; new ones use this one."""
    services = services_of(request)
    async with services.db.write() as session:
        await _policy(session, caller.tenant_id, policy_id)
        version = await _version(session, caller.tenant_id, policy_id, number)
        return await _activate(session, services, caller, version, body.reason)


@router.post("/rollback", summary="Re-activate the version that was active before the current one",
             responses=raises("nothing_to_roll_back", "unapprovable_policy"), response_model=responses.Activation)
async def rollback(body: ActivateBody, request: Request,
                   caller: Annotated[Caller, require("policies.activate", step_up=True)]) -> dict[str, Any]:
    """Walks back through the activations, one per call (activations push, rollbacks pop)."""
    services = services_of(request)
    async with services.db.write() as session:
        version = await _rollback_target(session, caller.tenant_id)
        if version is None:
            raise ApiError(409, "nothing_to_roll_back", "no earlier active version")
        return await _activate(session, services, caller, version, body.reason or "rollback", rollback=True)
