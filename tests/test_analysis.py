"""Policy analysis and delegation: diff, query, never-applying rules, attenuation, delegated decisions."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from licet import kernel
from licet.kernel.analysis import Budget, diff, never_applying_rules, query
from licet.kernel.delegation import check_attenuation, decide_delegated, descendants, load_grant
from tests.conftest import NOW, PAYMENTS
from tests.strategies import Case, policy_and_requests


def variant(*pairs: tuple[str, str]) -> kernel.Policy:
    text = PAYMENTS
    for old, new in pairs:
        assert old in text
        text = text.replace(old, new)
    return kernel.load_policy(text)


def test_identical_versions_are_equivalent(payments: kernel.Policy) -> None:
    result = diff(payments, payments)
    assert result.equivalent and not result.gained and not result.lost
    assert "unsat in both directions" in result.proof["equivalence"]


def test_widened_resource_is_gained_with_a_confirmed_example(payments: kernel.Policy) -> None:
    new = variant(('resource: ["/scratch/**"]', 'resource: ["/scratch/**", "/tmp/*"]'))
    result = diff(payments, new)
    assert not result.equivalent and not result.lost and result.gained
    for example in result.gained:
        assert example.confirmed
        assert example.request["resource"].startswith("/tmp/")
        assert example.outcomes == {"old": "deny", "new": "permit"}
        assert "delete-scratch" in example.rules["new"]


def test_narrowed_condition_is_lost(payments: kernel.Policy) -> None:
    new = variant(('args.currency in ["EUR", "USD"]', 'args.currency in ["EUR"]'))
    result = diff(payments, new)
    assert result.lost and not result.gained
    example = result.lost[0]
    assert example.confirmed and example.request["args"]["currency"] == "USD"


def test_a_raised_threshold_behind_an_approval_gains_nothing(payments: kernel.Policy) -> None:
    # Amounts above 1000 need approval in both versions, so lifting the permit cap changes nothing.
    assert diff(payments, variant(("args.amount <= 10000", "args.amount <= 20000"))).equivalent


def test_query_with_proof_of_none_and_with_example(payments: kernel.Policy) -> None:
    none = query(payments, {"action": "*.delete", "resource": "/prod/**"})
    assert not none.permitted and "unsat" in none.proof["result"]
    some = query(payments, {"action": "api.*", "when": 'principal.role == "analyst"'})
    assert some.permitted and some.example is not None and some.example.confirmed
    assert some.example.request["principal"]["role"] == "analyst"


def test_never_applying_rules_are_found() -> None:
    policy = kernel.load_policy("""
id: shadows
rules:
  - {id: everything-prod, effect: forbid, action: ["**"], resource: ["/prod/**"]}
  - {id: prod-read, effect: permit, action: [db.read], resource: ["/prod/db"]}
  - {id: impossible, effect: permit, action: [db.read], when: "args.n > 5 && args.n < 3"}
  - {id: fine, effect: permit, action: [db.read], resource: ["/dev/**"]}
""")
    found = {n.rule: n.reason for n in never_applying_rules(policy)}
    assert set(found) == {"prod-read", "impossible"}
    assert "shadowed" in found["prod-read"] and "no request" in found["impossible"]


@settings(max_examples=int(os.environ.get("LICET_DIFF_EXAMPLES", "5")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(policy_and_requests(min_requests=8, max_requests=16), policy_and_requests(min_requests=8, max_requests=16))
def test_equivalence_claims_hold_on_random_requests(first: Case, second: Case) -> None:
    try:
        old, new = kernel.load_policy(first.policy), kernel.load_policy(second.policy)
    except kernel.PolicyError:
        assume(False)
        return
    result = diff(old, new, max_examples=2, budget=Budget(timeout_ms=2_000, attempts=4, lemmas=50))
    for example in (*result.gained, *result.lost):
        assert example.confirmed and "permit" in example.outcomes.values()
    if result.equivalent:
        for request, state, now in first.requests + second.requests:
            try:
                a = kernel.decide(old, request, state=state, now=now).outcome == "permit"
                b = kernel.decide(new, request, state=state, now=now).outcome == "permit"
            except kernel.InvalidRequest:
                continue
            assert a == b, request


def grant(**fields: Any) -> Any:
    base = {"issuer": "alice", "delegate": "bot", "max_depth": 1, "expires_at": NOW.timestamp() + 3600,
            "scope": [{"id": "s", "effect": "permit", "action": "payments.transfer",
                       "when": "args.amount <= 500"}]}
    return load_grant({**base, **fields})


def narrower(**fields: Any) -> Any:
    return grant(id="g2", issuer="bot", delegate="sub", parent="g1", max_depth=0,
                 expires_at=NOW.timestamp() + 60,
                 scope=[{"id": "s", "effect": "permit", "action": "payments.transfer",
                         "when": "args.amount <= 100"}], **fields)


def test_attenuation_proved_and_refuted() -> None:
    root = grant(id="g1")
    assert check_attenuation(root, narrower()).ok
    wide = grant(id="g3", issuer="bot", delegate="sub", parent="g1", max_depth=0,
                 scope=[{"id": "s", "effect": "permit", "action": "payments.*"}])
    verdict = check_attenuation(root, wide)
    assert not verdict.ok and verdict.counterexample is not None and verdict.counterexample.confirmed
    assert any("scope permits" in r for r in verdict.reasons)
    late = grant(id="g4", issuer="bot", delegate="sub", parent="g1", max_depth=0,
                 expires_at=NOW.timestamp() + 7200)
    assert any("expires after" in r for r in check_attenuation(root, late).reasons)
    flat = grant(id="g5", max_depth=0)
    assert any("no further delegation" in r for r in check_attenuation(flat, narrower()).reasons)


def test_delegated_decisions(payments: kernel.Policy) -> None:
    root, child = grant(id="g1"), narrower()
    body = {"principal": {"id": "alice", "role": "ops"}, "action": "payments.transfer",
            "resource": "/accounts/1", "args": {"amount": 50, "currency": "EUR"}}
    d = decide_delegated(payments, body, [root, child], agent="sub", now=NOW)
    assert d.outcome == "permit" and [link["id"] for link in d.delegation] == ["g1", "g2"]
    over = {**body, "args": {"amount": 300, "currency": "EUR"}}
    d = decide_delegated(payments, over, [root, child], agent="sub", now=NOW)
    assert d.outcome == "deny" and "outside the scope of g2" in d.proof["delegation"]["problems"][0]
    assert decide_delegated(payments, body, [root, child], agent="intruder", now=NOW).outcome == "deny"
    revoked = load_grant({"id": "g1", "issuer": "alice", "delegate": "bot", "max_depth": 1,
                          "expires_at": NOW.timestamp() + 3600, "revoked": True,
                          "scope": [{"id": "s", "effect": "permit", "action": "payments.transfer"}]})
    assert decide_delegated(payments, body, [revoked, child], agent="sub", now=NOW).outcome == "deny"
    expired = decide_delegated(payments, body, [root, child], agent="sub", now=NOW.timestamp() + 120)
    assert expired.outcome == "deny" and "g2 has expired" in expired.proof["delegation"]["problems"]
    signer = kernel.Signer(os.urandom(32))
    cert = kernel.issue_certificate(d, signer=signer, tenant="t", issued_at=NOW, certificate_id="c")
    assert cert["delegation"][1]["id"] == "g2"


def test_revocation_cascades() -> None:
    root, child = grant(id="g1"), narrower()
    other = grant(id="g9")
    assert descendants([root, child, other], "g1") == {"g1", "g2"}
