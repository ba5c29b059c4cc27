"""CEL's list macros `all` and `exists` (issue 21): parsed and typed, decided with CEL's three-valued
semantics, encoded exactly in plans and analysis for lists up to MACRO_BOUND elements, and a longer
list refused as invalid input naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from licet import kernel
from licet.kernel.analysis import diff, query
from licet.kernel.conditions import MACRO_BOUND
from licet.kernel.plans import verify_plan
from tests.reference import ReferenceInvalid, evaluate_condition, reference_decide

NOW = 1_000_000_000
MAIL = {"id": "mail", "rules": [
    {"id": "internal", "effect": "permit", "action": "email.send",
     "when": 'args.to.all(r, r.endsWith("@example.com"))'},
    {"id": "big-item", "effect": "require_approval", "action": "pay.batch",
     "when": "args.items.exists(i, i.amount > 100)"},
    {"id": "batch", "effect": "permit", "action": "pay.batch"},
]}


def send(to: Any) -> dict[str, Any]:
    return {"action": "email.send", "resource": "/mail", "args": {"to": to}}


def batch(items: Any) -> dict[str, Any]:
    return {"action": "pay.batch", "resource": "/pay", "args": {"items": items}}


@pytest.fixture
def mail() -> kernel.Policy:
    return kernel.load_policy(MAIL)


def decided(policy: kernel.Policy, request: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    decision = kernel.decide(policy, request, now=NOW)
    expected = reference_decide(policy.document, request, state=None, now=NOW)
    assert (decision.outcome, frozenset(decision.rules)) == expected  # the reference agrees
    return decision.outcome, decision.rules


@pytest.mark.parametrize(("to", "outcome"), [
    (["a@example.com", "b@example.com"], "permit"),
    (["a@example.com", "b@evil.com"], "deny"),
    ([], "permit"),  # all over no element is true
    (["a@example.com", 3], "deny"),  # an element of another type is an error: never a permit
    ("a@example.com", "deny"),  # not a list
    (None, "deny"),
    (["x@example.com"] * MACRO_BOUND, "permit"),
])
def test_all_over_strings(mail: kernel.Policy, to: Any, outcome: str) -> None:
    assert decided(mail, send(to))[0] == outcome


@pytest.mark.parametrize(("items", "outcome"), [
    ([{"amount": 5}, {"amount": 500}], "require_approval"),
    ([{"amount": 5}, {"amount": 50}], "permit"),
    ([], "permit"),  # exists over no element is false
    ([{"amount": 500}, {"name": "no amount"}], "require_approval"),  # true wins over an error
    ([{"amount": 5}, {"name": "no amount"}], "require_approval"),  # false || error: error, forbid-style
    ([{"amount": 5}, "not a map"], "require_approval"),
])
def test_exists_over_maps_with_errors(mail: kernel.Policy, items: Any, outcome: str) -> None:
    assert decided(mail, batch(items))[0] == outcome


def test_a_false_element_makes_all_false_even_beside_an_error() -> None:
    assert evaluate_condition('args.to.all(r, r.startsWith("a"))', {"args": {"to": ["b", 1]}}) is False
    policy = kernel.load_policy({"id": "p", "rules": [
        {"id": "stop", "effect": "forbid", "action": "**", "when": 'args.to.all(r, r.startsWith("a"))'},
        {"id": "go", "effect": "permit", "action": "**"}]})
    assert decided(policy, send(["b", 1])) == ("permit", ("go",))  # false, not error: the forbid is off
    assert decided(policy, send(["a", 1])) == ("forbid", ("stop",))  # true && error: error, forbid-style


def test_the_proof_names_the_element_that_decided(mail: kernel.Policy) -> None:
    decision = kernel.decide(mail, send(["a@example.com", "b@evil.com"]), now=NOW)
    (refutation,) = decision.proof["refutations"]
    assert {"fact": 'args.to[1].endsWith("@example.com")', "value": False} in refutation["failed"]
    assert {"fact": "size(args.to)", "value": 2} in refutation["failed"]
    wrong = kernel.decide(mail, send(["a@example.com", 3]), now=NOW)
    assert wrong.diagnostics == ("args.to[1]: expected string, got number",)


def test_a_list_longer_than_the_bound_is_invalid_input_naming_the_field(mail: kernel.Policy) -> None:
    long = ["x@example.com"] * (MACRO_BOUND + 1)
    with pytest.raises(kernel.InvalidRequest) as raised:
        kernel.decide(mail, send(long), now=NOW)
    assert raised.value.field == "args.to" and f"at most {MACRO_BOUND}" in raised.value.message
    with pytest.raises(ReferenceInvalid):
        reference_decide(MAIL, send(long), state=None, now=NOW)
    # Only where a rule that matches the request iterates over it: another action is decided.
    assert decided(mail, {**batch([]), "args": {"to": long, "items": []}}) == ("permit", ("batch",))
    with pytest.raises(kernel.InvalidRequest) as in_plan:
        verify_plan(mail, [send(["a@example.com"]), send(long)], now=NOW)
    assert in_plan.value.field == "steps[1].args.to"


def test_a_history_events_long_list_reads_as_an_error_not_a_refusal() -> None:
    policy = kernel.load_policy({"id": "p", "rules": [{"id": "any", "effect": "permit", "action": "**"}],
                                 "invariants": [{"id": "once", "kind": "count", "action": "email.send", "limit": 1,
                                                 "when": 'args.to.exists(r, r.endsWith("@evil.com"))'}]})
    history = {"history": [{"time": NOW - 1, **send(["a@example.com"] * (MACRO_BOUND + 1))}]}
    evil = send(["x@evil.com"])
    # The past event's macro is an error, so it counts (forbid-style): the second matching send is over.
    assert kernel.decide(policy, evil, state=history, now=NOW).outcome == "forbid"
    assert reference_decide(policy.document, evil, state=history, now=NOW)[0] == "forbid"


@pytest.mark.parametrize(("condition", "message"), [
    ("args.to.all(r, r.all(s, s))", "inside another list macro"),
    ("args.to.all(r)", "takes a variable and a condition"),
    ("args.to.all(args, true)", "cannot be a macro's variable"),
    ("args.to.all(1, true)", "must be a variable name"),
    ("resource.all(r, true)", "iterates over a list attribute"),
    ("args.to.exists_one(r, r)", "not in Licet's CEL subset"),
    ('args.to.all(r, r == "a") && args.to == "b"', "used as a string here but as a list"),
    ('args.to.all(r, r == "a") && args.to.all(r, r > 1)', "args.to[]"),
])
def test_bad_macros_are_located_compile_errors(condition: str, message: str) -> None:
    with pytest.raises(kernel.PolicyError) as raised:
        kernel.load_policy({"id": "p", "rules": [{"id": "r", "effect": "permit", "action": "**", "when": condition}]})
    assert message in str(raised.value) and raised.value.field.startswith("rules")


def test_element_fields_and_outer_paths_mix() -> None:
    policy = kernel.load_policy({"id": "p", "rules": [{
        "id": "r", "effect": "permit", "action": "**",
        "when": "args.items.all(i, i.amount <= args.cap && has(i.name)) && size(args.items) > 0"}]})
    ok = batch([{"amount": 5, "name": "a"}, {"amount": 10, "name": "b"}])
    ok["args"]["cap"] = 10
    assert decided(policy, ok) == ("permit", ("r",))
    ok["args"]["cap"] = 9
    assert decided(policy, ok) == ("deny", ())


def test_plans_read_symbolic_elements(mail: kernel.Policy) -> None:
    assert verify_plan(mail, [send(["a@example.com"])], now=NOW).verdict == "safe"
    symbolic = verify_plan(mail, [send(["a@example.com", {"symbolic": "string"}])], now=NOW)
    assert symbolic.verdict == "unsafe" and symbolic.counterexample is not None
    small = batch([{"amount": 5}, {"amount": {"symbolic": "int", "min": 0, "max": 100}}])
    assert verify_plan(mail, [small], now=NOW).verdict == "safe"
    small["args"]["items"][1]["amount"]["max"] = 101
    large = verify_plan(mail, [small], now=NOW)
    assert large.verdict == "needs_approval" and large.approval_steps == (0,)


def test_analysis_answers_about_macros_with_confirmed_examples(mail: kernel.Policy) -> None:
    never = query(mail, {"action": "email.send", "when": 'args.to.exists(r, r.endsWith("@evil.com"))'})
    assert never.answer == "no", never.to_json()
    three = query(mail, {"action": "email.send", "when": "size(args.to) == 3"})
    assert three.answer == "yes" and three.example is not None, three.to_json()
    request = dict(three.example.request)
    assert len(request["args"]["to"]) == 3 and kernel.decide(mail, request, now=NOW).outcome == "permit"
    approval = query(mail, {"action": "pay.batch", "when": "args.items.exists(i, i.amount > 100)"})
    assert approval.answer == "no"  # each such request needs approval
    below = query(mail, {"action": "pay.batch", "when": "size(args.items) == 2 && args.items.all(i, i.amount <= 100)"})
    assert below.answer == "yes" and below.example is not None
    assert kernel.decide(mail, dict(below.example.request), now=NOW).outcome == "permit"


def test_diff_of_macro_conditions() -> None:
    def only(condition: str) -> kernel.Policy:
        return kernel.load_policy({"id": "p", "rules": [
            {"id": "r", "effect": "permit", "action": "email.send", "when": condition}]})

    narrow = only('args.to.all(r, r.endsWith("@example.com"))')
    wide = only('args.to.all(r, r.endsWith("@example.com") || r.endsWith("@example.org"))')
    result = diff(narrow, wide)
    assert result.answer == "differs" and result.gained and not result.lost
    for example in result.gained:
        request = dict(example.request)
        assert kernel.decide(wide, request, now=NOW).outcome == "permit"
        assert kernel.decide(narrow, request, now=NOW).outcome == "deny"
    # De Morgan over a list: !exists(!p) is all(p), within the bound and beyond it alike.
    negated = only('!args.to.exists(r, !r.endsWith("@example.com"))')
    assert diff(narrow, negated).answer == "equivalent"
    # `lit in list` agrees with the elements the macro reads (the size test stands for the refusal
    # of longer lists, which only a policy iterating over the list makes).
    member = only('"a@x.com" in args.to && size(args.to) <= 16')
    exists = only('args.to.exists(r, r == "a@x.com")')
    assert diff(member, exists).answer == "equivalent"
