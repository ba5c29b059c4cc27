"""The server end to end over real HTTP, on SQLite and PostgreSQL: decisions with certificates in
the evidence log, idempotency, session budgets, policies, keys, delegations, evidence proofs."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from licet import kernel
from licet.kernel.bundle import verify_bundle
from licet.kernel.checkpoint import check_consistency
from licet.kernel.note import parse_verifier_key
from licet.kernel.report import all_ok
from tests.conftest import PAYMENTS
from tests.server_harness import Server, Tenant, certificate_keys


def transfer(amount: int, **extra: Any) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/acc-1",
            "args": {"amount": amount, "currency": "EUR", **extra}}


def test_decide_returns_a_certificate_that_verifies_offline(tenant: Tenant) -> None:
    agent = tenant.key(roles=["ops"])
    with tenant.server.client(agent) as client:
        reply = client.post("/v1/decide", json=transfer(120))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["decision"] == "permit" and body["rules"] == ["transfer"] and body["log_index"] == 0
        certificate = body["certificate"]
        assert certificate["tenant"] == tenant.id
        assert certificate["request"]["principal"] == {"id": "agent:bot", "tenant": tenant.id, "roles": ["ops"]}
        assert certificate["request"]["context"]["mfa"] is False
        assert all_ok(kernel.verify_certificate(certificate, certificate_keys(client)))
        fetched = client.get(f"/v1/certificates/{body['certificate_id']}").json()
        assert fetched == {"certificate": certificate, "log_index": 0}


def test_outcomes_and_the_default_deny(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as client:
        outcomes = {name: client.post("/v1/decide", json=req).json()["decision"] for name, req in {
            "big": transfer(2000), "prod-delete": {"action": "db.delete", "resource": "/prod/users"},
            "unknown": {"action": "db.drop", "resource": "/x"}}.items()}
    assert outcomes == {"big": "require_approval", "prod-delete": "forbid", "unknown": "deny"}


def test_client_supplied_identity_is_rejected_with_the_field_named(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as client:
        for field in ("principal", "context", "tenant", "mfa", "roles"):
            reply = client.post("/v1/decide", json={**transfer(1), field: {"id": "root"}})
            assert reply.status_code == 422, (field, reply.text)
            assert reply.json()["error"]["code"] == "invalid_input"
            assert repr(field) in reply.json()["error"]["message"]
        unknown = client.post("/v1/decide", json={**transfer(1), "sneaky": 1})
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "sneaky"


def test_idempotency_key_returns_the_same_certificate_and_refuses_another_request(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as client:
        first = client.post("/v1/decide", json=transfer(10), headers={"Idempotency-Key": "k-1"}).json()
        again = client.post("/v1/decide", json=transfer(10), headers={"Idempotency-Key": "k-1"}).json()
        assert again["certificate"] == first["certificate"] and again["replayed"] is True
        other = client.post("/v1/decide", json=transfer(11), headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    with tenant.owner_session() as owner:
        assert owner.get("/v1/evidence/checkpoint").json()["size"] == 1


def test_session_budget_holds_under_concurrent_transfers(tenant: Tenant) -> None:
    # daily-budget is 5000: of 12 concurrent transfers of 1000, exactly 5 may be permitted.
    key = tenant.key()

    def send(_: int) -> str:
        with tenant.server.client(key) as client:
            return str(client.post("/v1/decide", json=transfer(1000)).json()["decision"])

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(send, range(12)))
    assert outcomes.count("permit") == 5 and outcomes.count("forbid") == 7


def test_no_active_policy_never_permits(server: Server) -> None:
    bare = server.new_tenant()
    with server.client(bare.key()) as client:
        reply = client.post("/v1/decide", json=transfer(1))
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "no_active_policy"


def test_policy_versions_diff_activate_and_rollback(tenant: Tenant) -> None:
    # The tenant fixture activated PAYMENTS as version 1.
    v2_source = PAYMENTS.replace("args.amount <= 10000", "args.amount <= 100")
    agent = tenant.key()
    with tenant.owner_session() as owner:
        policy_id = owner.get("/v1/policies").json()["policies"][0]["id"]
        created = owner.post("/v1/policies", json={"source": v2_source})
        assert created.status_code == 201 and created.json()["version"]["number"] == 2
        diff = owner.post(f"/v1/policies/{policy_id}/diff", json={}).json()
        assert diff["old"]["number"] == 1 and diff["new"]["number"] == 2
        assert diff["lost"] and not diff["gained"]  # v2 permits less
        assert owner.get("/v1/policies").json()["rollback_to"] is None  # only v1 was ever active
        with tenant.server.client(agent) as client:
            assert client.post("/v1/decide", json=transfer(500)).json()["decision"] == "permit"
            owner.post(f"/v1/policies/{policy_id}/versions/2/activate", json={"reason": "tighten"})
            assert client.post("/v1/decide", json=transfer(500)).json()["decision"] == "deny"
            listed = owner.get("/v1/policies").json()  # what a roll-back would activate, said before it is done
            assert (listed["active"]["number"], listed["rollback_to"]["number"]) == (2, 1)
            assert listed["rollback_to"]["active"] is False
            rolled = owner.post("/v1/policies/rollback", json={})
            assert rolled.status_code == 200 and rolled.json()["active"]["id"] == listed["rollback_to"]["id"]
            assert client.post("/v1/decide", json=transfer(500)).json()["decision"] == "permit"
        assert owner.get("/v1/policies").json()["rollback_to"] is None
        assert owner.post("/v1/policies/rollback", json={}).status_code == 409
        actions = [e["action"] for e in owner.get("/v1/audit").json()["events"]]
        assert actions[:3] == ["policy.rollback", "policy.activate", "policy.version.create"]


def test_invalid_policy_reports_line_column_and_stores_nothing(tenant: Tenant) -> None:
    with tenant.owner_session() as owner:
        before = owner.get("/v1/policies").json()
        reply = owner.post("/v1/policies", json={"source": "id: p\nrules:\n  - id: r\n    action: [a.b]\n    effect: allow\n"})
        assert reply.status_code == 422
        error = reply.json()["error"]
        assert error["code"] == "invalid_policy" and error["line"] == 5 and error["field"].endswith("effect")
        assert owner.get("/v1/policies").json() == before


def test_validate_without_analysis_answers_errors_and_leaves_warnings_to_a_second_call(tenant: Tenant) -> None:
    # The editor checks each pause in typing with analysis=false, then asks for the (slower) analysis.
    never = ("id: p\nrules:\n  - {id: fine, effect: permit, action: a.b}\n"
             "  - {id: never, effect: permit, action: a.c, when: 'args.n > 5 && args.n < 3'}\n")
    with tenant.owner_session() as owner:
        quick = owner.post("/v1/policies/validate", json={"source": never, "analysis": False}).json()
        full = owner.post("/v1/policies/validate", json={"source": never}).json()
        broken = owner.post("/v1/policies/validate", json={"source": "id: p\nrules: 3\n", "analysis": False})
    assert quick["analysed"] is False and quick["never_applying"] == [] and quick["hash"] == full["hash"]
    assert full["analysed"] is True and [n["rule"] for n in full["never_applying"]] == ["never"]
    assert broken.status_code == 422 and broken.json()["error"]["code"] == "invalid_policy"


def test_evidence_bundle_checkpoint_and_consistency_verify_offline(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as client:
        ids = [client.post("/v1/decide", json=transfer(i + 1)).json()["certificate_id"] for i in range(5)]
        keys = client.get("/v1/evidence/keys").json()
        verifier = parse_verifier_key(keys["log"]["verifier_key"])
        first = client.get("/v1/evidence/checkpoint").json()
        assert first["size"] == 5 and first["origin"] == keys["log"]["origin"]
        proof = client.get(f"/v1/certificates/{ids[2]}/proof").json()
        certificate = client.get(f"/v1/certificates/{ids[2]}").json()["certificate"]
        checks = verify_bundle(certificate, proof["bundle"], [verifier], origin=keys["log"]["origin"])
        assert all_ok(checks), checks
        other = client.get(f"/v1/certificates/{ids[3]}").json()["certificate"]
        assert not all_ok(verify_bundle(other, proof["bundle"], [verifier]))
        for i in range(3):
            client.post("/v1/decide", json=transfer(i + 1))
        second = client.get("/v1/evidence/checkpoint").json()
        assert second["size"] == 8
        consistency = client.get("/v1/evidence/consistency", params={"first": 5, "second": 8}).json()
        hashes = [base64.b64decode(h) for h in consistency["proof"]]
        assert all_ok(check_consistency(first["note"], second["note"], hashes, [verifier]))
        assert not all_ok(check_consistency(first["note"], second["note"], hashes[:-1], [verifier]))
        assert client.get("/v1/evidence/checkpoints/5").json()["note"] == first["note"]
        assert client.get("/v1/evidence/checkpoints/6").status_code == 404
        assert client.get("/v1/evidence/entries").status_code == 403  # agents read only their own
    with tenant.owner_session() as owner:
        page = owner.get("/v1/evidence/entries", params={"start": 2, "limit": 2}).json()
        assert [e["index"] for e in page["entries"]] == [2, 3]
        assert page["entries"][0]["certificate"]["id"] == ids[2]


def test_keys_revoke_and_rotate(tenant: Tenant) -> None:
    agent = tenant.key()
    with tenant.owner_session() as owner:
        keys = owner.get("/v1/keys").json()["keys"]
        agent_id = next(k["id"] for k in keys if k["role"] == "agent")
        assert all("secret" not in k and "secret_hash" not in k for k in keys)
        rotated = owner.post(f"/v1/keys/{agent_id}/rotate", json={}).json()
        with tenant.server.client(agent) as old, tenant.server.client(rotated["secret"]) as new:
            assert old.post("/v1/decide", json=transfer(1)).status_code == 401
            assert new.post("/v1/decide", json=transfer(1)).json()["decision"] == "permit"
        owner.post(f"/v1/keys/{rotated['key']['id']}/revoke")
        with tenant.server.client(rotated["secret"]) as new:
            assert new.post("/v1/decide", json=transfer(1)).status_code == 401


def test_a_revoked_key_in_a_burst_is_refused_alone(tenant: Tenant) -> None:
    # Decisions arriving together commit together (server/db.py) and look their key up in that same
    # transaction: a refused key fails only its own request, and nothing is recorded for it.
    good, revoked = tenant.key(principal_id="agent:good"), tenant.key(principal_id="agent:revoked")
    with tenant.owner_session() as owner:
        key_id = next(k["id"] for k in owner.get("/v1/keys").json()["keys"] if k["principal_id"] == "agent:revoked")
        assert owner.post(f"/v1/keys/{key_id}/revoke").status_code == 200
        before = owner.get("/v1/evidence/checkpoint").json()["size"]

    def send(i: int) -> int:
        with tenant.server.client(revoked if i % 3 == 0 else good) as client:
            return client.post("/v1/decide", json=transfer(1)).status_code

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(send, range(24)))
    assert statuses == [401 if i % 3 == 0 else 200 for i in range(24)]
    with tenant.owner_session() as owner:
        assert owner.get("/v1/evidence/checkpoint").json()["size"] == before + 16


def test_decide_refuses_a_bad_key_before_judging_the_body(tenant: Tenant) -> None:
    # /v1/decide checks its key inside the decision's transaction; a body that never gets there must
    # still answer an unknown key with 401 and a role without `decide` with 403, as every route does.
    bad_body = {"action": "payments.transfer", "resource": "/accounts/acc-1", "principal": {"id": "me"}}
    with tenant.server.client("licet_" + "x" * 43) as unknown:
        assert unknown.post("/v1/decide", json=bad_body).status_code == 401
    with tenant.server.client(tenant.key("auditor", "user:audit")) as auditor:
        assert auditor.post("/v1/decide", json=bad_body).status_code == 403
    with tenant.server.client(tenant.key()) as agent:
        refused = agent.post("/v1/decide", json=bad_body)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input"


def test_roles_are_enforced(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key("auditor", "user:audit")) as auditor:
        assert auditor.get("/v1/audit").status_code == 200
        assert auditor.post("/v1/decide", json=transfer(1)).status_code == 403
        assert auditor.post("/v1/keys", json={"name": "x", "role": "owner", "principal_id": "x"}).status_code == 403
    with tenant.server.client(tenant.key("admin", "user:admin")) as admin:
        made = admin.post("/v1/keys", json={"name": "x", "role": "owner", "principal_id": "x"})
        assert made.status_code == 403  # only owners mint owners


def test_delegation_attenuation_and_cascading_revocation(tenant: Tenant) -> None:
    boss = tenant.key(principal_id="agent:boss", roles=["ops"])
    helper = tenant.key(principal_id="agent:helper", roles=[])
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scope = [{"id": "small", "effect": "permit", "action": ["payments.transfer"], "resource": ["/accounts/*"],
              "when": "args.amount <= 100"}]
    with tenant.server.client(boss) as b, tenant.server.client(helper) as h:
        grant = b.post("/v1/delegations", json={"delegate": "agent:helper", "scope": scope, "expires_at": later,
                                                "max_depth": 1})
        assert grant.status_code == 201, grant.text
        gid = grant.json()["grant"]["id"]
        small = h.post("/v1/decide", json={**transfer(50), "delegation": gid}).json()
        assert small["decision"] == "permit"
        assert small["certificate"]["request"]["principal"]["id"] == "agent:boss"
        assert small["certificate"]["delegation"][0]["id"] == gid
        assert h.post("/v1/decide", json={**transfer(500), "delegation": gid}).json()["decision"] == "deny"
        wider = h.post("/v1/delegations", json={"delegate": "agent:sub", "parent": gid, "expires_at": later,
                                                "scope": [{**scope[0], "when": "args.amount <= 1000"}]})
        assert wider.status_code == 422 and wider.json()["error"]["code"] == "not_attenuating"
        assert wider.json()["error"]["attenuation"]["counterexample"] is not None
        narrower = h.post("/v1/delegations", json={"delegate": "agent:sub", "parent": gid, "expires_at": later,
                                                   "scope": [{**scope[0], "when": "args.amount <= 10"}]})
        assert narrower.status_code == 201, narrower.text
        revoked = b.post(f"/v1/delegations/{gid}/revoke").json()["revoked"]
        assert sorted(revoked) == sorted([gid, narrower.json()["grant"]["id"]])
        assert h.post("/v1/decide", json={**transfer(50), "delegation": gid}).json()["decision"] == "deny"


def test_plan_verification_uses_the_callers_session(tenant: Tenant) -> None:
    with tenant.server.client(tenant.key()) as client:
        for _ in range(2):  # 2000 of the 5000 daily budget spent
            assert client.post("/v1/decide", json=transfer(1000)).json()["decision"] == "permit"
        step = transfer(0)
        step["args"]["amount"] = {"symbolic": "int", "min": 1, "max": 1000}
        safe = client.post("/v1/plans/verify", json={"steps": [step] * 3}).json()
        assert safe["verdict"] == "safe"
        unsafe = client.post("/v1/plans/verify", json={"steps": [step] * 4}).json()
        assert unsafe["verdict"] == "unsafe" and unsafe["counterexample"]["step"] == 3
        too_long = client.post("/v1/plans/verify", json={"steps": [{"action": "a.b", "resource": "/x"}] * 10_001})
        assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "plan_too_long"


def test_a_plan_is_verified_against_a_stored_draft_when_one_is_named(tenant: Tenant) -> None:
    draft = PAYMENTS.replace("args.amount <= 10000", "args.amount <= 100")
    plan = {"steps": [transfer(50), transfer(500)]}
    with tenant.owner_session() as owner:
        created = owner.post("/v1/policies", json={"source": draft})
        assert created.status_code == 201, created.text
        draft_id = created.json()["version"]["id"]
        active = owner.post("/v1/plans/verify", json=plan)
        assert active.status_code == 200 and active.json()["verdict"] == "safe", active.text
        against = owner.post("/v1/plans/verify", json={**plan, "version_id": draft_id})
        assert against.status_code == 200, against.text
        assert against.json()["verdict"] == "unsafe" and against.json()["counterexample"]["step"] == 1
        unknown = owner.post("/v1/plans/verify", json={**plan, "version_id": "00000000-0000-0000-0000-000000000000"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found", unknown.text
        assert owner.get("/v1/policies").json()["active"]["number"] == 1  # the draft stays a draft
    with tenant.server.client(tenant.key()) as agent:  # an agent does not read drafts, nor probe them
        refused = agent.post("/v1/plans/verify", json={**plan, "version_id": draft_id})
        assert refused.status_code == 403 and refused.json()["error"]["field"] == "version_id", refused.text
        assert agent.post("/v1/plans/verify", json=plan).json()["verdict"] == "safe"


def test_health_readiness_and_metrics(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        metrics = client.get("/metrics").text
        assert "licet_http_request_seconds" in metrics


def test_openapi_documents_every_route_with_examples(server: Server) -> None:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    assert "/v1/decide" in schema["paths"] and "/v1/evidence/consistency" in schema["paths"]
    decide_body = json.dumps(schema["components"]["schemas"]["DecideBody"])
    assert "payments.transfer" in decide_body
