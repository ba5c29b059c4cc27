"""Routes the dashboard's administration and delegation pages needed (issue 20): changing a person's role,
dry runs of issuing and revoking a delegation grant (the attenuation check and the revocation's cascade,
shown before anything is stored), and a webhook's test event. On SQLite and PostgreSQL (the `tenant`
fixture); the test event on a SQLite server of its own that may post to this machine's receiver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from licet.server.approvals import webhooks
from tests.server_harness import Server, Tenant, launch
from tests.test_approvals import wait_for
from tests.test_workers import Receiver, _start_receiver

SCOPE = [{"id": "small", "effect": "permit", "action": ["payments.transfer"], "resource": ["/accounts/*"],
          "when": "args.amount <= 100"}]


def transfer(amount: int, **extra: Any) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/acc-1",
            "args": {"amount": amount, "currency": "EUR", "country": "DE"}, **extra}


def _audit(tenant: Tenant, action: str) -> list[dict[str, Any]]:
    with tenant.owner() as owner:
        return list(owner.get("/v1/audit", params={"action": action}).json()["events"])


def test_a_role_change_holds_from_the_persons_next_request(tenant: Tenant) -> None:
    approver = tenant.person("approver")
    with approver.client() as client:
        assert client.get("/v1/audit").status_code == 403  # approvers do not read the audit trail
        with tenant.owner_session() as owner:
            changed = owner.post(f"/v1/users/{approver.user_id}/role", json={"role": "auditor"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["user"]["role"] == "auditor" and changed.json()["previous_role"] == "approver"
        assert client.get("/v1/audit").status_code == 200  # the same session, no sign-in again
        assert client.get("/v1/auth/me").json()["user"]["role"] == "auditor"
    events = _audit(tenant, "user.role")
    assert [(e["target"], e["details"]["previous"], e["details"]["role"]) for e in events] == \
        [(approver.user_id, "approver", "auditor")]


def test_only_owners_make_or_unmake_owners_and_nobody_changes_their_own_role(tenant: Tenant) -> None:
    admin, other = tenant.person("admin"), tenant.person("auditor")
    owner = tenant.owner_person()
    with admin.client() as client:
        promoted = client.post(f"/v1/users/{other.user_id}/role", json={"role": "owner"})
        assert promoted.status_code == 403 and promoted.json()["error"]["code"] == "forbidden"
        demoted = client.post(f"/v1/users/{owner.user_id}/role", json={"role": "auditor"})
        assert demoted.status_code == 403 and demoted.json()["error"]["code"] == "forbidden"
        own = client.post(f"/v1/users/{admin.user_id}/role", json={"role": "owner"})
        assert own.status_code == 403  # making oneself an owner is refused before anything else
        own = client.post(f"/v1/users/{admin.user_id}/role", json={"role": "auditor"})
        assert own.status_code == 409 and own.json()["error"]["code"] == "own_account"
        assert client.post(f"/v1/users/{other.user_id}/role", json={"role": "approver"}).status_code == 200
    with owner.client() as client:
        own = client.post(f"/v1/users/{owner.user_id}/role", json={"role": "admin"})
        assert own.status_code == 409 and own.json()["error"]["code"] == "own_account"
        assert client.post(f"/v1/users/{admin.user_id}/role", json={"role": "owner"}).status_code == 200
    with tenant.owner() as key:
        roles = {u["id"]: u["role"] for u in key.get("/v1/users").json()["users"]}
    assert roles[admin.user_id] == "owner" and roles[other.user_id] == "approver" and roles[owner.user_id] == "owner"


def test_a_role_change_names_the_bad_field(tenant: Tenant) -> None:
    person = tenant.person("auditor")
    with tenant.owner_session() as owner:
        for body in ({"role": "agent"}, {"role": "root"}, {}, {"role": "auditor", "email": "x@example.com"}):
            refused = owner.post(f"/v1/users/{person.user_id}/role", json=body)
            assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input", (body, refused.text)
            assert refused.json()["error"]["field"] in ("role", "email"), refused.text
        unknown = owner.post("/v1/users/00000000-0000-0000-0000-000000000000/role", json={"role": "auditor"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_a_dry_run_issue_checks_attenuation_and_stores_nothing(tenant: Tenant) -> None:
    boss = tenant.key(principal_id="agent:boss", roles=["ops"])
    helper = tenant.key(principal_id="agent:helper", roles=[])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with tenant.server.client(boss) as b, tenant.server.client(helper) as h:
        root = b.post("/v1/delegations", json={"delegate": "agent:helper", "scope": SCOPE, "expires_at": later,
                                               "max_depth": 1})
        assert root.status_code == 201 and root.json()["attenuation"] is None and not root.json()["dry_run"]
        gid = root.json()["grant"]["id"]
        narrower = {"delegate": "agent:sub", "parent": gid, "expires_at": later,
                    "scope": [{**SCOPE[0], "when": "args.amount <= 10"}]}
        checked = h.post("/v1/delegations", params={"dry_run": "true"}, json=narrower)
        assert checked.status_code == 200, checked.text
        assert checked.json()["dry_run"] is True
        assert checked.json()["attenuation"] == {"answer": "attenuates", "ok": True, "reasons": [],
                                                 "counterexample": None}
        wider = h.post("/v1/delegations", params={"dry_run": "true"},
                       json={**narrower, "scope": [{**SCOPE[0], "when": "args.amount <= 1000"}]})
        assert wider.status_code == 422 and wider.json()["error"]["code"] == "not_attenuating"
        example = wider.json()["error"]["attenuation"]["counterexample"]
        assert example["confirmed"] and 100 < example["request"]["args"]["amount"] <= 1000
        listed = b.get("/v1/delegations").json()["grants"]
        assert [g["id"] for g in listed] == [gid], "a dry run stores no grant"
        issued = h.post("/v1/delegations", json=narrower)
        assert issued.status_code == 201 and issued.json()["attenuation"]["answer"] == "attenuates"
    assert [e["target"] for e in _audit(tenant, "delegation.issue")] == [issued.json()["grant"]["id"], gid]


def test_a_dry_run_revoke_lists_the_cascade_and_revokes_nothing(tenant: Tenant) -> None:
    boss = tenant.key(principal_id="agent:boss", roles=["ops"])
    helper = tenant.key(principal_id="agent:helper", roles=[])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with tenant.server.client(boss) as b, tenant.server.client(helper) as h:
        gid = b.post("/v1/delegations", json={"delegate": "agent:helper", "scope": SCOPE, "expires_at": later,
                                              "max_depth": 1}).json()["grant"]["id"]
        child = h.post("/v1/delegations", json={"delegate": "agent:sub", "parent": gid, "expires_at": later,
                                                "scope": SCOPE}).json()["grant"]["id"]
        sibling = b.post("/v1/delegations", json={"delegate": "agent:other", "scope": SCOPE,
                                                  "expires_at": later}).json()["grant"]["id"]
        preview = b.post(f"/v1/delegations/{gid}/revoke", params={"dry_run": "true"})
        assert preview.status_code == 200, preview.text
        assert preview.json() == {"revoked": sorted([gid, child]), "dry_run": True}
        assert all(g["revoked_at"] is None for g in b.get("/v1/delegations").json()["grants"])
        assert h.post("/v1/decide", json=transfer(50, delegation=gid)).json()["decision"] == "permit"
        assert _audit(tenant, "delegation.revoke") == []
        # An agent previews only what it may revoke: another issuer's grant is "not found", as for the real call.
        foreign = h.post(f"/v1/delegations/{sibling}/revoke", params={"dry_run": "true"})
        assert foreign.status_code == 404
        revoked = b.post(f"/v1/delegations/{gid}/revoke")
        assert revoked.json() == {"revoked": preview.json()["revoked"], "dry_run": False}
        assert h.post("/v1/decide", json=transfer(50, delegation=gid)).json()["decision"] == "deny"


@pytest.fixture(scope="module")
def receiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Receiver]]:
    """A SQLite server allowed to post webhooks to this machine, and a local receiver."""
    tmp = tmp_path_factory.mktemp("webhook-test")
    database_url = f"sqlite+aiosqlite:///{tmp / 'data' / 'licet.db'}"
    process, url = launch(database_url, tmp / "data", tmp / "server.log", {"LICET_WEBHOOK_PRIVATE_TARGETS": "true"})
    receiver, httpd = _start_receiver()
    yield Server("sqlite", url, database_url, tmp / "data", process), receiver
    httpd.shutdown()
    process.terminate()
    process.wait(10)


def test_a_test_event_arrives_signed_and_is_listed_with_its_attempts(receiving: tuple[Server, Receiver]) -> None:
    server, receiver = receiving
    tenant, other = server.new_tenant(), server.new_tenant()
    with tenant.owner_session() as owner:
        made = owner.post("/v1/webhooks", json={"url": receiver.url + "/ok", "events": ["granted"]})
        assert made.status_code == 201, made.text
        hook = made.json()
        sent = owner.post(f"/v1/webhooks/{hook['id']}/test")  # sent whatever events the webhook is for
        assert sent.status_code == 201, sent.text
        queued = sent.json()
        assert (queued["event"], queued["approval_id"], queued["state"]) == ("test", None, "pending")
        entry = receiver.wait(lambda: receiver.for_tenant(tenant.id), what="the test event")[0]
        headers = {k.lower(): v for k, v in entry.headers.items()}
        stamp, signed = headers[webhooks.TIMESTAMP_HEADER.lower()], headers[webhooks.SIGNATURE_HEADER.lower()]
        assert webhooks.verify(hook["secret"], stamp, entry.body, signed)
        assert not webhooks.verify(hook["secret"], stamp, entry.body + b" ", signed)
        assert headers[webhooks.EVENT_HEADER.lower()] == "webhook.test"
        assert headers[webhooks.DELIVERY_HEADER.lower()] == queued["id"]
        assert entry.payload == {"delivery": queued["id"], "event": "webhook.test", "tenant": tenant.id,
                                 "at": queued["created_at"], "webhook": hook["id"],
                                 "requested_by": tenant.owner_person().principal_id}
        listed = wait_for(lambda: [d for d in owner.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["deliveries"]
                                   if d["state"] == "delivered"], what="the delivery settled")
        assert [(d["id"], d["event"], d["attempts"], d["last_status"]) for d in listed] == [(queued["id"], "test", 1, 200)]
        assert [e["details"]["delivery"] for e in _audit(tenant, "webhook.test")] == [queued["id"]]
        assert owner.delete(f"/v1/webhooks/{hook['id']}").status_code == 200
        removed = owner.post(f"/v1/webhooks/{hook['id']}/test")
        assert removed.status_code == 404 and removed.json()["error"]["code"] == "not_found"
    with other.owner_session() as stranger:
        foreign = stranger.post(f"/v1/webhooks/{hook['id']}/test")
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "not_found", foreign.text
    with tenant.person("approver").client() as approver:
        assert approver.post(f"/v1/webhooks/{hook['id']}/test").status_code == 403
    assert len(receiver.for_tenant(tenant.id)) == 1 and receiver.for_tenant(other.id) == []
