"""`POST /v1/decide/capabilities`: which actions could this caller ever be permitted to take?

For each action the answer is proved by Z3 over the kernel's symbolic request (kernel/analysis.py),
with the principal fixed to the caller's own (from its API key) and, likewise fixed by the server for
every decision of this key, `context.authenticated` and `context.mfa`; the resource, the arguments,
the rest of the context and the session state are free. An action is `permit` if some such request
is permitted, `approval` if some such request needs a person's approval (no forbid rule or invariant
applying). It is an over-approximation by design (the analysis' string tests on "other" values are
free), used to hide tools that can never run; every real call is still decided by `POST /v1/decide`.

Answers are cached per (policy hash, principal, MFA state, action): a policy activation changes the
hash, so a cached answer can never outlive the policy it was proved under.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from licet import kernel
from licet.kernel.analysis import Capability, valid_action
from licet.kernel.analysis import capabilities as capabilities_of
from licet.server import responses
from licet.server.errors import raises
from licet.server.identity import Caller, require
from licet.server.models import PolicyVersion, Tenant
from licet.server.routers import Text
from licet.server.routers.decide import services_of

router = APIRouter(prefix="/v1", tags=["decisions"])

MAX_ACTIONS = 500
CACHE_SIZE = 50_000


class CapabilitiesBody(BaseModel):
    """The actions to ask about (concrete action names, not globs)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"actions": ["payments.transfer", "files.delete"]}]})
    actions: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(min_length=1,
                                                                                 max_length=MAX_ACTIONS)


Answer = Capability
_cache: OrderedDict[tuple[str, str, str], Answer] = OrderedDict()
_cache_lock = threading.Lock()


def cached_analyse(policy: kernel.Policy, caller: Caller, actions: list[str]) -> dict[str, Answer]:
    """`kernel.analysis.capabilities`, answering from the cache what was already proved under this policy version."""
    principal = caller.principal()
    context = {"authenticated": True, "mfa": caller.mfa}
    who = hashlib.sha256(json.dumps([principal, context], sort_keys=True, default=str).encode()).hexdigest()
    answers: dict[str, Answer] = {}
    with _cache_lock:
        for action in actions:
            found = _cache.get((policy.hash, who, action))
            if found is not None:
                answers[action] = found
    missing = [a for a in dict.fromkeys(actions) if a not in answers]
    if missing:
        fresh = capabilities_of(policy, principal, context, missing)
        answers.update(fresh)
        with _cache_lock:
            for action, answer in fresh.items():
                _cache[(policy.hash, who, action)] = answer
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return answers


@router.post("/decide/capabilities", summary="Which actions could this caller ever be permitted to take?",
             responses=raises("kernel_fault"), response_model=responses.Capabilities)
async def capabilities(body: CapabilitiesBody, request: Request, caller: Annotated[Caller, require("decide")],
                       ) -> dict[str, Any]:
    """For each action, whether some request by the caller (any resource and arguments) could be
    permitted (`permit`) or could need approval (`approval`) under the active policy, proved by Z3.
    No active policy: nothing is possible. Advice only: each call is still decided."""
    services = services_of(request)
    async with services.db.read() as session:
        version_id = (await session.execute(select(Tenant.active_version_id).where(
            Tenant.id == caller.tenant_id))).scalar()
        found = None if version_id is None else (await session.execute(select(PolicyVersion).where(
            PolicyVersion.id == version_id))).scalar()
    if found is None:  # no active policy: nothing can be permitted
        base = {"principal": caller.principal(), "context": {}}
        return {"policy": None, "actions": {a: {"valid": valid_action(a, base), "permit": False, "approval": False}
                                            for a in body.actions}}
    policy = services.policies.get(found.id) or services.policies.load(found.id, found.source)
    # Z3 work off the event loop, so decisions keep flowing while a listing is proved.
    answers = await asyncio.to_thread(cached_analyse, policy, caller, body.actions)
    return {"policy": {"version_id": found.id, "hash": policy.hash},
            "actions": {a: answers[a] for a in body.actions}}
