"""`POST /v1/decide` and `POST /v1/plans/verify`: what agents call before they act."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from licet import kernel
from licet.kernel.plans import PlanTooLong, verify_plan
from licet.server import responses
from licet.server.decisions import DecideInput, active_policy, decide_as
from licet.server.errors import ApiError, not_found, raises
from licet.server.history import session_state
from licet.server.identity import Caller, KeyCredential, require, require_in_write
from licet.server.models import PolicyVersion
from licet.server.roles import allowed
from licet.server.routers import RequestArgs, RequestSteps, Text
from licet.server.services import Services
from licet.server.time import utcnow

router = APIRouter(prefix="/v1", tags=["decisions"])

SERVER_FILLED = ("principal", "context", "tenant", "tenant_id", "role", "roles", "mfa", "authenticated", "user")


class _AgentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_identity(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in SERVER_FILLED:
                if name in data:
                    raise ValueError(f"{name!r} is set by the server from your credentials; "
                                     "a request may not supply it")
        return data


class DecideBody(_AgentBody):
    """What an agent may say about the action it wants to take."""

    action: str = Field(min_length=1, max_length=200, examples=["payments.transfer"])
    resource: str = Field(min_length=1, max_length=4096, examples=["/accounts/acc-001"])
    args: RequestArgs = Field(default_factory=dict, examples=[{"amount": 120, "currency": "EUR"}])
    delegation: Text | None = Field(None, max_length=36, description="Acting for another principal through "
                                    "this delegation grant (the leaf of the chain).")
    approval: Text | None = Field(None, max_length=36, description="A granted approval for this exact request "
                                  "(the id a require_approval response gave): used once, by the agent that asked.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"action": "payments.transfer", "resource": "/accounts/acc-001",
         "args": {"amount": 120, "currency": "EUR", "country": "DE"}}]})


class PlanBody(_AgentBody):
    """A plan: steps `{action, resource, args}`, any argument concrete or symbolic."""

    steps: RequestSteps = Field(examples=[[
        {"action": "payments.transfer", "resource": "/accounts/acc-001",
         "args": {"amount": {"symbolic": "int", "min": 0, "max": 900}, "currency": "EUR"}}]])
    version_id: Text | None = Field(None, max_length=36, description="Verify against this stored version (a "
                                    "draft, say) instead of the active one; needs `policies.read`.")


def services_of(request: Request) -> Services:
    """The process's services."""
    services: Services = request.app.state.services
    return services


def client_ip(request: Request, trusted: list[str]) -> str | None:
    """The caller's address: the socket peer, or X-Forwarded-For's last hop from a trusted proxy."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if peer in trusted and forwarded:
        return forwarded.split(",")[-1].strip()
    return peer


DECIDE_EXAMPLE = {"decision": "permit", "rules": ["transfer"], "proof": {"kind": "witness", "witnesses": []},
                  "diagnostics": [], "certificate_id": "01a20237-2476-730b-9fd7-db12d7908b3d", "log_index": 41,
                  "replayed": False, "certificate": responses.CERTIFICATE_EXAMPLE}


@router.post("/decide", summary="Decide an action and certify the decision", response_class=Response,
             responses={**raises("invalid_request", "kernel_fault", "idempotency_conflict", "no_active_policy",
                                 "not_found", "delegation_too_deep"),
                        200: {"model": responses.Decision,
                              "description": "The decision, its proof, the signed certificate and its log index",
                              "content": {"application/json": {"example": DECIDE_EXAMPLE}}}})
async def decide(body: DecideBody, request: Request,
                 credential: Annotated[Caller | KeyCredential, require_in_write("decide")],
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    """Decide with the tenant's active policy; returns the decision, its proof, the signed certificate
    and its index in the tenant's evidence log. A retried request with the same Idempotency-Key
    returns the same certificate."""
    services = services_of(request)
    source_ip = client_ip(request, services.settings.trusted_proxies)

    def ask(caller: Caller) -> DecideInput:
        return DecideInput(caller, body.action, body.resource, body.args, source_ip, body.delegation,
                           idempotency_key, body.approval)

    # On PostgreSQL, decisions on one credential commit in groups (server/db.py).
    group = f"key:{credential.digest}" if isinstance(credential, KeyCredential) else f"tenant:{credential.tenant_id}"
    recorded = await services.db.run_write(decide_as, services, credential, ask, group=group)
    if isinstance(recorded, ApiError):
        raise recorded
    if recorded.jobs:  # after the commit: a worker must never see an approval that was rolled back
        await request.app.state.dispatcher.submit(recorded.jobs)
    request.app.state.metrics.decisions.labels(recorded.outcome).inc()
    return Response(recorded.body, media_type="application/json")


def stored_policy(session: Session, services: Services, tenant: str, version_id: str) -> kernel.Policy:
    """One of the tenant's stored versions, active or not; 404 if the tenant has none by that id."""
    source = session.execute(select(PolicyVersion.source).where(
        PolicyVersion.tenant_id == tenant, PolicyVersion.id == version_id)).scalar()
    if source is None:
        raise not_found("policy version")
    return services.policies.load(version_id, source)


@router.post("/plans/verify", summary="Verify a multi-step plan before starting it",
             responses=raises("invalid_request", "kernel_fault", "no_active_policy", "plan_too_long", "not_found"),
             response_model=responses.PlanVerdict, response_model_exclude_unset=True)
async def plans_verify(body: PlanBody, request: Request, caller: Annotated[Caller, require("plans.verify")],
                       ) -> dict[str, Any]:
    """Check every step for every value of its symbolic arguments, from the caller's session state,
    against the active version or the stored one `version_id` names (what a draft would let the plan do).
    Nothing is recorded: a plan verdict is advice, each step is still decided when it runs."""
    if body.version_id is not None and not allowed(caller.role, "policies.read"):  # drafts are not agents' to see
        raise ApiError(403, "forbidden", f"the {caller.role} role may not verify against a stored version "
                       "(policies.read); leave out 'version_id' for the active one", "version_id")
    services = services_of(request)
    now = utcnow().timestamp()
    async with services.db.read() as session:
        policy = await (session.run_sync(stored_policy, services, caller.tenant_id, body.version_id)
                        if body.version_id is not None else session.run_sync(active_policy, services, caller.tenant_id))
        state = await session.run_sync(session_state, caller.tenant_id, caller.principal_id, policy, now, None)
    context = {"authenticated": True, "mfa": caller.mfa,
               "source_ip": client_ip(request, services.settings.trusted_proxies) or ""}
    try:
        # Long plans take seconds of solver time: off the event loop, so decisions keep flowing.
        verdict = await asyncio.to_thread(
            verify_plan, policy, body.steps, state=state, now=now, principal=caller.principal(),
            context=context, max_steps=services.settings.max_plan_steps)
    except PlanTooLong as exc:
        raise ApiError(413, "plan_too_long", str(exc), "steps") from exc
    return verdict.to_json()
