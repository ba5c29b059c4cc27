"""Invariants with an effect (issue 21): `forbid` (the default) or `require_approval` with an approval
block, decided with the precedence of rules (forbid > require_approval > permit) in `decide`, plans
and analysis, and opening an approval over HTTP exactly as a require_approval rule does."""

from __future__ import annotations

from typing import Any

import pytest

from licet import kernel
from licet.kernel.analysis import check_policy, diff, query
from licet.kernel.plans import verify_plan
from licet.kernel.policy import Approval
from licet.kernel.report import all_ok
from tests.server_harness import Tenant, certificate_keys

NOW = 1_000_000_000
ASK_ABOVE_BUDGET = """\
id: payments-agent
rules:
  - {id: transfer, effect: permit, action: [payments.transfer], resource: ["/accounts/*"]}
  - {id: frozen, effect: forbid, action: [payments.transfer], resource: ["/accounts/frozen"]}
invariants:
  - id: daily-budget
    kind: budget
    action: [payments.transfer]
    sum: args.amount
    limit: 5000
    window: 24h
    effect: require_approval
    approval: {quorum: 1, role: approver, ttl: 15m}
"""


def transfer(amount: int, account: str = "acc-1") -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": f"/accounts/{account}", "args": {"amount": amount}}


def spent(*amounts: int) -> dict[str, Any]:
    return {"history": [{"time": NOW - 60, **transfer(a)} for a in amounts]}


@pytest.fixture
def asking() -> kernel.Policy:
    return kernel.load_policy(ASK_ABOVE_BUDGET)


def test_over_budget_asks_a_person_and_names_the_invariant(asking: kernel.Policy) -> None:
    within = kernel.decide(asking, transfer(3000), state=spent(2000), now=NOW)
    assert (within.outcome, within.rules) == ("permit", ("transfer",))
    over = kernel.decide(asking, transfer(3000), state=spent(2500), now=NOW)
    assert (over.outcome, over.rules) == ("require_approval", ("daily-budget",))
    assert over.approval == Approval(quorum=1, role="approver", ttl_seconds=900)
    (witness,) = over.proof["witnesses"]
    assert witness["rule"] == "daily-budget" and witness["invariant"] is True
    assert witness["effect"] == "require_approval"
    assert {"fact": "daily-budget: sum in window", "value": 2500} in witness["facts"]


def test_forbid_still_wins_over_an_approval_invariant(asking: kernel.Policy) -> None:
    decision = kernel.decide(asking, transfer(9000, "frozen"), state=spent(), now=NOW)
    assert (decision.outcome, decision.rules) == ("forbid", ("frozen",))


def test_a_presented_approval_permits_the_over_budget_request(asking: kernel.Policy) -> None:
    request = kernel.normalise_request(transfer(6000))
    presented = kernel.PresentedApproval("ap-1", kernel.request_hash(request), ("alice",))
    decision = kernel.decide(asking, request, state=spent(), now=NOW, approval=presented)
    assert decision.outcome == "permit" and decision.approval_used == presented


def test_forbid_is_the_default_effect_and_may_be_written_out() -> None:
    implicit = kernel.load_policy(ASK_ABOVE_BUDGET.replace("    effect: require_approval\n", "").replace(
        "    approval: {quorum: 1, role: approver, ttl: 15m}\n", ""))
    explicit = kernel.load_policy(ASK_ABOVE_BUDGET.replace("effect: require_approval", "effect: forbid").replace(
        "    approval: {quorum: 1, role: approver, ttl: 15m}\n", ""))
    for policy in (implicit, explicit):
        assert policy.invariants[0].effect == "forbid" and policy.invariants[0].approval is None
        decision = kernel.decide(policy, transfer(6000), state=spent(), now=NOW)
        assert (decision.outcome, decision.rules) == ("forbid", ("daily-budget",))


@pytest.mark.parametrize(("change", "field", "message"), [
    ("effect: allow", "invariants[0].effect", "must be one of forbid, require_approval"),
    ("effect: permit", "invariants[0].effect", "must be one of forbid, require_approval"),
    ("effect: forbid", "invariants[0].approval", "only require_approval invariants take an approval block"),
])
def test_bad_effects_are_located_errors(change: str, field: str, message: str) -> None:
    source = ASK_ABOVE_BUDGET.replace("effect: require_approval", change)
    with pytest.raises(kernel.PolicyError) as raised:
        kernel.load_policy(source, "p.yaml")
    assert raised.value.field == field and message in str(raised.value)


def test_an_approval_block_is_checked_like_a_rules() -> None:
    with pytest.raises(kernel.PolicyError) as raised:
        kernel.load_policy(ASK_ABOVE_BUDGET.replace("quorum: 1", "quorum: 0"), "p.yaml")
    assert raised.value.field == "invariants[0].approval.quorum"


def test_count_and_flow_invariants_take_effects_too() -> None:
    policy = kernel.load_policy({"id": "p", "rules": [{"id": "any", "effect": "permit", "action": "**"}],
                                 "invariants": [
        {"id": "many-deletes", "kind": "count", "action": "db.delete", "limit": 1, "effect": "require_approval"},
        {"id": "exfil", "kind": "flow", "source": {"action": "db.read", "resource": "/pii/**"},
         "sink": {"action": "http.post"}, "effect": "require_approval", "approval": {"role": "dpo"}}]})
    history = {"history": [{"time": NOW - 1, "action": "db.delete", "resource": "/x"},
                           {"time": NOW - 1, "action": "db.read", "resource": "/pii/a"}]}
    deleting = kernel.decide(policy, {"action": "db.delete", "resource": "/y"}, state=history, now=NOW)
    assert (deleting.outcome, deleting.rules) == ("require_approval", ("many-deletes",))
    posting = kernel.decide(policy, {"action": "http.post", "resource": "/out"}, state=history, now=NOW)
    assert (posting.outcome, posting.rules, posting.approval.role if posting.approval else None) == (
        "require_approval", ("exfil",), "dpo")
    assert [w.rule for w in check_policy(policy, ["approver"])] == ["exfil"]  # no voter holds "dpo"


def test_a_plan_over_the_budget_needs_approval_not_refusal(asking: kernel.Policy) -> None:
    steps = [transfer(3000), transfer(3000)]
    verdict = verify_plan(asking, steps, now=NOW)
    assert verdict.verdict == "needs_approval" and verdict.approval_steps == (1,)
    symbolic = [transfer(3000), {**transfer(0), "args": {"amount": {"symbolic": "int", "min": 0, "max": 2000}}}]
    assert verify_plan(asking, symbolic, now=NOW).verdict == "safe"
    symbolic[1]["args"]["amount"]["max"] = 2001
    widened = verify_plan(asking, symbolic, now=NOW)
    assert widened.verdict == "needs_approval" and widened.approval_steps == (1,)
    # A forbid rule still fails the plan, the invariant aside.
    frozen = verify_plan(asking, [transfer(1, "frozen")], now=NOW)
    assert frozen.verdict == "unsafe" and frozen.counterexample is not None
    assert (frozen.counterexample.rule, frozen.counterexample.invariant) == ("frozen", None)


def test_a_forbid_invariant_in_a_plan_is_still_a_failure() -> None:
    forbidding = kernel.load_policy(ASK_ABOVE_BUDGET.replace("effect: require_approval", "effect: forbid").replace(
        "    approval: {quorum: 1, role: approver, ttl: 15m}\n", ""))
    verdict = verify_plan(forbidding, [transfer(3000), transfer(3000)], now=NOW)
    assert verdict.verdict == "unsafe" and verdict.counterexample is not None
    assert (verdict.counterexample.step, verdict.counterexample.invariant) == (1, "daily-budget")


def test_analysis_counts_an_approval_invariant_as_approval(asking: kernel.Policy) -> None:
    # Over the budget nothing is permitted (it needs approval), yet it is not forbidden either.
    over = query(asking, {"action": "payments.transfer", "resource": "/accounts/acc-1", "when": "args.amount > 5000"})
    assert over.answer == "no", over.to_json()
    under = query(asking, {"action": "payments.transfer", "resource": "/accounts/acc-1", "when": "args.amount <= 5000"})
    assert under.answer == "yes" and under.example is not None
    assert kernel.decide(asking, dict(under.example.request), state=under.example.state, now=NOW).outcome == "permit"
    # Between the two effects the permitted requests are the same: an approval is not a permit.
    forbidding = kernel.load_policy(ASK_ABOVE_BUDGET.replace("effect: require_approval", "effect: forbid").replace(
        "    approval: {quorum: 1, role: approver, ttl: 15m}\n", ""))
    assert diff(forbidding, asking).answer == "equivalent"


def test_capabilities_see_approval_through_an_invariant() -> None:
    from licet.kernel.analysis import capabilities

    policy = kernel.load_policy({"id": "p", "rules": [{"id": "all", "effect": "permit", "action": "db.delete"}],
                                 "invariants": [{"id": "once", "kind": "count", "action": "db.delete", "limit": 0,
                                                 "effect": "require_approval"}]})
    assert capabilities(policy, {"id": "a"}, {}, ["db.delete"])["db.delete"] == {
        "valid": True, "permit": False, "approval": True}


def test_an_approval_invariant_opens_an_approval_over_http(tenant: Tenant) -> None:
    tenant.activate(ASK_ABOVE_BUDGET)
    agent = tenant.server.client(tenant.key())
    approver = tenant.person("approver")
    keys = certificate_keys(agent)
    first = agent.post("/v1/decide", json=transfer(3000)).json()
    assert first["decision"] == "permit", first
    over = agent.post("/v1/decide", json=transfer(3000)).json()
    assert over["decision"] == "require_approval" and over["rules"] == ["daily-budget"], over
    approval = over["approval"]
    assert approval["state"] == "pending" and approval["quorum"] == 1 and approval["roles"] == ["approver"]
    certificate = over["certificate"]
    assert certificate["approval"] == {"required": {"quorum": 1, "role": "approver", "ttl_seconds": 900}}
    assert certificate["proof"]["witnesses"][0]["invariant"] is True
    assert all_ok(kernel.verify_certificate(certificate, keys))
    with approver.client() as reviewer:
        pending = reviewer.get("/v1/approvals", params={"state": "pending"}).json()["approvals"]
        assert [(p["id"], p["rules"]) for p in pending] == [(approval["id"], ["daily-budget"])]
        assert reviewer.post(f"/v1/approvals/{approval['id']}/approve", json={}).json()["state"] == "granted"
    permitted = agent.post("/v1/decide", json={**transfer(3000), "approval": approval["id"]}).json()
    assert permitted["decision"] == "permit", permitted
    assert permitted["certificate"]["approval"] == {"id": approval["id"], "approvers": [approver.principal_id]}
    assert all_ok(kernel.verify_certificate(permitted["certificate"], keys))
    # Used once: the budget is now 9000 spent, so the next transfer asks again.
    assert agent.post("/v1/decide", json=transfer(10)).json()["decision"] == "require_approval"
