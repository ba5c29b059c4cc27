"""POST /v1/policies/{id}/replay: the tenant's recorded decisions re-decided under another version,
on SQLite and PostgreSQL.

The expected counts are computed here by the kernel itself: each recorded certificate's request is
decided against the draft with the certificate's time and session facts, and the tally compared
with the route's.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings

from licet import kernel
from licet.server.replay import Known, Recorded, replay_rows
from tests.conftest import PAYMENTS
from tests.server_harness import Server, Tenant
from tests.strategies import Case, policy_and_requests

# Transfers up to 500 only, and a smaller daily budget (same accumulation: the recorded spend applies).
DRAFT = (
    PAYMENTS.replace("'args.amount <= 10000 && args.currency", "'args.amount <= 500 && args.currency")
    .replace("limit: 5000, window: 24h", "limit: 3000, window: 24h")
    .replace("version: 1", "version: 2")
)
# A new invariant over transfers: no certificate recorded its session facts.
NEW_INVARIANT = PAYMENTS.replace(
    "invariants:\n",
    "invariants:\n  - {id: transfers-per-hour, kind: count, action: [payments.transfer], limit: 2, window: 1h}\n",
)

REQUESTS: list[dict[str, Any]] = [
    *(
        {"action": "payments.transfer", "resource": "/accounts/a1", "args": {"amount": n, "currency": "EUR"}}
        for n in (100, 800, 300)
    ),
    {"action": "payments.transfer", "resource": "/accounts/a1", "args": {"amount": 100, "currency": "GBP"}},
    {"action": "payments.transfer", "resource": "/accounts/a1", "args": {"amount": 2000, "currency": "EUR"}},
    {"action": "payments.transfer", "resource": "/accounts/a1", "args": {"amount": 4500, "currency": "EUR"}},
    {"action": "files.delete", "resource": "/prod/db", "args": {}},
    {"action": "files.delete", "resource": "/scratch/tmp", "args": {}},
    {"action": "api.read", "resource": "/api/x", "args": {}},
]


def _decide_all(tenant: Tenant) -> list[str]:
    with tenant.server.client(tenant.key("agent", "agent:replay")) as agent:
        ids = []
        for body in REQUESTS:
            reply = agent.post("/v1/decide", json=body)
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["certificate_id"])
    return ids


@pytest.fixture(scope="module")
def recorded(server: Server) -> tuple[Tenant, str, list[str]]:
    """A tenant with the payments policy active (version 1), the recorded decisions of REQUESTS,
    and the draft stored as version 2."""
    tenant = server.new_tenant()
    policy_id = tenant.activate()["policy"]["id"]
    ids = _decide_all(tenant)
    with tenant.owner() as owner:
        stored = owner.post("/v1/policies", json={"source": DRAFT})
        assert stored.status_code == 201 and stored.json()["version"]["number"] == 2, stored.text
    return tenant, policy_id, ids


def _replay(client: httpx.Client, policy_id: str, **body: Any) -> dict[str, Any]:
    reply = client.post(f"/v1/policies/{policy_id}/replay", json=body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _certificates(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    found = []
    for certificate_id in ids:
        reply = client.get(f"/v1/certificates/{certificate_id}")
        assert reply.status_code == 200, reply.text
        found.append(reply.json()["certificate"])
    return found


def _kernel_tally(policy: kernel.Policy, certificates: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    tally: Counter[tuple[str, str]] = Counter()
    for certificate in certificates:
        again = kernel.decide(
            policy,
            kernel.recorded_request(certificate["request"]),
            now=datetime.fromisoformat(certificate["issued_at"].replace("Z", "+00:00")),
            state={"summary": certificate["session"]},
        )
        tally[(certificate["decision"], again.outcome)] += 1
    return tally


def _tally(answer: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter({(c["old"], c["new"]): c["count"] for c in answer["counts"]})


def test_counts_equal_the_kernel_s_own_decisions_against_the_draft(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, ids = recorded
    with tenant.owner() as owner:
        answer = _replay(owner, policy_id, version=2, days=1)
        certificates = _certificates(owner, ids)
    expected = _kernel_tally(kernel.load_policy(DRAFT, "draft"), certificates)
    assert _tally(answer) == expected
    assert answer["replayed"] == len(REQUESTS) and answer["undetermined"] == 0
    assert answer["version"]["number"] == 2 and answer["next_cursor"] is None and answer["stopped"] is None
    changed = sum(n for (old, new), n in expected.items() if old != new)
    assert answer["changed"] == changed == len(answer["changes"])
    # The draft's own effects: an 800 transfer is no longer permitted; the recorded spend (1 200) plus
    # 2 000 breaks the smaller budget, so that request is forbidden instead of sent for approval.
    by_amount = {
        c["request"]["args"].get("amount"): c
        for c in answer["changes"]
        if c["request"]["action"] == "payments.transfer"
    }
    assert by_amount[800]["old"]["outcome"] == "permit" and by_amount[800]["new"]["outcome"] == "deny"
    assert by_amount[2000]["old"]["outcome"] == "require_approval"
    assert by_amount[2000]["new"] == {"outcome": "forbid", "rules": ["daily-budget"]}
    assert {c["certificate_id"] for c in answer["changes"]} <= set(ids)


def test_an_inline_document_replays_like_the_stored_version(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, _ = recorded
    with tenant.owner() as owner:
        inline = _replay(owner, policy_id, source=DRAFT, days=1)
        stored = _replay(owner, policy_id, version=2, days=1)
    assert inline["version"] == {"id": None, "number": None, "hash": stored["version"]["hash"]}
    assert inline["counts"] == stored["counts"] and inline["changes"] == stored["changes"]


def test_the_version_that_decided_changes_nothing(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, _ = recorded
    with tenant.owner() as owner:
        answer = _replay(owner, policy_id, version=1, days=1)
    assert answer["replayed"] == len(REQUESTS)
    assert (answer["changed"], answer["rules_changed"], answer["undetermined"]) == (0, 0, 0)
    assert answer["changes"] == [] and all(c["old"] == c["new"] for c in answer["counts"])
    assert len(answer["counts"]) >= 4  # permit, deny, forbid and require_approval were all recorded


def test_session_facts_that_were_never_recorded_are_undetermined(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, _ = recorded
    with tenant.owner() as owner:
        answer = _replay(owner, policy_id, source=NEW_INVARIANT, days=1)
    transfers = sum(1 for r in REQUESTS if r["action"] == "payments.transfer")
    assert answer["undetermined"] == transfers == len(answer["undetermined_decisions"])
    assert all("transfers-per-hour" in u["reason"] for u in answer["undetermined_decisions"])
    assert answer["replayed"] == len(REQUESTS) and sum(c["count"] for c in answer["counts"]) == 3


def test_pages_follow_the_cursor_and_add_up(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, ids = recorded
    for page_size, budget in ((2, 5000), (4, 1)):
        with tenant.owner() as owner:
            whole = _replay(owner, policy_id, version=2, days=1)
            total: Counter[tuple[str, str]] = Counter()
            seen: list[str] = []
            body: dict[str, Any] = {"version": 2, "days": 1, "limit": page_size, "budget_ms": budget}
            for _ in range(len(REQUESTS) + 1):
                page = _replay(owner, policy_id, **body)
                assert 1 <= page["replayed"] <= page_size
                total += _tally(page)
                seen += [c["certificate_id"] for c in page["changes"]]
                if page["next_cursor"] is None:
                    break
                assert page["stopped"] in ("limit", "time")
                body = {"version": 2, "limit": page_size, "budget_ms": budget, "cursor": page["next_cursor"]}
            else:
                pytest.fail("the cursor never ended")
        assert total == _tally(whole)
        assert seen == [c["certificate_id"] for c in whole["changes"]]  # each once, newest first
        assert set(seen) <= set(ids)


def test_another_tenant_s_policy_is_not_found(server: Server, recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, _, _ = recorded
    other = server.new_tenant()
    other_policy = other.activate()["policy"]["id"]
    with tenant.owner() as owner:
        reply = owner.post(f"/v1/policies/{other_policy}/replay", json={"days": 1})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found", reply.text
    with other.owner() as owner:
        assert owner.post(f"/v1/policies/{other_policy}/replay", json={"days": 1}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"days": 91}, "days"),
        ({"days": 0}, "days"),
        ({"limit": 5001}, "limit"),
        ({"budget_ms": 20_001}, "budget_ms"),
        ({"version": 2, "source": DRAFT}, "source"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"source": "id: x\nrules: 5\n"}, "rules"),
    ],
)
def test_bounds_and_bad_input_are_refused_naming_the_field(
    recorded: tuple[Tenant, str, list[str]], body: dict[str, Any], field: str
) -> None:
    tenant, policy_id, _ = recorded
    with tenant.owner() as owner:
        reply = owner.post(f"/v1/policies/{policy_id}/replay", json=body)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] in ("invalid_input", "invalid_policy") and field in str(error.get("field")), error


def test_an_agent_may_not_replay(recorded: tuple[Tenant, str, list[str]]) -> None:
    tenant, policy_id, _ = recorded
    with tenant.server.client(tenant.key("agent", "agent:nosy")) as agent:
        reply = agent.post(f"/v1/policies/{policy_id}/replay", json={"days": 1})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "forbidden"


def _certified(policy: kernel.Policy, case: Case) -> list[Recorded]:
    """Signed certificates of the case's requests under `policy`, as a server stores them (invalid
    requests left out: the server refuses them before any certificate)."""
    signer = kernel.Signer(os.urandom(32))
    rows = []
    for index, (request, state, now) in enumerate(case.requests):
        try:
            decision = kernel.decide(policy, request, state=state, now=now)
        except kernel.InvalidRequest:
            continue
        issued = now if isinstance(now, datetime) else datetime.fromtimestamp(now, UTC)
        certificate = kernel.issue_certificate(
            decision, signer=signer, tenant="t", issued_at=issued, certificate_id=kernel.uuid7(issued, os.urandom(10))
        )
        rows.append(Recorded(certificate["id"], index, "agent", certificate))
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_and_requests(stateful=True, min_requests=8, max_requests=16),
    policy_and_requests(stateful=True, min_requests=1, max_requests=1),
)
def test_replay_changes_nothing_under_the_deciding_version_and_agrees_with_decide(case: Case, other: Case) -> None:
    try:
        policy, draft = kernel.load_policy(case.policy), kernel.load_policy(other.policy)
    except kernel.PolicyError:
        assume(False)
        return
    rows = _certified(policy, case)
    known = Known({policy.hash: policy}, {})
    same = replay_rows(policy, rows, known, float("inf"))
    assert (same.done, same.changed, same.rules_changed, len(same.undetermined)) == (len(rows), 0, 0, 0)
    # Against another policy: what is re-decided is what the kernel decides from the certificate.
    page = replay_rows(draft, rows, known, float("inf"))
    undetermined = {u["certificate_id"]: u["reason"] for u in page.undetermined}
    expected: Counter[tuple[str, str]] = Counter()
    for row in rows:
        certificate = row.certificate
        reason = undetermined.get(row.id, "")
        if reason.startswith("invariant "):
            assert set(kernel.involved_invariants(draft, kernel.recorded_request(certificate["request"])))
            continue
        try:
            again = kernel.decide(
                draft,
                kernel.recorded_request(certificate["request"]),
                now=datetime.fromisoformat(certificate["issued_at"].replace("Z", "+00:00")),
                state={"summary": certificate["session"]},
            )
        except kernel.LicetError:
            assert reason.startswith("could not re-decide"), reason
            continue
        assert not reason, reason
        expected[(certificate["decision"], again.outcome)] += 1
    assert page.counts == expected
