"""The proof in words (licet/kernel/proof_text.py) restates the kernel's proof JSON faithfully: checked on
real decisions of the example policies, and on arbitrary numbers for the exact decimals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from licet import kernel
from licet.kernel.proof_text import fact_text, field_rows, number_text, proof_steps, proof_summary, rule_texts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def _certificate(request_file: str) -> dict[str, Any]:
    policy = kernel.load_policy((EXAMPLES / "payments-agent.yaml").read_text(), "payments-agent.yaml")
    request = json.loads((EXAMPLES / "requests" / "payments-agent" / request_file).read_text())
    state_file = EXAMPLES / "requests" / "payments-agent" / request_file.replace(".json", ".state.json")
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    decision = kernel.decide(policy, request, state=state, now=NOW)
    return kernel.issue_certificate(decision, signer=kernel.Signer(bytes(32)), tenant="t", issued_at=NOW,
                                    certificate_id="c-1")


def _written() -> dict[str, str]:
    policy = kernel.load_policy((EXAMPLES / "payments-agent.yaml").read_text(), "payments-agent.yaml")
    return rule_texts(policy.document)


@given(st.fractions(max_denominator=10**6))
def test_a_number_reads_back_as_the_same_exact_value(value: Fraction) -> None:
    text = number_text(str(value) if value.denominator != 1 else value.numerator)
    assert Fraction(text) == value


def test_numbers_are_decimals_when_they_end_and_fractions_when_they_do_not() -> None:
    assert number_text("8401/2") == "4200.5"
    assert number_text("949999/100") == "9499.99"
    assert number_text("-7/4") == "-1.75"
    assert number_text("1/3") == "1/3"
    assert number_text(800) == "800"


def test_facts_read_as_the_kernel_wrote_them() -> None:
    assert fact_text({"fact": "args.amount", "value": 800}) == "args.amount = 800"
    assert fact_text({"fact": "context.mfa", "value": False}) == "context.mfa: false"
    assert fact_text({"fact": "args.amount", "value": "absent or not a number"}) == \
        "args.amount is absent or not a number"
    assert "cannot read" in fact_text(["not", "a fact"])


def test_a_permit_names_the_witnessing_rule_its_text_and_the_facts_it_needed() -> None:
    certificate = _certificate("02-transfer-small.json")
    steps = proof_steps(certificate, _written())
    assert [s["rule"] for s in steps] == ["transfer"]
    assert steps[0]["headline"].startswith("Rule transfer permits it")
    assert "args.amount > 0" in steps[0]["condition"] and "payments.transfer" in steps[0]["condition"]
    facts = [f["fact"] for f in certificate["proof"]["witnesses"][0]["facts"]]
    assert len(steps[0]["facts"]) == len(facts) and "args.amount = 250" in steps[0]["facts"]
    assert not steps[0]["stopped"]


def test_a_deny_names_each_refuted_permit_rule_and_the_core_that_stopped_it() -> None:
    certificate = _certificate("10-refund-more-than-charged.json")
    assert certificate["decision"] == "deny"
    steps = proof_steps(certificate, _written())
    assert [s["rule"] for s in steps] == ["refund"]
    assert steps[0]["stopped"] and "does not apply" in steps[0]["headline"]
    assert "args.amount <= args.charged_amount" in steps[0]["condition"]
    assert steps[0]["facts"] == ["args.charged_amount = 129.9", "args.amount = 200"]
    assert any("no permit rule applies" in line for line in proof_summary(certificate))


def test_a_forbid_by_an_invariant_says_so_with_the_session_sum() -> None:
    certificate = _certificate("18-transfer-over-daily-budget.json")
    steps = proof_steps(certificate, _written())
    assert steps[0]["headline"].startswith("Invariant daily-transfer-budget forbids it")
    assert "limit 10000" in steps[0]["condition"] and "window 24h" in steps[0]["condition"]
    assert "daily-transfer-budget: sum in window = 9499.99" in steps[0]["facts"]


def test_approval_needed_and_diagnostics_are_stated() -> None:
    certificate = _certificate("03-transfer-large-needs-approval.json")
    summary = proof_summary(certificate)
    assert any(line.startswith("Needs 2 approval(s) by role approver") for line in summary)
    absent = _certificate("07-transfer-country-absent.json")
    assert "Diagnostic: args.country: absent (a rule reads it as string)." in proof_summary(absent)


def test_no_rule_text_is_invented_when_the_policy_is_unknown() -> None:
    steps = proof_steps(_certificate("02-transfer-small.json"), {})
    assert steps[0]["condition"] == ""


def test_an_unknown_proof_kind_is_said_to_be_unknown() -> None:
    certificate = {**_certificate("02-transfer-small.json"), "proof": {"kind": "from-the-future"}}
    assert proof_steps(certificate, _written()) == []
    assert any("cannot put into words" in line for line in proof_summary(certificate))


def test_every_field_is_listed_once() -> None:
    certificate = _certificate("02-transfer-small.json")
    rows = field_rows(certificate, ("id", "decision", "missing"))
    assert [name for name, _ in rows][:2] == ["id", "decision"]
    assert sorted(name for name, _ in rows) == sorted(certificate)
