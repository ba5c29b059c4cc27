"""Regression tests for the sign-in and key defects of issue 22, over real HTTP on SQLite and
PostgreSQL: invitations of a disabled account, and delegations of an expired key.

The servers are separate processes, so time is moved the way tests/test_auth.py moves it: by
rewriting the stored instant (here, a key's expiry) in the test server's database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.server_harness import Server, Tenant
from tests.test_auth import sql

PASSWORD = "tangerine-orbit-42-glass"


def accept(server: Server, token: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/v1/auth/invitations/accept", json={"token": token, "password": PASSWORD})


# --- invitations of a disabled account ------------------------------------------------------------


def test_disabling_voids_invitations_and_a_disabled_account_accepts_none(server: Server, tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        made = owner.post("/v1/users", json={"email": "ida@example.com", "display_name": "Ida", "role": "approver"})
        user_id, pending = made.json()["user"]["id"], made.json()["invitation"]["token"]
        assert owner.post(f"/v1/users/{user_id}/disable").status_code == 200
    voided = accept(server, pending)
    assert voided.status_code == 400 and voided.json()["error"]["code"] == "invalid_invitation", voided.text
    with tenant.owner_session() as owner:
        # Re-inviting a disabled account is allowed (an admin prepares a reset), but not usable yet.
        reset = owner.post(f"/v1/users/{user_id}/invitation").json()["invitation"]["token"]
    refused = accept(server, reset)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "account_disabled", refused.text
    assert sql(server, "SELECT password_hash FROM users WHERE id = :u", u=user_id) == [(None,)]
    with tenant.owner_session() as owner:
        assert owner.post(f"/v1/users/{user_id}/enable").status_code == 200
    assert accept(server, pending).status_code == 400, "enabling the account does not revive a voided invitation"
    assert accept(server, reset).status_code == 201, "an invitation issued after the disabling works once enabled"


# --- delegations of an expired key -----------------------------------------------------------------

OPS_ONLY = """\
id: ops-refunds
version: 1
rules:
  - id: ops-refund
    effect: permit
    action: [payments.refund]
    resource: ["/accounts/*"]
    when: '"ops" in principal.roles'
"""


def test_a_delegation_does_not_outlive_its_issuers_expired_key(server: Server) -> None:
    tenant = server.new_tenant()
    tenant.activate(OPS_ONLY)
    boss = tenant.key(principal_id="agent:boss", roles=["ops"])
    helper = tenant.key(principal_id="agent:helper", roles=[])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refund = {"action": "payments.refund", "resource": "/accounts/acc-1"}
    with server.client(boss) as b:
        grant = b.post("/v1/delegations", json={"delegate": "agent:helper", "expires_at": later, "scope": [
            {"id": "refunds", "effect": "permit", "action": ["payments.refund"], "resource": ["/accounts/*"]}]})
        assert grant.status_code == 201, grant.text
    delegated = {**refund, "delegation": grant.json()["grant"]["id"]}
    with server.client(helper) as h:
        assert h.post("/v1/decide", json=delegated).json()["decision"] == "permit"
        sql(server, "UPDATE api_keys SET expires_at = :t WHERE tenant_id = :tenant AND principal_id = 'agent:boss'",
            t=datetime.now(UTC) - timedelta(seconds=1), tenant=tenant.id)
        with server.client(boss) as b:
            assert b.post("/v1/decide", json=refund).status_code == 401  # the key itself is expired
        reply = h.post("/v1/decide", json=delegated).json()
        assert reply["decision"] == "deny", reply
        assert reply["certificate"]["request"]["principal"] == {"id": "agent:boss", "tenant": tenant.id, "roles": []}
