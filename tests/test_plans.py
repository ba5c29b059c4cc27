"""Plan verification: bounded model checking agrees with `decide`, checks every step, never truncates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

import kernel
from kernel.plans import PlanTooLong, verify_plan
from tests.conftest import NOW, PAYMENTS
from tests.strategies import Case, policy_and_requests

OPS = {"id": "a1", "role": "ops"}
EXPECTED = {"permit": "safe", "require_approval": "needs_approval", "forbid": "unsafe", "deny": "unsafe"}


def transfer(amount: Any, currency: Any = "EUR") -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/1",
            "args": {"amount": amount, "currency": currency}}


def amount(low: int, high: int) -> dict[str, Any]:
    return {"symbolic": "int", "min": low, "max": high}


def check(policy: kernel.Policy, steps: list[dict[str, Any]], **kw: Any) -> kernel.plans.PlanVerdict:
    return verify_plan(policy, steps, now=NOW, principal=OPS, **kw)


def test_empty_plan_is_safe_and_says_so(payments: kernel.Policy) -> None:
    verdict = check(payments, [])
    assert (verdict.verdict, verdict.steps_checked) == ("safe", 0)


def test_symbolic_amounts_within_budget_are_safe_for_every_value(payments: kernel.Policy) -> None:
    verdict = check(payments, [transfer(amount(0, 1000))] * 5)  # at most 5000: the limit
    assert (verdict.verdict, verdict.steps_checked) == ("safe", 5)
    assert "unsat" in verdict.proof["unsafe_query"]


def test_budget_counterexample_names_step_values_and_invariant(payments: kernel.Policy) -> None:
    verdict = check(payments, [transfer(amount(0, 1000))] * 6)
    assert verdict.verdict == "unsafe" and verdict.counterexample is not None
    ce = verdict.counterexample
    assert (ce.step, ce.invariant, ce.rule) == (5, "daily-budget", None)
    assert sum(ce.values[f"steps[{i}].args.amount"] for i in range(6)) > 5000
    assert all(0 <= v <= 1000 and isinstance(v, int) for v in ce.values.values())


def test_earliest_failing_step_is_reported(payments: kernel.Policy) -> None:
    steps = [transfer(10)] * 3 + [{"action": "db.delete", "resource": "/prod/x", "args": {}}] + [transfer(10)] * 3
    ce = check(payments, steps).counterexample
    assert ce is not None and (ce.step, ce.rule) == (3, "no-prod-delete")


def test_approval_steps_are_listed(payments: kernel.Policy) -> None:
    verdict = check(payments, [transfer(100), transfer(amount(0, 2000)), transfer(50)])
    assert verdict.verdict == "needs_approval" and verdict.approval_steps == (1,)


def test_state_is_threaded_from_the_session(payments: kernel.Policy) -> None:
    history = {"history": [{"time": NOW.timestamp() - 60, "action": "payments.transfer",
                            "resource": "/accounts/1", "args": {"amount": 900, "currency": "EUR"}}] * 4}
    assert check(payments, [transfer(amount(0, 400))] * 3, state=history).verdict == "safe"
    ce = check(payments, [transfer(amount(0, 400))] * 4, state=history).counterexample
    assert ce is not None and ce.step == 3 and ce.invariant == "daily-budget"


def test_flow_taint_across_steps() -> None:
    policy = kernel.load_policy(PAYMENTS.replace("rules:\n", "rules:\n"
        "  - {id: read-db, effect: permit, action: [db.read]}\n"
        "  - {id: post, effect: permit, action: [http.post]}\n", 1))
    post = {"action": "http.post", "resource": "/net", "args": {"url": {"symbolic": "string"}}}
    read = {"action": "db.read", "resource": "/pii/u1", "args": {}}
    assert check(policy, [post]).verdict == "safe"  # no taint yet: anywhere is fine
    ce = check(policy, [read, post]).counterexample
    assert ce is not None and (ce.step, ce.invariant) == (1, "no-exfiltration")
    inside = {**post, "args": {"url": "https://intranet.example/x"}}
    assert check(policy, [read, inside]).verdict == "safe"


def test_symbolic_strings_range_over_policy_constants(payments: kernel.Policy) -> None:
    ce = check(payments, [transfer(10, {"symbolic": "string"})]).counterexample
    assert ce is not None and ce.values["steps[0].args.currency"] not in ("EUR", "USD")


def test_over_limit_plans_are_refused_not_truncated(payments: kernel.Policy) -> None:
    with pytest.raises(PlanTooLong, match="11 steps; the maximum is 10"):
        check(payments, [transfer(1)] * 11, max_steps=10)


def test_last_step_of_a_long_plan_is_checked(payments: kernel.Policy) -> None:
    steps = [{"action": "db.delete", "resource": "/scratch/x", "args": {}}] * 0 + [transfer(1)] * 300
    steps.append({"action": "db.delete", "resource": "/prod/x", "args": {}})
    ce = check(payments, steps).counterexample
    assert ce is not None and ce.step == 300


@pytest.mark.parametrize("bad", [
    [{"action": "db.read"}],
    [{"action": "db.read", "resource": "/../x", "args": {}}],
    [{"action": "db.read", "resource": "/x", "args": {"n": {"symbolic": "complex"}}}],
    [{"action": "db.read", "resource": "/x", "args": {"n": {"symbolic": "int", "min": 5, "max": 1}}}],
    [{"action": "db.read", "resource": "/x", "oops": 1}],
])
def test_malformed_steps_are_invalid(payments: kernel.Policy, bad: list[dict[str, Any]]) -> None:
    with pytest.raises(kernel.InvalidRequest) as info:
        check(payments, bad)
    assert info.value.field.startswith("steps[0]")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_and_requests(stateful=True, min_requests=3, max_requests=6))
def test_one_step_plans_agree_with_decide(case: Case) -> None:
    try:
        policy = kernel.load_policy(case.policy)
    except kernel.PolicyError:
        assume(False)  # the generator also makes invalid policies; those are tested elsewhere
        return
    for request, state, now in case.requests:
        try:
            decision = kernel.decide(policy, request, state=state, now=now)
        except kernel.InvalidRequest:
            continue
        step = {k: request[k] for k in ("action", "resource", "args") if k in request}
        verdict = verify_plan(policy, [step], state=state, now=now,
                              principal=request.get("principal"), context=request.get("context"))
        assert verdict.verdict == EXPECTED[decision.outcome], (request, state, decision.rules)
