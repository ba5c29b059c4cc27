"""Policies: the document model, and loading with errors that name file, line, column and field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from licet.kernel import conditions
from licet.kernel.canonical import canonical_json
from licet.kernel.conditions import Cond, ConditionError, Const, Linear, Type
from licet.kernel.document import Located, child, load_document, locate_value
from licet.kernel.errors import InvalidRequest, PolicyError
from licet.kernel.globs import Glob, compile_glob, glob_problem
from licet.kernel.numbers import exact
from licet.kernel.requests import normalise_resource

Effect = Literal["permit", "forbid", "require_approval"]
EFFECTS: tuple[Effect, ...] = ("permit", "forbid", "require_approval")
_ID = re.compile(r"[A-Za-z0-9_.:-]+\Z")
_DURATION = re.compile(r"(\d+)([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Approval:
    """A require_approval rule's `approval:` block (unset keys take the tenant's defaults)."""

    quorum: int | None = None
    role: str | None = None
    ttl_seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (certificates and decisions)."""
        return {"quorum": self.quorum, "role": self.role, "ttl_seconds": self.ttl_seconds}


@dataclass(frozen=True)
class Selector:
    """Which requests a rule or invariant is about: action globs, resource globs, condition."""

    actions: tuple[Glob, ...]
    resources: tuple[Glob, ...] | None  # None: any resource
    when: Cond
    when_source: str | None = None


@dataclass(frozen=True)
class Rule:
    """One permit / forbid / require_approval rule."""

    id: str
    effect: Effect
    selector: Selector
    approval: Approval | None = None
    description: str | None = None


InvariantKind = Literal["budget", "count", "flow"]
InvariantEffect = Literal["forbid", "require_approval"]
INVARIANT_EFFECTS: tuple[InvariantEffect, ...] = ("forbid", "require_approval")


@dataclass(frozen=True)
class Invariant:
    """A stateful rule over a session's history: budget sum, count in a window, or flow taint.
    A violation has the invariant's `effect`: forbid (the default) or require_approval, with the
    `approval` block a require_approval rule takes."""

    id: str
    kind: InvariantKind
    selector: Selector  # for flow: the sink
    limit: Fraction | None = None
    window_seconds: int | None = None
    sum: Linear | None = None
    source: Selector | None = None  # flow only
    effect: InvariantEffect = "forbid"
    approval: Approval | None = None  # require_approval only


@dataclass(frozen=True)
class Policy:
    """A validated policy. `hash` is over its canonical JSON, so equal documents share it."""

    id: str
    version: str | None
    rules: tuple[Rule, ...]
    invariants: tuple[Invariant, ...]
    types: Mapping[str, Type]
    lower_resources: bool  # resource_case: insensitive (resources and patterns Unicode case-folded)
    document: Mapping[str, Any] = field(repr=False)
    hash: str = ""
    keep_escapes: bool = False  # resource_escapes: keep (escapes surviving the one decode stay)
    # Holds the compiled form once built (see kernel.compiler.compiled); not part of equality.
    compiled_holder: list[Any] = field(default_factory=list, repr=False, compare=False)

    def rule(self, rule_id: str) -> Rule | Invariant:
        """The rule or invariant with this id."""
        items: tuple[Rule | Invariant, ...] = (*self.rules, *self.invariants)
        for item in items:
            if item.id == rule_id:
                return item
        raise KeyError(rule_id)


def parse_duration(value: object) -> int | None:
    """Seconds in `15m` / `24h` / `90` (None when malformed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            return int(match.group(1)) * _UNITS[match.group(2)]
    return None


class _Loader:
    """Walks a located document, validating as it goes."""

    def __init__(self, doc: Located) -> None:
        self.doc = doc
        self.lower = False
        self.trees: list[tuple[str, Any]] = []  # (field, parsed condition tree)
        self.evidence: conditions.Evidence = []
        self.links: conditions.Links = []

    def fail(self, where: str, message: str) -> PolicyError:
        return self.doc.error(where, message)

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, found {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(child(where, key),
                                f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required):
            if key not in value:
                raise self.fail(where, f"missing required field {key!r}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, found {_kind(value)}")
        return value

    def patterns(self, value: Any, where: str, separator: str) -> tuple[Glob, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(where, "must be a pattern or a non-empty list of patterns")
        globs = []
        for i, item in enumerate(items):
            at = where if isinstance(value, str) else child(where, i)
            text = self.string(item, at)
            if separator == "/":
                text = text.replace("\\", "/")  # folded before splitting, as resources are
            problem = glob_problem(text, separator)
            if problem:
                raise self.fail(at, problem)
            if separator == "/":
                text = self.resource_pattern(text, at)
            globs.append(compile_glob(text, separator))
        return tuple(globs)

    def resource_pattern(self, text: str, where: str) -> str:
        # Patterns are normalised like resources (no percent-decoding) so they meet the same form.
        try:
            return normalise_resource(text, fold=self.lower, decode=False)
        except InvalidRequest as exc:
            raise self.fail(where, exc.message) from exc

    def condition_tree(self, value: Any, where: str) -> Any:
        text = self.string(value, where)
        try:
            tree = conditions.parse(text)
            evidence, links = conditions.collect_types(tree)
        except ConditionError as exc:
            raise self.condition_error(where, exc) from exc
        self.evidence += [(name, t, self.doc.inner_position(where, *pos)) for name, t, pos in evidence]
        self.links += [(a, b, self.doc.inner_position(where, *pos)) for a, b, pos in links]
        self.trees.append((where, tree))
        return tree

    def sum_tree(self, value: Any, where: str) -> Any:
        text = self.string(value, where)
        try:
            tree = conditions.parse(text)
            _, evidence = conditions.linear_of(tree, None)
        except ConditionError as exc:
            raise self.condition_error(where, exc) from exc
        self.evidence += [(name, t, self.doc.inner_position(where, *pos)) for name, t, pos in evidence]
        return tree

    def condition_error(self, where: str, exc: ConditionError) -> PolicyError:
        line, column = self.doc.inner_position(where, exc.line, exc.column)
        return PolicyError(exc.message, file=self.doc.file, line=line, column=column, field=where)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


_RULE_FIELDS = {"id", "effect", "action", "resource", "when", "approval", "description"}
_EFFECT_FIELDS = {"effect", "approval"}
_INVARIANT_FIELDS = {
    "budget": {"id", "kind", "action", "resource", "when", "sum", "limit", "window", "description"} | _EFFECT_FIELDS,
    "count": {"id", "kind", "action", "resource", "when", "limit", "window", "description"} | _EFFECT_FIELDS,
    "flow": {"id", "kind", "source", "sink", "window", "description"} | _EFFECT_FIELDS,
}
_SELECTOR_FIELDS = {"action", "resource", "when"}


def load_policy(source: str | Mapping[str, Any], filename: str = "<policy>") -> Policy:
    """Load and validate a policy from YAML/JSON text or an already-parsed mapping."""
    doc = load_document(source, filename) if isinstance(source, str) else locate_value(
        dict(source), filename)
    return _build(doc)


def _build(doc: Located) -> Policy:
    ld = _Loader(doc)
    top = ld.mapping(doc.value, "", {"id", "version", "description", "resource_case", "resource_escapes",
                                     "rules", "invariants"}, {"id"})
    policy_id = ld.string(top["id"], "id")
    if not _ID.match(policy_id):
        raise ld.fail("id", "must match [A-Za-z0-9_.:-]+")
    version = top.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (str, int))):
        raise ld.fail("version", "must be a string or an integer")
    case = top.get("resource_case", "sensitive")
    if case not in ("sensitive", "insensitive"):
        raise ld.fail("resource_case", "must be 'sensitive' or 'insensitive'")
    ld.lower = case == "insensitive"
    escapes = top.get("resource_escapes", "refuse")
    if escapes not in ("refuse", "keep"):
        raise ld.fail("resource_escapes", "must be 'refuse' or 'keep'")
    if "description" in top:
        ld.string(top["description"], "description")

    raw_rules = top.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ld.fail("rules", f"must be a list, found {_kind(raw_rules)}")
    raw_invariants = top.get("invariants", [])
    if not isinstance(raw_invariants, list):
        raise ld.fail("invariants", f"must be a list, found {_kind(raw_invariants)}")

    # Pass 1: structure, globs, and condition parsing (collecting type evidence).
    seen: dict[str, str] = {}
    rule_parts = [_rule_parts(ld, item, child("rules", i), seen) for i, item in enumerate(raw_rules)]
    inv_parts = [_invariant_parts(ld, item, child("invariants", i), seen)
                 for i, item in enumerate(raw_invariants)]
    try:
        types = conditions.merge_types(ld.evidence, ld.links)
    except ConditionError as exc:
        raise PolicyError(exc.message, file=doc.file, line=exc.line, column=exc.column,
                          field="rules") from exc

    # Pass 2: type-check and lower every condition with the policy-wide types.
    def lower(where: str, tree: Any) -> Cond:
        if tree is None:
            return Const(True)
        try:
            return conditions.build(tree, types)
        except ConditionError as exc:
            raise ld.condition_error(where, exc) from exc

    def selector(parts: dict[str, Any]) -> Selector:
        return Selector(parts["actions"], parts["resources"],
                        lower(parts["when_field"], parts["when"]), parts["when_source"])

    rules = tuple(
        Rule(p["id"], p["effect"], selector(p), p["approval"], p["description"]) for p in rule_parts
    )
    invariants = []
    for p in inv_parts:
        total = None
        if p["sum"] is not None:
            try:
                total, _ = conditions.linear_of(p["sum"], types)
            except ConditionError as exc:
                raise ld.condition_error(p["sum_field"], exc) from exc
        invariants.append(Invariant(
            p["id"], p["kind"], selector(p["sink"] if p["kind"] == "flow" else p), p["limit"],
            p["window"], total, selector(p["source"]) if p["kind"] == "flow" else None,
            p["effect"], p["approval"],
        ))
    document = dict(doc.value)
    try:
        digest = "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()
    except ValueError as exc:  # rfc8785: a lone surrogate or a number JSON can't carry
        raise PolicyError(f"the document has no canonical JSON form: {exc}", file=doc.file) from exc
    return Policy(policy_id, None if version is None else str(version), rules, tuple(invariants),
                  types, ld.lower, document, digest, keep_escapes=escapes == "keep")


def _selector_parts(ld: _Loader, item: dict[str, Any], where: str, *, need_action: bool) -> dict[str, Any]:
    if need_action and "action" not in item:
        raise ld.fail(where, "missing required field 'action'")
    actions = ld.patterns(item["action"], child(where, "action"), ".") if "action" in item else (
        compile_glob("**", "."),)
    resources = ld.patterns(item["resource"], child(where, "resource"), "/") if "resource" in item else None
    when = ld.condition_tree(item["when"], child(where, "when")) if "when" in item else None
    return {"actions": actions, "resources": resources, "when": when,
            "when_field": child(where, "when"),
            "when_source": item.get("when") if isinstance(item.get("when"), str) else None}


def _unique_id(ld: _Loader, item: dict[str, Any], where: str, seen: dict[str, str]) -> str:
    rule_id = ld.string(item["id"], child(where, "id"))
    if not _ID.match(rule_id):
        raise ld.fail(child(where, "id"), "must match [A-Za-z0-9_.:-]+")
    if rule_id in seen:
        raise ld.fail(child(where, "id"), f"duplicate id {rule_id!r} (first used at {seen[rule_id]})")
    seen[rule_id] = where
    return rule_id


def _rule_parts(ld: _Loader, item: Any, where: str, seen: dict[str, str]) -> dict[str, Any]:
    item = ld.mapping(item, where, _RULE_FIELDS, {"id", "effect", "action"})
    rule_id = _unique_id(ld, item, where, seen)
    effect = item["effect"]
    if effect not in EFFECTS:
        raise ld.fail(child(where, "effect"), f"must be one of {', '.join(EFFECTS)}")
    approval = None
    if "approval" in item:
        if effect != "require_approval":
            raise ld.fail(child(where, "approval"), "only require_approval rules take an approval block")
        approval = _approval(ld, item["approval"], child(where, "approval"))
    elif effect == "require_approval":
        approval = Approval()
    description = ld.string(item["description"], child(where, "description")) if "description" in item else None
    parts = _selector_parts(ld, item, where, need_action=True)
    parts.update(id=rule_id, effect=effect, approval=approval, description=description)
    return parts


def _invariant_effect(ld: _Loader, item: dict[str, Any], where: str) -> tuple[InvariantEffect, Approval | None]:
    """An invariant's `effect` (forbid when omitted) and, for require_approval, its approval block."""
    effect = item.get("effect", "forbid")
    if effect not in INVARIANT_EFFECTS:
        raise ld.fail(child(where, "effect"), f"must be one of {', '.join(INVARIANT_EFFECTS)}")
    if effect == "forbid":
        if "approval" in item:
            raise ld.fail(child(where, "approval"), "only require_approval invariants take an approval block")
        return "forbid", None
    if "approval" in item:
        return "require_approval", _approval(ld, item["approval"], child(where, "approval"))
    return "require_approval", Approval()


def _approval(ld: _Loader, value: Any, where: str) -> Approval:
    block = ld.mapping(value, where, {"quorum", "role", "ttl"}, set())
    quorum = block.get("quorum")
    if quorum is not None and (isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1):
        raise ld.fail(child(where, "quorum"), "must be an integer ≥ 1")
    role = ld.string(block["role"], child(where, "role")) if "role" in block else None
    ttl = None
    if "ttl" in block:
        ttl = parse_duration(block["ttl"])
        if not ttl:
            raise ld.fail(child(where, "ttl"), "must be a positive duration such as 15m, 2h or 900")
    return Approval(quorum, role, ttl)


def _invariant_parts(ld: _Loader, item: Any, where: str, seen: dict[str, str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ld.fail(where, f"must be a mapping, found {_kind(item)}")
    kind = item.get("kind")
    if kind not in _INVARIANT_FIELDS:
        raise ld.fail(child(where, "kind"), "must be one of budget, count, flow")
    required = {"id", "kind"} | ({"source", "sink"} if kind == "flow" else {"action", "limit"})
    if kind == "budget":
        required.add("sum")
    item = ld.mapping(item, where, _INVARIANT_FIELDS[kind], required)
    parts: dict[str, Any] = {"id": _unique_id(ld, item, where, seen), "kind": kind, "sum": None,
                             "limit": None, "window": None}
    parts["effect"], parts["approval"] = _invariant_effect(ld, item, where)
    if "window" in item:
        window = parse_duration(item["window"])
        if not window:
            raise ld.fail(child(where, "window"), "must be a positive duration such as 1h or 24h")
        parts["window"] = window
    if kind == "flow":
        for end in ("source", "sink"):
            sel = ld.mapping(item[end], child(where, end), _SELECTOR_FIELDS, {"action"})
            parts[end] = _selector_parts(ld, sel, child(where, end), need_action=True)
        return parts
    limit = item["limit"]
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
        raise ld.fail(child(where, "limit"), "must be a non-negative number")
    parts["limit"] = exact(limit)
    if kind == "budget":
        parts["sum"] = ld.sum_tree(item["sum"], child(where, "sum"))
        parts["sum_field"] = child(where, "sum")
    parts.update(_selector_parts(ld, item, where, need_action=True))
    return parts
