"""Cross-tenant isolation over real HTTP, for every /v1 route, on SQLite and PostgreSQL.

Tenant A is filled with one of everything (policy versions, keys, users, certificates, a delegation
grant, a signed checkpoint, audit events). Tenant B's owner and agent then call every route the
server publishes in its OpenAPI document, with A's ids wherever a route takes one: each answer must
be the one an unknown id gets (404, or 403 where the role may not call the route at all), nothing of
A may appear in any answer, and A must be exactly as it was afterwards. The route table below must
cover every /v1 route of the running server, so a new route cannot be forgotten.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from licet.server.roles import allowed
from tests.conftest import PAYMENTS
from tests.server_harness import Server, Tenant

TWIN = "agent:twin"  # an agent principal id both tenants use: state kept per tenant must not mix


def transfer(amount: int, **extra: Any) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/acc-1",
            "args": {"amount": amount, "currency": "EUR", **extra}}


def assert_error(reply: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """`reply` is the JSON error document with `status` (and `code`)."""
    assert reply.status_code == status, (reply.request.method, reply.request.url, reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    error = reply.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and "field" in error, error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


@dataclass
class Alpha:
    """Tenant A and everything of it that tenant B must never see or change."""

    tenant: Tenant
    name: str  # A's policy id (the document's), unique to A
    policy_id: str
    version_ids: list[str]
    agent_key: str  # principal `principal`
    principal: str
    helper_key: str  # principal `helper`, the delegate of `grant_id`
    helper: str
    twin_key: str
    admin_key: str
    key_ids: list[str]
    certificate_ids: list[str]
    grant_id: str
    user_id: str
    email: str
    idempotency_key: str
    size: int
    session_id: str = ""  # A's owner's session
    approval_id: str = ""
    webhook_id: str = ""
    secrets: set[str] = field(default_factory=set)


def _alpha(server: Server) -> Alpha:
    tenant = server.new_tenant()
    tag = uuid.uuid4().hex[:10]
    name = f"alpha-policy-{tag}"
    source = PAYMENTS.replace("id: payments-agent", f"id: {name}")
    first = tenant.activate(source)
    tenant.activate(source.replace("args.amount <= 10000", "args.amount <= 9000"))  # v2, active: A has a rollback
    principal, helper = f"agent:alpha-{tag}", f"agent:alpha-helper-{tag}"
    alpha = Alpha(tenant=tenant, name=name, policy_id=first["policy"]["id"], version_ids=[],
                  agent_key=tenant.key(principal_id=principal), principal=principal,
                  helper_key=tenant.key(principal_id=helper, roles=[]), helper=helper,
                  twin_key=tenant.key(principal_id=TWIN), admin_key=tenant.key("admin", f"user:alpha-admin-{tag}"),
                  key_ids=[], certificate_ids=[], grant_id="", user_id="", email=f"alpha-{tag}@example.com",
                  idempotency_key=f"idem-{tag}", size=0)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with tenant.owner_session() as owner, server.client(alpha.agent_key) as agent, server.client(alpha.twin_key) as twin:
        # The twin spends the whole daily budget (5 x 1000 of 5000) in A.
        for i in range(5):
            headers = {"Idempotency-Key": alpha.idempotency_key} if i == 0 else {}
            reply = twin.post("/v1/decide", json=transfer(1000), headers=headers)
            assert reply.json()["decision"] == "permit", reply.text
            alpha.certificate_ids.append(reply.json()["certificate_id"])
        over = twin.post("/v1/decide", json=transfer(1000)).json()
        assert over["decision"] == "forbid"
        alpha.certificate_ids.append(over["certificate_id"])
        alpha.certificate_ids.append(agent.post("/v1/decide", json=transfer(7)).json()["certificate_id"])
        grant = agent.post("/v1/delegations", json={"delegate": helper, "expires_at": later, "scope": [
            {"id": "small", "effect": "permit", "action": ["payments.transfer"], "resource": ["/accounts/*"],
             "when": "args.amount <= 100"}]})
        assert grant.status_code == 201, grant.text
        alpha.grant_id = grant.json()["grant"]["id"]
        user = owner.post("/v1/users", json={"email": alpha.email, "display_name": f"Alpha {tag}", "role": "auditor"})
        assert user.status_code == 201, user.text
        alpha.user_id = user.json()["user"]["id"]
        alpha.version_ids = [v["id"] for v in owner.get(f"/v1/policies/{alpha.policy_id}").json()["versions"]]
        keys = owner.get("/v1/keys").json()["keys"]
        alpha.key_ids = [k["id"] for k in keys]
        checkpoint = owner.get("/v1/evidence/checkpoint").json()
        alpha.size = checkpoint["size"]
        assert alpha.size >= len(alpha.certificate_ids)  # and the approval's own events
        proof = owner.get(f"/v1/certificates/{alpha.certificate_ids[2]}/proof").json()
        consistency = owner.get("/v1/evidence/consistency", params={"first": 2, "second": alpha.size}).json()
        entries = owner.get("/v1/evidence/entries").json()["entries"]
        versions = [owner.get(f"/v1/policies/{alpha.policy_id}/versions/{n}").json() for n in (1, 2)]
        alpha.session_id = owner.get("/v1/auth/me").json()["session"]["id"]
        asked = agent.post("/v1/decide", json=transfer(2000)).json()  # over 1000: needs two approvers
        assert asked["decision"] == "require_approval", asked
        alpha.certificate_ids.append(asked["certificate_id"])
        alpha.approval_id = asked["approval"]["id"]
        internal = owner.post("/v1/webhooks", json={"url": "http://169.254.169.254/latest/meta-data"})
        assert internal.status_code == 422 and internal.json()["error"]["code"] == "webhook_target_not_public"
        # An address, not a name: CI machines resolve no public names, and the guard refuses what it cannot.
        hook = owner.post("/v1/webhooks", json={"url": "https://93.184.216.34/alpha"})
        assert hook.status_code == 201, hook.text
        alpha.webhook_id = hook.json()["id"]
        alpha.secrets = {
            tenant.id, tenant.owner_key, alpha.agent_key, alpha.helper_key, alpha.twin_key, alpha.admin_key,
            name, alpha.policy_id, principal, helper, f"user:alpha-admin-{tag}", alpha.grant_id, alpha.user_id,
            alpha.email, alpha.idempotency_key, checkpoint["root_hash"], checkpoint["note"].split("\n")[0],
            *alpha.version_ids, *alpha.key_ids, *alpha.certificate_ids, *proof["proof"], *consistency["proof"],
            *(e["leaf_hash"] for e in entries), *(v["hash"] for v in versions), alpha.session_id,
            tenant.owner_person().token, tenant.owner_person().email, alpha.approval_id, alpha.webhook_id}
    return alpha


Check = Callable[[Tenant, str, httpx.Response], None]


@dataclass
class Call:
    """One request. `foreign` is the value of A's it carries: unless `check` says what B should get
    (B's own answer: `foreign` then becomes B's too, as a name B chose), B must get exactly what an
    unknown value gets, a 404."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    foreign: str | int | None = None
    check: Check | None = None

    def send(self, client: httpx.Client) -> httpx.Response:
        return client.request(self.method, self.path, json=self.json, params=self.params, headers=self.headers)

    def swapped(self) -> tuple[Call, str]:
        """The same call with the foreign value replaced by one that names nothing at all."""
        if isinstance(self.foreign, int):  # a path's last segment
            unknown = "987654321"
            return Call(self.method, f"{self.path.rsplit('/', 1)[0]}/{unknown}", self.json, self.params,
                        self.headers), unknown
        unknown = str(uuid.uuid4())
        text = json.dumps([self.path, self.json, self.params]).replace(str(self.foreign), unknown)
        path, body, params = json.loads(text)
        return Call(self.method, path, body, params, self.headers), unknown


@dataclass
class Route:
    """How to call a route with A's ids, and the permission it checks."""

    permission: str
    calls: Callable[[Alpha], list[Call]]


def _b_decides_afresh(beta: Tenant, role: str, reply: httpx.Response) -> None:
    # The twin's budget in A is spent; in B it is not. And A's Idempotency-Key replays nothing here.
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["decision"] == "permit" and body["replayed"] is False, body
    assert body["certificate"]["tenant"] == beta.id


def _b_plan(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 200 and reply.json()["verdict"] == "safe", reply.text


def _b_no_such_version(beta: Tenant, role: str, reply: httpx.Response) -> None:
    # A's version is unknown to B's people; agents may not name a stored version at all.
    if allowed(role, "policies.read"):
        assert_error(reply, 404, "not_found")
    else:
        assert_error(reply, 403, "forbidden")


def _b_policy_is_new(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 201, reply.text
    assert reply.json()["version"]["number"] == 1


def _b_user(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 201, reply.text


def _b_nothing_to_roll_back(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert_error(reply, 409, "nothing_to_roll_back")


def _b_consistency(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert_error(reply, 422, "invalid_range")  # B's log is shorter than A's


def _b_entries(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    entries = reply.json()["entries"]
    assert entries and all(e["certificate"]["tenant"] == beta.id for e in entries)


def _b_certificates(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    with beta.owner_session() as owner:
        for item in reply.json()["certificates"]:
            assert owner.get(f"/v1/certificates/{item['id']}").json()["certificate"]["tenant"] == beta.id


def _b_export(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert all(line["certificate"]["tenant"] == beta.id for line in lines)


def _b_keys(beta: Tenant, role: str, reply: httpx.Response) -> None:
    assert reply.status_code == 200, reply.text
    origin = reply.json()["log"]["origin"]
    assert beta.id in origin


def _status(status: int, code: str | None = None) -> Check:
    """B gets `status` (and `code`): a route whose answer does not depend on A at all."""

    def check(beta: Tenant, role: str, reply: httpx.Response) -> None:
        if status >= 400:
            assert_error(reply, status, code)
        else:
            assert reply.status_code == status, reply.text

    return check


def _b_own_account(beta: Tenant, role: str, reply: httpx.Response) -> None:
    # B's owner changes B's owner's own second factors: any orderly answer, never A's.
    assert reply.status_code in (200, 201, 401, 409), reply.text


NO_SESSION = {"Authorization": "Bearer lcs_" + "A" * 43}  # signing out is tried with a session that is no one's


def _named(name: str) -> str:
    """A document of B's that bears A's policy name (and differs from A's, so its hash is B's own)."""
    return PAYMENTS.replace("id: payments-agent", f"id: {name}").replace("version: 1", "version: 7")


def _later() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


# Parses as a WebAuthn assertion (so the challenge is what gets checked) and verifies for nothing.
WELL_FORMED_ASSERTION = {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {
    "clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA"}}

ROUTES: dict[str, Route] = {
    "POST /v1/decide": Route("decide", lambda a: [
        Call("POST", "/v1/decide", {**transfer(1), "delegation": a.grant_id}, foreign=a.grant_id),
        # A's Idempotency-Key names nothing in B: a fresh decision, not A's certificate and not a conflict.
        Call("POST", "/v1/decide", transfer(1000), headers={"Idempotency-Key": a.idempotency_key},
             foreign=a.idempotency_key, check=_b_decides_afresh)]),
    # A's policy name means nothing in B: B's own active policy answers.
    "POST /v1/decide/capabilities": Route("decide", lambda a: [
        Call("POST", "/v1/decide/capabilities", {"actions": ["payments.transfer", a.name]}, foreign=a.name,
             check=_status(200))]),
    "POST /v1/plans/verify": Route("plans.verify", lambda a: [
        Call("POST", "/v1/plans/verify", {"steps": [transfer(1000)] * 3}, check=_b_plan),
        Call("POST", "/v1/plans/verify", {"steps": [transfer(1)], "version_id": a.version_ids[0]},
             foreign=a.version_ids[0], check=_b_no_such_version)]),
    "POST /v1/policies/validate": Route("policies.write", lambda a: [
        Call("POST", "/v1/policies/validate", {"source": PAYMENTS})]),
    "GET /v1/policies": Route("policies.read", lambda a: [Call("GET", "/v1/policies")]),
    # A policy named like A's, stored in B, is B's own: B's version 1, not A's version 3.
    "POST /v1/policies": Route("policies.write", lambda a: [
        Call("POST", "/v1/policies", {"source": _named(a.name)}, foreign=a.name, check=_b_policy_is_new)]),
    "GET /v1/policies/{policy_id}": Route("policies.read", lambda a: [
        Call("GET", f"/v1/policies/{a.policy_id}", foreign=a.policy_id)]),
    "GET /v1/policies/{policy_id}/versions/{number}": Route("policies.read", lambda a: [
        Call("GET", f"/v1/policies/{a.policy_id}/versions/{n}", foreign=a.policy_id) for n in (1, 2)]),
    "POST /v1/policies/{policy_id}/diff": Route("policies.read", lambda a: [
        Call("POST", f"/v1/policies/{a.policy_id}/diff", {}, foreign=a.policy_id),
        Call("POST", f"/v1/policies/{a.policy_id}/diff", {"version": 2, "against": 1}, foreign=a.policy_id)]),
    "POST /v1/policies/{policy_id}/replay": Route("policies.read", lambda a: [
        Call("POST", f"/v1/policies/{a.policy_id}/replay", {}, foreign=a.policy_id),
        Call("POST", f"/v1/policies/{a.policy_id}/replay", {"version": 1, "days": 1}, foreign=a.policy_id)]),
    "POST /v1/policies/query": Route("policies.read", lambda a: [
        Call("POST", "/v1/policies/query", {"pattern": {"action": "payments.transfer"}, "version_id": v},
             foreign=v) for v in a.version_ids]),
    "POST /v1/policies/{policy_id}/versions/{number}/activate": Route("policies.activate", lambda a: [
        Call("POST", f"/v1/policies/{a.policy_id}/versions/{n}/activate", {"reason": "takeover"},
             foreign=a.policy_id) for n in (1, 2)]),
    "POST /v1/policies/rollback": Route("policies.activate", lambda a: [
        Call("POST", "/v1/policies/rollback", {"reason": "takeover"}, check=_b_nothing_to_roll_back)]),
    "GET /v1/keys": Route("keys.manage", lambda a: [Call("GET", "/v1/keys")]),
    "POST /v1/keys": Route("keys.manage", lambda a: [
        Call("POST", "/v1/keys", {"name": "b", "role": "agent", "principal_id": "agent:b-made"})]),
    "POST /v1/keys/{key_id}/revoke": Route("keys.manage", lambda a: [
        Call("POST", f"/v1/keys/{k}/revoke", foreign=k) for k in a.key_ids]),
    "POST /v1/keys/{key_id}/rotate": Route("keys.manage", lambda a: [
        Call("POST", f"/v1/keys/{k}/rotate", {"grace_seconds": 3600}, foreign=k) for k in a.key_ids]),
    "GET /v1/users": Route("users.read", lambda a: [Call("GET", "/v1/users")]),
    # Emails are unique per tenant: A's email is free in B (a 409 would tell B that A has it).
    "POST /v1/users": Route("users.manage", lambda a: [
        Call("POST", "/v1/users", {"email": a.email, "display_name": "B's", "role": "auditor"}, foreign=a.email,
             check=_b_user)]),
    "GET /v1/audit": Route("audit.read", lambda a: [
        Call("GET", "/v1/audit"), Call("GET", "/v1/audit", params={"before": 2**62, "limit": 500})]),
    "GET /v1/certificates/{certificate_id}": Route("certificates.read", lambda a: [
        Call("GET", f"/v1/certificates/{c}", foreign=c) for c in a.certificate_ids]),
    "GET /v1/certificates": Route("certificates.read", lambda a: [
        Call("GET", "/v1/certificates", params={"limit": 500}, check=_b_certificates)]),
    "GET /v1/certificates/export": Route("certificates.read", lambda a: [
        Call("GET", "/v1/certificates/export", check=_b_export),
        Call("GET", "/v1/certificates/export", params={"format": "csv", "principal": a.principal})]),
    "GET /v1/certificates/summary": Route("certificates.read", lambda a: [
        Call("GET", "/v1/certificates/summary", params={"window": w}) for w in ("hour", "day", "week")]),
    "GET /v1/audit/export": Route("audit.read", lambda a: [
        Call("GET", "/v1/audit/export"), Call("GET", "/v1/audit/export", params={"format": "csv"})]),
    "GET /v1/evidence/checkpoints": Route("evidence.read", lambda a: [
        Call("GET", "/v1/evidence/checkpoints"), Call("GET", "/v1/evidence/checkpoints", params={"before": a.size})]),
    "GET /v1/certificates/{certificate_id}/proof": Route("certificates.read", lambda a: [
        Call("GET", f"/v1/certificates/{c}/proof", foreign=c) for c in a.certificate_ids]),
    "GET /v1/evidence/checkpoint": Route("evidence.read", lambda a: [Call("GET", "/v1/evidence/checkpoint")]),
    # B's log stays shorter than A's: no checkpoint of B's has A's size.
    "GET /v1/evidence/checkpoints/{size}": Route("evidence.read", lambda a: [
        Call("GET", f"/v1/evidence/checkpoints/{a.size}", foreign=a.size)]),
    "GET /v1/evidence/consistency": Route("evidence.read", lambda a: [
        Call("GET", "/v1/evidence/consistency", params={"first": 2, "second": a.size}, check=_b_consistency)]),
    "GET /v1/evidence/entries": Route("evidence.entries", lambda a: [
        Call("GET", "/v1/evidence/entries", params={"start": 0, "limit": 1000}, check=_b_entries)]),
    "GET /v1/evidence/keys": Route("evidence.read", lambda a: [Call("GET", "/v1/evidence/keys", check=_b_keys)]),
    "GET /v1/delegations": Route("delegations.read", lambda a: [Call("GET", "/v1/delegations")]),
    "POST /v1/delegations": Route("delegations.write", lambda a: [
        Call("POST", "/v1/delegations", {"delegate": "agent:b-helper", "parent": a.grant_id, "expires_at": _later(),
                                         "scope": [{"id": "s", "effect": "permit", "action": ["payments.transfer"],
                                                    "when": "args.amount <= 10"}]}, foreign=a.grant_id)]),
    "POST /v1/delegations/{grant_id}/revoke": Route("delegations.write", lambda a: [
        Call("POST", f"/v1/delegations/{a.grant_id}/revoke", foreign=a.grant_id)]),
    "GET /v1/approvals": Route("approvals.status", lambda a: [
        Call("GET", "/v1/approvals"), Call("GET", "/v1/approvals", params={"state": "pending"})]),
    "GET /v1/approvals/settings": Route("approvals.read", lambda a: [Call("GET", "/v1/approvals/settings")]),
    "PUT /v1/approvals/settings": Route("webhooks.manage", lambda a: [
        Call("PUT", "/v1/approvals/settings", {"quorum": 3})]),
    "GET /v1/approvals/{approval_id}": Route("approvals.status", lambda a: [
        Call("GET", f"/v1/approvals/{a.approval_id}", foreign=a.approval_id)]),
    "POST /v1/approvals/{approval_id}/approve": Route("approvals.vote", lambda a: [
        Call("POST", f"/v1/approvals/{a.approval_id}/approve", foreign=a.approval_id)]),
    "POST /v1/approvals/{approval_id}/deny": Route("approvals.vote", lambda a: [
        Call("POST", f"/v1/approvals/{a.approval_id}/deny", {"reason": "takeover"}, foreign=a.approval_id)]),
    "POST /v1/approvals/{approval_id}/cancel": Route("approvals.request", lambda a: [
        Call("POST", f"/v1/approvals/{a.approval_id}/cancel", foreign=a.approval_id)]),
    "POST /v1/webhooks": Route("webhooks.manage", lambda a: [
        Call("POST", "/v1/webhooks", {"url": "https://93.184.216.34/beta"}, check=_status(201))]),
    "GET /v1/webhooks": Route("webhooks.manage", lambda a: [Call("GET", "/v1/webhooks")]),
    "DELETE /v1/webhooks/{webhook_id}": Route("webhooks.manage", lambda a: [
        Call("DELETE", f"/v1/webhooks/{a.webhook_id}", foreign=a.webhook_id)]),
    "GET /v1/webhooks/{webhook_id}/deliveries": Route("webhooks.manage", lambda a: [
        Call("GET", f"/v1/webhooks/{a.webhook_id}/deliveries", foreign=a.webhook_id)]),
    "POST /v1/webhooks/{webhook_id}/test": Route("webhooks.manage", lambda a: [
        Call("POST", f"/v1/webhooks/{a.webhook_id}/test", foreign=a.webhook_id)]),
    "POST /v1/users/{user_id}/invitation": Route("users.manage", lambda a: [
        Call("POST", f"/v1/users/{a.user_id}/invitation", foreign=a.user_id)]),
    "POST /v1/users/{user_id}/disable": Route("users.manage", lambda a: [
        Call("POST", f"/v1/users/{a.user_id}/disable", foreign=a.user_id)]),
    "POST /v1/users/{user_id}/enable": Route("users.manage", lambda a: [
        Call("POST", f"/v1/users/{a.user_id}/enable", foreign=a.user_id)]),
    "POST /v1/users/{user_id}/role": Route("users.manage", lambda a: [
        Call("POST", f"/v1/users/{a.user_id}/role", {"role": "auditor"}, foreign=a.user_id)]),
    # Signing in names a tenant itself; an unknown one answers like a wrong password.
    "POST /v1/auth/invitations/accept": Route("public", lambda a: [
        Call("POST", "/v1/auth/invitations/accept", {"token": "x" * 43, "password": "p" * 20},
             check=_status(400, "invalid_invitation"))]),
    "POST /v1/auth/login": Route("public", lambda a: [
        Call("POST", "/v1/auth/login", {"tenant": "t-nobody", "email": a.email, "password": "wrong password"},
             foreign=a.email, check=_status(401, "invalid_credentials"))]),
    "POST /v1/auth/passkey/options": Route("public", lambda a: [
        Call("POST", "/v1/auth/passkey/options", {"tenant": a.tenant.id}, foreign=a.tenant.id,
             check=_status(200))]),
    "POST /v1/auth/passkey": Route("public", lambda a: [
        Call("POST", "/v1/auth/passkey", {"tenant": a.tenant.id, "challenge_id": str(uuid.uuid4()),
                                          "credential": WELL_FORMED_ASSERTION}, foreign=a.tenant.id,
             check=_status(400, "invalid_challenge"))]),
    "GET /v1/auth/me": Route("account", lambda a: [Call("GET", "/v1/auth/me")]),
    "POST /v1/auth/mfa/totp": Route("account", lambda a: [
        Call("POST", "/v1/auth/mfa/totp", {"code": "000000"}, check=_b_own_account)]),
    "POST /v1/auth/mfa/passkey/options": Route("account", lambda a: [
        Call("POST", "/v1/auth/mfa/passkey/options", check=_status(409, "no_passkey"))]),
    "POST /v1/auth/mfa/passkey": Route("account", lambda a: [
        Call("POST", "/v1/auth/mfa/passkey", {"challenge_id": str(uuid.uuid4()), "credential": WELL_FORMED_ASSERTION},
             check=_status(400, "invalid_challenge"))]),
    "POST /v1/auth/totp/enrol": Route("account", lambda a: [
        Call("POST", "/v1/auth/totp/enrol", check=_b_own_account)]),
    "POST /v1/auth/totp/confirm": Route("account", lambda a: [
        Call("POST", "/v1/auth/totp/confirm", {"code": "000000"}, check=_b_own_account)]),
    "POST /v1/auth/backup-codes": Route("account", lambda a: [
        Call("POST", "/v1/auth/backup-codes", check=_b_own_account)]),
    "DELETE /v1/auth/totp": Route("account", lambda a: [Call("DELETE", "/v1/auth/totp", check=_b_own_account)]),
    "POST /v1/auth/passkeys/options": Route("account", lambda a: [Call("POST", "/v1/auth/passkeys/options")]),
    "POST /v1/auth/passkeys": Route("account", lambda a: [
        Call("POST", "/v1/auth/passkeys", {"challenge_id": str(uuid.uuid4()), "credential": {}},
             check=_status(400, "invalid_challenge"))]),
    "GET /v1/auth/passkeys": Route("account", lambda a: [Call("GET", "/v1/auth/passkeys")]),
    "PATCH /v1/auth/passkeys/{passkey_id}": Route("account", lambda a: [
        Call("PATCH", f"/v1/auth/passkeys/{uuid.uuid4()}", {"name": "x"}, check=_status(404, "not_found"))]),
    "DELETE /v1/auth/passkeys/{passkey_id}": Route("account", lambda a: [
        Call("DELETE", f"/v1/auth/passkeys/{uuid.uuid4()}", check=_status(404, "not_found"))]),
    "GET /v1/auth/sessions": Route("account", lambda a: [Call("GET", "/v1/auth/sessions")]),
    # A's owner's session id: B cannot revoke it (the snapshot afterwards uses that very session).
    "DELETE /v1/auth/sessions/{session_id}": Route("account", lambda a: [
        Call("DELETE", f"/v1/auth/sessions/{a.session_id}", foreign=a.session_id)]),
    "POST /v1/auth/password": Route("account", lambda a: [
        Call("POST", "/v1/auth/password", {"current_password": "wrong password", "new_password": "n" * 20},
             check=_status(401, "invalid_credentials"))]),
    "POST /v1/auth/logout": Route("account", lambda a: [
        Call("POST", "/v1/auth/logout", headers=NO_SESSION, check=_status(401, "unauthenticated"))]),
    "POST /v1/auth/logout-everywhere": Route("account", lambda a: [
        Call("POST", "/v1/auth/logout-everywhere", headers=NO_SESSION, check=_status(401, "unauthenticated"))]),
}


def _published(server: Server) -> set[str]:
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    return {f"{method.upper()} {path}" for path, operations in paths.items() if path.startswith("/v1")
            for method in operations}


def _snapshot(alpha: Alpha) -> dict[str, Any]:
    """Everything A's owner can read (a checkpoint request may sign one, but never changes the size)."""
    with alpha.tenant.owner_session() as owner:
        state = {path: owner.get(path, params={"limit": 500} if "certificates" in path or "audit" in path else None
                                 ).json()
                 for path in ("/v1/policies", f"/v1/policies/{alpha.policy_id}", "/v1/keys", "/v1/users",
                              "/v1/audit", "/v1/certificates", "/v1/delegations", "/v1/evidence/entries")}
        state["size"] = owner.get("/v1/evidence/checkpoint").json()["size"]
    # A refused passkey sign-in naming A is A's to audit (docs/auth.md): the one trace B may leave in A.
    state["/v1/audit"]["events"] = [e for e in state["/v1/audit"]["events"] if e["action"] != "auth.passkey_failed"]
    return state


def _leaks(alpha: Alpha, reply: httpx.Response, call: Call, adopted: set[str] = frozenset()) -> list[str]:
    """A's secrets in the reply, but for the value the call itself carries and those B made its own."""
    allowed_ = {*adopted, *([str(call.foreign)] if call.foreign is not None else [])}
    return sorted(s for s in alpha.secrets - allowed_ if s in reply.text)


@pytest.fixture
def alpha(server: Server) -> Alpha:
    return _alpha(server)


def test_the_route_table_covers_every_published_route(server: Server) -> None:
    published = _published(server)
    assert len(published) >= 29
    assert sorted(published - set(ROUTES)) == [], "routes without an isolation entry"
    assert sorted(set(ROUTES) - published) == [], "entries for routes the server no longer has"


def test_another_tenant_reaches_nothing_of_a_and_changes_nothing(server: Server, alpha: Alpha) -> None:
    before = _snapshot(alpha)
    beta = server.new_tenant()
    beta.activate()
    twin = beta.key(principal_id=TWIN)
    checked, adopted = 0, set()
    for role, key in (("owner", beta.owner_person().token), ("agent", twin)):
        with server.client(key) as client:
            for name, route in ROUTES.items():
                for call in route.calls(alpha):
                    reply = call.send(client)
                    checked += 1
                    assert reply.status_code < 500, (role, name, reply.text)
                    if call.check is not None and call.foreign is not None and reply.status_code < 300:
                        adopted.add(str(call.foreign))
                    assert _leaks(alpha, reply, call, adopted) == [], (role, name, reply.text)
                    if route.permission != "public" and not allowed(role, route.permission) and not (
                            call.headers and "Authorization" in call.headers):
                        assert_error(reply, 403, "forbidden")
                    elif call.check is not None:
                        call.check(beta, role, reply)
                    elif call.foreign is not None:
                        # Exactly what a value that names nothing gets: no oracle for A's ids.
                        assert_error(reply, 404, "not_found")
                        other, unknown = call.swapped()
                        again = other.send(client)
                        assert again.status_code == reply.status_code, (role, name, again.text)
                        assert again.text.replace(unknown, "?") == reply.text.replace(str(call.foreign), "?")
                    else:
                        assert reply.status_code in (200, 201), (role, name, reply.text)
    assert checked > 100
    assert _snapshot(alpha) == before
    with beta.owner_session() as owner:
        assert owner.get("/v1/evidence/checkpoint").json()["size"] < alpha.size  # the premise of checkpoints/{size}
    _alpha_still_works(server, alpha)




def _alpha_still_works(server: Server, alpha: Alpha) -> None:
    """A's keys, grant, session state, idempotency keys and active version are as A left them."""
    with alpha.tenant.owner_session() as owner:
        active = owner.get("/v1/policies").json()["active"]
        assert active["id"] == alpha.version_ids[0] and active["number"] == 2  # versions are newest first
    with server.client(alpha.agent_key) as agent, server.client(alpha.helper_key) as helper, \
            server.client(alpha.twin_key) as twin:
        assert agent.post("/v1/decide", json=transfer(7)).json()["decision"] == "permit"
        delegated = helper.post("/v1/decide", json={**transfer(50), "delegation": alpha.grant_id})
        assert delegated.json()["decision"] == "permit", delegated.text
        # B's twin was permitted 1000 in B; in A the twin's budget is still spent.
        assert twin.post("/v1/decide", json=transfer(1000)).json()["decision"] == "forbid"
        replay = twin.post("/v1/decide", json=transfer(1000), headers={"Idempotency-Key": alpha.idempotency_key})
        assert replay.json()["replayed"] is True and replay.json()["certificate_id"] == alpha.certificate_ids[0]


def _every_call(alpha: Alpha) -> list[tuple[str, Call]]:
    return [(name, route.calls(alpha)[0]) for name, route in ROUTES.items() if route.permission != "public"]


def test_every_route_refuses_missing_garbage_revoked_and_expired_keys(server: Server, alpha: Alpha) -> None:
    with alpha.tenant.owner_session() as owner:
        revoked = alpha.tenant.key(principal_id="agent:revoked")
        revoked_id = next(k["id"] for k in owner.get("/v1/keys").json()["keys"] if k["principal_id"] == "agent:revoked")
        assert owner.post(f"/v1/keys/{revoked_id}/revoke").status_code == 200
        expired = owner.post("/v1/keys", json={"name": "old", "role": "owner", "principal_id": "owner:old",
                                               "expires_at": "2020-01-01T00:00:00Z"}).json()["secret"]
    before = _snapshot(alpha)
    stored_hash = __import__("hashlib").sha256(alpha.tenant.owner_key.encode()).hexdigest()
    headers: list[dict[str, str]] = [
        {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer, {alpha.tenant.owner_key}"},
        {"Authorization": "Bearer garbage"}, {"Authorization": "Bearer licet_"},
        {"Authorization": "Bearer licet_" + "A" * 43},
        {"Authorization": f"Bearer {alpha.tenant.owner_key[:-1]}{'B' if alpha.tenant.owner_key[-1] != 'B' else 'C'}"},
        {"Authorization": f"Bearer {alpha.tenant.owner_key}x"},
        {"Authorization": f"Bearer {stored_hash}"}, {"Authorization": f"Bearer licet_{stored_hash}"},
        {"Authorization": f"Basic {base64.b64encode(f'owner:{alpha.tenant.owner_key}'.encode()).decode()}"},
        {"Authorization": f"Token {alpha.tenant.owner_key}"}, {"X-Api-Key": alpha.tenant.owner_key},
        {"Authorization": f"Bearer {revoked}"}, {"Authorization": f"Bearer {expired}"},
    ]
    with server.client() as client:
        for name, call in _every_call(alpha):
            for header in headers:
                reply = client.request(call.method, call.path, json=call.json, params=call.params,
                                       headers={**(call.headers or {}), **header})
                assert_error(reply, 401, "unauthenticated")
                assert _leaks(alpha, reply, Call("GET", "/")) == [], (name, header, reply.text)
    assert _snapshot(alpha) == before


def test_an_agent_key_calling_administrative_routes_is_forbidden(server: Server, alpha: Alpha) -> None:
    before = _snapshot(alpha)
    administrative = [name for name, route in ROUTES.items()
                      if route.permission != "public" and not allowed("agent", route.permission)]
    assert {"POST /v1/keys/{key_id}/revoke", "POST /v1/policies/{policy_id}/versions/{number}/activate",
            "GET /v1/audit", "GET /v1/evidence/entries", "POST /v1/users"} <= set(administrative)
    with server.client(alpha.agent_key) as agent:
        for name in administrative:
            for call in ROUTES[name].calls(alpha):  # its own tenant's ids: the role is what is refused
                if not (call.headers and "Authorization" in call.headers):
                    assert_error(call.send(agent), 403, "forbidden")
    assert _snapshot(alpha) == before
    with server.client(alpha.agent_key) as agent:  # its own key was among those it tried to revoke
        assert agent.post("/v1/decide", json=transfer(1)).status_code == 200


def test_listings_show_only_the_callers_tenant(server: Server, alpha: Alpha) -> None:
    beta = server.new_tenant()
    beta.activate()
    with beta.owner_session() as owner, server.client(beta.key(principal_id=TWIN)) as twin:
        mine = twin.post("/v1/decide", json=transfer(3)).json()["certificate_id"]
        listings = {path: owner.get(path).json() for path in (
            "/v1/policies", "/v1/keys", "/v1/users", "/v1/audit", "/v1/certificates", "/v1/delegations",
            "/v1/evidence/entries")}
        assert [p["name"] for p in listings["/v1/policies"]["policies"]] == ["payments-agent"]
        assert {k["principal_id"] for k in listings["/v1/keys"]["keys"]} == {"owner", TWIN}
        assert [u["email"] for u in listings["/v1/users"]["users"]] == [beta.owner_person().email]
        assert listings["/v1/delegations"]["grants"] == []
        assert [c["id"] for c in listings["/v1/certificates"]["certificates"]] == [mine]
        assert [c["id"] for c in twin.get("/v1/certificates").json()["certificates"]] == [mine]
        assert [e["certificate"]["id"] for e in listings["/v1/evidence/entries"]["entries"]] == [mine]
        assert {e["action"] for e in listings["/v1/audit"]["events"]} == {
            "policy.version.create", "policy.activate", "key.create", "user.create", "user.invite",
            "auth.invitation_accepted", "auth.totp_enrol_started", "auth.totp_enabled"}
        text = json.dumps(listings)
        assert sorted(s for s in alpha.secrets if s in text) == []
