"""Regression tests for the sign-in and key defects of issue 22, over real HTTP on SQLite and
PostgreSQL: invitations of a disabled account."""

from __future__ import annotations

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
