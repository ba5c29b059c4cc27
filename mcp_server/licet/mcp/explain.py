"""A certified decision in words: what was asked, what was decided, and the proof behind it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_OUTCOME = {
    "permit": "PERMITTED",
    "forbid": "FORBIDDEN",
    "deny": "DENIED (default deny: no permit rule applies)",
    "require_approval": "NOT YET PERMITTED: a person must approve it first",
}


def _facts(facts: Any) -> str:
    parts = []
    for item in facts or ():
        if isinstance(item, Mapping):
            value = item.get("value")
            fact = str(item.get("fact", "?"))
            if value is True:
                parts.append(fact)
            elif value is False:
                parts.append(f"NOT ({fact})")
            else:
                parts.append(f"{fact} = {value!r}")
    return "; ".join(parts) if parts else "no facts needed"


def proof_lines(decision: str, proof: Mapping[str, Any]) -> list[str]:
    """The proof's steps, one sentence each."""
    lines: list[str] = []
    candidates = list(proof.get("candidates", ()))
    skipped = proof.get("indexed_out")
    lines.append(f"The rule index left {len(candidates)} candidate rule(s)/invariant(s) "
                 f"({', '.join(candidates) or 'none'})"
                 + (f"; {skipped} other(s) cannot match this action or resource." if skipped is not None else "."))
    kind = proof.get("kind")
    if kind == "witness":
        for witness in proof.get("witnesses", ()):
            what = "invariant" if witness.get("invariant") else "rule"
            lines.append(f"{what.capitalize()} '{witness.get('rule')}' ({witness.get('effect')}) applies, "
                         f"because: {_facts(witness.get('facts'))}.")
    elif kind == "no_permit_applies":
        refutations = list(proof.get("refutations", ()))
        if not refutations:
            lines.append("No permit rule is written for this action and resource, so the default deny holds.")
        for refutation in refutations:
            lines.append(f"Permit rule '{refutation.get('rule')}' does not apply, because it needs the opposite of: "
                         f"{_facts(refutation.get('failed'))}.")
        near = list(proof.get("excluded_by_resource", ()))
        if near:
            lines.append(f"Permit rule(s) {', '.join(near)} cover this action but not this resource.")
    if isinstance(proof.get("approval"), Mapping):
        approval = proof["approval"]
        lines.append(f"Approval {approval.get('id')} by {', '.join(approval.get('approvers', ()))} "
                     "was presented and turned the require_approval into a permit.")
    if proof.get("solver"):
        lines.append(f"Decided by {proof['solver']}; anyone can re-check it by re-running the kernel on the "
                     "certificate's policy and request.")
    return lines


def explain(certificate: Mapping[str, Any]) -> str:
    """A few sentences a person (or a model) can read."""
    request = certificate.get("request", {})
    principal = request.get("principal", {})
    policy = certificate.get("policy", {})
    decision = str(certificate.get("decision"))
    rules = list(certificate.get("rules", ()))
    lines = [
        f"Certificate {certificate.get('id')} (issued {certificate.get('issued_at')}, "
        f"key {certificate.get('key_id')}).",
        f"Request: {principal.get('id')} asked to do '{request.get('action')}' on '{request.get('resource')}' "
        f"with args {request.get('args', {})}.",
        f"Policy: {policy.get('id')} version {policy.get('version')} ({policy.get('hash')}).",
        f"Decision: {_OUTCOME.get(decision, decision)}"
        + (f" — by rule(s) {', '.join(rules)}." if rules else "."),
    ]
    lines += proof_lines(decision, certificate.get("proof", {}))
    for note in certificate.get("diagnostics", ()) or ():
        lines.append(f"Note: {note}")
    if certificate.get("delegation"):
        lines.append(f"Acted under delegation: {certificate['delegation']}.")
    return "\n".join(lines)
