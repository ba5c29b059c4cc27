"""Regression tests for the sign-in and key defects of issue 22, over real HTTP on SQLite and
PostgreSQL: invitations of a disabled account, Idempotency-Key for a person's session (and the
migration of the keys stored before), delegations of an expired key, and rotating a key twice (one
after the other, and concurrently).

The servers are separate processes, so time is moved the way tests/test_auth.py moves it: by
rewriting the stored instant (here, a key's expiry) in the test server's database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, insert, text

from licet.server import migrations
from licet.server.models import IdempotencyRecord
from licet.server.models import Tenant as TenantRow
from tests.server_harness import Server, Tenant
from tests.test_auth import sql
from tests.test_migrations import database_url, on_database

__all__ = ["database_url"]  # the fixture, on SQLite and PostgreSQL

PASSWORD = "tangerine-orbit-42-glass"


def transfer(amount: int) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/acc-1", "args": {"amount": amount, "currency": "EUR"}}


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


# --- Idempotency-Key for a person's session --------------------------------------------------------


def test_idempotency_key_holds_for_a_persons_session(tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        first = owner.post("/v1/decide", json=transfer(1000), headers={"Idempotency-Key": "s-1"})
        assert first.status_code == 200 and first.json()["decision"] == "permit", first.text
        again = owner.post("/v1/decide", json=transfer(1000), headers={"Idempotency-Key": "s-1"})
        assert again.status_code == 200 and again.json()["replayed"] is True, again.text
        assert again.json()["certificate"] == first.json()["certificate"]
        assert owner.get("/v1/evidence/checkpoint").json()["size"] == 1, "the retry was decided again"
        other = owner.post("/v1/decide", json=transfer(999), headers={"Idempotency-Key": "s-1"})
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict", other.text
        # The daily budget (5000) was spent once: four more transfers of 1000 fit, a fifth does not.
        outcomes = [owner.post("/v1/decide", json=transfer(1000)).json()["decision"] for _ in range(5)]
        assert outcomes == ["permit"] * 4 + ["forbid"]
    # The key is the person's own: an API key using the same Idempotency-Key is another caller.
    with tenant.server.client(tenant.key()) as agent:
        assert agent.post("/v1/decide", json=transfer(1), headers={"Idempotency-Key": "s-1"}).json()["replayed"] is False


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


# --- rotating a key twice --------------------------------------------------------------------------


def successors(tenant: Tenant, key_id: str) -> list[dict[str, Any]]:
    """The keys created by rotating `key_id` (named after it and created after it)."""
    with tenant.owner_session() as owner:
        keys = owner.get("/v1/keys").json()["keys"]
    old = next(k for k in keys if k["id"] == key_id)
    return [k for k in keys if k["name"] == old["name"] and k["id"] != key_id]


def test_a_rotated_key_cannot_be_rotated_again(tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        key_id = owner.post("/v1/keys", json={"name": "once", "role": "agent", "principal_id": "agent:once"}).json()[
            "key"]["id"]
        rotated = owner.post(f"/v1/keys/{key_id}/rotate", json={"grace_seconds": 3600})
        assert rotated.status_code == 201, rotated.text
        again = owner.post(f"/v1/keys/{key_id}/rotate", json={"grace_seconds": 3600})
        assert again.status_code == 409 and again.json()["error"]["code"] == "key_rotated", again.text
        assert rotated.json()["key"]["id"] in again.json()["error"]["message"]
    assert [k["id"] for k in successors(tenant, key_id)] == [rotated.json()["key"]["id"]]


async def _rotate_concurrently(url: str, token: str, key_id: str, times: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        return await asyncio.gather(*(client.post(f"/v1/keys/{key_id}/rotate", json={"grace_seconds": 60})
                                      for _ in range(times)))


def test_concurrent_rotations_of_a_key_make_one_successor(tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        key_id = owner.post("/v1/keys", json={"name": "raced", "role": "agent", "principal_id": "agent:raced"}).json()[
            "key"]["id"]
    replies = asyncio.run(_rotate_concurrently(tenant.server.url, tenant.owner_person().token, key_id, 8))
    codes = sorted(r.status_code for r in replies)
    assert codes == [201] + [409] * 7, [r.text for r in replies]
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 409} == {"key_rotated"}
    winner = next(r.json()["key"]["id"] for r in replies if r.status_code == 201)
    assert [k["id"] for k in successors(tenant, key_id)] == [winner]


# --- the migration of stored Idempotency-Keys ------------------------------------------------------


def test_stored_idempotency_keys_keep_their_api_key_across_the_migration(database_url: str) -> None:
    migrations.upgrade(database_url, "0009")
    now = datetime.now(UTC)

    def old_rows(conn: Connection) -> None:
        conn.execute(insert(TenantRow).values(id="acme", name="Acme", created_at=now))
        conn.execute(text("INSERT INTO idempotency_keys (tenant_id, api_key_id, key, fingerprint, certificate_id, "
                          "created_at) VALUES ('acme', 'k-1', 'retry-1', 'f', 'c', :t)"), {"t": now})

    def principals(conn: Connection) -> list[str]:
        return list(conn.execute(text("SELECT principal FROM idempotency_keys ORDER BY principal")).scalars())

    on_database(database_url, old_rows, commit=True)
    migrations.upgrade(database_url)
    assert on_database(database_url, principals) == ["key:k-1"]
    on_database(database_url, lambda conn: conn.execute(insert(IdempotencyRecord).values(
        tenant_id="acme", principal="user:u-1", key="retry-1", fingerprint="f", certificate_id="c", created_at=now)),
        commit=True)
    migrations.downgrade(database_url, "0009")
    assert on_database(database_url, lambda conn: list(conn.execute(text(
        "SELECT api_key_id FROM idempotency_keys")).scalars())) == ["k-1"]
