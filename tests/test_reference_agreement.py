"""The kernel agrees with an independent reference evaluator on generated policies and requests.

`tests/reference.py` re-implements the policy language from `docs/policy-language.md` alone (plain
Python: a hand-written CEL-subset parser, glob matcher, resource normaliser, RE2-style regex matcher
and invariant evaluation). Here we

1. test the reference itself against the spec's own examples (example-based, no kernel needed);
2. pin both the reference and the kernel to the spec's answer on hand-picked corner cases (each one
   a past disagreement or a spec example: `SPEC_CORNERS`);
3. check, for thousands of generated (policy, request, state, now), that `kernel.decide` returns the
   reference's outcome and `Decision.rules`, that requests the reference calls invalid make the
   kernel raise `kernel.InvalidRequest`, and that policies it calls invalid make the kernel raise
   `kernel.PolicyError`.

The number of decisions is `LICET_PROPERTY_EXAMPLES` (default 10 000, the CI figure); set it lower for
a quick local run, e.g. `LICET_PROPERTY_EXAMPLES=500 .venv/bin/pytest tests/test_reference_agreement.py`.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import (
    ERROR,
    ReferenceInvalid,
    ReferencePolicyError,
    action_glob_match,
    compile_policy,
    evaluate_condition,
    normalise_resource,
    reference_decide,
    regex_search,
    resource_glob_match,
)
from strategies import Case, invalid_policy, policy_and_requests, regex_pattern

from licet import kernel

TOTAL_DECISIONS = int(os.environ.get("LICET_PROPERTY_EXAMPLES", "10000"))
MIN_REQUESTS = 20
MAX_REQUESTS = 40
# Two thirds of the decisions without session state, one third with invariants and histories. Each
# example draws at least MIN_REQUESTS requests, so these counts guarantee TOTAL_DECISIONS decisions.
STATELESS_EXAMPLES = max(1, math.ceil(TOTAL_DECISIONS * 2 / 3 / MIN_REQUESTS))
STATEFUL_EXAMPLES = max(1, math.ceil(TOTAL_DECISIONS / 3 / MIN_REQUESTS))
INVALID_POLICY_EXAMPLES = max(10, TOTAL_DECISIONS // 50)

NOW = 1_700_000_000.0
INVALID = "invalid"

PROPERTY = settings(
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example, HealthCheck.filter_too_much],
)


def _decide_ref(policy: dict[str, Any], request: dict[str, Any], state: dict[str, Any] | None = None,
                now: float | datetime = NOW) -> tuple[str, frozenset[str]] | str:
    try:
        return reference_decide(policy, request, state=state, now=now)
    except ReferenceInvalid:
        return INVALID


def _policy(*rules: dict[str, Any], invariants: list[dict[str, Any]] | None = None,
            **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "t", "rules": list(rules), **top}
    if invariants is not None:
        doc["invariants"] = invariants
    return doc


def _req(action: str = "db.read", resource: Any = "/data/x", **parts: Any) -> dict[str, Any]:
    return {"action": action, "resource": resource, **parts}


# ==================================================================================================
# 1. The reference against the spec's own examples
# ==================================================================================================


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("/data/*", "/data/x", True),
        ("/data/*", "/data", False),
        ("/data/*", "/data/x/y", False),
        ("/data/*", "/database", False),
        ("/data/**", "/data", True),
        ("/data/**", "/data/x", True),
        ("/data/**", "/data/x/y", True),
        ("/data/**", "/database", False),
        ("/**", "/", True),
        ("/*", "/", False),
        ("/**/x", "/x", True),
        ("/**/x", "/a/b/x", True),
        ("/a/*/c", "/a/b/c", True),
        ("https://h/**", "https://h/", True),
        ("/**", "https://h/a", False),
    ],
)
def test_reference_resource_globs(pattern: str, resource: str, expected: bool) -> None:
    assert resource_glob_match(pattern, resource) is expected


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("*.delete", "db.delete", True),
        ("*.delete", "db.delete_all", False),
        ("*.delete", "a.b.delete", False),
        ("**.delete", "a.b.delete", True),
        ("**", "db", True),
        ("db.**", "db", True),
        ("db.*", "db", False),
        ("db.read", "DB.read", False),
    ],
)
def test_reference_action_globs(pattern: str, action: str, expected: bool) -> None:
    assert action_glob_match(pattern, action) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/../b", "/b"),
        ("//a\\b", "/a/b"),
        ("/a/./b/", "/a/b"),
        ("/", "/"),
        ("///", "/"),
        ("/a/b/..", "/a"),
        ("/%2e/x", "/x"),
        ("/caf\u0065\u0301", "/caf\u00e9"),  # NFC
        ("/\u212a", "/K"),  # NFC maps the Kelvin sign to K
        ("/caf%C3%A9", "/café"),
        ("/a%2Fb", "/a/b"),
        ("HTTPS://Api.Example.COM//V1/./x/", "https://api.example.com/V1/x"),
        ("https:\\\\h\\a", "https://h/a"),  # `\` folded before the URI is recognised
        ("/a/.../b", "/a/.../b"),
    ],
)
def test_reference_normalisation(raw: str, expected: str) -> None:
    assert normalise_resource(raw, insensitive=False) == expected


@pytest.mark.parametrize(
    "raw",
    ["/..", "/a/../..", "/%2e%2e/x", "/%2E%2E", "https://h/../x", "", "a/b", "mailto:x@y",
     "/a\x00b", "/a%00b", "/a%0ab", "\t/a", 5, None,
     # decoded once, an escape survives (any tool decoding again would read another name)
     "/%252e%252e/x", "/a%252fb", "/a%2%41", "/a%C2%85b", "/a\ud800"],
)
def test_reference_invalid_resources(raw: object) -> None:
    with pytest.raises(ReferenceInvalid):
        normalise_resource(raw, insensitive=False)


def test_reference_insensitive_lowercases_resource_and_patterns() -> None:
    p = _policy({"id": "r", "effect": "permit", "action": "db.read", "resource": "/Data/**"},
                resource_case="insensitive")
    assert _decide_ref(p, _req(resource="/DATA/X")) == ("permit", frozenset({"r"}))
    sensitive = _policy({"id": "r", "effect": "permit", "action": "db.read",
                         "resource": "/Data/**"})
    assert _decide_ref(sensitive, _req(resource="/DATA/X")) == ("deny", frozenset())
    assert _decide_ref(sensitive, _req(resource="/Data/X")) == ("permit", frozenset({"r"}))


def test_reference_pattern_normalised_without_decoding() -> None:
    p = _policy({"id": "r", "effect": "permit", "action": "db.read", "resource": "/a%2fb/./c/"},
                resource_escapes="keep")
    assert _decide_ref(p, _req(resource="/a%252fb/c")) == ("permit", frozenset({"r"}))
    assert _decide_ref(p, _req(resource="/a%2fb/c")) == ("deny", frozenset())
    refusing = {**p, "resource_escapes": "refuse"}
    assert _decide_ref(refusing, _req(resource="/a%252fb/c")) == INVALID


def test_reference_insensitive_is_unicode_case_folding() -> None:
    p = _policy({"id": "r", "effect": "permit", "action": "db.read", "resource": "/stra\u00dfe/**"},
                resource_case="insensitive")
    assert _decide_ref(p, _req(resource="/STRASSE/x")) == ("permit", frozenset({"r"}))
    assert _decide_ref(p, _req(resource="/Stra%C3%9Fe")) == ("permit", frozenset({"r"}))


@pytest.mark.parametrize(
    ("cond", "values", "expected"),
    [
        ("false && args.x", {}, False),
        ("args.x && false", {}, False),
        ("true || args.x", {}, True),
        ("args.x || true", {}, True),
        ("!args.x", {}, ERROR),
        ("args.x || false", {}, ERROR),
        ("args.x && true", {}, ERROR),
        ("args.n + 1 > 2", {}, ERROR),
        ("args.n > 2", {"n": True}, ERROR),  # a bool is not a number
        ("args.n > 2", {"n": "3"}, ERROR),
        ("args.n > 2", {"n": 3}, True),
        ("args.n == 1", {"n": 1.0}, True),
        ("args.a + args.b == 0.3", {"a": 0.1, "b": 0.2}, True),  # rationals, decimal floats
        ("2 * args.n - 1 >= 2.5", {"n": 1.75}, True),
        ("-args.n < 0", {"n": 1}, True),
        ('args.s == "a"', {"s": None}, ERROR),  # null is present, of type null
        ("has(args.s)", {"s": None}, True),
        ("has(args.s.t)", {"s": "x"}, False),
        ("has(args.s.t)", {}, False),
        ('size(args.s) == 1', {"s": "😀"}, True),
        ('args.s.size() == 2', {"s": ["a", 1]}, True),
        ('size(args.s) == 0', {"s": {}}, True),
        ('args.s.matches("b")', {"s": "abc"}, True),  # search, not full match
        ('args.s.matches("^b")', {"s": "abc"}, False),
        ('args.s.matches("c$")', {"s": "abc\n"}, False),  # RE2: $ is end of text
        ('args.s.matches("\\\\d")', {"s": "٣"}, False),  # RE2: \d is ASCII
        ('args.s.startsWith("ab") && args.s.endsWith("c") && args.s.contains("b")',
         {"s": "abc"}, True),
        ('"x" in args.tags', {"tags": ["y", "x"]}, True),
        ('"x" in args.tags', {"tags": "x"}, ERROR),
        ('args.s in ["a", "b"]', {"s": "b"}, True),
        ('args.n in [1, 2.5]', {"n": 2.5}, True),
        ("args.a == args.b && args.a == 'x'", {"a": "x", "b": "x"}, True),
        ("(args.n == 1) == true", {"n": 1}, True),
    ],
)
def test_reference_condition_semantics(cond: str, values: dict[str, Any], expected: object) -> None:
    assert evaluate_condition(cond, {"args": values, "principal": {}, "context": {}}) is expected


@pytest.mark.parametrize(
    "cond",
    ["args.a == args.b", 'args.a == "x" && args.a > 1', "args.a * args.b > 1", "args.a / 2 > 1",
     "foo.x", "principal == 1", "has(resource)", '"a" < "b"', '[1] == args.a', "args.a ? 1 : 2",
     'args.s.matches("(a)\\\\1")', 'args.s.matches("(?=a)")', "args.s.matches(args.t)",
     "1 < 2 < 3", "args.n in [1, 'a']", "size('abc') > 1", "args.a == null"],
)
def test_reference_rejects_bad_conditions(cond: str) -> None:
    with pytest.raises(ReferencePolicyError):
        compile_policy(_policy({"id": "r", "effect": "permit", "action": "db.read", "when": cond}))


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "r", "effect": "permit", "action": "db.del*"},
        {"id": "r", "effect": "permit", "action": "db.read", "resource": "/data/*.csv"},
        {"id": "r", "effect": "permit", "action": "db.read", "resource": "/.."},
        {"id": "r", "effect": "permit", "action": "db.read", "whenn": "true"},
        {"id": "r", "effect": "allow", "action": "db.read"},
        {"id": "r", "effect": "permit", "action": []},
        {"id": "r", "effect": "permit", "action": "db.read", "approval": {"quorum": 2}},
    ],
)
def test_reference_rejects_bad_rules(rule: dict[str, Any]) -> None:
    with pytest.raises(ReferencePolicyError):
        compile_policy(_policy(rule))


def test_reference_absent_attribute_never_widens_access() -> None:
    when = "context.mfa"
    for effect, expected in [("permit", "deny"), ("forbid", "forbid"),
                             ("require_approval", "require_approval")]:
        p = _policy({"id": "r", "effect": effect, "action": "db.read", "when": when})
        got = _decide_ref(p, _req(context={}))
        assert got == (expected, frozenset() if expected == "deny" else frozenset({"r"}))
        # mistyped: a string where a bool is expected behaves like absent
        assert _decide_ref(p, _req(context={"mfa": "true"})) == got
        # present and true: every effect applies
        assert _decide_ref(p, _req(context={"mfa": True})) == (effect, frozenset({"r"}))
        assert _decide_ref(p, _req(context={"mfa": False})) == ("deny", frozenset())


def test_reference_outcome_precedence_and_rules() -> None:
    p = _policy(
        {"id": "p2", "effect": "permit", "action": "db.*"},
        {"id": "p1", "effect": "permit", "action": "**"},
        {"id": "a1", "effect": "require_approval", "action": "db.write"},
        {"id": "f1", "effect": "forbid", "action": "*.delete", "resource": "/prod/**"},
    )
    assert _decide_ref(p, _req("db.read")) == ("permit", frozenset({"p1", "p2"}))
    assert _decide_ref(p, _req("db.write")) == ("require_approval", frozenset({"a1"}))
    assert _decide_ref(p, _req("db.delete", "/prod/x")) == ("forbid", frozenset({"f1"}))
    assert _decide_ref(p, _req("db.delete", "/dev/x")) == ("permit", frozenset({"p1", "p2"}))
    assert _decide_ref(_policy(), _req()) == ("deny", frozenset())


def test_reference_invalid_requests() -> None:
    p = _policy({"id": "r", "effect": "permit", "action": "**"})
    assert _decide_ref(p, _req("db..read")) == INVALID
    assert _decide_ref(p, _req("db.ré")) == INVALID
    assert _decide_ref(p, _req(resource="/a/../..")) == INVALID
    assert _decide_ref(p, _req(principal=None)) == INVALID
    assert _decide_ref(p, _req(args=[])) == INVALID
    assert _decide_ref(p, _req(args={"n": 2**53})) == INVALID
    assert _decide_ref(p, _req(args={"n": [float("nan")]})) == INVALID
    assert _decide_ref(p, _req(args={"n": 2**53 - 1})) == ("permit", frozenset({"r"}))
    assert _decide_ref(p, {"action": "db.read", "resource": "/x"}) == ("permit", frozenset({"r"}))
    assert _decide_ref(p, _req(role="admin")) == INVALID  # unknown request field
    assert _decide_ref(p, _req(resource="/%A9")) == INVALID  # escapes that are not UTF-8


def _event(t: float, action: str = "payments.transfer", resource: str = "/acct/1",
           **args: Any) -> dict[str, Any]:
    return {"time": t, "action": action, "resource": resource, "args": args}


def test_reference_budget_window_and_errors() -> None:
    p = _policy(
        {"id": "r", "effect": "permit", "action": "payments.transfer"},
        invariants=[{"id": "b", "kind": "budget", "action": "payments.transfer",
                     "sum": "args.amount", "limit": 100, "window": "1h"}],
    )
    transfer = _req("payments.transfer", "/acct/1", args={"amount": 40})
    permit, forbid = ("permit", frozenset({"r"})), ("forbid", frozenset({"b"}))
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 10, amount=60)]}) == permit
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 10, amount=61)]}) == forbid
    # the window is now-3600 < T <= now
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 3600, amount=61)]}) == permit
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 3599, amount=61)]}) == forbid
    assert _decide_ref(p, transfer, {"history": [_event(NOW, amount=61)]}) == forbid
    assert _decide_ref(p, transfer, {"history": [_event(NOW + 1, amount=61)]}) == permit
    whole_session = _policy(*p["rules"], invariants=[{**p["invariants"][0], "window": None}])
    del whole_session["invariants"][0]["window"]
    old = _event(NOW - 10**6, amount=61)
    assert _decide_ref(whole_session, transfer, {"history": [old]}) == forbid
    # an event that does not match the selector does not count
    other = _event(NOW - 10, action="db.read", amount=61)
    assert _decide_ref(p, transfer, {"history": [other]}) == permit
    # error or negative sums violate, in the event or in the request
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 10)]}) == forbid
    assert _decide_ref(p, transfer, {"history": [_event(NOW - 10, amount=-1)]}) == forbid
    assert _decide_ref(p, _req("payments.transfer", "/acct/1", args={})) == forbid
    assert _decide_ref(p, _req("payments.transfer", "/acct/1", args={"amount": "5"})) == forbid
    assert _decide_ref(p, _req("payments.transfer", "/acct/1", args={"amount": -5})) == forbid
    # a request outside the selector never violates, whatever the history
    assert _decide_ref(p, _req("db.read"), {"history": [_event(NOW, amount=999)]}) == (
        "deny", frozenset())


def test_reference_count_and_flow() -> None:
    p = _policy(
        {"id": "r", "effect": "permit", "action": "**"},
        invariants=[
            {"id": "c", "kind": "count", "action": "*.delete", "limit": 2, "window": "1h"},
            {"id": "f", "kind": "flow", "source": {"action": "db.read", "resource": "/pii/**"},
             "sink": {"action": "http.post",
                      "when": '!args.url.startsWith("https://intranet.example/")'}},
        ],
    )
    dels = [_event(NOW - 5, "fs.delete", "/x"), _event(NOW - 6, "db.delete", "/y")]
    assert _decide_ref(p, _req("fs.delete"), {"history": dels[:1]}) == ("permit", frozenset({"r"}))
    assert _decide_ref(p, _req("fs.delete"), {"history": dels}) == ("forbid", frozenset({"c"}))
    taint = {"history": [_event(NOW - 99999, "db.read", "/pii/a")]}
    post_out = _req("http.post", "/api", args={"url": "https://evil.example/"})
    post_in = _req("http.post", "/api", args={"url": "https://intranet.example/x"})
    assert _decide_ref(p, post_out, taint) == ("forbid", frozenset({"f"}))
    assert _decide_ref(p, post_in, taint) == ("permit", frozenset({"r"}))
    # a missing attribute can never hide a taint
    assert _decide_ref(p, _req("http.post", "/api"), taint) == ("forbid", frozenset({"f"}))
    assert _decide_ref(p, post_out) == ("permit", frozenset({"r"}))


DESIGN_EXAMPLE = """\
id: payments-agent
rules:
  - id: read-api
    effect: permit
    action: [api.read, api.list]
    resource: ["/api/**"]
    when: 'principal.role in ["ops", "analyst"] && context.mfa'
  - id: transfer
    effect: permit
    action: [payments.transfer]
    resource: ["/accounts/*"]
    when: 'args.amount <= 10000 && args.currency in ["EUR", "USD"]'
  - id: large-transfer
    effect: require_approval
    action: [payments.transfer]
    when: 'args.amount > 1000'
    approval: {quorum: 2, role: approver, ttl: 15m}
  - id: no-prod-delete
    effect: forbid
    action: ["*.delete"]
    resource: ["/prod/**"]
  - id: delete-scratch
    effect: permit
    action: ["*.delete"]
    resource: ["/scratch/**"]
invariants:
  - {id: daily-budget, kind: budget, action: [payments.transfer], sum: args.amount, limit: 5000,
     window: 24h}
  - {id: max-deletes, kind: count, action: ["*.delete"], limit: 3, window: 1h}
  - id: no-exfiltration
    kind: flow
    source: {action: [db.read], resource: ["/pii/**"]}
    sink: {action: [http.post, email.send],
           when: '!args.url.startsWith("https://intranet.example/")'}
"""


def test_reference_design_example_policy() -> None:
    doc = yaml.safe_load(DESIGN_EXAMPLE)
    transfer = _req("payments.transfer", "/accounts/7", args={"amount": 500, "currency": "EUR"})
    assert _decide_ref(doc, transfer) == ("permit", frozenset({"transfer"}))
    big = _req("payments.transfer", "/accounts/7", args={"amount": 2000, "currency": "EUR"})
    assert _decide_ref(doc, big) == ("require_approval", frozenset({"large-transfer"}))
    # absent amount: the permit does not apply, the approval rule does, and the budget is violated
    blind = _req("payments.transfer", "/accounts/7", args={"currency": "EUR"})
    assert _decide_ref(doc, blind) == ("forbid", frozenset({"daily-budget"}))
    spent = {"history": [_event(NOW - 60, "payments.transfer", "/accounts/7", amount=4600)]}
    assert _decide_ref(doc, transfer, spent) == ("forbid", frozenset({"daily-budget"}))
    read = _req("api.read", "/api/v1", principal={"role": "ops"}, context={"mfa": True})
    assert _decide_ref(doc, read) == ("permit", frozenset({"read-api"}))
    assert _decide_ref(doc, _req("db.delete", "/prod/a")) == ("forbid",
                                                              frozenset({"no-prod-delete"}))
    assert _decide_ref(doc, _req("db.delete", "/scratch/a")) == ("permit",
                                                                 frozenset({"delete-scratch"}))


_SAFE_TEXT = st.text(alphabet=st.sampled_from(list("abcxyzABO019 ./@-_:é😀\t")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(pattern=regex_pattern(), text=_SAFE_TEXT)
def test_reference_regex_matches_python_re_where_re2_and_python_agree(pattern: str,
                                                                       text: str) -> None:
    # On text without newlines, with ASCII classes, RE2 and Python's `re` coincide.
    assert regex_search(pattern, text) == bool(re.search(pattern, text, re.ASCII))


def _has_macro(item: dict[str, Any]) -> bool:
    text = json.dumps(item)
    return ".all(" in text or ".exists(" in text


def test_strategies_produce_meaningful_cases() -> None:
    """Generated policies are mostly valid and the requests reach every outcome."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(policy_and_requests(), policy_and_requests(stateful=True)))
    def collect(case: Case) -> None:
        try:
            compile_policy(case.policy)
        except ReferencePolicyError:
            seen["policy_error"] += 1
            return
        seen["policy_ok"] += 1
        items = [*case.policy.get("rules", []), *case.policy.get("invariants", [])]
        with_macro = {i["id"] for i in items if _has_macro(i)}
        approval_invariants = {i["id"] for i in case.policy.get("invariants", [])
                               if i.get("effect") == "require_approval"}
        for request, state, now in case.requests:
            got = _decide_ref(case.policy, request, state, now)
            seen[got if isinstance(got, str) else got[0]] += 1
            if not isinstance(got, str):
                seen["decided_by_a_macro"] += bool(with_macro & got[1])
                seen["approval_by_an_invariant"] += bool(approval_invariants & got[1])

    collect()
    # The language of issue 21 is exercised: macros decide, approval invariants ask for approval.
    assert seen["decided_by_a_macro"] > 0 and seen["approval_by_an_invariant"] > 0, seen
    assert seen["policy_ok"] >= 3 * seen["policy_error"], seen
    for outcome in ("permit", "forbid", "require_approval", "deny", INVALID):
        assert seen[outcome] > 0, seen
    decided = sum(seen[o] for o in ("permit", "forbid", "require_approval", "deny"))
    assert seen["deny"] < 0.8 * decided, seen  # rules apply often
    assert seen[INVALID] < 0.3 * (decided + seen[INVALID]), seen


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(bad=invalid_policy())
def test_reference_rejects_generated_invalid_policies(bad: tuple[dict[str, Any], str]) -> None:
    doc, kind = bad
    with pytest.raises(ReferencePolicyError):
        compile_policy(doc)
    assert kind


# ==================================================================================================
# 2. The kernel agrees with the reference
# ==================================================================================================

_P = "permit"
_ANY = {"id": "r", "effect": "permit", "action": "**"}


def _inv_policy(inv: dict[str, Any]) -> dict[str, Any]:
    return _policy(_ANY, invariants=[inv])


# (policy, request, state, expected per the spec). Each was a kernel/reference disagreement or is
# one of the spec's own examples; the reference is pinned to `expected` too.
SPEC_CORNERS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None, object]] = {
    "glob-data-star-not-database": (
        _policy({"id": "r", "effect": _P, "action": "**", "resource": "/data/*"}),
        _req(resource="/database"), None, ("deny", frozenset())),
    "glob-star-delete-not-two-segments": (
        _policy({"id": "r", "effect": _P, "action": "*.delete"}), _req("a.b.delete"), None,
        ("deny", frozenset())),
    "false-and-error-is-false-forbid": (
        _policy({"id": "r", "effect": "forbid", "action": "**", "when": "false && args.x"}),
        _req(), None, ("deny", frozenset())),
    "traversal-above-root-invalid": (_policy(_ANY), _req(resource="/%2e%2e/x"), None, INVALID),
    # A URI whose path resolves to the root is `scheme://authority/` however it is spelled.
    "uri-root-after-dotdot": (
        _policy({"id": "r", "effect": _P, "action": "**", "resource": "s3://bucket/"}),
        _req(resource="s3://bucket/a/.."), None, (_P, frozenset({"r"}))),
    "uri-root-after-double-slash": (
        _policy({"id": "r", "effect": _P, "action": "**", "resource": "https://h/"}),
        _req(resource="https://h//"), None, (_P, frozenset({"r"}))),
    # "principal, args and context are JSON objects (missing = {}); anything else is invalid"
    "null-args-invalid": (_policy(_ANY), _req(args=None), None, INVALID),
    # A non-UTF-8 escape must give InvalidRequest (or a decision), never an unexpected exception.
    "percent-escape-not-utf8": (_policy(_ANY), _req(resource="/%A9"), None, INVALID),
    # "Arithmetic and comparisons with an error operand are error": x - x is not 0 when x is absent.
    "cancel-permit-absent": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": "args.n - args.n == 0"}),
        _req(args={}), None, ("deny", frozenset())),
    "cancel-permit-mistyped": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": "args.n - args.n == 0"}),
        _req(args={"n": "abc"}), None, ("deny", frozenset())),
    "cancel-forbid-absent": (
        _policy({"id": "r", "effect": "forbid", "action": "**",
                 "when": "args.a + args.k > args.k"}),
        _req(args={"a": -1}), None, ("forbid", frozenset({"r"}))),
    "zero-times-absent-is-error": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": "0 * args.n == 0"}),
        _req(args={}), None, ("deny", frozenset())),
    "cancel-budget-sum": (
        _inv_policy({"id": "b", "kind": "budget", "action": "**", "sum": "args.p - args.p",
                     "limit": 100}),
        _req(args={}), None, ("forbid", frozenset({"b"}))),
    "cancel-flow-source": (
        _inv_policy({"id": "f", "kind": "flow",
                     "source": {"action": "db.read", "when": "args.a + 1 < args.a"},
                     "sink": {"action": "http.post"}}),
        _req("http.post"), {"history": [_event(NOW - 5, "db.read", "/x")]},
        ("forbid", frozenset({"f"}))),
    # "numbers are compared exactly (as rationals)": the JSON number 0.1 is 1/10.
    "float-equals-decimal-literal": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": "args.n == 0.1"}),
        _req(args={"n": 0.1}), None, (_P, frozenset({"r"}))),
    "float-sum-exact": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": "args.a + args.b == 0.3"}),
        _req(args={"a": 0.1, "b": 0.2}), None, (_P, frozenset({"r"}))),
    # RE2: `$` is end of text (no match before a trailing newline); \d is ASCII.
    "regex-dollar-trailing-newline": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": 'args.s.matches("^ops$")'}),
        _req(args={"s": "ops\n"}), None, ("deny", frozenset())),
    "regex-digit-is-ascii": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": 'args.s.matches("^\\\\d+$")'}),
        _req(args={"s": "٣"}), None, ("deny", frozenset())),
    # size() takes a path; a literal is outside the grammar.
    "size-of-literal-rejected": (
        _policy({"id": "r", "effect": _P, "action": "**", "when": 'size("abc") > 1'}),
        _req(), None, "PolicyError"),
    # A resource pattern is normalised like a resource: control characters are an error.
    "control-char-in-pattern-rejected": (
        _policy({"id": "r", "effect": _P, "action": "**", "resource": "/a\nb"}),
        _req(), None, "PolicyError"),
    # size() makes a path string|list|map; comparing it with a string path makes it a string,
    # exactly as comparing it with a string literal does (which the kernel accepts).
    "size-path-unifies-with-string-path": (
        _policy({"id": "r", "effect": _P, "action": "**",
                 "when": 'size(args.name) > 3 && args.name == args.other && '
                         'args.other.startsWith("x")'}),
        _req(args={"name": "xyzw", "other": "xyzw"}), None, (_P, frozenset({"r"}))),
}


def _outcome(fn: Any) -> object:
    try:
        return fn()
    except (ReferencePolicyError, kernel.PolicyError):
        return "PolicyError"
    except (ReferenceInvalid, kernel.InvalidRequest):
        return INVALID


@pytest.mark.parametrize("name", sorted(SPEC_CORNERS))
def test_kernel_and_reference_on_spec_corners(name: str) -> None:
    policy, request, state, expected = SPEC_CORNERS[name]
    assert _outcome(lambda: reference_decide(policy, request, state=state, now=NOW)) == expected

    def run_kernel() -> tuple[str, frozenset[str]]:
        d = kernel.decide(kernel.load_policy(copy.deepcopy(policy)), copy.deepcopy(request),
                          state=copy.deepcopy(state), now=NOW)
        return d.outcome, frozenset(d.rules)

    assert _outcome(run_kernel) == expected, _disagreement(policy, request, state, NOW, expected,
                                                           _outcome(run_kernel))


def _show(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=1, default=repr, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)


def _disagreement(policy: dict[str, Any], request: Any, state: Any, now: Any, expected: object,
                  got: object, extra: str = "") -> str:
    return (
        "kernel and reference disagree\n"
        f"policy = {_show(policy)}\nrequest = {request!r}\nstate = {state!r}\nnow = {now!r}\n"
        f"reference: {expected!r}\nkernel:    {got!r}\n{extra}"
    )


def _check_case(case: Case) -> None:
    policy = case.policy
    try:
        compile_policy(policy)
    except ReferencePolicyError as exc:
        try:
            kernel.load_policy(copy.deepcopy(policy))
        except kernel.PolicyError:
            return
        raise AssertionError(_disagreement(policy, None, None, None, f"PolicyError ({exc})",
                                           "policy accepted")) from exc
    try:
        compiled = kernel.load_policy(copy.deepcopy(policy))
    except kernel.PolicyError as exc:
        raise AssertionError(_disagreement(policy, None, None, None, "valid policy",
                                           f"PolicyError: {exc}")) from exc
    for request, state, now in case.requests:
        expected = _decide_ref(policy, request, state, now)
        diagnostics: object = None
        try:
            d = kernel.decide(compiled, copy.deepcopy(request), state=copy.deepcopy(state),
                              now=now)
            got: object = (d.outcome, frozenset(d.rules))
            diagnostics = d.diagnostics
            if list(d.rules) != sorted(d.rules):  # "sorted by id"
                got = (d.outcome, f"unsorted {d.rules!r}")
        except kernel.InvalidRequest as exc:
            got = INVALID
            diagnostics = str(exc)
        except Exception as exc:
            raise AssertionError(_disagreement(policy, request, state, now, expected,
                                               f"{type(exc).__name__}: {exc}")) from exc
        if got != expected:
            raise AssertionError(_disagreement(policy, request, state, now, expected, got,
                                               f"diagnostics: {diagnostics!r}"))


@settings(PROPERTY, max_examples=STATELESS_EXAMPLES)
@given(case=policy_and_requests(min_requests=MIN_REQUESTS, max_requests=MAX_REQUESTS))
def test_kernel_agrees_with_reference(case: Case) -> None:
    _check_case(case)


@settings(PROPERTY, max_examples=STATEFUL_EXAMPLES)
@given(case=policy_and_requests(stateful=True, min_requests=MIN_REQUESTS,
                                max_requests=MAX_REQUESTS))
def test_kernel_agrees_with_reference_on_invariants(case: Case) -> None:
    _check_case(case)


@settings(PROPERTY, max_examples=INVALID_POLICY_EXAMPLES)
@given(bad=invalid_policy())
def test_kernel_rejects_invalid_policies(bad: tuple[dict[str, Any], str]) -> None:
    doc, kind = bad
    try:
        kernel.load_policy(copy.deepcopy(doc))
    except kernel.PolicyError:
        return
    raise AssertionError(f"kernel accepted an invalid policy ({kind}):\n{_show(doc)}")


def test_kernel_accepts_datetime_and_epoch_now_alike() -> None:
    doc = _policy({"id": "r", "effect": "permit", "action": "**"},
                  invariants=[{"id": "c", "kind": "count", "action": "**", "limit": 1,
                               "window": "1h"}])
    compiled = kernel.load_policy(doc)
    state = {"history": [_event(NOW - 3599, "db.read", "/x")]}
    for now in (NOW, datetime.fromtimestamp(NOW, tz=UTC)):
        d = kernel.decide(compiled, _req(), state=state, now=now)
        assert (d.outcome, set(d.rules)) == ("forbid", {"c"})
