"""Policy analysis: what one version permits that another does not, rules that can never apply,
and "can any request like this be permitted?" — answered by Z3 over a fully symbolic request.

The symbolic request: action and resource are bounded sequences of segments, each one of the
literal segments the patterns mention or "other", so globs are matched exactly by a small
dynamic programme; strings range over the constants the policies mention plus "other"; numbers
are reals; every attribute may be absent or of another type; session facts are free. String tests
on `action`/`resource` inside conditions, and tests of "other" strings (prefixes, regexes), are free
Booleans — an over-approximation — so every example found is re-decided concretely by `decide` and
reported with `confirmed` saying whether the concrete kernel agrees.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import z3

from licet.kernel.compiler import CompiledPolicy, FactKey
from licet.kernel.decision import SOLVER, decide
from licet.kernel.errors import InvalidRequest
from licet.kernel.facts import Subject, string_holds
from licet.kernel.policy import Policy, load_policy
from licet.kernel.requests import normalise_request

OTHER_SEGMENT = "x"
ANY_SCHEME = "other-scheme:"


def _literal(text: str) -> Any:
    return ast.literal_eval(text)


def z3_var(ctx: z3.Context, name: str, sort: str) -> z3.ExprRef:
    """The Z3 constant `name` of sort "Int", "Real" or "Bool" (the plan checker's too)."""
    if sort == "Int":
        return z3.Int(name, ctx)
    if sort == "Real":
        return z3.Real(name, ctx)
    return z3.Bool(name, ctx)


@dataclass(frozen=True)
class Example:
    """A concrete request (and session summary) the analysis found, with both verdicts."""

    request: Mapping[str, Any]
    session: Mapping[str, Any]
    outcomes: Mapping[str, str]  # label -> outcome under that policy, re-decided concretely
    rules: Mapping[str, Sequence[str]]
    confirmed: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"request": dict(self.request), "session": dict(self.session),
                "outcomes": dict(self.outcomes), "rules": {k: list(v) for k, v in self.rules.items()},
                "confirmed": self.confirmed}


@dataclass(frozen=True)
class NeverApplies:
    """A rule that can apply to no request, or whose effect can never win."""

    policy: str
    rule: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """JSON form."""
        return {"policy": self.policy, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class PolicyDiff:
    """Requests permitted by `new` and not `old` (gained) and the reverse (lost)."""

    equivalent: bool
    gained: tuple[Example, ...]
    lost: tuple[Example, ...]
    never_applies: tuple[NeverApplies, ...] = ()
    proof: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet policy diff --json`."""
        return {"equivalent": self.equivalent, "gained": [e.to_json() for e in self.gained],
                "lost": [e.to_json() for e in self.lost],
                "never_applies": [n.to_json() for n in self.never_applies], "proof": dict(self.proof)}


@dataclass(frozen=True)
class QueryAnswer:
    """Whether any request matching a pattern can be permitted: an example, or a proof of none."""

    permitted: bool
    example: Example | None
    proof: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet policy query --json`."""
        return {"permitted": self.permitted,
                "example": self.example.to_json() if self.example else None, "proof": dict(self.proof)}


class Strings:
    """A string of `separator`-joined segments: a symbolic length and bounded segment slots."""

    def __init__(self, ctx: z3.Context, name: str, separator: str, patterns: Iterable[str]) -> None:
        self.separator = separator
        pats = sorted(set(patterns))
        words = {seg for p in pats for seg in p.split(separator)} - {"*", "**"}
        self.absolute = separator == "/"
        if self.absolute:
            # A path's first segment is ""; a URI's is its scheme: one the patterns name, or
            # ANY_SCHEME standing for every other.
            words.update(("", ANY_SCHEME))
        self.vocabulary = sorted(words)
        longest = max((len(p.split(separator)) for p in pats), default=1) + (2 if self.absolute else 0)
        # Longer strings add nothing: segments beyond the patterns' literals only feed wildcards.
        self.bound = longest + 2
        self.length = z3.Int(f"{name}#n", ctx)
        self.segments = [z3.Int(f"{name}#{i}", ctx) for i in range(self.bound)]
        self.other = len(self.vocabulary)
        self.ctx = ctx

    def constraints(self) -> list[z3.BoolRef]:
        """Well-formedness: length within the bound, segment values within the vocabulary."""
        out: list[z3.BoolRef] = [self.length >= 1, self.length <= self.bound]
        empty = self.vocabulary.index("") if "" in self.vocabulary else None
        schemes = [i for i, w in enumerate(self.vocabulary) if w.endswith(":")]
        uri = z3.Or(z3.BoolVal(False, self.ctx), *[self.segments[0] == i for i in schemes])
        if self.absolute and empty is not None:
            out.append(self.length >= 2)
            out.append(z3.Or(self.segments[0] == empty, uri))
            # scheme://authority/...: an empty segment after the scheme, then a named authority.
            out.append(z3.Implies(uri, z3.And(self.length >= 3, self.segments[1] == empty,
                                              self.segments[2] != empty)))
        for i, seg in enumerate(self.segments):
            out.append(z3.And(seg >= 0, seg <= self.other))
            if empty is not None and i >= 2:
                # No empty inner segments; a URI's root path ends in one ("https://host/").
                root = z3.And(uri, i == 3, self.length == 4)
                out.append(z3.Implies(z3.And(i < self.length, z3.Not(root)), seg != empty))
        return out

    def matches(self, pattern: str) -> z3.BoolRef:
        """Whether the symbolic string matches a glob (segment-aligned, `*` and `**`)."""
        pat = pattern.split(self.separator)
        memo: dict[tuple[int, int], z3.BoolRef] = {}
        empty = self.vocabulary.index("") if "" in self.vocabulary else None

        def m(i: int, t: int) -> z3.BoolRef:
            key = (i, t)
            if key in memo:
                return memo[key]
            if i == len(pat):
                result = self.length == t
            elif t == self.bound:
                result = z3.And(self.length == t, z3.BoolVal(all(p == "**" for p in pat[i:]), self.ctx))
            elif pat[i] == "**":
                result = z3.Or(m(i + 1, t), z3.And(t < self.length, m(i, t + 1)))
            elif pat[i] == "*":
                nonempty = self.segments[t] != empty if empty is not None else z3.BoolVal(True, self.ctx)
                result = z3.And(t < self.length, nonempty, m(i + 1, t + 1))
            else:
                result = z3.And(t < self.length, self.segments[t] == self.vocabulary.index(pat[i]),
                                m(i + 1, t + 1))
            memo[key] = result
            return result

        return m(0, 0)

    def example(self, model: z3.ModelRef) -> str:
        """The concrete string a model describes (other segments become fresh names)."""
        n = model.eval(self.length, model_completion=True).as_long()
        parts = []
        for i in range(n):
            index = model.eval(self.segments[i], model_completion=True).as_long()
            parts.append(self.vocabulary[index] if index < self.other else _fresh(self.vocabulary, i))
        return self.separator.join(parts)


def _fresh(vocabulary: Sequence[str], i: int) -> str:
    name = f"{OTHER_SEGMENT}{i}"
    while name in vocabulary:
        name += "x"
    return name


class SymbolicRequest:
    """The symbolic request shared by the policies compiled into one Z3 context."""

    def __init__(self, ctx: z3.Context, compiled: Sequence[CompiledPolicy]) -> None:
        self.ctx = ctx
        self.compiled = compiled
        keys = [k for cp in compiled for k in cp.facts]
        self.action = Strings(ctx, "action", ".", [k[1] for k in keys if k[0] == "act"])
        self.resource = Strings(ctx, "resource", "/", [k[1] for k in keys if k[0] == "res"])
        constants: set[str] = set()
        for k in keys:
            if k[0] == "str":
                value = _literal(k[3])
                constants.update(value if isinstance(value, tuple) else (value,))
        self.strings = sorted(constants)
        self.types: dict[str, set[str]] = {}
        for k in keys:
            if k[0] == "ok":
                self.types.setdefault(k[1], set()).add(k[2])
        self.extra: list[z3.BoolRef] = [*self.action.constraints(), *self.resource.constraints()]
        self.terms: dict[FactKey, z3.ExprRef] = {}
        self.enums: set[str] = set()

    def _enum(self, attr: str) -> z3.ArithRef:
        var = z3.Int(f"str#{attr}", self.ctx)
        if attr not in self.enums:
            self.enums.add(attr)
            self.extra.append(z3.And(var >= 0, var <= len(self.strings)))
        return var

    def term(self, key: FactKey) -> z3.ExprRef:
        """The symbolic meaning of one fact."""
        found = self.terms.get(key)
        if found is None:
            found = self.terms[key] = self._term(key)
        return found

    def _term(self, key: FactKey) -> z3.ExprRef:
        kind, ctx = key[0], self.ctx
        if kind == "act":
            return self.action.matches(key[1])
        if kind == "res":
            return self.resource.matches(key[1])
        if kind == "ok":
            ok = z3_var(self.ctx, f"ok#{key[1]}#{key[2]}", "Bool")
            self.extra.append(z3.Implies(ok, z3_var(self.ctx, f"has#{key[1]}", "Bool")))
            for other in self.types.get(key[1], set()) - {key[2]}:
                if {other, key[2]} not in ({"sized", "string"}, {"sized", "list"}):
                    other_ok = z3_var(self.ctx, f"ok#{key[1]}#{other}", "Bool")
                    self.extra.append(z3.Not(z3.And(ok, other_ok)))  # one value, one type
            return ok
        if kind == "has":
            return z3_var(self.ctx, f"has#{key[1]}", "Bool")
        if kind == "num":
            return z3_var(self.ctx, f"num#{key[1]}", "Real")
        if kind == "count":  # a number of requests: a whole number
            whole = z3_var(self.ctx, f"count#{key[1]}", "Int")
            self.extra.append(whole >= 0)
            return z3.ToReal(whole)
        if kind in ("size", "spent"):
            var = z3_var(self.ctx, f"{kind}#{key[1]}", "Real")
            self.extra.append(var >= 0)
            return var
        if kind in ("bool", "tainted", "bad_history"):
            return z3_var(self.ctx, f"{kind}#{key[1]}", "Bool")
        if kind == "str":
            op, subject, literal = key[1], key[2], _literal(key[3])
            if subject in ("action", "resource"):
                return z3_var(self.ctx, f"free#{'#'.join(key)}", "Bool")  # over-approximated
            enum = self._enum(subject)
            options = [enum == i for i, s in enumerate(self.strings) if string_holds(op, s, literal)]
            if op not in ("eq", "in"):
                options.append(z3.And(enum == len(self.strings),
                                      z3_var(self.ctx, f"free#{'#'.join(key)}", "Bool")))
            return z3.Or(*options) if options else z3.BoolVal(False, ctx)
        if kind == "same":
            a, b = key[1], key[2]
            if any(t == "bool" for t in self.types.get(a, set())):
                return z3_var(self.ctx, f"bool#{a}", "Bool") == z3_var(self.ctx, f"bool#{b}", "Bool")
            ea, eb = self._enum(a), self._enum(b)
            last = len(self.strings)
            return z3.Or(z3.And(ea == eb, ea < last),
                         z3.And(ea == last, eb == last, z3_var(self.ctx, f"free#same#{a}#{b}", "Bool")))
        return z3_var(self.ctx, f"free#{'#'.join(key)}", "Bool")  # list membership: independent facts

    def lift(self, cp: CompiledPolicy, term: z3.ExprRef) -> z3.ExprRef:
        """A compiled term with every fact replaced by its symbolic meaning."""
        pairs = [(cp.vars[k], self.term(k)) for k in cp.facts]
        return z3.substitute(term, *pairs)

    def example(self, model: z3.ModelRef) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """A concrete request (and session summary per invariant) from a model."""
        request: dict[str, Any] = {"principal": {}, "action": self.action.example(model),
                                   "resource": self.resource.example(model), "args": {}, "context": {}}
        paths = sorted(self.types)
        for path in paths:
            value = self._value(model, path)
            if value is _ABSENT:
                continue
            root, *fields = path.split(".")
            target = request[root]
            for name in fields[:-1]:
                target = target.setdefault(name, {})
                if not isinstance(target, dict):
                    break
            else:
                target[fields[-1]] = value
        session: dict[str, dict[str, Any]] = {}
        for cp in self.compiled:
            for inv in cp.policy.invariants:
                entry = session.setdefault(inv.id, {})
                if inv.kind == "budget":
                    value = model.eval(z3_var(self.ctx, f"spent#{inv.id}", "Real"), model_completion=True)
                    entry["spent"] = _summary_number(value.as_fraction())
                elif inv.kind == "count":
                    value = model.eval(z3_var(self.ctx, f"count#{inv.id}", "Int"), model_completion=True)
                    entry["count"] = value.as_long()
                for kind in ("tainted", "bad_history"):
                    if (inv.kind == "flow") == (kind == "tainted") and inv.kind != "count":
                        entry[kind] = z3.is_true(model.eval(z3_var(self.ctx, f"{kind}#{inv.id}", "Bool"),
                                                            model_completion=True))
        return request, session

    def _value(self, model: z3.ModelRef, path: str) -> Any:
        def true(name: str) -> bool:
            return bool(z3.is_true(model.eval(z3_var(self.ctx, name, "Bool"), model_completion=True)))

        for kind in sorted(self.types[path]):
            if not true(f"ok#{path}#{kind}"):
                continue
            if kind == "number":
                number = model.eval(z3_var(self.ctx, f"num#{path}", "Real"), model_completion=True)
                return _json_number(number.as_fraction())
            if kind == "bool":
                return true(f"bool#{path}")
            if kind == "string":
                index = model.eval(z3.Int(f"str#{path}", self.ctx), model_completion=True).as_long()
                return self.strings[index] if index < len(self.strings) else "other-value"
            if kind == "list":
                members = []
                for key, term in self.terms.items():
                    if key[0] == "list" and key[1] == path and z3.is_true(model.eval(term, model_completion=True)):
                        members.append(_literal(key[2]))
                return [m if not isinstance(m, Fraction) else _json_number(m) for m in members]
            size = model.eval(z3_var(self.ctx, f"size#{path}", "Real"), model_completion=True)
            return "s" * int(size.as_fraction())
        if true(f"has#{path}"):
            return None  # present but of no usable type
        return _ABSENT


_ABSENT = object()


def _summary_number(value: Fraction) -> int | str:
    # Session summaries carry exact numbers: integers, or "p/q" strings.
    return value.numerator if value.denominator == 1 else str(value)


def _json_number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)


class _Outcomes:
    """One policy's outcome formulas over the shared symbolic request."""

    def __init__(self, cp: CompiledPolicy, request: SymbolicRequest) -> None:
        self.cp = cp
        items = (*cp.rules, *cp.invariants)
        self.applies = {item.id: request.lift(cp, item.applies) for item in items}
        self.effects = {item.id: item.effect for item in items}
        false = z3.BoolVal(False, cp.ctx)
        self.forbidden = z3.Or(false, *[self.applies[i] for i, e in self.effects.items()
                                        if e in ("forbid", "invariant")])
        self.approval = z3.Or(false, *[self.applies[i] for i, e in self.effects.items()
                                       if e == "require_approval"])
        self.permit = z3.Or(false, *[self.applies[i] for i, e in self.effects.items() if e == "permit"])
        self.permitted = z3.And(z3.Not(self.forbidden), z3.Not(self.approval), self.permit)

    def applying(self, model: z3.ModelRef) -> list[str]:
        return sorted(i for i, t in self.applies.items() if z3.is_true(model.eval(t, model_completion=True)))


class _Analysis:
    """Policies compiled into one context, with the symbolic request and a solver."""

    def __init__(self, policies: Mapping[str, Policy]) -> None:
        self.ctx = z3.Context()
        self.labels = list(policies)
        self.policies = dict(policies)
        self.compiled = {label: CompiledPolicy(p, self.ctx) for label, p in policies.items()}
        self.request = SymbolicRequest(self.ctx, list(self.compiled.values()))
        self.outcomes = {label: _Outcomes(cp, self.request) for label, cp in self.compiled.items()}
        self.solver = z3.Solver(ctx=self.ctx)
        self.solver.add(*self.request.extra)  # complete: every fact was lifted above

    def examples(self, goal: z3.BoolRef, limit: int, expect: Mapping[str, bool]) -> list[Example]:
        """Up to `limit` examples of `goal`, each with a different set of applying rules."""
        found: list[Example] = []
        self.solver.push()
        self.solver.add(goal)
        try:
            while len(found) < limit:
                result = self.solver.check()
                if result == z3.unknown:
                    raise InvalidRequest("analysis", f"the solver gave up: {self.solver.reason_unknown()}")
                if result != z3.sat:
                    break
                model = self.solver.model()
                found.append(self._example(model, expect))
                signature = [o.applies[i] == z3.is_true(model.eval(o.applies[i], model_completion=True))
                             for o in self.outcomes.values() for i in o.applies]
                self.solver.add(z3.Not(z3.And(*signature)) if signature else z3.BoolVal(False, self.ctx))
        finally:
            self.solver.pop()
        return found

    def _example(self, model: z3.ModelRef, expect: Mapping[str, bool]) -> Example:
        request, session = self.request.example(model)
        outcomes: dict[str, str] = {}
        rules: dict[str, list[str]] = {}
        confirmed = True
        for label, policy in self.policies.items():
            rules[label] = self.outcomes[label].applying(model)
            try:
                involved = {inv.id: session.get(inv.id, {}) for inv in policy.invariants}
                decision = decide(policy, request, state={"summary": involved}, now=0)
                outcomes[label] = decision.outcome
                if label in expect and (decision.outcome == "permit") != expect[label]:
                    confirmed = False
            except InvalidRequest as exc:
                outcomes[label] = f"invalid: {exc}"
                confirmed = False
        return Example(request, session, outcomes, rules, confirmed)

    def never_applies(self, label: str) -> list[NeverApplies]:
        out = []
        o = self.outcomes[label]
        for rule_id, term in o.applies.items():
            effect = o.effects[rule_id]
            if effect == "invariant":
                continue
            if self._unsat(term):
                out.append(NeverApplies(label, rule_id, "no request satisfies its patterns and condition"))
            elif effect != "forbid" and self._unsat(z3.And(term, z3.Not(o.forbidden))):
                out.append(NeverApplies(label, rule_id, "shadowed: a forbid rule or invariant applies "
                                                        "to every request it matches"))
            elif effect == "permit" and self._unsat(z3.And(term, z3.Not(o.forbidden), z3.Not(o.approval))):
                out.append(NeverApplies(label, rule_id, "shadowed: every request it matches needs approval"))
        return out

    def _unsat(self, goal: z3.BoolRef) -> bool:
        self.solver.push()
        self.solver.add(goal)
        result = self.solver.check()
        self.solver.pop()
        return bool(result == z3.unsat)


def diff(old: Policy, new: Policy, *, max_examples: int = 5) -> PolicyDiff:
    """What `new` permits that `old` did not, and the reverse, each with concrete examples."""
    analysis = _Analysis({"old": old, "new": new})
    o, n = analysis.outcomes["old"], analysis.outcomes["new"]
    gained = analysis.examples(z3.And(n.permitted, z3.Not(o.permitted)), max_examples,
                               {"new": True, "old": False})
    lost = analysis.examples(z3.And(o.permitted, z3.Not(n.permitted)), max_examples,
                             {"old": True, "new": False})
    never = analysis.never_applies("old") + analysis.never_applies("new")
    proof = {"solver": SOLVER, "method": "symbolic request over both versions",
             "action_segments": analysis.request.action.bound,
             "resource_segments": analysis.request.resource.bound}
    if not gained and not lost:
        proof["equivalence"] = "unsat in both directions: the versions permit exactly the same requests"
    return PolicyDiff(not gained and not lost, tuple(gained), tuple(lost), tuple(never), proof)


def never_applying_rules(policy: Policy) -> list[NeverApplies]:
    """Rules of `policy` that can never apply, or whose effect can never decide anything."""
    return _Analysis({"policy": policy}).never_applies("policy")


def query(policy: Policy, pattern: Mapping[str, Any]) -> QueryAnswer:
    """Can any request matching `pattern` ({action, resource, when}) be permitted by `policy`?"""
    selector = {k: v for k, v in pattern.items() if k in ("action", "resource", "when")}
    unknown = sorted(set(pattern) - {"action", "resource", "when"})
    if unknown:
        raise InvalidRequest(f"query.{unknown[0]}", "unknown field (expected action, resource, when)")
    query_policy = load_policy({"id": "query", "rules": [
        {"id": "query", "effect": "permit", **({"action": "**"} | selector)}]}, "<query>")
    analysis = _Analysis({"policy": policy, "query": query_policy})
    matches = analysis.outcomes["query"].applies["query"]
    found = analysis.examples(z3.And(matches, analysis.outcomes["policy"].permitted), 1, {"policy": True})
    proof = {"solver": SOLVER, "method": "symbolic request"}
    if found:
        return QueryAnswer(True, found[0], proof)
    proof["result"] = "unsat: no request matching the pattern is permitted"
    return QueryAnswer(False, None, proof)


def permits_more(child: Policy, parent: Policy) -> Example | None:
    """A request `child` permits and `parent` does not (None: child's permits imply parent's)."""
    analysis = _Analysis({"parent": parent, "child": child})
    found = analysis.examples(
        z3.And(analysis.outcomes["child"].permitted, z3.Not(analysis.outcomes["parent"].permitted)),
        1, {"child": True, "parent": False})
    return found[0] if found else None


__all__ = ["Example", "NeverApplies", "PolicyDiff", "QueryAnswer", "diff", "never_applying_rules",
           "permits_more", "query"]


Capability = dict[str, bool]  # {"valid", "permit", "approval"}
# Context facts a caller's identity fixes (the server sets them alike for every decision of a key).
PINNED_CONTEXT = ("context.authenticated", "context.mfa")


def valid_action(action: str, subject: dict[str, Any]) -> bool:
    """Whether `action` is a well-formed action name for a request of `subject`."""
    try:
        normalise_request({**subject, "action": action, "resource": "/"})
    except InvalidRequest:
        return False
    return True


def _pinned_path(key: tuple[str, ...]) -> bool:
    """Whether a fact reads only the caller's fixed identity (principal, or a pinned context fact)."""
    if key[0] in ("ok", "has", "num", "size", "bool", "list"):
        paths = [key[1]]
    elif key[0] == "str":
        paths = [key[2]]
    elif key[0] == "same":
        paths = [key[1], key[2]]
    else:
        return False  # action, resource and session facts stay free
    return all(p.startswith("principal.") or p in PINNED_CONTEXT for p in paths)


def capabilities(policy: Policy, principal: dict[str, Any], context: dict[str, Any],
                 actions: list[str]) -> dict[str, Capability]:
    """For each action: can some request by `principal`, with `context` as given, be permitted or need
    approval (resource, args, the rest of the context and session state free)? Unknown counts as no."""
    answers: dict[str, Capability] = {}
    base = {"principal": principal, "context": context}
    valid = [a for a in actions if valid_action(a, base)]
    for action in set(actions) - set(valid):
        answers[action] = {"valid": False, "permit": False, "approval": False}
    if not valid:
        return answers
    # One rule per asked action, compiled with the policy into one context: one solver for all.
    ids = {action: f"q{i}" for i, action in enumerate(valid)}
    asked = load_policy({"id": "capabilities", "rules": [
        {"id": ids[a], "effect": "permit", "action": [a]} for a in valid]}, "<capabilities>")
    analysis = _Analysis({"policy": policy, "asked": asked})
    request = normalise_request({**base, "action": valid[0], "resource": "/"})
    subject = Subject(request.principal, request.action, request.resource, request.args, request.context)
    compiled = analysis.compiled["policy"]
    for key, fact in compiled.facts.items():
        if not _pinned_path(key):
            continue
        value = fact.read(subject, {})
        term = analysis.request.term(key)
        if fact.numeric:
            if value is not None:  # absent: its type fact, pinned false, already rules it out
                analysis.solver.add(term == z3.RealVal(str(value), analysis.ctx))
        else:
            analysis.solver.add(term == z3.BoolVal(bool(value), analysis.ctx))
    outcome = analysis.outcomes["policy"]
    for action in valid:
        matches = analysis.outcomes["asked"].applies[ids[action]]
        permit = _possible(analysis.solver, z3.And(matches, outcome.permitted))
        approval = _possible(analysis.solver, z3.And(matches, z3.Not(outcome.forbidden), outcome.approval))
        answers[action] = {"valid": True, "permit": permit, "approval": approval}
    return answers


def _possible(solver: z3.Solver, goal: z3.BoolRef) -> bool:
    solver.push()
    try:
        solver.add(goal)
        return bool(solver.check() == z3.sat)  # unknown counts as impossible: fail closed
    finally:
        solver.pop()
