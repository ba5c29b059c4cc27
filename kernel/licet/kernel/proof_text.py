"""A certificate's proof in words: pure functions from the kernel's proof JSON (and, when known, the
policy document's rules as written) to sentences a person reads.

Nothing here is inferred: each sentence restates a field of the proof or a rule's text from the
policy version the certificate names. A proof shape this module does not know is said to be unknown,
never guessed at (its JSON is shown next to the words).

One renderer for every reader: the dashboard's certificate viewer, `licet decide` and `licet policy test`.
Pure (no I/O), so it lives in the kernel, which every other part already depends on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, TypedDict


class RuleStep(TypedDict):
    """One rule's part in the proof: what it did, what it says (as written) and the facts involved."""

    rule: str
    headline: str
    condition: str
    facts: list[str]
    stopped: bool  # the rule stopped the request (forbid, or a permit that failed)


def number_text(value: Any) -> str:
    """A numeric fact's value as the kernel wrote it (an integer or an exact "p/q" fraction) in
    decimals when the fraction has a finite decimal expansion, else as the fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return str(value)
    try:
        exact = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return str(value)
    if exact.denominator == 1:
        return str(exact.numerator)
    denominator, twos, fives = exact.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator != 1:  # 1/3 has no finite decimal form: keep the exact fraction
        return f"{exact.numerator}/{exact.denominator}"
    places = max(twos, fives)
    digits = str(abs(int(exact * 10**places))).rjust(places + 1, "0")
    return f"{'-' if exact < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def fact_text(fact: Any) -> str:
    """One fact of a proof: `label: true/false` for a test, `label = value` for a number."""
    if not isinstance(fact, Mapping) or "fact" not in fact:
        return f"(a fact Licet cannot read: {fact!r})"
    label, value = str(fact["fact"]), fact.get("value")
    if isinstance(value, bool):
        return f"{label}: {'true' if value else 'false'}"
    if value == "absent or not a number":
        return f"{label} is absent or not a number"
    return f"{label} = {number_text(value)}"


def _words(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def rule_texts(document: Mapping[str, Any]) -> dict[str, str]:
    """What each rule and invariant of a policy document says, as written: its actions, resources,
    condition, and an invariant's sum, limit and window."""
    texts: dict[str, str] = {}
    for section in ("rules", "invariants"):
        for item in document.get(section) or []:
            if not isinstance(item, Mapping) or "id" not in item:
                continue
            parts = []
            if "kind" in item:
                parts.append(f"a {item['kind']} invariant")
            for key, name in (("action", "actions"), ("resource", "resources"), ("source", "source"),
                              ("sink", "sink")):
                if key in item:
                    parts.append(f"{name} {_words(item[key])}")
            if "sum" in item:
                parts.append(f"sum of {item['sum']}")
            if "limit" in item:
                parts.append(f"limit {item['limit']}")
            if "window" in item:
                parts.append(f"window {item['window']}")
            parts.append(f"when {item['when']}" if "when" in item else "no condition beyond its patterns")
            texts[str(item["id"])] = "; ".join(parts)
    return texts


_VERBS = {"permit": "permits it", "require_approval": "requires approval for it", "forbid": "forbids it"}


def _witness(step: Any, written: Mapping[str, str]) -> RuleStep:
    rule = str(step.get("rule", "?")) if isinstance(step, Mapping) else "?"
    effect = str(step.get("effect", "?")) if isinstance(step, Mapping) else "?"
    facts = step.get("facts", []) if isinstance(step, Mapping) else []
    invariant = isinstance(step, Mapping) and step.get("invariant") is True
    what = "Invariant" if invariant else "Rule"
    verb = _VERBS.get(effect, f"has effect {effect}")
    needed = "the facts that made it apply" if facts else "it applies to every request its patterns match"
    return RuleStep(rule=rule, headline=f"{what} {rule} {verb}: {needed}.",
                    condition=written.get(rule, ""), facts=[fact_text(f) for f in facts],
                    stopped=effect == "forbid")


def _refutation(step: Any, written: Mapping[str, str]) -> RuleStep:
    rule = str(step.get("rule", "?")) if isinstance(step, Mapping) else "?"
    failed = step.get("failed", []) if isinstance(step, Mapping) else []
    return RuleStep(rule=rule, headline=f"Permit rule {rule} does not apply: the facts that stopped it.",
                    condition=written.get(rule, ""), facts=[fact_text(f) for f in failed], stopped=True)


def proof_steps(certificate: Mapping[str, Any], written: Mapping[str, str]) -> list[RuleStep]:
    """Each rule's part in the certificate's proof: the witnessing rules and the facts they needed, or
    each refuted permit rule and the minimised core of facts that stopped it. `written` holds the rules'
    texts (`rule_texts`); a rule missing from it is shown without its text."""
    proof = certificate.get("proof")
    if not isinstance(proof, Mapping):
        return []
    kind = proof.get("kind")
    if kind == "witness":
        return [_witness(step, written) for step in proof.get("witnesses") or []]
    if kind == "no_permit_applies":
        return [_refutation(step, written) for step in proof.get("refutations") or []]
    return []


def proof_summary(certificate: Mapping[str, Any]) -> list[str]:
    """The sentences around the rules: the outcome, what the solver examined, approvals used or
    refused, permit rules about other resources, and any proof shape Licet does not know."""
    proof = certificate.get("proof")
    decision = certificate.get("decision", "?")
    if not isinstance(proof, Mapping):
        return [f"The certificate's proof is not a JSON object, so it cannot be put into words ({decision})."]
    lines = []
    kind = proof.get("kind")
    candidates = proof.get("candidates")
    if isinstance(candidates, list):
        solver = f" ({proof['solver']})" if "solver" in proof else ""
        lines.append(f"The solver{solver} examined {len(candidates)} candidate rule(s): "
                     f"{_words(candidates) or 'none'}; {proof.get('indexed_out', '?')} other rule(s) were set "
                     "aside by the index because their action or resource patterns cannot match.")
    if kind == "witness":
        lines.append(f"Outcome {decision}: the rules below apply (forbid wins over require_approval, which "
                     "wins over permit).")
    elif kind == "no_permit_applies":
        if proof.get("refutations"):
            lines.append(f"Outcome {decision}: no permit rule applies; each candidate permit rule below was "
                         "stopped by the facts shown (a minimal set: changing any one could matter).")
        else:
            lines.append(f"Outcome {decision}: no permit rule is about this action and resource.")
        near = proof.get("excluded_by_resource")
        if near:
            lines.append(f"Permit rules about this action but other resources: {_words(near)}.")
    else:
        lines.append(f"This proof is of kind {kind!r}, which Licet cannot put into words; its JSON is "
                     "shown with it.")
    approval = certificate.get("approval")
    if isinstance(approval, Mapping) and "id" in approval:
        lines.append(f"Permitted with approval {approval['id']}, granted by "
                     f"{_words(approval.get('approvers') or []) or 'nobody named'}.")
    elif isinstance(approval, Mapping) and isinstance(approval.get("required"), Mapping):
        needs = approval["required"]
        lines.append(f"Needs {needs.get('quorum') or 1} approval(s) by role {needs.get('role') or 'any approver'}"
                     + (f" within {needs['ttl_seconds']} s." if needs.get("ttl_seconds") else "."))
    refused = proof.get("approval_refused")
    if isinstance(refused, Mapping):
        lines.append(f"The approval presented, {refused.get('id')}, was refused ({refused.get('code')}): "
                     f"{refused.get('reason')}; so the certificate denies.")
    for note in certificate.get("diagnostics") or []:
        lines.append(f"Diagnostic: {note}.")
    return lines


def field_rows(certificate: Mapping[str, Any], order: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """Every top-level field of the certificate, the fields in `order` first, the rest as stored."""
    first = [name for name in order if name in certificate]
    return [(name, certificate[name]) for name in [*first, *(k for k in certificate if k not in first)]]


def counterexample_value_text(steps: Any, key: str, value: Any) -> str:
    """A plan counterexample's value (`key` like `steps[1].args.amount`) as a person reads it: a symbolic
    int or real argument of `steps` in decimals (the kernel writes exact fractions such as "949999/100"),
    anything else as JSON. One renderer for `licet plan verify` and the dashboard's plan playground."""
    index, _, name = key.partition("].")
    spec: Any = None
    try:
        spec = steps[int(index.removeprefix("steps["))]
        for part in name.split("."):
            spec = spec[part]
    except (ValueError, IndexError, KeyError, TypeError):
        spec = None
    if isinstance(spec, dict) and spec.get("symbolic") in ("int", "real"):
        return number_text(value)
    return json.dumps(value)
