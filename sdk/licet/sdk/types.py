"""Typed results of SDK calls."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DecisionResult:
    """A certified decision: the outcome, its proof and the signed certificate."""

    decision: str
    rules: tuple[str, ...]
    proof: dict[str, Any]
    certificate: dict[str, Any]
    certificate_id: str
    log_index: int | None = None
    diagnostics: tuple[str, ...] = ()
    replayed: bool = False
    approval_id: str | None = None

    @property
    def permitted(self) -> bool:
        """Whether the action may go ahead."""
        return self.decision == "permit"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DecisionResult:
        """From a decide response (server or local)."""
        approval = body.get("approval") if isinstance(body.get("approval"), dict) else {}
        return cls(str(body["decision"]), tuple(body.get("rules", ())), dict(body.get("proof", {})),
                   copy.deepcopy(body["certificate"]), str(body["certificate_id"]), body.get("log_index"),
                   tuple(body.get("diagnostics", ())), bool(body.get("replayed", False)),
                   approval.get("id") if approval else None)


@dataclass(frozen=True)
class PlanResult:
    """A plan verdict: safe, unsafe (with the first failing step) or needs_approval."""

    verdict: str
    steps_checked: int
    counterexample: dict[str, Any] | None = None
    approval_steps: tuple[int, ...] = ()
    proof: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        """Whether every step is permitted for every value of its symbolic arguments."""
        return self.verdict == "safe"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PlanResult:
        """From a plan verdict's JSON."""
        return cls(str(body["verdict"]), int(body.get("steps_checked", 0)), body.get("counterexample"),
                   tuple(body.get("approval_steps", ()) or ()), dict(body.get("proof", {})), dict(body))
