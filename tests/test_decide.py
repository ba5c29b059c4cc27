"""Decisions: precedence, absent and mistyped attributes, globs, normalisation, invariants, proofs."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licet import kernel
from licet.kernel.canonical import canonical_json
from licet.kernel.report import all_ok
from tests.conftest import NOW

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)

OPS = {"id": "agent-1", "role": "ops"}


def decide(policy: kernel.Policy, action: str, resource: str, args: dict[str, Any] | None = None,
           context: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
           principal: dict[str, Any] | None = None) -> kernel.Decision:
    request = {"principal": principal or OPS, "action": action, "resource": resource,
               "args": args or {}, "context": context or {}}
    return kernel.decide(policy, request, state=state, now=NOW)


def transfer(amount: object, currency: object = "EUR") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def test_precedence(payments: kernel.Policy) -> None:
    assert decide(payments, "payments.transfer", "/accounts/1", transfer(500)).outcome == "permit"
    assert decide(payments, "payments.transfer", "/accounts/1", transfer(1500)).outcome == "require_approval"
    assert decide(payments, "db.delete", "/prod/db").outcome == "forbid"
    assert decide(payments, "db.delete", "/scratch/tmp").outcome == "permit"
    assert decide(payments, "db.drop", "/scratch/tmp").outcome == "deny"


def test_empty_policy_denies_everything() -> None:
    empty = kernel.load_policy("id: empty\n")
    d = decide(empty, "anything.at_all", "/")
    assert (d.outcome, d.rules) == ("deny", ())


def test_absent_attribute_never_widens(payments: kernel.Policy) -> None:
    d = decide(payments, "api.read", "/api/x")  # context.mfa absent
    assert d.outcome == "deny"
    assert any("context.mfa: absent" in note for note in d.diagnostics)
    refuted = d.proof["refutations"][0]
    assert refuted["rule"] == "read-api"
    assert {"fact": "context.mfa is a bool", "value": False} in refuted["failed"]


def test_absent_attribute_triggers_forbid_and_approval(payments: kernel.Policy) -> None:
    # amount absent: the permit cannot apply; the approval rule and the budget invariant can.
    d = decide(payments, "payments.transfer", "/accounts/1", {"currency": "EUR"})
    assert d.outcome == "forbid" and d.rules == ("daily-budget",)


def test_wrong_type_never_widens_and_is_reported(payments: kernel.Policy) -> None:
    d = decide(payments, "payments.transfer", "/accounts/1", transfer("500"))
    assert d.outcome == "forbid"
    assert "args.amount: expected number, got string" in d.diagnostics
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(True))
    assert d.outcome == "forbid"  # a bool is not a number
    d = decide(payments, "api.read", "/api/x", context={"mfa": "true"})
    assert d.outcome == "deny"


@pytest.mark.parametrize(
    ("resource", "outcome"),
    [
        ("/prod/db", "forbid"),
        ("/scratch/../prod/db", "forbid"),
        ("/scratch/%2e%2e/prod/db", "forbid"),
        ("//scratch\\..\\prod/db", "forbid"),
        ("/scratch/./tmp/", "permit"),
        ("/scratchpad/x", "deny"),
    ],
)
def test_resources_are_normalised_before_matching(payments: kernel.Policy, resource: str,
                                                  outcome: str) -> None:
    assert decide(payments, "db.delete", resource).outcome == outcome


@pytest.mark.parametrize("resource", ["/../etc/passwd", "/%2e%2e/x", "/a/../../b", "relative/x",
                                      "", "/a\x00b", "/a%C2%85b", "/a\ud800",
                                      # decoded once, an escape remains (a double-encoded resource)
                                      "/scratch/%252e%252e/prod"])
def test_traversal_and_malformed_resources_are_invalid(payments: kernel.Policy, resource: str) -> None:
    with pytest.raises(kernel.InvalidRequest) as info:
        decide(payments, "db.delete", resource)
    assert info.value.field == "resource"


def test_action_globs_are_segment_aligned(payments: kernel.Policy) -> None:
    assert decide(payments, "db.delete", "/prod/x").outcome == "forbid"
    assert decide(payments, "db.delete_all", "/prod/x").outcome == "deny"
    assert decide(payments, "a.b.delete", "/prod/x").outcome == "deny"


@pytest.mark.parametrize("request_body", [
    {"action": "db..read", "resource": "/x"},
    {"action": "db.read", "resource": "/x", "args": []},
    {"action": "db.read", "resource": "/x", "args": {"n": 2**60}},
    {"action": "db.read", "resource": "/x", "extra": 1},
    {"action": 5, "resource": "/x"},
])
def test_malformed_requests_are_invalid(payments: kernel.Policy, request_body: dict[str, Any]) -> None:
    with pytest.raises(kernel.InvalidRequest):
        kernel.decide(payments, request_body, now=NOW)


def history(*events: tuple[float, str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"history": [{"time": NOW.timestamp() - ago, "action": a, "resource": r, "args": x}
                        for ago, a, r, x in events]}


def test_budget_invariant_counts_the_window(payments: kernel.Policy) -> None:
    spent = history((3600, "payments.transfer", "/accounts/1", transfer(1000)),
                    (7200, "payments.transfer", "/accounts/2", transfer(1000)),
                    (90000, "payments.transfer", "/accounts/2", transfer(1000)))  # outside 24h
    assert decide(payments, "payments.transfer", "/accounts/1", transfer(1000), state=spent
                  ).outcome == "permit"
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(900),
               state=history(*[(60 * i, "payments.transfer", "/accounts/1", transfer(1050))
                               for i in range(1, 5)]))
    assert (d.outcome, d.rules) == ("forbid", ("daily-budget",))
    assert d.session["daily-budget"]["spent"] == 4200
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(800),
               state=history(*[(60 * i, "payments.transfer", "/accounts/1", transfer(1050))
                               for i in range(1, 5)]))
    assert d.outcome == "permit"  # 4200 + 800 = 5000: at the limit, not over it


def test_budget_history_with_unusable_amount_fails_closed(payments: kernel.Policy) -> None:
    bad = history((60, "payments.transfer", "/accounts/1", {"amount": "lots"}))
    assert decide(payments, "payments.transfer", "/accounts/1", transfer(1), state=bad).outcome == "forbid"


def test_count_and_flow_invariants(payments: kernel.Policy) -> None:
    deletes = history(*[(60 * i, "db.delete", "/scratch/x", {}) for i in range(1, 4)])
    d = decide(payments, "db.delete", "/scratch/y", state=deletes)
    assert (d.outcome, d.rules) == ("forbid", ("max-deletes",))
    old = history(*[(7200 + i, "db.delete", "/scratch/x", {}) for i in range(3)])
    assert decide(payments, "db.delete", "/scratch/y", state=old).outcome == "permit"

    tainted = history((10, "db.read", "/pii/user/7", {}))
    outside = {"url": "https://evil.example/upload"}
    d = decide(payments, "http.post", "/net", outside, state=tainted)
    assert (d.outcome, d.rules) == ("forbid", ("no-exfiltration",))
    assert decide(payments, "http.post", "/net", {"url": "https://intranet.example/x"},
                  state=tainted).outcome == "deny"  # not forbidden, and no permit rule
    assert decide(payments, "http.post", "/net", {}, state=tainted).outcome == "forbid"  # absent url


def test_permit_proof_names_rule_and_facts(payments: kernel.Policy) -> None:
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(500))
    assert d.proof["kind"] == "witness"
    witness = d.proof["witnesses"][0]
    assert witness["rule"] == "transfer"
    assert {"fact": "args.amount", "value": 500} in witness["facts"]
    assert d.proof["solver"].startswith("z3")


def test_deny_proof_refutes_each_candidate(payments: kernel.Policy) -> None:
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(20000, "GBP"))
    assert (d.outcome, d.rules) == ("forbid", ("daily-budget",))  # 20000 alone exceeds 5000
    d = decide(payments, "payments.transfer", "/elsewhere/1", transfer(50, "EUR"))
    assert d.outcome == "deny"
    assert d.proof["excluded_by_resource"] == ["transfer"]  # its resource prefix cannot match
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(50, "GBP"))
    assert d.outcome == "deny"
    refutation = {r["rule"]: r["failed"] for r in d.proof["refutations"]}
    assert refutation == {"transfer": [{"fact": 'args.currency in ["EUR", "USD"]', "value": False}]}


def test_cache_reuses_verdict_but_reports_each_requests_values(payments: kernel.Policy) -> None:
    a = decide(payments, "payments.transfer", "/accounts/1", transfer(500))
    b = decide(payments, "payments.transfer", "/accounts/1", transfer(700))
    assert a.outcome == b.outcome == "permit"
    assert {"fact": "args.amount", "value": 700} in b.proof["witnesses"][0]["facts"]


def test_presented_approval_must_match_the_request_hash(payments: kernel.Policy) -> None:
    body = {"principal": OPS, "action": "payments.transfer", "resource": "/accounts/1",
            "args": transfer(1500)}
    first = kernel.decide(payments, body, now=NOW)
    assert first.outcome == "require_approval" and first.approval is not None
    assert first.approval.quorum == 2 and first.approval.ttl_seconds == 900
    good = kernel.PresentedApproval("ap-1", first.request_hash, ("alice", "bob"))
    assert kernel.decide(payments, body, now=NOW, approval=good).outcome == "permit"
    other = {**body, "args": transfer(1501)}
    assert kernel.decide(payments, other, now=NOW, approval=good).outcome == "require_approval"


def test_session_summary_redecides_like_history(payments: kernel.Policy) -> None:
    spent = history(*[(60 * i, "payments.transfer", "/accounts/1", transfer(1050)) for i in range(1, 5)])
    first = decide(payments, "payments.transfer", "/accounts/1", transfer(900), state=spent)
    again = decide(payments, "payments.transfer", "/accounts/1", transfer(900),
                   state={"summary": first.session})
    assert (again.outcome, again.rules) == (first.outcome, first.rules) == ("forbid", ("daily-budget",))
    with pytest.raises(kernel.InvalidRequest):
        decide(payments, "payments.transfer", "/accounts/1", transfer(900), state={"summary": {}})


def test_string_tests_and_arithmetic() -> None:
    policy = kernel.load_policy("""
id: strings
rules:
  - id: r
    effect: permit
    action: [files.write]
    when: >-
      args.name.endsWith(".txt") && !args.name.contains("..") && args.name.matches("^[a-z]+\\\\.txt$")
      && size(args.name) <= 12 && 2 * args.n - args.m < 10 && "writer" in principal.groups
      && args.owner == principal.id && principal.id.startsWith("u")
""")

    def run(**args: Any) -> str:
        base = {"name": "notes.txt", "n": 3, "m": 1, "owner": "u1"}
        body = {"principal": {"id": "u1", "groups": ["writer"]}, "action": "files.write",
                "resource": "/f", "args": {**base, **args}}
        return kernel.decide(policy, body, now=NOW).outcome

    assert run() == "permit"
    assert run(name="Notes.txt") == "deny"
    assert run(name="averyverylongname.txt") == "deny"
    assert run(n=6, m=1) == "deny"
    assert run(n=5.5, m=2) == "permit"
    assert run(owner="u2") == "deny"


_EVENT = st.sampled_from([
    ("payments.transfer", "/accounts/1"), ("db.delete", "/scratch/a"), ("db.read", "/pii/users"),
    ("http.post", "/hooks"), ("api.read", "/api/x")])
_AMOUNT = st.one_of(st.integers(-5, 3000), st.sampled_from(["lots", None]),
                    st.fractions(0, 100, max_denominator=7))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.integers(-600, 100_000), _EVENT, _AMOUNT), max_size=12),
       probe=_EVENT, amount=st.integers(0, 3000))
def test_stored_contributions_decide_like_the_history(payments: kernel.Policy, events: list[Any],
                                                      probe: tuple[str, str], amount: int) -> None:
    # A server stores each permitted event's contributions and later sums them per window; that
    # must decide exactly as re-reading the whole history does (times in the future included).
    principal = {"id": "agent-1", "roles": ["ops"]}
    context = {"mfa": True}
    stored, history_events = [], []
    for ago, (action, resource), value in events:
        args = {"currency": "EUR", "url": "https://elsewhere.example/"} | ({} if value is None else {
            "amount": float(value) if isinstance(value, Fraction) else value})
        event = {"principal": principal, "action": action, "resource": resource, "args": args, "context": context}
        time = NOW.timestamp() - ago
        stored.append((time, kernel.event_contributions(payments, kernel.recorded_request(event))))
        history_events.append({"time": time, **event})
    request = {"principal": principal, "action": probe[0], "resource": probe[1],
               "args": {"amount": amount, "currency": "EUR", "url": "https://elsewhere.example/"}, "context": context}
    from_history = kernel.decide(payments, request, state={"history": history_events}, now=NOW)
    summary = kernel.summary_from_contributions(payments, stored, NOW)
    from_summary = kernel.decide(payments, request, state={"summary": summary}, now=NOW)
    assert (from_summary.outcome, from_summary.rules) == (from_history.outcome, from_history.rules)
    assert from_summary.session == from_history.session


def test_a_sum_beyond_json_integers_is_certified_as_exact_text(payments: kernel.Policy) -> None:
    # Each amount is a valid request number (≤ 2^53 − 1), their sum is not: the certificate (RFC 8785,
    # whose integers stop at 2^53 − 1) carries the sum as its digits instead of failing to be issued.
    big = 2**53 - 1
    spent = history((60, "payments.transfer", "/accounts/1", transfer(big)),
                    (120, "payments.transfer", "/accounts/1", transfer(big)))
    d = decide(payments, "payments.transfer", "/accounts/1", transfer(1), state=spent)
    assert (d.outcome, d.rules) == ("forbid", ("daily-budget",))
    assert d.session["daily-budget"]["spent"] == str(2 * big)
    signer = kernel.Signer(bytes(32))
    certificate = kernel.issue_certificate(d, signer=signer, tenant="t", issued_at=ISSUED, certificate_id="c")
    assert all_ok(kernel.verify_certificate(certificate, [signer.public_key]))
    assert f"\"{2 * big}\"" in canonical_json(certificate).decode()
