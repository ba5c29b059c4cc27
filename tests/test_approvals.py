"""Approvals end to end over real HTTP, on SQLite and PostgreSQL (the embedded in-process worker):
quorum, single use, the binding to the exact request, agent and tenant, deadlines, denial, cancel,
and the evidence every state change leaves (audit trail and signed entries in the tenant's log)."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx

from licet import kernel
from licet.kernel.canonical import canonical_json
from licet.kernel.report import all_ok
from tests.conftest import PAYMENTS
from tests.server_harness import Person, Server, Tenant, certificate_keys

SHORT = PAYMENTS.replace("approval: {quorum: 2, role: approver, ttl: 15m}", "approval: {quorum: 1, role: approver, ttl: 3}")


def transfer(amount: int = 2000, approval: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "payments.transfer", "resource": "/accounts/acc-1",
                            "args": {"amount": amount, "currency": "EUR", **extra}}
    if approval is not None:
        body["approval"] = approval
    return body


def ask(client: httpx.Client, amount: int = 2000, approval: str | None = None, **extra: Any) -> dict[str, Any]:
    reply = client.post("/v1/decide", json=transfer(amount, approval, **extra))
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def vote(person: Person, approval_id: str, approve: bool = True, reason: str | None = None) -> httpx.Response:
    with person.client() as client:
        if approve:
            return client.post(f"/v1/approvals/{approval_id}/approve", json={"reason": reason})
        return client.post(f"/v1/approvals/{approval_id}/deny", json={"reason": reason})


def error(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code, reply.text


def wait_for(check: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def refused(body: dict[str, Any], code: str, keys: list[Any]) -> None:
    """A refusal of a presented approval: a certified deny naming the reason."""
    assert body["decision"] == "deny", body
    assert body["approval_refused"]["code"] == code, body
    assert body["proof"]["approval_refused"]["code"] == code
    assert body["rules"] == ["large-transfer"]  # the rule that still requires approval
    assert all_ok(kernel.verify_certificate(body["certificate"], keys))


def test_quorum_two_of_three_end_to_end(tenant: Tenant) -> None:
    agent = tenant.server.client(tenant.key())
    a, b, c = (tenant.person("approver") for _ in range(3))
    keys = certificate_keys(agent)
    opened = ask(agent)
    assert opened["decision"] == "require_approval"
    approval = opened["approval"]
    assert approval["state"] == "pending" and approval["quorum"] == 2 and approval["roles"] == ["approver"]
    assert opened["certificate"]["approval"] == {"required": {"quorum": 2, "role": "approver", "ttl_seconds": 900}}

    # Asking again waits for the same approval: approvers are not paged twice.
    assert ask(agent)["approval"] == {**approval, "reused": True}

    with a.client() as reviewer:
        pending = reviewer.get("/v1/approvals", params={"state": "pending"}).json()["approvals"]
    assert [p["id"] for p in pending] == [approval["id"]]
    assert pending[0]["request"]["args"] == {"amount": 2000, "currency": "EUR"}
    assert pending[0]["rules"] == ["large-transfer"] and pending[0]["requested_by"] == "agent:bot"
    with tenant.owner_session() as owner:  # the stored version that asked, by its hash
        versions = {v["hash"]: {"policy_id": p["id"], "name": p["name"], "number": v["number"]}
                    for p in owner.get("/v1/policies").json()["policies"]
                    for v in owner.get(f"/v1/policies/{p['id']}").json()["versions"]}
    assert pending[0]["policy_version"] == versions[pending[0]["policy_hash"]]
    assert pending[0]["your_vote"] == {"allowed": True, "code": None, "reason": None}

    assert vote(a, approval["id"]).json()["state"] == "pending"
    error(vote(a, approval["id"]), 409, "already_voted")  # each approver counts once
    with c.client() as reviewer:  # who else has voted
        seen = reviewer.get(f"/v1/approvals/{approval['id']}").json()
    assert [v["voter"] for v in seen["votes"]] == [a.principal_id] and seen["approvals"] == 1
    before_grant = ask(agent, approval=approval["id"])
    refused(before_grant, "approval_pending", keys)

    granted = vote(b, approval["id"]).json()
    assert granted["state"] == "granted" and granted["approvals"] == 2
    error(vote(c, approval["id"]), 409, "approval_closed")

    permitted = ask(agent, approval=approval["id"])
    assert permitted["decision"] == "permit", permitted
    certificate = permitted["certificate"]
    approvers = sorted([a.principal_id, b.principal_id])
    assert certificate["approval"] == {"id": approval["id"], "approvers": approvers}
    assert certificate["proof"]["approval"] == {"id": approval["id"], "approvers": approvers}
    assert all_ok(kernel.verify_certificate(certificate, keys))
    assert permitted["approval"]["state"] == "used"

    # Single use: the same approval again is a certified refusal.
    refused(ask(agent, approval=approval["id"]), "approval_used", keys)

    with tenant.owner() as owner:
        final = owner.get(f"/v1/approvals/{approval['id']}").json()
        assert final["state"] == "used" and final["used_certificate_id"] == permitted["certificate_id"]
        events = [e["event"] for e in final["events"]]
        assert events == ["opened", "vote", "refused", "vote", "granted", "used", "refused"]
        entries = owner.get("/v1/evidence/entries", params={"limit": 1000}).json()["entries"]
    # Every state change is a signed entry of the tenant's evidence log, at the index the history names.
    logged = {e["index"]: e["certificate"] for e in entries}
    for event in final["events"]:
        if event["event"] == "refused":
            continue  # the refusal is the deny certificate itself
        entry = logged[event["log_index"]]
        assert entry["version"] == "licet.approval-event/1" and entry["event"] == event["event"]
        assert entry["approval"] == approval["id"] and entry["tenant"] == tenant.id
        body = {k: v for k, v in entry.items() if k != "signature"}
        assert keys[0].verify(canonical_json(body), base64.b64decode(entry["signature"]))
    with tenant.owner() as owner:
        audit = owner.get("/v1/audit", params={"limit": 500}).json()
    actions = [e["action"] for e in audit.get("events", audit.get("items", []))]
    assert {"approval.opened", "approval.vote", "approval.granted", "approval.used"} <= set(actions)


def test_the_requester_and_its_delegation_chain_never_approve(tenant: Tenant) -> None:
    approver, issuer = tenant.person("approver"), tenant.person("approver")
    # An agent whose principal is the approver's own: its request can never be approved by that person.
    with tenant.server.client(tenant.key(principal_id=approver.principal_id)) as own:
        mine = ask(own)["approval"]["id"]
    error(vote(approver, mine), 403, "self_approval")
    # Acting for `issuer` through a delegation: the issuer may not approve either.
    with tenant.server.client(tenant.key(principal_id=issuer.principal_id)) as grantor:
        grant = grantor.post("/v1/delegations", json={
            "delegate": "agent:helper", "expires_at": "2099-01-01T00:00:00Z",
            "scope": [{"id": "transfers", "effect": "permit", "action": ["payments.transfer"]}]})
        assert grant.status_code == 201, grant.text
    with tenant.server.client(tenant.key(principal_id="agent:helper")) as helper:
        delegated = helper.post("/v1/decide", json={**transfer(), "delegation": grant.json()["grant"]["id"]}).json()
    assert delegated["decision"] == "require_approval", delegated
    error(vote(issuer, delegated["approval"]["id"]), 403, "self_approval")
    with tenant.owner() as owner:
        assert owner.get(f"/v1/approvals/{delegated['approval']['id']}").json()["votes"] == []


def test_an_approval_is_refused_through_a_chain_that_makes_its_approver_a_party(tenant: Tenant) -> None:
    """The chain is part of who asks: opened through X→helper and approved by B, the same request made
    through X→B→helper would have B approve their own request, so it is refused (and not used up)."""
    tenant.activate(PAYMENTS.replace("approval: {quorum: 2, role: approver, ttl: 15m}",
                                     "approval: {quorum: 1, role: approver, ttl: 15m}"))
    issuer, middle = tenant.person("approver"), tenant.person("approver")
    scope = [{"id": "transfers", "effect": "permit", "action": ["payments.transfer"]}]
    later = "2099-01-01T00:00:00Z"
    with tenant.server.client(tenant.key(principal_id=issuer.principal_id)) as grantor:
        direct = grantor.post("/v1/delegations", json={"delegate": "agent:helper", "expires_at": later,
                                                       "scope": scope}).json()["grant"]["id"]
        to_middle = grantor.post("/v1/delegations", json={"delegate": middle.principal_id, "expires_at": later,
                                                          "scope": scope, "max_depth": 1}).json()["grant"]["id"]
    with tenant.server.client(tenant.key(principal_id=middle.principal_id)) as relay:
        made = relay.post("/v1/delegations", json={"delegate": "agent:helper", "expires_at": later, "scope": scope,
                                                   "parent": to_middle})
        assert made.status_code == 201, made.text
        through_middle = made.json()["grant"]["id"]
    with tenant.server.client(tenant.key(principal_id="agent:helper")) as helper:
        def ask_via(grant: str, approval: str | None = None) -> dict[str, Any]:
            body = {**transfer(approval=approval), "delegation": grant}
            return dict(helper.post("/v1/decide", json=body).json())

        opened = ask_via(direct)["approval"]["id"]
        assert vote(middle, opened).json()["state"] == "granted"
        refused = ask_via(through_middle, opened)
        assert refused["decision"] != "permit"
        assert refused["approval_refused"]["code"] == "approval_self_approved", refused
        assert ask_via(direct, opened)["decision"] == "permit"


def test_the_person_who_made_the_agents_key_never_approves_its_requests(tenant: Tenant) -> None:
    """Otherwise an admin could mint a key, ask through it and approve the request themselves."""
    tenant.activate(PAYMENTS.replace("approval: {quorum: 2, role: approver, ttl: 15m}",
                                     "approval: {quorum: 1, role: admin, ttl: 15m}"))
    maker, other = tenant.person("admin"), tenant.person("admin")
    with maker.client() as client:
        made = client.post("/v1/keys", json={"name": "bot", "role": "agent", "principal_id": "agent:minted",
                                              "principal_roles": ["ops"]})
        assert made.status_code == 201, made.text
    with tenant.server.client(made.json()["secret"]) as agent:
        opened = ask(agent)["approval"]
        error(vote(maker, opened["id"]), 403, "self_approval")
        assert vote(other, opened["id"]).json()["state"] == "granted"
        assert ask(agent, approval=opened["id"])["decision"] == "permit"


def test_voting_needs_a_person_of_the_role_with_recent_mfa_and_a_reason_to_deny(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as agent:
        approval = ask(agent)["approval"]["id"]
    with tenant.owner() as owner_key:  # an API key is never a person
        error(owner_key.post(f"/v1/approvals/{approval}/approve", json={}), 403, "step_up_required")
    error(vote(tenant.person("approver", mfa=False), approval), 403, "step_up_required")
    error(vote(tenant.person("auditor"), approval), 403, "forbidden")
    error(vote(tenant.person("admin"), approval), 403, "not_an_approver")  # the rule names approvers
    denier = tenant.person("approver")
    assert vote(denier, approval, approve=False, reason="").status_code == 422
    with denier.client() as client:
        assert client.post(f"/v1/approvals/{approval}/deny", json={}).status_code == 422
    with tenant.owner() as owner:
        assert owner.get(f"/v1/approvals/{approval}").json()["votes"] == []


def test_a_granted_approval_is_bound_to_the_exact_request_agent_and_tenant(server: Server, tenant: Tenant) -> None:
    agent = server.client(tenant.key())
    keys = certificate_keys(agent)
    approval = ask(agent)["approval"]["id"]
    for person in (tenant.person("approver"), tenant.person("approver")):
        assert vote(person, approval).status_code == 200
    # Any argument changed, added, or another resource: refused, naming what differs.
    tampered = ask(agent, 2001, approval)
    refused(tampered, "approval_request_mismatch", keys)
    assert "args.amount" in tampered["approval_refused"]["reason"]
    refused(ask(agent, 2000, approval, memo="x"), "approval_request_mismatch", keys)
    # Another agent of the tenant.
    with server.client(tenant.key(principal_id="agent:other")) as other:
        refused(ask(other, approval=approval), "approval_other_agent", keys)
        assert other.get(f"/v1/approvals/{approval}").status_code == 404  # an agent sees only its own
        assert other.post(f"/v1/approvals/{approval}/cancel", json={}).status_code == 404
    # Another tenant: exactly what an id that names nothing gets.
    beta = server.new_tenant()
    beta.activate()
    with server.client(beta.key()) as stranger:
        foreign = ask(stranger, approval=approval)
        unknown = ask(stranger, approval=str(uuid.uuid4()))
        assert foreign["approval_refused"]["code"] == unknown["approval_refused"]["code"] == "approval_unknown"
        assert stranger.get(f"/v1/approvals/{approval}").status_code == 404
    with beta.owner() as owner:
        assert owner.get(f"/v1/approvals/{approval}").status_code == 404
    error(vote(beta.person("approver"), approval), 404, "not_found")
    # None of that used it up: the right agent with the exact request still gets its permit.
    assert ask(agent, approval=approval)["decision"] == "permit"


def test_expired_approval_is_refused_at_use(tenant: Tenant) -> None:
    tenant.activate(SHORT)
    agent = tenant.server.client(tenant.key())
    keys = certificate_keys(agent)
    opened = ask(agent)["approval"]
    assert vote(tenant.person("approver"), opened["id"]).json()["state"] == "granted"
    deadline = opened["deadline"]
    wait_for(lambda: time.time() > _epoch(deadline) + 0.05, what="the deadline")
    refused(ask(agent, approval=opened["id"]), "approval_expired", keys)
    with tenant.owner() as owner:
        assert owner.get(f"/v1/approvals/{opened['id']}").json()["state"] == "expired"


def test_pending_approval_expires_at_the_deadline_with_the_embedded_worker(tenant: Tenant) -> None:
    tenant.activate(SHORT)
    with tenant.server.client(tenant.key()) as agent:
        opened = ask(agent)["approval"]
    with tenant.owner() as owner:
        expired = wait_for(lambda: owner.get(f"/v1/approvals/{opened['id']}").json()["state"] == "expired",
                           timeout=20, what="the in-process worker to expire the approval")
    assert expired


def test_one_denial_closes_and_the_requester_cancels(tenant: Tenant) -> None:
    agent = tenant.server.client(tenant.key())
    keys = certificate_keys(agent)
    first = ask(agent)["approval"]["id"]
    approver, denier = tenant.person("approver"), tenant.person("approver")
    assert vote(approver, first).status_code == 200
    denied = vote(denier, first, approve=False, reason="supplier unknown").json()
    assert denied["state"] == "denied" and denied["reason"] == "supplier unknown"
    refused(ask(agent, approval=first), "approval_denied", keys)
    # A new request for the same action opens a new approval; its requester withdraws it.
    second = ask(agent)["approval"]
    assert second["id"] != first and second["reused"] is False
    cancelled = agent.post(f"/v1/approvals/{second['id']}/cancel", json={"reason": "no longer needed"})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    error(agent.post(f"/v1/approvals/{second['id']}/cancel", json={}), 409, "approval_closed")
    error(vote(approver, second["id"]), 409, "approval_closed")
    refused(ask(agent, approval=second["id"]), "approval_cancelled", keys)
    listed = agent.get("/v1/approvals", params={"state": "all"}).json()["approvals"]
    assert {a["id"]: a["state"] for a in listed} == {first: "denied", second["id"]: "cancelled"}


def test_idempotent_retry_of_a_use_returns_the_same_permit(tenant: Tenant) -> None:
    agent = tenant.server.client(tenant.key())
    approval = ask(agent)["approval"]["id"]
    for person in (tenant.person("approver"), tenant.person("approver")):
        vote(person, approval)
    headers = {"Idempotency-Key": f"use-{approval}"}
    first = agent.post("/v1/decide", json=transfer(approval=approval), headers=headers).json()
    again = agent.post("/v1/decide", json=transfer(approval=approval), headers=headers).json()
    assert first["decision"] == "permit" and again["replayed"] is True
    assert again["certificate_id"] == first["certificate_id"] and again["approval"]["id"] == approval


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_sdk_approval_round_trip(tenant: Tenant) -> None:
    from licet.sdk import ApprovalRefused, ApprovalRequired, LicetClient
    from licet.sdk.errors import raise_for_decision

    args = {"amount": 2000, "currency": "EUR"}
    with LicetClient(tenant.server.url, tenant.key()) as client:
        first = client.decide("payments.transfer", "/accounts/acc-1", args)
        try:
            raise_for_decision(first)
        except ApprovalRequired as exc:
            approval_id = exc.approval_id
        else:
            raise AssertionError("a large transfer needs approval")
        assert approval_id is not None and client.approval(approval_id)["state"] == "pending"
        for person in (tenant.person("approver"), tenant.person("approver")):
            vote(person, approval_id)
        assert client.wait_for_approval(approval_id, timeout=5, interval=0.1)["state"] == "granted"
        decision = raise_for_decision(client.decide("payments.transfer", "/accounts/acc-1", args, approval=approval_id))
        assert decision.permitted and decision.certificate["approval"]["id"] == approval_id
        again = client.decide("payments.transfer", "/accounts/acc-1", args, approval=approval_id)
        try:
            raise_for_decision(again)
        except ApprovalRefused as exc:
            assert exc.code == "approval_used" and exc.approval == approval_id
        else:
            raise AssertionError("an approval is used once")
        second = client.decide("payments.transfer", "/accounts/acc-1", {"amount": 1500, "currency": "EUR"})
        assert second.approval_id is not None
        assert client.cancel_approval(second.approval_id)["state"] == "cancelled"
        assert [a["id"] for a in client.approvals("all")["approvals"]] == [second.approval_id, approval_id]


def test_an_unanswered_approval_escalates_to_the_second_role(tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        configured = owner.put("/v1/approvals/settings", json={"escalate_after_seconds": 4, "escalate_role": "admin"})
        assert configured.status_code == 200, configured.text
    admin, approver = tenant.person("admin"), tenant.person("approver")  # signed in before the clock starts
    with tenant.server.client(tenant.key()) as agent:
        opened = ask(agent)["approval"]  # quorum 2 of role approver, per the rule
        with tenant.owner() as owner:
            escalation = owner.get(f"/v1/approvals/{opened['id']}").json()["escalation"]
        assert escalation["role"] == "admin" and escalation["escalated_at"] is None
        error(vote(admin, opened["id"]), 403, "not_an_approver")  # not yet: the rule names approvers
        assert vote(approver, opened["id"]).json()["state"] == "pending"
        with tenant.owner() as owner:
            escalated = wait_for(lambda: owner.get(f"/v1/approvals/{opened['id']}").json()["escalation"][
                "escalated_at"], timeout=20, what="the in-process worker to escalate the approval")
            assert escalated
            events = owner.get(f"/v1/approvals/{opened['id']}").json()["events"]
            assert next(e for e in events if e["event"] == "escalated")["log_index"] is not None
        assert vote(admin, opened["id"]).json()["state"] == "granted"  # the admin now stands in
        assert ask(agent, approval=opened["id"])["decision"] == "permit"


def test_webhooks_to_internal_addresses_are_refused() -> None:
    """Server-side request forgery: unless LICET_WEBHOOK_PRIVATE_TARGETS allows it, no webhook goes to
    loopback, private, link-local (cloud metadata) or reserved addresses, at creation or at sending."""
    from licet.server.approvals import webhooks

    for url in ("http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://192.168.0.1/x", "http://0.0.0.0/x", "https://224.0.0.1/x", "http:///x"):
        assert webhooks.not_public(url) is not None, url
    assert webhooks.not_public("https://93.184.216.34/hook") is None
    attempt = webhooks.Attempt("d", "t", "h", "http://127.0.0.1:9/x", "whsec_x", "opened", b"{}", 1)
    status, error = webhooks.send(attempt, 1.0)
    assert status is None and error is not None and "not a public address" in error
