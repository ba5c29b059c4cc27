"""A decision in words on the terminal: `licet decide` and `licet policy test` print what the dashboard's
certificate viewer shows, through the same renderer (`licet.kernel.proof_text`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from licet import kernel
from licet.kernel.proof_text import proof_steps, proof_summary, rule_texts
from licet.output import escape

OUTCOME_STYLE = {"permit": "green", "forbid": "red", "deny": "red", "require_approval": "yellow"}


def certificate_view(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a decision (`Decision.to_json()`) as its certificate carries them, which is what the
    renderer reads: an approval is the one used, or the one required."""
    used, required = decision.get("approval_used"), decision.get("approval")
    return {
        "decision": decision.get("decision"),
        "proof": decision.get("proof"),
        "diagnostics": decision.get("diagnostics") or [],
        "approval": used if used else {"required": required} if required else None,
    }


def explanation(view: Mapping[str, Any], policy: kernel.Policy, indent: str = "") -> list[str]:
    """Rich-markup lines explaining a certificate (or `certificate_view` of a decision) under `policy`:
    the outcome and what the solver examined, then each rule's part with its text as written and the
    facts involved."""
    lines = [f"{indent}{escape(sentence)}" for sentence in proof_summary(view)]
    for step in proof_steps(view, rule_texts(policy.document)):
        mark = "[red]✗[/]" if step["stopped"] else "[green]✓[/]"
        lines.append(f"{indent}{mark} {escape(step['headline'])}")
        if step["condition"]:
            lines.append(f"{indent}    it says: {escape(step['condition'])}")
        lines.extend(f"{indent}    - {escape(fact)}" for fact in step["facts"])
    return lines


def outcome_headline(outcome: str, rules: list[str] | tuple[str, ...]) -> str:
    """`forbid (rules: a, b)` in the outcome's colour."""
    shown = f" (rules: {', '.join(rules)})" if rules else ""
    return f"[bold {OUTCOME_STYLE.get(outcome, 'red')}]{outcome}[/]{escape(shown)}"
