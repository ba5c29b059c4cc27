"""Approvals (`/v1/approvals`): people see what agents wait for and vote; agents follow and cancel
their own. Tenant approval defaults and webhooks (`/v1/webhooks`) that announce approval events."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from licet.server import approvals, audit, responses
from licet.server.approvals import OPEN, WEBHOOK_EVENTS, Job, Tx, webhooks
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, authenticate, require
from licet.server.models import (
    ApprovalRecord,
    ApprovalSettings,
    ApprovalVote,
    AuditEvent,
    Webhook,
    WebhookDelivery,
)
from licet.server.roles import PERMISSIONS, allowed
from licet.server.routers import INT32_MAX, Text
from licet.server.routers.decide import services_of
from licet.server.services import Services
from licet.server.time import utcnow

router = APIRouter(prefix="/v1", tags=["approvals"])

ApprovalId = Annotated[str, Path(max_length=36)]
StateFilter = Literal["pending", "granted", "used", "denied", "expired", "cancelled", "open", "all"]
CANCELLED = "cancelled by the requester"


def readers() -> Any:
    """A dependency: people who review approvals (`approvals.read`), or requesters (`approvals.request`),
    who see only the approvals they asked for."""

    async def check(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if not (allowed(caller.role, "approvals.read") or allowed(caller.role, "approvals.request")):
            raise ApiError(403, "forbidden", f"the {caller.role} role may not read approvals")
        return caller

    # The role table (server/route_table.py) reads one permission per route: `approvals.status`, the
    # union of the two, once server/roles.py names it.
    check.permission = "approvals.status" if "approvals.status" in PERMISSIONS else "approvals.read"  # type: ignore[attr-defined]
    check.step_up = False  # type: ignore[attr-defined]
    return Depends(check)


def _own_only(caller: Caller) -> bool:
    return not allowed(caller.role, "approvals.read")


class VoteBody(BaseModel):
    """A vote's reason (required to deny)."""

    model_config = ConfigDict(extra="forbid")
    reason: Text | None = Field(None, max_length=1000, examples=["checked the invoice with the supplier"])


class DenyBody(BaseModel):
    """Why the request is denied."""

    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=1, max_length=1000, examples=["supplier unknown"])


class CancelBody(BaseModel):
    """Why the requester withdraws its request."""

    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(CANCELLED, min_length=1, max_length=1000)


async def _write(request: Request, fn: Any, *args: Any) -> Any:
    """Run `fn(tx, *args)` in one write transaction on the caller's tenant, then enqueue its jobs."""
    services = services_of(request)
    view, jobs = await services.db.run_write(_in_tx, services, fn, args)
    await request.app.state.dispatcher.submit(jobs)
    return view


def _in_tx(session: Session, services: Services, fn: Any, args: tuple[Any, ...]) -> tuple[Any, list[Job]]:
    caller: Caller = args[0]
    tx = Tx.begin(session, services, caller.tenant_id)
    row = fn(tx, *args)
    return approvals.approval_json(row, approvals.votes(session, row.id)), tx.jobs


def _ballots_and_versions(session: Session, tenant: str, rows: Sequence[ApprovalRecord],
                          ) -> tuple[dict[str, list[ApprovalVote]], dict[str, dict[str, Any]]]:
    return (approvals.votes_of(session, [r.id for r in rows]),
            approvals.policy_versions(session, tenant, {r.policy_hash for r in rows}))


@router.get("/approvals", summary="Approvals, newest first (pending ones by default)",
            response_model=responses.ApprovalPage)
async def list_approvals(request: Request, caller: Annotated[Caller, readers()],
                         state: Annotated[StateFilter, Query(description="`open`: pending or granted")] = "pending",
                         before: Annotated[str | None, Query(max_length=36, description="An approval id to page "
                                                             "before")] = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Each with the full request, the rules that asked for it, the requirement and every vote so far
    (requesters: only their own)."""
    query = select(ApprovalRecord).where(ApprovalRecord.tenant_id == caller.tenant_id)
    if state == "open":
        query = query.where(ApprovalRecord.state.in_(OPEN))
    elif state != "all":
        query = query.where(ApprovalRecord.state == state)
    if _own_only(caller):
        query = query.where(ApprovalRecord.agent_id == caller.principal_id)
    if before is not None:
        query = query.where(ApprovalRecord.id < before)  # ids are UUIDv7: they sort by creation time
    async with services_of(request).db.read() as session:
        rows = (await session.execute(query.order_by(ApprovalRecord.id.desc()).limit(limit))).scalars().all()
        ballots, versions = await session.run_sync(_ballots_and_versions, caller.tenant_id, rows)
        items = [approvals.approval_json(r, ballots[r.id], caller, versions) for r in rows]
    return {"approvals": items, "next_before": items[-1]["id"] if len(items) == limit else None}


@router.get("/approvals/settings", summary="The tenant's approval defaults", response_model=responses.ApprovalDefaults)
async def get_settings(request: Request, caller: Annotated[Caller, require("approvals.read")]) -> dict[str, Any]:
    """What applies where a rule's `approval:` block is silent: the tenant's own values, else the server's."""
    services = services_of(request)
    async with services.db.read() as session:
        found = await session.run_sync(approvals.defaults, services, caller.tenant_id)
    return {"quorum": found.quorum, "role": found.role, "ttl_seconds": found.ttl_seconds,
            "deny_quorum": found.deny_quorum, "escalate_after_seconds": found.escalate_after_seconds,
            "escalate_role": found.escalate_role}


Role = Literal["owner", "admin", "policy_author", "approver", "auditor"]


class SettingsBody(BaseModel):
    """Tenant approval defaults; a field left out (or null) falls back to the server's setting."""

    model_config = ConfigDict(extra="forbid")
    quorum: int | None = Field(None, ge=1, le=100)
    role: Role | None = None
    ttl_seconds: int | None = Field(None, ge=10, le=INT32_MAX)
    deny_quorum: int | None = Field(None, ge=1, le=100)
    escalate_after_seconds: int | None = Field(None, ge=0, le=INT32_MAX, description="0: never escalate")
    escalate_role: Role | None = None


@router.put("/approvals/settings", summary="Set the tenant's approval defaults",
            response_model=responses.ApprovalDefaults)
async def put_settings(body: SettingsBody, request: Request,
                       caller: Annotated[Caller, require("webhooks.manage", step_up=True)]) -> dict[str, Any]:
    """Replace the tenant's defaults (they apply to approvals opened from now on). Weakening a
    quorum is a security decision: this needs a person who passed MFA recently."""
    services = services_of(request)
    async with services.db.write() as session:
        await session.execute(delete(ApprovalSettings).where(ApprovalSettings.tenant_id == caller.tenant_id))
        await session.execute(insert(ApprovalSettings).values(
            tenant_id=caller.tenant_id, updated_at=utcnow(), updated_by=caller.principal_id, **body.model_dump()))
        await audit.record(session, caller, "approvals.settings", f"tenant:{caller.tenant_id}", **body.model_dump())
    return await get_settings(request, caller)


@router.get("/approvals/{approval_id}", summary="One approval, its votes and its history",
            responses=raises("not_found"), response_model=responses.ApprovalDetail)
async def get_approval(approval_id: ApprovalId, request: Request, caller: Annotated[Caller, readers()],
                       ) -> dict[str, Any]:
    """The approval with the full request and every vote, and each state change with its index in the
    tenant's evidence log (requesters: only their own)."""
    async with services_of(request).db.read() as session:
        row = (await session.execute(select(ApprovalRecord).where(
            ApprovalRecord.tenant_id == caller.tenant_id, ApprovalRecord.id == approval_id))).scalar()
        if row is None or (_own_only(caller) and row.agent_id != caller.principal_id):
            raise not_found("approval")
        ballots, versions = await session.run_sync(_ballots_and_versions, caller.tenant_id, [row])
        history = (await session.execute(select(AuditEvent).where(
            AuditEvent.tenant_id == caller.tenant_id, AuditEvent.target == f"approval:{approval_id}",
        ).order_by(AuditEvent.id))).scalars().all()
    return {**approvals.approval_json(row, ballots[row.id], caller, versions), "events": [
        {"event": e.action.removeprefix("approval."), "at": approvals.rfc3339(e.at), "actor": e.actor,
         "log_index": e.details.get("log_index"), "details": {k: v for k, v in e.details.items()
                                                            if k not in ("log_index", "key_id")}}
        for e in history]}


@router.post("/approvals/{approval_id}/approve", summary="Approve (a person who passed MFA recently)",
             responses=raises("not_found", "self_approval", "not_an_approver", "approval_closed", "already_voted"),
             response_model=responses.Approval, response_model_exclude_unset=True)
async def approve(approval_id: ApprovalId, request: Request,
                  caller: Annotated[Caller, require("approvals.vote", step_up=True)],
                  body: VoteBody | None = None) -> dict[str, Any]:
    """Count this person's approval; the quorum reached, the approval is granted and the agent may
    present it once. The requester and anyone in its delegation chain may not approve."""
    reason = body.reason if body else None
    return dict(await _write(request, lambda tx, c: approvals.cast_vote(tx, c, approval_id, True, reason), caller))


@router.post("/approvals/{approval_id}/deny", summary="Deny, with a reason (a person who passed MFA recently)",
             responses=raises("not_found", "self_approval", "not_an_approver", "approval_closed", "already_voted",
                              "reason_required"), response_model=responses.Approval, response_model_exclude_unset=True)
async def deny(approval_id: ApprovalId, body: DenyBody, request: Request,
               caller: Annotated[Caller, require("approvals.vote", step_up=True)]) -> dict[str, Any]:
    """Count this person's denial; enough denials (one by default) close the approval as denied."""
    return dict(await _write(request, lambda tx, c: approvals.cast_vote(tx, c, approval_id, False, body.reason),
                             caller))


@router.post("/approvals/{approval_id}/cancel", summary="Withdraw a request (its requester)",
             responses=raises("not_found", "approval_closed"),
             response_model=responses.Approval, response_model_exclude_unset=True)
async def cancel(approval_id: ApprovalId, request: Request, caller: Annotated[Caller, require("approvals.request")],
                 body: CancelBody | None = None) -> dict[str, Any]:
    """The agent that asked withdraws its pending (or granted, unused) approval; owners and admins may
    withdraw any."""
    reason = body.reason if body else CANCELLED
    return dict(await _write(request, lambda tx, c: approvals.cancel(tx, c, approval_id, reason), caller))


# ------------------------------------------------------------------------------------------ webhooks


class WebhookBody(BaseModel):
    """Where to post approval events, and which."""

    model_config = ConfigDict(extra="forbid")
    url: Text = Field(min_length=8, max_length=2000, examples=["https://hooks.example.com/licet"])
    events: list[Literal["opened", "escalated", "granted", "denied", "expired", "cancelled", "used"]] = Field(
        default_factory=list, max_length=len(WEBHOOK_EVENTS), description="Empty: every event.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.userinfo:
            raise ValueError("must not carry credentials (they would show in listings): receivers check the "
                             "X-Licet-Signature header instead")
        return value


def _webhook_json(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": hook.events, "created_at": approvals.rfc3339(hook.created_at),
            "created_by": hook.created_by, "disabled_at": approvals.rfc3339(hook.disabled_at) if hook.disabled_at
            else None}


@router.post("/webhooks", status_code=201, summary="Add a webhook for approval events",
             responses=raises("webhook_target_not_public"), response_model=responses.NewWebhook)
async def create_webhook(body: WebhookBody, request: Request,  # a webhook receives every approval's request
                         caller: Annotated[Caller, require("webhooks.manage", step_up=True)]) -> dict[str, Any]:
    """Each approval event is posted as JSON, signed: `X-Licet-Signature: sha256=<HMAC-SHA256 of
    "<X-Licet-Timestamp>.<body>" with the secret>`; retried with exponential backoff until a 2xx.
    The secret is shown once."""
    if not services_of(request).settings.webhook_private_targets:
        refusal = await asyncio.to_thread(webhooks.not_public, body.url)
        if refusal is not None:
            raise ApiError(422, "webhook_target_not_public", f"url: {refusal} (LICET_WEBHOOK_PRIVATE_TARGETS "
                           "allows it on a closed network)", "url")
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook_id = str(uuid.uuid4())
    sealed = services_of(request).secrets.seal(secret, Webhook.secret, hook_id)  # kept only sealed
    hook = Webhook(id=hook_id, tenant_id=caller.tenant_id, url=body.url, secret=sealed,
                   events=sorted(set(body.events)), created_at=utcnow(), created_by=caller.principal_id)
    async with services_of(request).db.write() as session:
        session.add(hook)
        await audit.record(session, caller, "webhook.create", f"webhook:{hook.id}", url=body.url, events=hook.events)
    return {**_webhook_json(hook), "secret": secret}


@router.get("/webhooks", summary="The tenant's webhooks", response_model=responses.WebhookList)
async def list_webhooks(request: Request, caller: Annotated[Caller, require("webhooks.manage")]) -> dict[str, Any]:
    """Every webhook, removed ones included (their secrets are never shown again)."""
    async with services_of(request).db.read() as session:
        hooks = (await session.execute(select(Webhook).where(Webhook.tenant_id == caller.tenant_id)
                                       .order_by(Webhook.created_at))).scalars().all()
    return {"webhooks": [_webhook_json(h) for h in hooks]}


@router.delete("/webhooks/{webhook_id}", responses=raises("not_found"), summary="Remove a webhook",
               response_model=responses.Webhook)
async def delete_webhook(webhook_id: Annotated[str, Path(max_length=36)], request: Request,
                         caller: Annotated[Caller, require("webhooks.manage")]) -> dict[str, Any]:
    """No more deliveries to it (pending ones are recorded as failed); its delivery history stays."""
    async with services_of(request).db.write() as session:
        changed = await (await session.connection()).execute(update(Webhook).where(
            Webhook.tenant_id == caller.tenant_id, Webhook.id == webhook_id, Webhook.disabled_at.is_(None),
        ).values(disabled_at=utcnow()))
        if changed.rowcount != 1:
            raise not_found("webhook")
        await audit.record(session, caller, "webhook.delete", f"webhook:{webhook_id}")
        hook = (await session.execute(select(Webhook).where(Webhook.id == webhook_id))).scalar_one()
    return _webhook_json(hook)


@router.get("/webhooks/{webhook_id}/deliveries", summary="A webhook's deliveries, newest first",
            responses=raises("not_found"), response_model=responses.DeliveryList)
async def deliveries(webhook_id: Annotated[str, Path(max_length=36)], request: Request,
                     caller: Annotated[Caller, require("webhooks.manage")],
                     state: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """Each event sent (or being sent) to the webhook: attempts, last status and error."""
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == caller.tenant_id,
                                          WebhookDelivery.webhook_id == webhook_id)
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    async with services_of(request).db.read() as session:
        hook = (await session.execute(select(Webhook.id).where(
            Webhook.tenant_id == caller.tenant_id, Webhook.id == webhook_id))).scalar()
        if hook is None:
            raise not_found("webhook")
        rows = (await session.execute(query.order_by(WebhookDelivery.created_at.desc()).limit(limit))).scalars().all()
    return {"deliveries": [_delivery_json(d) for d in rows]}


def _delivery_json(d: WebhookDelivery) -> dict[str, Any]:
    # A test event belongs to no approval (its row holds its own id there, as each test is its own event).
    return {"id": d.id, "approval_id": None if d.event == webhooks.TEST_EVENT else d.approval_id, "event": d.event,
            "state": d.state, "attempts": d.attempts, "created_at": approvals.rfc3339(d.created_at),
            "next_attempt_at": approvals.rfc3339(d.next_attempt_at),
            "delivered_at": approvals.rfc3339(d.delivered_at) if d.delivered_at else None,
            "last_status": d.last_status, "last_error": d.last_error}


@router.post("/webhooks/{webhook_id}/test", status_code=201, responses=raises("not_found"),
             summary="Send a signed test event to a webhook", response_model=responses.Delivery)
async def send_test_event(webhook_id: Annotated[str, Path(max_length=36)], request: Request,
                          caller: Annotated[Caller, require("webhooks.manage", step_up=True)]) -> dict[str, Any]:
    """Queue a `webhook.test` event for the webhook: signed, sent and retried like an approval event, so it
    shows in the webhook's deliveries with its attempts. A receiver checks its signature check with it."""
    services = services_of(request)
    now = utcnow()
    delivery_id = str(uuid.uuid4())
    async with services.db.write() as session:
        hook = (await session.execute(select(Webhook.id).where(
            Webhook.tenant_id == caller.tenant_id, Webhook.id == webhook_id, Webhook.disabled_at.is_(None)))).scalar()
        if hook is None:
            raise not_found("webhook")
        payload = {"delivery": delivery_id, "event": webhooks.event_name(webhooks.TEST_EVENT),
                   "tenant": caller.tenant_id, "at": approvals.rfc3339(now), "webhook": webhook_id,
                   "requested_by": caller.principal_id}
        row = WebhookDelivery(id=delivery_id, tenant_id=caller.tenant_id, webhook_id=webhook_id,
                              approval_id=delivery_id, event=webhooks.TEST_EVENT, payload=payload, state="pending",
                              attempts=0, created_at=now, next_attempt_at=now)
        session.add(row)
        shown = _delivery_json(row)
        await audit.record(session, caller, "webhook.test", f"webhook:{webhook_id}", delivery=delivery_id)
    await request.app.state.dispatcher.submit([Job("deliver", delivery_id)])
    return shown


