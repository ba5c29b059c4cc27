"""Issue 19: the analysis answers yes only with a confirmed example, no only with a proof, else unknown.

One test per reproduction in the issue; each answer is checked here independently of the analysis
(examples re-decided by `decide`, absence answers against requests built by hand).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from licet import kernel
from licet.kernel.analysis import diff, never_applying_rules, query
from licet.kernel.delegation import check_attenuation, load_grant

NOW = 1_000_000_000


def policy(rules: list[dict[str, Any]], **top: Any) -> kernel.Policy:
    return kernel.load_policy({"id": "p", "rules": rules, **top})


def outcome(p: kernel.Policy, request: dict[str, Any], state: Any = None) -> str:
    return kernel.decide(p, request, state=state, now=NOW).outcome


def assert_yes(p: kernel.Policy, pattern: dict[str, Any]) -> dict[str, Any]:
    """The answer is yes, and its example is a request matching `pattern` that `p` permits."""
    answer = query(p, pattern)
    assert answer.answer == "yes", answer.to_json()
    assert answer.example is not None and answer.example.confirmed
    request = dict(answer.example.request)
    state = answer.example.state
    assert outcome(p, request, state) == "permit"
    matcher = kernel.load_policy({"id": "q", "resource_case": "insensitive" if p.lower_resources else "sensitive",
                                  "rules": [{"id": "q", "effect": "permit", "action": "**", **pattern}]})
    assert outcome(matcher, request) == "permit", request
    return request


# --- false "no" ------------------------------------------------------------------------------------
def test_query_applies_the_policys_case_folding() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "fs.read", "resource": "/Home/**"}],
               resource_case="insensitive")
    assert outcome(p, {"action": "fs.read", "resource": "/HOME/docs/a"}) == "permit"
    assert_yes(p, {"action": "fs.read", "resource": "/HOME/docs/**"})


def test_diff_between_insensitive_and_sensitive_versions_differs() -> None:
    rules = [{"id": "r", "effect": "permit", "action": "fs.read", "resource": "/data/**"}]
    old, new = policy(rules, resource_case="insensitive"), policy(rules)
    assert outcome(old, {"action": "fs.read", "resource": "/DATA/x"}) == "permit"
    assert outcome(new, {"action": "fs.read", "resource": "/DATA/x"}) == "deny"
    result = diff(old, new)
    assert result.answer == "differs" and result.lost and not result.gained
    for example in result.lost:
        assert example.confirmed
        assert outcome(old, dict(example.request), example.state) == "permit"
        assert outcome(new, dict(example.request), example.state) != "permit"


def _versions_with(invariant_old: dict[str, Any], invariant_new: dict[str, Any]) -> tuple[kernel.Policy, ...]:
    rules = [{"id": "all", "effect": "permit", "action": "**"}]
    return (kernel.load_policy({"id": "p", "rules": rules, "invariants": [invariant_old]}),
            kernel.load_policy({"id": "p", "rules": rules, "invariants": [invariant_new]}))


def _assert_confirmed_difference(old: kernel.Policy, new: kernel.Policy) -> None:
    result = diff(old, new)
    assert result.answer == "differs", result.to_json()
    for example in (*result.gained, *result.lost):
        assert example.confirmed
        a = outcome(old, dict(example.request), example.state) == "permit"
        b = outcome(new, dict(example.request), example.state) == "permit"
        assert a != b
        assert "history" in example.state  # a real history, not a free summary


def test_same_invariant_id_with_another_window_differs() -> None:
    count = {"id": "c", "kind": "count", "action": "db.write", "limit": 2}
    old, new = _versions_with({**count, "window": "1h"}, {**count, "window": "24h"})
    _assert_confirmed_difference(old, new)


def test_same_flow_id_with_a_wider_source_differs() -> None:
    flow = {"id": "f", "kind": "flow", "sink": {"action": "http.post"}}
    old, new = _versions_with({**flow, "source": {"action": "db.read", "resource": "/pii/**"}},
                              {**flow, "source": {"action": "db.read", "resource": "/**"}})
    _assert_confirmed_difference(old, new)


def test_renamed_identical_invariant_is_equivalent() -> None:
    count = {"kind": "count", "action": "db.write", "limit": 2, "window": "1h"}
    old, new = _versions_with({"id": "a", **count}, {"id": "b", **count})
    assert diff(old, new).answer == "equivalent"


# --- false "yes" -----------------------------------------------------------------------------------
EMAIL = policy([{"id": "mail", "effect": "permit", "action": "email.send",
                 "when": 'args.to.matches("^[A-Za-z0-9._%+-]+@example\\\\.com$")'}])


def test_regex_implies_suffix_so_query_is_no() -> None:
    answer = query(EMAIL, {"action": "email.send", "when": '!args.to.endsWith("@example.com")'})
    assert answer.answer == "no", answer.to_json()
    assert not answer.permitted and answer.example is None


def test_query_yes_over_a_regex_is_confirmed() -> None:
    request = assert_yes(EMAIL, {"action": "email.send", "when": 'args.to.startsWith("bob")'})
    assert request["args"]["to"].startswith("bob")


@pytest.mark.parametrize(("left", "right"), [
    ('args.code.matches("^[0-9]+$")', 'args.code.matches("^\\\\d+$")'),
    ('args.to.endsWith("@x.com")', 'args.to.matches("@x\\\\.com$")'),
    ('args.c in ["EUR", "USD"]', 'args.c.matches("^(EUR|USD)$")'),
])
def test_equivalent_string_conditions_are_equivalent(left: str, right: str) -> None:
    old = policy([{"id": "r", "effect": "permit", "action": "a.b", "when": left}])
    new = policy([{"id": "r", "effect": "permit", "action": "a.b", "when": right}])
    result = diff(old, new)
    assert result.answer == "equivalent", result.to_json()


def test_regex_child_inside_parents_suffix_attenuates() -> None:
    base = {"issuer": "alice", "delegate": "bot", "expires_at": NOW + 3600}
    parent = load_grant({**base, "id": "g1", "max_depth": 1, "scope": [
        {"id": "s", "effect": "permit", "action": "email.send", "when": 'args.to.endsWith("@example.com")'}]})
    child = load_grant({**base, "id": "g2", "issuer": "bot", "delegate": "sub", "parent": "g1",
                        "scope": [{"id": "s", "effect": "permit", "action": "email.send",
                                   "when": 'args.to.matches("^[a-z]+@example\\\\.com$")'}]})
    verdict = check_attenuation(parent, child)
    assert verdict.ok, verdict.to_json()
    assert verdict.answer == "attenuates"


# --- issue 21: list macros and invariant effects -----------------------------------------------------
RECIPIENTS = policy([{"id": "mail", "effect": "permit", "action": "email.send",
                      "when": 'args.to.all(r, r.endsWith("@example.com"))'}])


def test_macro_no_is_a_proof_over_every_element() -> None:
    answer = query(RECIPIENTS, {"action": "email.send", "when": 'args.to.exists(r, !r.endsWith("@example.com"))'})
    assert answer.answer == "no", answer.to_json()
    # Checked by hand: a recipient outside the domain, wherever it stands within the bound, is denied.
    for position in range(16):
        to = ["a@example.com"] * 16
        to[position] = "b@x.org"
        assert outcome(RECIPIENTS, {"action": "email.send", "resource": "/", "args": {"to": to}}) == "deny"


def test_macro_yes_is_confirmed_with_the_elements_it_needs() -> None:
    request = assert_yes(RECIPIENTS, {"action": "email.send", "when": 'size(args.to) == 2 && "a@example.com" in args.to'})
    assert len(request["args"]["to"]) == 2 and "a@example.com" in request["args"]["to"]


def test_macro_contradicting_its_list_never_applies() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "a.b",
                 "when": 'args.l.all(x, x == "a") && "b" in args.l'}])
    assert [n.rule for n in never_applying_rules(p)] == ["r"]


def test_approval_invariant_is_approval_not_permit_nor_forbid() -> None:
    p = policy([{"id": "any", "effect": "permit", "action": "db.delete"}],
               invariants=[{"id": "few", "kind": "count", "action": "db.delete", "limit": 2,
                            "effect": "require_approval"}])
    answer = query(p, {"action": "db.delete"})
    assert answer.answer == "yes" and answer.example is not None
    assert outcome(p, dict(answer.example.request), answer.example.state) == "permit"
    # A permit rule is not shadowed by an invariant of either effect: it decides within the limit.
    assert never_applying_rules(p) == []
    forbidding = policy([{"id": "any", "effect": "permit", "action": "db.delete"}],
                        invariants=[{"id": "few", "kind": "count", "action": "db.delete", "limit": 2}])
    assert diff(forbidding, p).answer == "equivalent"


def test_size_is_tied_to_the_string() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "a.b",
                 "when": 'args.name == "ab" && size(args.name) > 3'}])
    assert [n.rule for n in never_applying_rules(p)] == ["r"]
    assert query(p, {"action": "a.b"}).answer == "no"
    sized = policy([{"id": "r", "effect": "permit", "action": "a.b",
                     "when": 'size(args.name) == 3 && args.name.startsWith("x")'}])
    request = assert_yes(sized, {"action": "a.b"})
    assert len(request["args"]["name"]) == 3


def test_string_tests_on_resource_and_action() -> None:
    p = policy([{"id": "all", "effect": "permit", "action": "**", "resource": "/**"},
                {"id": "adm", "effect": "forbid", "action": "**", "when": 'resource.startsWith("/adm")'},
                {"id": "del", "effect": "forbid", "action": "**", "when": 'action.endsWith("delete")'}])
    assert query(p, {"resource": "/admin/**"}).answer == "no"
    assert query(p, {"action": "db.delete"}).answer == "no"
    request = assert_yes(p, {"action": "db.*", "resource": "/a*/**".replace("*/", "x/")})
    assert not request["action"].endswith("delete")
    assert_yes(p, {"action": "db.*", "when": 'resource.startsWith("/ad")'})


def test_nested_has_and_has_only_paths() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "a.b",
                 "when": 'has(args.meta.kind) && has(args.flag)'}])
    request = assert_yes(p, {"action": "a.b"})
    assert "flag" in request["args"] and "kind" in request["args"]["meta"]
    contradiction = policy([{"id": "r", "effect": "permit", "action": "a.b",
                             "when": 'has(args.meta.kind) && args.meta == "x"'}])
    assert query(contradiction, {"action": "a.b"}).answer == "no"


def test_numbers_beyond_json_range_are_not_requests() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "a.b", "when": "args.n > 9007199254740991"}])
    assert query(p, {"action": "a.b"}).answer == "no"
    assert [n.rule for n in never_applying_rules(p)] == ["r"]


def test_percent_encoded_examples_decide_as_printed() -> None:
    p = policy([{"id": "all", "effect": "permit", "action": "**", "resource": "/**"},
                {"id": "adm", "effect": "forbid", "action": "**", "resource": "/admin/**"}])
    answer = query(p, {"action": "fs.read", "resource": "/%61dmin"})
    assert answer.answer in ("yes", "unknown", "no")
    if answer.answer == "yes":
        assert answer.example is not None
        assert outcome(p, dict(answer.example.request)) == "permit"


def test_query_example_matches_the_query_itself() -> None:
    p = policy([{"id": "r", "effect": "permit", "action": "**", "when": 'args.x.contains("ab")'}])
    request = assert_yes(p, {"action": "a.b", "when": '!args.x.startsWith("ab") && size(args.x) < 5'})
    assert "ab" in request["args"]["x"] and not request["args"]["x"].startswith("ab")


CASELESS = "id: p\nrules:\n  - {id: r, effect: permit, action: mail.send, when: 'args.to.matches(\"(?i)^%s@corp$\")'}\n"


def test_unknown_is_an_answer_not_a_yes_or_no(tmp_path: Any) -> None:
    # A case-insensitive regex is outside the exact encoding (docs/analysis.md): read as an unknown
    # truth value, no candidate confirms, and the answer says so, in the API, in JSON and by exit code 3.
    from typer.testing import CliRunner

    from licet.cli import app

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(CASELESS % "boss")
    new.write_text(CASELESS % "chief")
    answer = query(kernel.load_policy(old.read_text()), {"action": "mail.send"})
    assert answer.answer == "unknown" and not answer.permitted and answer.example is None
    assert answer.reason is not None and "'(?i)^boss@corp$' is read as an unknown truth value" in answer.reason
    assert diff(kernel.load_policy(old.read_text()), kernel.load_policy(new.read_text())).answer == "unknown"
    runner = CliRunner()
    asked = runner.invoke(app, ["policy", "query", str(old), '{"action": "mail.send"}'])
    assert asked.exit_code == 3 and asked.output.startswith("unknown: "), asked.output
    as_json = runner.invoke(app, ["policy", "query", "--json", str(old), '{"action": "mail.send"}'])
    assert as_json.exit_code == 3, as_json.output
    assert json.loads(as_json.output)["answer"] == "unknown"
    compared = runner.invoke(app, ["policy", "diff", str(old), str(new)])
    assert compared.exit_code == 3 and compared.output.startswith("unknown: "), compared.output


def test_policy_check_cli_warns_like_validate(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from licet.cli import app

    path = tmp_path / "p.yaml"
    path.write_text("id: p\nrules:\n"
                    "  - {id: never, effect: permit, action: a.b, when: 'args.n > 5 && args.n < 3'}\n"
                    "  - {id: ask, effect: require_approval, action: a.c, approval: {role: auditor}}\n")
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "never" in result.output and "no request satisfies" in result.output
    assert "approval role 'auditor'" in result.output
