"""Delegation grants: issue (proved to attenuate its parent), list, revoke with every descendant."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from licet.kernel.delegation import check_attenuation, descendants
from licet.server import audit, responses
from licet.server.decisions import as_grant, load_grants
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, require
from licet.server.models import GrantRecord
from licet.server.routers import DateTime, JsonObjects, Text
from licet.server.routers.decide import services_of
from licet.server.time import utcnow

router = APIRouter(prefix="/v1/delegations", tags=["delegations"])


class GrantBody(BaseModel):
    """A grant the caller issues: `delegate` may act for the caller within `scope` until `expires_at`."""

    model_config = ConfigDict(extra="forbid")
    delegate: Text = Field(min_length=1, max_length=200, examples=["agent:invoice-helper"])
    scope: JsonObjects = Field(max_length=500, description="Rules in the policy language.", examples=[[
        {"id": "small-refunds", "effect": "permit", "action": ["payments.refund"], "resource": ["/accounts/*"],
         "when": "args.amount <= 100"}]])
    expires_at: DateTime
    max_depth: int = Field(0, ge=0, le=16)
    parent: Text | None = Field(None, max_length=36, description="The grant this one re-delegates.")

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00
            raise ValueError("out of range once in UTC") from None


def _grant_json(record: GrantRecord) -> dict[str, Any]:
    return {"id": record.id, "issuer": record.issuer, "delegate": record.delegate, "parent": record.parent_id,
            "scope": record.document["scope"], "expires_at": record.expires_at.isoformat(),
            "max_depth": record.document.get("max_depth", 0), "created_by": record.created_by,
            "created_at": record.created_at.isoformat(),
            "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None}


# `?dry_run=true`: every check of the real call, its answer, and nothing stored or audited (what a person
# sees before saving a grant or revoking one).
DryRun = Annotated[bool, Query(description="Check and answer as the real call would, but change nothing.")]


@router.post("", status_code=201, summary="Issue a delegation grant (or, with dry_run, only check it)",
             responses={**raises("not_found", "grant_revoked", "not_attenuating", "invalid_policy", "kernel_fault"),
                        200: {"model": responses.GrantView,
                              "description": "with dry_run: the grant as it would be issued; nothing is stored"}},
             response_model=responses.GrantView)
async def issue(body: GrantBody, request: Request, response: Response,
                caller: Annotated[Caller, require("delegations.write")], dry_run: DryRun = False) -> dict[str, Any]:
    """The issuer is the caller. A re-delegation must attenuate its parent, which Z3 proves; if it
    does not, the answer carries a request the child would allow and the parent would not. With
    `dry_run` the answer is 200 and the grant (with the id it would have had) is not stored."""
    if body.expires_at <= utcnow():
        raise ApiError(422, "invalid_input", "the grant would already have expired", "expires_at")
    grant_id = str(uuid.uuid4())
    document = {"id": grant_id, "issuer": caller.principal_id, "delegate": body.delegate, "scope": body.scope,
                "expires_at": body.expires_at.astimezone(UTC).timestamp(), "max_depth": body.max_depth,
                "parent": body.parent}
    record = GrantRecord(id=grant_id, tenant_id=caller.tenant_id, issuer=caller.principal_id,
                         delegate=body.delegate, parent_id=body.parent, document=document,
                         expires_at=body.expires_at, created_by=caller.principal_id, created_at=utcnow())
    child = as_grant(record)  # validates the scope: a bad rule is a 422 naming the field
    db = services_of(request).db
    async with db.read() if dry_run else db.write() as session:
        attenuation = None
        if body.parent is not None:
            parent = (await session.execute(select(GrantRecord).where(
                GrantRecord.tenant_id == caller.tenant_id, GrantRecord.id == body.parent))).scalar()
            if parent is None:
                raise not_found("parent grant")
            if parent.revoked_at is not None:
                raise ApiError(409, "grant_revoked", "the parent grant is revoked", "parent")
            verdict = await asyncio.to_thread(check_attenuation, as_grant(parent), child)
            attenuation = verdict.to_json()
            if not verdict.ok:
                raise ApiError(422, "not_attenuating", "; ".join(verdict.reasons), "scope",
                               {"attenuation": attenuation})
        if dry_run:
            response.status_code = 200
            return {"grant": _grant_json(record), "attenuation": attenuation, "dry_run": True}
        session.add(record)
        await session.flush()
        await audit.record(session, caller, "delegation.issue", grant_id, delegate=body.delegate,
                           parent=body.parent)
        return {"grant": _grant_json(record), "attenuation": attenuation, "dry_run": False}


@router.get("", summary="Grants of the tenant (agents: those they issued or received)",
            response_model=responses.GrantList)
async def list_grants(request: Request, caller: Annotated[Caller, require("delegations.read")]) -> dict[str, Any]:
    """Every grant, oldest first."""
    async with services_of(request).db.read() as session:
        query = select(GrantRecord).where(GrantRecord.tenant_id == caller.tenant_id)
        if caller.role == "agent":
            query = query.where((GrantRecord.issuer == caller.principal_id)
                                | (GrantRecord.delegate == caller.principal_id))
        grants = (await session.execute(query.order_by(GrantRecord.created_at))).scalars()
        return {"grants": [_grant_json(g) for g in grants]}


@router.post("/{grant_id}/revoke", summary="Revoke a grant and every grant issued under it (or, with dry_run, "
             "only list them)", responses=raises("not_found"), response_model=responses.RevokedGrants)
async def revoke(grant_id: Text, request: Request, caller: Annotated[Caller, require("delegations.write")],
                 dry_run: DryRun = False) -> dict[str, Any]:
    """Agents may revoke only grants they issued (or that descend from those). With `dry_run`, the
    answer names what the revocation would cascade to, and nothing is revoked."""
    db = services_of(request).db
    async with db.read() if dry_run else db.write() as session:
        grants = await session.run_sync(load_grants, caller.tenant_id)
        target = grants.get(grant_id)
        if target is None or (caller.role == "agent" and target.issuer != caller.principal_id):
            raise not_found("grant")
        revoked = sorted(descendants([as_grant(g) for g in grants.values()], grant_id))
        if dry_run:
            return {"revoked": revoked, "dry_run": True}
        now = utcnow()
        for gid in revoked:
            if grants[gid].revoked_at is None:
                grants[gid].revoked_at = now
        await audit.record(session, caller, "delegation.revoke", grant_id, cascade=revoked)
        return {"revoked": revoked, "dry_run": False}
