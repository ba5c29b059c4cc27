"""A request is normalised exactly once (issue 15): what the kernel records (certificates, session
history) is re-read as it is, never percent-decoded again; resources and patterns meet in one Unicode
form; and policy text is read as the docs say (surrogate pairs, YAML 1.2 line breaks, backslashes)."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import Case, policy_and_requests

from licet import kernel
from licet.kernel.redecision import redecide
from tests.conftest import NOW

EPOCH = NOW.timestamp()
SIGNER = kernel.Signer(bytes(range(32)))


def _policy(*rules: dict[str, Any], invariants: Sequence[dict[str, Any]] = (), **top: Any) -> kernel.Policy:
    return kernel.load_policy({"id": "p", "rules": list(rules), "invariants": list(invariants), **top})


def _permit_all() -> dict[str, Any]:
    return {"id": "all", "effect": "permit", "action": "**"}


def _counts(**top: Any) -> kernel.Policy:
    return _policy(_permit_all(), invariants=[
        {"id": "pub-count", "kind": "count", "action": "**", "resource": "/pub/**", "limit": 2},
        {"id": "admin-count", "kind": "count", "action": "**", "resource": "/admin/**", "limit": 100}],
        **top)


def _session(policy: kernel.Policy, resources: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Decide each request as the server does: state from stored contributions, and each permitted
    request stored as its recorded JSON and read back (as the session history table does)."""
    stored: list[tuple[float, dict[str, Any]]] = []
    out = []
    for i, resource in enumerate(resources):
        at = EPOCH + i
        state = {"summary": kernel.summary_from_contributions(policy, stored, at)}
        decision = kernel.decide(policy, {"action": "files.read", "resource": resource}, state=state, now=at)
        contributions: dict[str, Any] = {}
        if decision.outcome == "permit":
            recorded = kernel.recorded_request(json.loads(json.dumps(decision.request.to_json())))
            contributions = kernel.event_contributions(policy, recorded)
            stored.append((at, contributions))
        out.append((decision.outcome, contributions))
    return out


# --- 1. percent-decoding happens once --------------------------------------------------------------
def test_an_escape_surviving_the_decode_is_invalid_input_naming_the_resource() -> None:
    policy = _counts()
    for raw in ("/pub/%252e%252e/admin/x", "/%252e%252e", "/a%252Fb", "/a%255cb", "/a%2525b",
                "/%2561dmin", "/a%2%41"):  # the last decodes to "/a%2A", an escape of "*"
        with pytest.raises(kernel.InvalidRequest) as caught:
            kernel.decide(policy, {"action": "files.read", "resource": raw}, now=EPOCH)
        assert caught.value.field == "resource"
        assert "escape" in caught.value.message


@pytest.mark.parametrize("raw", ["/100%", "/a%zz", "/a%2", "/50%off"])
def test_a_percent_sign_not_followed_by_two_hex_digits_stays(raw: str) -> None:
    decision = kernel.decide(_counts(), {"action": "files.read", "resource": raw}, now=EPOCH)
    assert (decision.outcome, decision.request.resource) == ("permit", raw)


def test_counts_cannot_be_evaded_by_a_second_decode() -> None:
    # The issue's reproduction, with the policy option that keeps surviving escapes: each request is
    # about /pub/%2e%2e/admin/x (under /pub), and is counted there.
    outcomes = _session(_counts(resource_escapes="keep"), ["/pub/%252e%252e/admin/x"] * 3)
    assert outcomes == [("permit", {"pub-count": True}), ("permit", {"pub-count": True}), ("forbid", {})]


def test_recording_a_permitted_request_never_fails_after_the_decision() -> None:
    outcomes = _session(_counts(resource_escapes="keep"), ["/%252e%252e"])
    assert outcomes == [("permit", {})]


def test_history_events_are_read_as_recorded() -> None:
    policy = _counts(resource_escapes="keep")
    event = {"time": EPOCH - 1, "action": "files.read", "resource": "/pub/%2e%2e/admin/x"}
    history = {"history": [event, {**event, "time": EPOCH - 2}]}
    decision = kernel.decide(policy, {"action": "files.read", "resource": "/pub/y"}, state=history, now=EPOCH)
    assert (decision.outcome, decision.rules) == ("forbid", ("pub-count",))


def _certify(policy: kernel.Policy, request: dict[str, Any] | kernel.NormalisedRequest) -> dict[str, Any]:
    decision = kernel.decide(policy, request, now=NOW)
    return kernel.issue_certificate(decision, signer=SIGNER, tenant="t", issued_at=NOW,
                                    certificate_id=kernel.uuid7(NOW, os.urandom(10)))


def _admin_policy(**top: Any) -> kernel.Policy:
    return _policy({"id": "pub", "effect": "permit", "action": "files.read", "resource": "/pub/**"},
                   {"id": "no-admin", "effect": "forbid", "action": "**", "resource": "/admin/**"}, **top)


def test_honest_certificates_verify_offline() -> None:
    policy = _admin_policy(resource_escapes="keep")
    certificate = _certify(policy, {"action": "files.read", "resource": "/pub/%252e%252e/admin/keys"})
    assert (certificate["decision"], certificate["request"]["resource"]) == ("permit", "/pub/%2e%2e/admin/keys")
    check = redecide(certificate, policy)
    assert check.ok, check.detail


def test_certificates_made_before_the_change_still_redecide() -> None:
    # The kernel before issue 15 certified its decision on the once-decoded resource under a policy
    # without resource_escapes; re-deciding reads that recorded resource as it is.
    policy = _admin_policy()
    old = kernel.recorded_request({"action": "files.read", "resource": "/pub/%2e%2e/admin/keys"})
    certificate = _certify(policy, old)
    assert certificate["decision"] == "permit"
    check = redecide(certificate, policy)
    assert check.ok, check.detail
    assert kernel.all_ok(kernel.verify_certificate(certificate, [SIGNER.public_key]))


def test_a_request_is_normalised_once_by_type() -> None:
    normal = kernel.normalise_request({"action": "a.b", "resource": "/x"})
    with pytest.raises(kernel.InvalidRequest):
        kernel.normalise_request(normal)  # type: ignore[arg-type]
    assert kernel.recorded_request(normal.to_json()) == normal


def test_a_request_case_folded_for_another_policy_is_refused() -> None:
    folded = kernel.normalise_request({"action": "a.b", "resource": "/X"}, fold_case=True)
    assert folded.resource == "/x"
    with pytest.raises(kernel.InvalidRequest):
        kernel.decide(_counts(), folded, now=EPOCH)
    plain = kernel.normalise_request({"action": "a.b", "resource": "/X"})
    assert kernel.decide(_counts(resource_case="insensitive"), plain, now=EPOCH).request.resource == "/x"


# --- properties ------------------------------------------------------------------------------------
_RESOURCE_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list("/\\.%2eEfF5c1aA_ zé\u0301ßİK\u212a\u0345\u00c5\u212b")), max_size=14)
    .map(lambda s: "/" + s),
    st.text(max_size=10).map(lambda s: "/" + s),
    st.text(max_size=10).map(lambda s: "https://Host.Example" + s),
)


@settings(max_examples=400, deadline=None)
@given(resource=_RESOURCE_TEXT, fold_case=st.booleans())
@example(resource="/pub/%252e%252e/admin", fold_case=False)
@example(resource="/prive\u0301", fold_case=True)
def test_normalisation_is_idempotent(resource: str, fold_case: bool) -> None:
    raw = {"action": "a.b", "resource": resource}
    try:
        once = kernel.normalise_request(raw, fold_case=fold_case)
    except kernel.InvalidRequest:
        return
    assert kernel.normalise_request(once.to_json(), fold_case=fold_case) == once
    assert kernel.recorded_request(once.to_json()).resource == once.resource
    assert unicodedata.is_normalized("NFC", once.resource)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=policy_and_requests(stateful=True, min_requests=5, max_requests=10))
def test_the_certified_request_redecides_to_the_certified_outcome(case: Case) -> None:
    try:
        policy = kernel.load_policy(case.policy)
    except kernel.PolicyError:
        return
    for request, state, _ in case.requests:
        try:
            decision = kernel.decide(policy, request, state=state, now=NOW)
        except kernel.InvalidRequest:
            continue
        recorded = decision.request.to_json()
        assert kernel.recorded_request(recorded).resource == decision.request.resource
        if not policy.keep_escapes:  # with resource_escapes: keep only the recorded reading is idempotent
            assert kernel.normalise_request(recorded, fold_case=policy.lower_resources) == decision.request
        certificate = kernel.issue_certificate(decision, signer=SIGNER, tenant="t", issued_at=NOW,
                                               certificate_id="c")
        check = redecide(certificate, policy)
        assert check.ok, (request, check.detail)


# --- 2. loading policies as the docs say ------------------------------------------------------------
def test_json_surrogate_pairs_are_one_code_point() -> None:
    doc = {"id": "p", "rules": [{"id": "smile", "effect": "permit", "action": "**", "resource": "/\U0001f600",
                                 "when": 'args.s == "\\ud83d\\ude00"'}]}
    text = json.dumps(doc)  # ensure_ascii: "\ud83d\ude00" escapes
    assert "\\ud83d\\ude00" in text
    policy = kernel.load_policy(text, "p.json")
    assert policy.document == doc
    ok = kernel.decide(policy, {"action": "a.b", "resource": "/\U0001f600", "args": {"s": "\U0001f600"}}, now=NOW)
    assert ok.outcome == "permit"


@pytest.mark.parametrize(("text", "field"), [
    ('{"id": "p", "rules": [{"id": "r", "effect": "permit", "action": "**", "resource": "/\\ud83d"}]}',
     "rules[0].resource"),
    ('{"id": "p", "description": "\\ude00\\ud83d", "rules": []}', "description"),
    ('{"id": "p", "rules": [{"id": "r", "effect": "permit", "action": "**", "when": "args.s == \\"\\\\ud83d\\""}]}',
     "rules[0].when"),
])
def test_lone_surrogates_are_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(kernel.PolicyError) as caught:
        kernel.load_policy(text, "p.json")
    assert caught.value.field == field
    assert "surrogate" in caught.value.message


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"])
@pytest.mark.parametrize("form", ["yaml", "json"])
def test_yaml_12_line_breaks_only(char: str, form: str) -> None:
    when = f'args.s == "x{char}y"'
    doc = {"id": "p", "rules": [{"id": "r", "effect": "permit", "action": "**", "when": when}]}
    text = json.dumps(doc, ensure_ascii=False) if form == "json" else (
        f"id: p\nrules:\n  - id: r\n    effect: permit\n    action: '**'\n    when: '{when}'\n")
    policy = kernel.load_policy(text, "p." + form)
    assert policy.document == doc
    assert kernel.decide(policy, {"action": "a.b", "resource": "/", "args": {"s": f"x{char}y"}}, now=NOW).outcome == "permit"
    assert kernel.decide(policy, {"action": "a.b", "resource": "/", "args": {"s": "x y"}}, now=NOW).outcome == "deny"


def test_a_raw_nel_in_a_resource_pattern_is_a_control_character() -> None:
    with pytest.raises(kernel.PolicyError) as caught:
        kernel.load_policy("id: p\nrules:\n  - {id: r, effect: permit, action: '**', resource: \"/a\x85b\"}\n")
    assert caught.value.field == "rules[0].resource"
    assert "control" in caught.value.message


@pytest.mark.parametrize(("pattern", "matching", "other"), [
    ("\\data\\*", "/data/x", "/data/x/y"),
    ("/data\\**", "/data/x/y", "/database"),
    ("\\data\\x", "/data/x", "/data/y"),
])
def test_backslashes_in_patterns_fold_before_globs(pattern: str, matching: str, other: str) -> None:
    policy = _policy({"id": "r", "effect": "permit", "action": "**", "resource": pattern})
    assert kernel.decide(policy, {"action": "a.b", "resource": matching}, now=NOW).outcome == "permit"
    assert kernel.decide(policy, {"action": "a.b", "resource": other}, now=NOW).outcome == "deny"


def test_a_backslash_does_not_hide_a_star_inside_a_segment() -> None:
    with pytest.raises(kernel.PolicyError):
        _policy({"id": "r", "effect": "permit", "action": "**", "resource": "\\data\\*.csv"})


# --- 3. Unicode: one name, one form -------------------------------------------------------------------
def _public() -> list[dict[str, Any]]:
    return [{"id": "public", "effect": "permit", "action": "**", "resource": "/public/**"},
            {"id": "private", "effect": "forbid", "action": "**", "resource": "/public/priv\u00e9/**"}]


@pytest.mark.parametrize("resource", ["/public/prive\u0301/p.txt", "/public/priv%C3%A9/p.txt",
                                      "/public/prive%CC%81/p.txt", "/public/priv\u00e9/p.txt"])
def test_resources_are_nfc(resource: str) -> None:
    decision = kernel.decide(_policy(*_public()), {"action": "a.b", "resource": resource}, now=NOW)
    assert (decision.outcome, decision.request.resource) == ("forbid", "/public/priv\u00e9/p.txt")


def test_patterns_are_nfc() -> None:
    rules = _public()
    rules[1]["resource"] = "/public/prive\u0301/**"
    decision = kernel.decide(_policy(*rules), {"action": "a.b", "resource": "/public/priv\u00e9/x"}, now=NOW)
    assert decision.outcome == "forbid"


@pytest.mark.parametrize(("pattern", "resource"), [
    ("/stra\u00dfe/**", "/STRASSE/x"), ("/\u00e9t\u00e9/**", "/\u00c9T\u00c9/x"),
    ("/\u03c3\u03bf\u03c6\u03af\u03b1\u03c2", "/\u03a3\u039f\u03a6\u038a\u0391\u03a3"), ("/kelvin", "/\u212aELVIN"),
])
def test_insensitive_resources_are_unicode_case_folded(pattern: str, resource: str) -> None:
    policy = _policy({"id": "r", "effect": "forbid", "action": "**", "resource": pattern}, _permit_all(),
                     resource_case="insensitive")
    assert kernel.decide(policy, {"action": "a.b", "resource": resource}, now=NOW).outcome == "forbid"


# --- 4. condition literals --------------------------------------------------------------------------
@pytest.mark.parametrize(("literal", "value"), [
    ('"\\\\d"', "\\d"), ('"a\\tb"', "a\tb"), ('"\\u00e9"', "\u00e9"), ('"\\U0001F600"', "\U0001f600"),
    ('"\\x41"', "A"), ('"\\101"', "A"), ("'\\''", "'"), ('"\\`\\?"', "`?"),
])
def test_condition_string_escapes(literal: str, value: str) -> None:
    policy = _policy({"id": "r", "effect": "permit", "action": "**", "when": f"args.s == {literal}"})
    assert kernel.decide(policy, {"action": "a.b", "resource": "/", "args": {"s": value}}, now=NOW).outcome == "permit"


@pytest.mark.parametrize("literal", ['"\\d"', '"\\N{BULLET}"', '"\\u12"', '"\\ud800"', '"\\x4"', '"\\400"'])
def test_unknown_or_malformed_escapes_are_compile_errors(literal: str) -> None:
    with pytest.raises(kernel.PolicyError) as caught:
        _policy({"id": "r", "effect": "permit", "action": "**", "when": f"args.s == {literal}"})
    assert caught.value.field == "rules[0].when"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=policy_and_requests(min_requests=1, max_requests=1), ascii_only=st.booleans())
def test_policy_text_reads_as_the_document_it_encodes(case: Case, ascii_only: bool) -> None:
    # JSON with surrogate-pair escapes (ensure_ascii) or raw NEL, U+2028 and U+2029 is the same policy.
    try:
        parsed = kernel.load_policy(case.policy)
    except kernel.PolicyError:
        return
    text = kernel.load_policy(json.dumps(case.policy, ensure_ascii=ascii_only), "p.json")
    assert (text.document, text.hash) == (parsed.document, parsed.hash)
