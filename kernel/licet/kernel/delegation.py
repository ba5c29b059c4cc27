"""Delegation: grants that let a delegate act for an issuer within a scope, and their checks.

A child grant must attenuate its parent: its scope permits nothing the parent's does not (proved
by Z3, see `kernel.analysis.permits_more`), it expires no later, and the parent allowed one more
level. A delegated request is permitted only if the issuer's policy and every scope in the chain
permit it; an expired, revoked or non-attenuating link anywhere denies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

from licet.kernel.analysis import DEFAULT_BUDGET, Budget, Example, permits_more
from licet.kernel.decision import Decision, PresentedApproval, decide, epoch_seconds
from licet.kernel.errors import PolicyError
from licet.kernel.policy import Policy, load_policy


@dataclass(frozen=True)
class Grant:
    """Issuer lets delegate act within `scope` until `expires_at`, re-delegating `max_depth` more times."""

    id: str
    issuer: str
    delegate: str
    scope: Policy
    expires_at: float
    max_depth: int = 0
    parent: str | None = None
    revoked: bool = False
    # Attenuation verdicts against parents already checked (keyed by parent id and scope hash).
    checked: dict[tuple[str, str], Attenuation] = field(default_factory=dict, compare=False, repr=False)

    def reference(self) -> dict[str, Any]:
        """What a certificate records of this link."""
        return {"id": self.id, "issuer": self.issuer, "delegate": self.delegate,
                "scope_hash": self.scope.hash, "expires_at": self.expires_at, "parent": self.parent}


@dataclass(frozen=True)
class Attenuation:
    """Whether a child grant attenuates its parent ("attenuates": proved), "widens" (with the
    reasons, and a confirmed request showing a wider scope), or "unknown" (the scope implication
    could not be decided within the budget: never treated as attenuating)."""

    ok: bool
    reasons: tuple[str, ...] = ()
    counterexample: Example | None = None
    answer: Literal["attenuates", "widens", "unknown"] = "attenuates"

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet delegation check --json`."""
        return {"answer": self.answer, "ok": self.ok, "reasons": list(self.reasons),
                "counterexample": self.counterexample.to_json() if self.counterexample else None}


def _time(value: Any, where: str, file: str) -> float:
    if isinstance(value, bool):
        raise PolicyError("must be epoch seconds or an ISO 8601 time", file=file, field=where)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PolicyError(f"not an ISO 8601 time: {value!r}", file=file, field=where) from exc
        if moment.tzinfo is None:
            raise PolicyError("the time needs a zone (e.g. Z)", file=file, field=where)
        return moment.timestamp()
    raise PolicyError("must be epoch seconds or an ISO 8601 time", file=file, field=where)


def load_grant(document: Mapping[str, Any], file: str = "<grant>") -> Grant:
    """A grant from its JSON/YAML form: id, issuer, delegate, scope (rules), expires_at,
    max_depth, parent."""
    allowed = {"id", "issuer", "delegate", "scope", "expires_at", "max_depth", "parent", "revoked"}
    if not isinstance(document, Mapping):
        raise PolicyError("a grant is a mapping", file=file)
    for key in document:
        if key not in allowed:
            raise PolicyError(f"unknown field {key!r}", file=file, field=key)
    for key in ("id", "issuer", "delegate", "scope", "expires_at"):
        if key not in document:
            raise PolicyError(f"missing required field {key!r}", file=file, field=key)
    for key in ("id", "issuer", "delegate"):
        if not isinstance(document[key], str) or not document[key]:
            raise PolicyError("must be a non-empty string", file=file, field=key)
    scope = document["scope"]
    rules = scope.get("rules") if isinstance(scope, Mapping) else scope
    if not isinstance(rules, list):
        raise PolicyError("scope is a list of rules (or a mapping with rules)", file=file, field="scope")
    depth = document.get("max_depth", 0)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise PolicyError("must be a non-negative integer", file=file, field="max_depth")
    parent = document.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise PolicyError("must be a grant id", file=file, field="parent")
    policy = load_policy({"id": f"scope.{document['id']}", "rules": rules}, file)
    return Grant(document["id"], document["issuer"], document["delegate"], policy,
                 _time(document["expires_at"], "expires_at", file), depth, parent,
                 bool(document.get("revoked", False)))


def check_attenuation(parent: Grant, child: Grant, *, budget: Budget = DEFAULT_BUDGET) -> Attenuation:
    """Prove `child` attenuates `parent` (scope implication by Z3, expiry, depth, chain link)."""
    key = (parent.id, parent.scope.hash)
    if key in child.checked:
        return child.checked[key]
    reasons = []
    if child.issuer != parent.delegate:
        reasons.append(f"{child.issuer} re-delegates, but {parent.id} was granted to {parent.delegate}")
    if child.parent not in (None, parent.id):
        reasons.append(f"{child.id} names {child.parent} as its parent, not {parent.id}")
    if child.expires_at > parent.expires_at:
        reasons.append(f"{child.id} expires after its parent {parent.id}")
    if parent.max_depth < 1:
        reasons.append(f"{parent.id} allows no further delegation")
    elif child.max_depth > parent.max_depth - 1:
        reasons.append(f"{child.id} allows {child.max_depth} more levels; {parent.id} leaves "
                       f"{parent.max_depth - 1}")
    wider = permits_more(child.scope, parent.scope, budget=budget)
    if wider.answer == "yes":
        reasons.append(f"{child.id}'s scope permits a request {parent.id}'s scope does not")
    elif wider.answer == "unknown":
        reasons.append(f"could not prove that {child.id}'s scope stays within {parent.id}'s "
                       f"(unknown: {wider.reason})")
    answer: Literal["attenuates", "widens", "unknown"] = (
        "attenuates" if not reasons else "unknown" if wider.answer == "unknown" and len(reasons) == 1
        else "widens")
    verdict = Attenuation(not reasons, tuple(reasons), wider.example, answer)
    child.checked[key] = verdict
    return verdict


def chain_problems(chain: Sequence[Grant], *, issuer: str, agent: str, now: float) -> list[str]:
    """Why a chain of grants (root first) cannot carry `agent` acting for `issuer` now ([] if it can)."""
    if not chain:
        return ["the delegation chain is empty"]
    problems = []
    if chain[0].issuer != issuer:
        problems.append(f"{chain[0].id} was issued by {chain[0].issuer}, not {issuer}")
    if chain[-1].delegate != agent:
        problems.append(f"{chain[-1].id} delegates to {chain[-1].delegate}, not {agent}")
    for grant in chain:
        if grant.revoked:
            problems.append(f"{grant.id} is revoked")
        if grant.expires_at <= now:
            problems.append(f"{grant.id} has expired")
    for parent, child in pairwise(chain):
        verdict = check_attenuation(parent, child)
        problems += [f"{child.id} does not attenuate {parent.id}: {r}" for r in verdict.reasons]
    return problems


def descendants(grants: Iterable[Grant], grant_id: str) -> set[str]:
    """`grant_id` and every grant issued under it, transitively: what revoking it revokes."""
    children: dict[str, list[str]] = {}
    for grant in grants:
        if grant.parent is not None:
            children.setdefault(grant.parent, []).append(grant.id)
    out, stack = set(), [grant_id]
    while stack:
        current = stack.pop()
        if current not in out:
            out.add(current)
            stack.extend(children.get(current, []))
    return out


def decide_delegated(policy: Policy, request: Mapping[str, Any], chain: Sequence[Grant], *, agent: str,
                     now: datetime | float, state: Mapping[str, Any] | None = None,
                     approval: PresentedApproval | None = None) -> Decision:
    """Decide a request `agent` makes for the issuer (the request's principal) through `chain`.

    Permitted only if the issuer's policy permits it and every scope in the chain does; any bad
    link denies. The decision (and so the certificate) records the chain.
    """
    at = epoch_seconds(now)
    base = decide(policy, request, state=state, now=at, approval=approval)
    links = tuple(g.reference() for g in chain)
    issuer = str(base.request.principal.get("id", ""))
    problems = chain_problems(chain, issuer=issuer, agent=agent, now=at)
    if not problems and base.outcome in ("permit", "require_approval"):
        for grant in chain:
            inside = decide(grant.scope, request, now=at)
            if inside.outcome != "permit":
                problems.append(f"outside the scope of {grant.id} ({inside.outcome})")
    proof = {**base.proof, "delegation": {"agent": agent, "chain": list(links), "problems": problems}}
    if problems and base.outcome != "forbid":
        return replace(base, outcome="deny", rules=(), proof=proof, approval=None, delegation=links)
    return replace(base, proof=proof, delegation=links)
