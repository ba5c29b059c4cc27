"""Decisions: `decide` a request against a policy, with Z3's proof of the outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Literal

import z3

from licet.kernel import facts as F
from licet.kernel.compiler import Bucket, CompiledPolicy, FactKey, Verdict, compiled
from licet.kernel.conditions import MACRO_BOUND, Attr
from licet.kernel.errors import InvalidRequest
from licet.kernel.numbers import json_number
from licet.kernel.policy import Approval, Invariant, Policy, Rule
from licet.kernel.requests import NormalisedRequest, folded_for, normalise_request, normalise_resource, request_hash

Outcome = Literal["permit", "forbid", "require_approval", "deny"]
SOLVER = f"z3 {z3.get_version_string()}"


@dataclass(frozen=True)
class PresentedApproval:
    """A granted approval the caller (the server) has validated and consumed for this request."""

    id: str
    request_hash: str
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The outcome for one request, the rules that determined it, and the proof."""

    outcome: Outcome
    rules: tuple[str, ...]
    proof: Mapping[str, Any]
    request: NormalisedRequest
    request_hash: str
    policy_id: str
    policy_version: str | None
    policy_hash: str
    diagnostics: tuple[str, ...] = ()
    approval: Approval | None = None
    approval_used: PresentedApproval | None = None
    decided_at: float = 0.0
    session: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    delegation: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The decision as printed by `licet decide --json` and returned by the API."""
        return {
            "decision": self.outcome,
            "rules": list(self.rules),
            "proof": self.proof,
            "request": self.request.to_json(),
            "request_hash": self.request_hash,
            "policy": {"id": self.policy_id, "version": self.policy_version, "hash": self.policy_hash},
            "diagnostics": list(self.diagnostics),
            "approval": self.approval.to_json() if self.approval else None,
            "approval_used": None if self.approval_used is None else {
                "id": self.approval_used.id, "approvers": list(self.approval_used.approvers)},
            "session": {k: dict(v) for k, v in self.session.items()},
            "delegation": [dict(link) for link in self.delegation] or None,
        }


def epoch_seconds(now: datetime | float | int) -> float:
    """`now` as epoch seconds; naive datetimes are refused (they hide a time zone bug)."""
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.timestamp()
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError("now must be a datetime or epoch seconds")
    return float(now)


def normalised(policy: Policy, request: Mapping[str, Any] | NormalisedRequest) -> NormalisedRequest:
    """A raw request normalised for `policy` (decoded once), or a normalised one as it is (only
    case-folded when the policy is case-insensitive; never decoded again)."""
    if isinstance(request, NormalisedRequest):
        return folded_for(request, policy.lower_resources)
    return normalise_request(request, fold_case=policy.lower_resources, keep_escapes=policy.keep_escapes)


def decide(policy: Policy, request: Mapping[str, Any] | NormalisedRequest, *,
           state: Mapping[str, Any] | None = None, now: datetime | float,
           approval: PresentedApproval | None = None) -> Decision:
    """Decide `request` (raw, or already normalised) under `policy` (forbid > require_approval >
    permit > deny), with proof."""
    at = epoch_seconds(now)
    req = normalised(policy, request)
    cp = compiled(policy)
    indices, misses = cp.candidates(req.action, req.resource)
    bucket = cp.bucket(indices)
    subject = F.Subject(req.principal, req.action, req.resource, req.args, req.context)
    refuse_overlong(cp, bucket, subject)
    involved = [item.invariant for item in bucket.items if item.invariant is not None]
    inv_state = invariant_state(cp, involved, subject, state, at)
    verdict, values = cp.evaluate(bucket, subject, inv_state, explain=_explain)
    outcome, winners = _outcome(bucket, verdict)
    digest = request_hash(req)
    used = None
    if outcome == "require_approval" and approval is not None and approval.request_hash == digest:
        outcome, used = "permit", approval
    total = len(policy.rules) + len(policy.invariants)
    proof = _proof(cp, bucket, verdict, values, outcome, winners, total - len(indices))
    if outcome == "deny":
        # Permit rules the index set aside for their resource prefix are the near misses.
        near = [policy.rules[i].id for i in misses
                if i < len(policy.rules) and policy.rules[i].effect == "permit"]
        proof["excluded_by_resource"] = sorted(near)
    if used is not None:
        proof = {**proof, "approval": {"id": used.id, "approvers": list(used.approvers)}}
    approval_spec = None
    if outcome == "require_approval":
        approval_spec = _merge_approvals([policy.rule(w) for w in winners])
    return Decision(
        outcome, winners, proof, req, digest, policy.id, policy.version, policy.hash,
        _diagnostics(bucket, values, subject), approval_spec, used, at, _summary(inv_state),
    )


def refuse_overlong(cp: CompiledPolicy, bucket: Bucket, subject: F.Subject, where: str = "") -> None:
    """Raise InvalidRequest naming the field when a matching rule or invariant iterates (`all`,
    `exists`) over a list longer than the bound the macros are encoded for."""
    found = cp.overlong(bucket, subject)
    if found is not None:
        attr, length = found
        raise InvalidRequest(where + attr.name, f"a list of {length} elements, but this policy's list "
                                                f"macros (all, exists) read at most {MACRO_BOUND}")


def involved_invariants(policy: Policy, request: Mapping[str, Any] | NormalisedRequest) -> tuple[str, ...]:
    """The invariants whose session facts deciding `request` reads (a caller may skip loading
    session state when there are none)."""
    req = normalised(policy, request)
    cp = compiled(policy)
    bucket = cp.bucket(cp.candidates(req.action, req.resource)[0])
    return tuple(item.invariant.id for item in bucket.items if item.invariant is not None)


_PRECEDENCE: tuple[Outcome, ...] = ("forbid", "require_approval", "permit")


def _explain(bucket: Bucket, applying: list[str]) -> dict[str, bool]:
    effects = {item.id: item.effect for item in bucket.items}
    for effect in _PRECEDENCE:
        chosen = [i for i in applying if effects[i] == effect]
        if chosen:
            return dict.fromkeys(chosen, True)
    return {item.id: False for item in bucket.items if item.effect == "permit"}


def _outcome(bucket: Bucket, verdict: Verdict) -> tuple[Outcome, tuple[str, ...]]:
    # Rules and violated invariants alike, by effect: forbid > require_approval > permit > deny.
    effects = {item.id: item.effect for item in bucket.items}
    applying = verdict.applying
    for effect in _PRECEDENCE:
        chosen = sorted(i for i in applying if effects[i] == effect)
        if chosen:
            return effect, tuple(chosen)
    return "deny", ()


def _merge_approvals(rules: Sequence[Rule | Invariant]) -> Approval:
    # Several approval rules (or invariants) apply: the strictest requirement of each kind wins.
    quorums = [r.approval.quorum for r in rules if r.approval and r.approval.quorum]
    ttls = [r.approval.ttl_seconds for r in rules if r.approval and r.approval.ttl_seconds]
    roles = sorted({r.approval.role for r in rules if r.approval and r.approval.role})
    return Approval(max(quorums) if quorums else None, ",".join(roles) if roles else None,
                    min(ttls) if ttls else None)


def _render_fact(cp: CompiledPolicy, key: FactKey, values: Mapping[FactKey, Any],
                 subject: F.Subject | None = None) -> dict[str, Any]:
    fact = cp.facts[key]
    value = values[key]
    if fact.numeric:
        shown: Any = "absent or not a number" if value is None else json_number(value)
        return {"fact": fact.label, "value": shown}
    return {"fact": fact.label, "value": bool(value)}


def _proof(cp: CompiledPolicy, bucket: Bucket, verdict: Verdict, values: Mapping[FactKey, Any],
           outcome: Outcome, winners: tuple[str, ...], indexed_out: int) -> dict[str, Any]:
    effects = {item.id: item.effect for item in bucket.items}
    invariants = {item.id for item in bucket.items if item.invariant is not None}
    proof: dict[str, Any] = {
        "solver": SOLVER,
        "candidates": [item.id for item in bucket.items],
        "indexed_out": indexed_out,
    }
    if outcome == "deny":
        proof["kind"] = "no_permit_applies"
        proof["refutations"] = [
            {"rule": rid, "failed": [_render_fact(cp, k, values) for k in verdict.cores[rid]]}
            for rid in sorted(verdict.cores)
        ]
    else:
        proof["kind"] = "witness"
        proof["witnesses"] = [
            {"rule": rid, "effect": effects[rid], "invariant": rid in invariants,
             "facts": [_render_fact(cp, k, values) for k in verdict.cores.get(rid, ())]}
            for rid in winners
        ]
    return proof


def _diagnostics(bucket: Bucket, values: Mapping[FactKey, Any], subject: F.Subject) -> tuple[str, ...]:
    notes = []
    for fact in bucket.facts:
        if fact.key[0] != "ok" or values[fact.key] or fact.attr is None:
            continue
        if _beyond_list(fact.attr, subject):
            continue  # a macro's slot past the end of the list: nothing was read there
        observed = subject.lookup(fact.attr)
        kind = fact.label.rsplit(" ", 1)[-1]
        if observed is F.Missing:
            notes.append(f"{fact.attr.name}: absent (a rule reads it as {kind})")
        else:
            notes.append(f"{fact.attr.name}: expected {kind}, got {_json_type(observed)}")
    return tuple(notes)


def _beyond_list(attr: Attr, subject: F.Subject) -> bool:
    """Whether `attr` is below a list element the request does not have (`args.to[5]` of 3)."""
    for i, name in enumerate(attr.fields):
        if name.startswith("[") and subject.lookup(Attr(attr.root, attr.fields[:i + 1])) is F.Missing:
            return True
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "map" if isinstance(value, dict) else type(value).__name__


# --- invariant state -------------------------------------------------------------------------
def _events(state: Mapping[str, Any] | None, lower: bool) -> list[tuple[float, F.Subject | None]]:
    if state is None:
        return []
    if not isinstance(state, Mapping):
        raise InvalidRequest("state", "must be a JSON object")
    unknown = sorted(set(state) - {"history"})
    if unknown:
        raise InvalidRequest(f"state.{unknown[0]}", "unknown field (expected history or summary)")
    history = state.get("history", [])
    if not isinstance(history, list):
        raise InvalidRequest("state.history", "must be a list")
    out: list[tuple[float, F.Subject | None]] = []
    for i, event in enumerate(history):
        where = f"state.history[{i}]"
        if not isinstance(event, Mapping):
            raise InvalidRequest(where, "must be a JSON object")
        time = event.get("time")
        if isinstance(time, bool) or not isinstance(time, (int, float)):
            raise InvalidRequest(f"{where}.time", "must be epoch seconds")
        action, args = event.get("action"), event.get("args", {})
        if not isinstance(action, str):
            raise InvalidRequest(f"{where}.action", "must be a string")
        if not isinstance(args, Mapping):
            raise InvalidRequest(f"{where}.args", "must be a JSON object")
        try:
            # History events are recorded requests: never percent-decoded again.
            resource = normalise_resource(event.get("resource", "/"), fold=lower, decode=False)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.resource", exc.message) from exc
        out.append((float(time), F.Subject(
            event.get("principal", {}) or {}, action, resource, args, event.get("context", {}) or {})))
    return out


_SUMMARY_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "flow": {"tainted": bool}, "count": {"count": int},
    "budget": {"spent": (int, str), "bad_history": bool},
}


def _summary(inv_state: Mapping[FactKey, Any]) -> dict[str, dict[str, Any]]:
    """The session facts the invariants used, as recorded in certificates for re-decision."""
    out: dict[str, dict[str, Any]] = {}
    for (name, inv_id), value in inv_state.items():
        shown = json_number(value) if isinstance(value, Fraction) else value
        out.setdefault(inv_id, {})[name] = shown
    return out


def _from_summary(invariants: Sequence[Any], summary: Any) -> dict[FactKey, Any]:
    # A summary restates invariant facts (as certified); anything missing fails closed.
    if not isinstance(summary, Mapping):
        raise InvalidRequest("state.summary", "must be a JSON object")
    result: dict[FactKey, Any] = {}
    for inv in invariants:
        entry = summary.get(inv.id)
        where = f"state.summary.{inv.id}"
        if not isinstance(entry, Mapping):
            raise InvalidRequest(where, "missing: a summary must cover every invariant involved")
        for name, kinds in _SUMMARY_FIELDS[inv.kind].items():
            value = entry.get(name)
            if isinstance(value, bool) != (kinds is bool) or not isinstance(value, kinds):
                raise InvalidRequest(f"{where}.{name}", "missing or of the wrong type")
            try:
                result[(name, inv.id)] = value if kinds is bool else Fraction(str(value))
            except (ValueError, ZeroDivisionError) as exc:
                raise InvalidRequest(f"{where}.{name}", "not a number") from exc
    return result


def invariant_state(cp: CompiledPolicy, invariants: Sequence[Invariant], subject: F.Subject,
                    state: Mapping[str, Any] | None, now: float) -> dict[FactKey, Any]:
    """The session facts (sums, counts, taint) of `invariants` from a history or a summary."""
    if not invariants:
        return {}
    if isinstance(state, Mapping) and "summary" in state:
        return _from_summary(invariants, state["summary"])
    events = _events(state, cp.policy.lower_resources)
    result: dict[FactKey, Any] = {}
    for inv in invariants:
        seen: list[Contribution] = []
        for time, event in events:
            if _in_window(inv, time, now):
                assert event is not None
                # Events inherit the session's principal and context unless they carry their own.
                inherited = F.Subject(event.principal or subject.principal, event.action, event.resource,
                                      event.args, event.context or subject.context)
                found = _contribution(cp, inv, inherited)
                if found is not None:
                    seen.append(found)
        result.update(_aggregate(inv, seen))
    return result


Contribution = bool | Fraction | str
"""What one past event adds to an invariant it matched: True (count, flow), or for a budget its
`sum` (a Fraction, or the string "error" when absent, mistyped or negative)."""


def _in_window(inv: Invariant, time: float, now: float) -> bool:
    window = inv.window_seconds
    return time <= now and (window is None or time > now - window)


def _contribution(cp: CompiledPolicy, inv: Invariant, event: F.Subject) -> Contribution | None:
    verdict, _ = cp.evaluate(cp.history_bucket(inv.id), event, {})
    if not verdict.applying:
        return None
    if inv.kind != "budget":
        return True
    assert inv.sum is not None
    amount = F.linear_value(inv.sum, event, cp.policy.types)
    return "error" if amount is None or amount < 0 else amount


def _aggregate(inv: Invariant, seen: Sequence[Contribution]) -> dict[FactKey, Any]:
    if inv.kind == "flow":
        return {("tainted", inv.id): bool(seen)}
    if inv.kind == "count":
        return {("count", inv.id): Fraction(len(seen))}
    amounts = [a for a in seen if isinstance(a, Fraction)]
    return {("spent", inv.id): sum(amounts, Fraction(0)), ("bad_history", inv.id): len(amounts) < len(seen)}


def event_contributions(policy: Policy, event: NormalisedRequest) -> dict[str, bool | str]:
    """What a permitted request (the decision's, or a recorded one read with `recorded_request`)
    adds to each invariant it matches, as JSON: true, or a budget's `sum` as an exact decimal/fraction
    string or "error". A server stores these so later decisions aggregate numbers instead of
    re-reading history."""
    cp = compiled(policy)
    req = folded_for(event, policy.lower_resources)
    subject = F.Subject(req.principal, req.action, req.resource, req.args, req.context)
    out: dict[str, bool | str] = {}
    for inv in policy.invariants:
        found = _contribution(cp, inv, subject)
        if found is not None:
            out[inv.id] = str(found) if isinstance(found, Fraction) else found
    return out


def summary_from_contributions(policy: Policy, events: Iterable[tuple[float, Mapping[str, Any]]],
                               now: datetime | float) -> dict[str, dict[str, Any]]:
    """The `state["summary"]` of a session from its events' stored contributions `(time, {invariant:
    contribution})`, each invariant counting only the events inside its window."""
    at = epoch_seconds(now)
    events = list(events)
    summary: dict[str, dict[str, Any]] = {}
    for inv in policy.invariants:
        seen: list[Contribution] = []
        for time, stored in events:
            value = stored.get(inv.id)
            if value is None or not _in_window(inv, time, at):
                continue
            seen.append(value if isinstance(value, bool) or value == "error" else Fraction(value))
        summary[inv.id] = {name: _stated(fact) for (name, _), fact in _aggregate(inv, seen).items()}
    return summary


def _stated(fact: Any) -> Any:
    if isinstance(fact, Fraction):
        return json_number(fact)
    return fact
