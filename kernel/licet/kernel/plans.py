"""Plans: bounded model checking of a multi-step plan whose arguments may be symbolic.

Every step is unrolled with the invariant state (budget sums, counts, flow taint) threaded from
one step to the next, starting from the session's state. Concrete facts are evaluated first
(partial evaluation: most of a step folds to constants in Z3's simplifier); each distinct step
shape is turned into SMT-LIB text once, instantiated per step by renaming, and handed to one
incremental solver as parsed text (DESIGN.md, "Build big formulas cheaply"). One question over
every step decides safety; an unsafe plan's earliest failing step is then found by questions over
prefixes, and its counterexample read from a model of that step failing.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

import z3

from licet.kernel import facts as F
from licet.kernel.analysis import z3_var
from licet.kernel.compiler import CompiledPolicy, FactKey, compiled
from licet.kernel.conditions import type_name
from licet.kernel.decision import SOLVER, epoch_seconds, invariant_state, refuse_overlong
from licet.kernel.errors import InvalidRequest, LicetError
from licet.kernel.facts import Subject
from licet.kernel.numbers import exact, json_number
from licet.kernel.policy import Policy
from licet.kernel.requests import normalise_request

Verdict = Literal["safe", "unsafe", "needs_approval"]
SymbolicKind = Literal["int", "real", "bool", "string"]
DEFAULT_MAX_STEPS = 10_000
MAX_KEPT_SHAPES = 4096  # step shapes a compiled policy keeps for later plans
OTHER = "<other>"  # a string value different from every constant the policy mentions
_STATE_KINDS = ("spent", "count", "tainted", "bad_history")
_TYPES = {"int": "number", "real": "number", "bool": "bool", "string": "string"}
_SORTS = {"int": "Real", "real": "Real", "bool": "Bool", "string": "Int"}  # a string: its index


class PlanTooLong(LicetError):
    """The plan has more steps than the configured maximum; it is refused, never truncated."""


@dataclass(frozen=True)
class Counterexample:
    """An instantiation under which step `step` (0-based) is not permitted."""

    step: int
    values: Mapping[str, Any]
    rule: str | None
    invariant: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON form (the CLI's `counterexample`)."""
        return {"step": self.step, "values": dict(self.values), "rule": self.rule,
                "invariant": self.invariant, "reason": self.reason}


@dataclass(frozen=True)
class PlanVerdict:
    """safe (for every value), unsafe (with a counterexample) or needs_approval (listed steps)."""

    verdict: Verdict
    steps_checked: int
    counterexample: Counterexample | None = None
    approval_steps: tuple[int, ...] = ()
    proof: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet plan verify --json`."""
        out: dict[str, Any] = {"verdict": self.verdict, "steps_checked": self.steps_checked,
                               "proof": dict(self.proof)}
        if self.counterexample is not None:
            out["counterexample"] = self.counterexample.to_json()
        if self.verdict == "needs_approval":
            out["approval_steps"] = list(self.approval_steps)
        return out


@dataclass(frozen=True)
class Symbolic:
    """A symbolic argument: a type and, for numbers, an optional range."""

    kind: SymbolicKind
    low: Fraction | None = None
    high: Fraction | None = None


class _Placeholder:
    """Stands for a symbolic value inside a step's args (not a mapping, so nothing reads below it)."""

    def __init__(self, symbolic: Symbolic) -> None:
        self.symbolic = symbolic


def _symbolic(spec: Mapping[str, Any], where: str) -> Symbolic:
    kind = spec.get("symbolic")
    if kind not in ("int", "real", "bool", "string"):
        raise InvalidRequest(where, "symbolic must be one of int, real, bool, string")
    unknown = sorted(set(spec) - {"symbolic", "min", "max"})
    if unknown:
        raise InvalidRequest(f"{where}.{unknown[0]}", "unknown field of a symbolic argument")
    bounds: list[Fraction | None] = []
    for end in ("min", "max"):
        value = spec.get(end)
        if value is None:
            bounds.append(None)
            continue
        if kind not in ("int", "real"):
            raise InvalidRequest(f"{where}.{end}", f"a {kind} has no range")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{where}.{end}", "must be a number")
        if kind == "int" and not float(value).is_integer():
            raise InvalidRequest(f"{where}.{end}", "must be an integer for an int")
        bounds.append(exact(value))
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise InvalidRequest(where, "min is greater than max")
    return Symbolic(kind, low, high)


def _split_args(value: Any, path: str, found: dict[str, Symbolic]) -> Any:
    # Replace each {"symbolic": ...} object with a placeholder, recording it by attribute path.
    if isinstance(value, Mapping):
        if "symbolic" in value:
            found[path] = _symbolic(value, path)
            return _Placeholder(found[path])
        return {k: _split_args(v, f"{path}.{k}", found) for k, v in value.items()}
    if isinstance(value, list):
        return [_split_args(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def _concrete_view(value: Any) -> Any:
    # What request validation sees: placeholders become null (valid JSON, replaced again after).
    if isinstance(value, _Placeholder):
        return None
    if isinstance(value, Mapping):
        return {k: _concrete_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_concrete_view(v) for v in value]
    return value


def _restore(value: Any, original: Any) -> Any:
    if isinstance(original, _Placeholder):
        return original
    if isinstance(value, Mapping) and isinstance(original, Mapping):
        return {k: _restore(v, original[k]) for k, v in value.items()}
    if isinstance(value, list) and isinstance(original, list):
        return [_restore(v, o) for v, o in zip(value, original, strict=True)]
    return value


def _fact_attrs(key: FactKey) -> tuple[str, ...]:
    kind = key[0]
    if kind in ("ok", "num", "size", "bool", "has", "list", "slot", "long"):
        return (key[1],)
    if kind == "str":
        return (key[2],)
    if kind == "same":
        return (key[1], key[2])
    return ()


@dataclass
class _Shape:
    """The SMT-LIB text of one kind of step, with `@STEP` where the step index goes."""

    declarations: list[str]
    ints: list[str]  # names of the symbolic ints (reals whose integrality is asserted lazily)
    forbid: str  # a forbid rule applies (invariants apart)
    approval: str  # a require_approval rule applies or a require_approval invariant is broken
    permit: str
    violations: dict[str, str]  # forbid invariant id -> this step breaks it (text), for candidates
    amount_bad: dict[str, str]  # budget id -> this step's own amount is unusable (text)
    history: dict[str, str]  # invariant id -> does this step count for it (text)
    amounts: dict[str, str]  # budget id -> this step's contribution (text)
    items: list[tuple[str, str, z3.BoolRef]]  # (id, effect, term over @STEP names)
    symbols: dict[str, tuple[Symbolic, z3.ExprRef]]  # attribute -> (spec, template variable)
    invariants: frozenset[str]  # the ids in `items` that are invariants


class _Unroller:
    """Builds the per-step texts and the session-state chain for one plan."""

    def __init__(self, cp: CompiledPolicy) -> None:
        self.cp = cp
        self.ctx = cp.ctx
        self.strings = sorted(_string_constants(cp))
        # Shapes depend only on the compiled policy and their signature: kept on it across plans.
        self.shapes: dict[Any, _Shape] = cp.plan_shapes
        self.used: set[Any] = set()  # the signatures of this plan's steps

    def shape(self, bucket_key: tuple[int, ...], subject: Subject,
              symbols: Mapping[str, Symbolic]) -> _Shape:
        """The (cached) text of a step with these candidates, facts and symbolic arguments."""
        cp = self.cp
        bucket = cp.bucket(bucket_key)
        history = {inv.id: cp.history_matchers[inv.id] for inv in cp.policy.invariants
                   if any(g.matches(subject.action) for g in (inv.source or inv.selector).actions)}
        amounts = {inv_id: cp.amounts[inv_id] for inv_id in history if inv_id in cp.amounts}
        keys = list(dict.fromkeys(
            [f.key for f in bucket.facts]
            + [k for item in history.values() for k in item.facts]
            + [k for _, _, ks in amounts.values() for k in ks]))
        concrete = {k: (cp.facts[k].read(subject, {}) if not self._is_symbolic(k, symbols)
                        and k[0] not in _STATE_KINDS else None) for k in keys}
        signature = (bucket_key, tuple(sorted(history)), tuple(sorted(symbols.items())),
                     tuple(concrete.get(k) for k in keys))
        self.used.add(signature)
        found = self.shapes.get(signature)
        if found is None:
            if len(self.shapes) >= MAX_KEPT_SHAPES:  # concrete values make signatures unbounded
                self.shapes.clear()
            found = self.shapes[signature] = self._build(bucket.items, history, amounts, keys,
                                                         concrete, symbols)
        return found

    @staticmethod
    def _is_symbolic(key: FactKey, symbols: Mapping[str, Symbolic]) -> bool:
        return any(a in symbols or any(a.startswith(s + ".") for s in symbols)
                   for a in _fact_attrs(key))

    def _build(self, items: Sequence[Any], history: Mapping[str, Any], amounts: Mapping[str, Any],
               keys: Sequence[FactKey], concrete: Mapping[FactKey, Any],
               symbols: Mapping[str, Symbolic]) -> _Shape:
        ctx = self.ctx
        declarations: list[str] = []
        ints: list[str] = []
        variables: dict[str, tuple[Symbolic, z3.ExprRef]] = {}
        domain: list[z3.BoolRef] = []  # what folding may assume of the symbolic arguments
        for name, sym in sorted(symbols.items()):
            # Symbolic ints are reals, integral only where a plan-wide model needs it (see
            # _Query.model): mixed integer arithmetic over a long plan is slow. Within one step
            # folding is cheap and exact, so a test only a fraction passes folds away here.
            sort = _SORTS[sym.kind]
            var = z3_var(self.ctx, f"arg#{name}@STEP", sort)
            variables[name] = (sym, var)
            declarations.append(f"(declare-const {var.sexpr()} {sort})")
            if sym.kind == "int":
                ints.append(var.decl().name())
                domain.append(z3.IsInt(var))
            bounds = self._bounds(sym, var)
            if bounds is not None:
                domain.append(bounds)
                declarations.append(f"(assert {bounds.sexpr()})")
        pairs: list[tuple[z3.ExprRef, z3.ExprRef]] = []
        for key in keys:
            var = self.cp.vars[key]
            if key[0] in _STATE_KINDS:
                sort = "Bool" if key[0] in ("tainted", "bad_history") else "Real"
                pairs.append((var, z3_var(self.ctx, f"st#{key[0]}#{key[1]}@STEP", sort)))
            elif self._is_symbolic(key, symbols):
                pairs.append((var, self._symbolic_fact(key, variables, declarations)))
            else:
                value = concrete[key]
                term = (z3.RealVal(str(value), ctx) if value is not None else z3.RealVal(0, ctx)) \
                    if self.cp.facts[key].numeric else z3.BoolVal(bool(value), ctx)
                pairs.append((var, term))

        def text(term: z3.ExprRef) -> z3.ExprRef:
            return z3.simplify(z3.substitute(term, *pairs)) if pairs else z3.simplify(term)

        terms = [(item.id, item.effect, text(item.applies)) for item in items]
        invariants = frozenset(item.id for item in items if item.invariant is not None)
        false = z3.BoolVal(False, ctx)
        fold = _Folder(ctx, domain)

        def any_of(effect: str, *, with_invariants: bool) -> str:
            chosen = [t for i, e, t in terms if e == effect and (with_invariants or i not in invariants)]
            return fold(z3.Or(*chosen)) if chosen else str(false.sexpr())

        contributions, amount_bad = {}, {}
        zero = z3.RealVal(0, ctx)
        for inv_id, (valid, amount, _) in amounts.items():
            contributions[inv_id] = text(z3.If(valid, amount, zero)).sexpr()
            amount_bad[inv_id] = fold(text(z3.Or(z3.Not(valid), amount < zero)))
        # A forbid invariant's violation is its own way to fail (see _Query); a require_approval
        # invariant's violation sends the step to a person, as a require_approval rule does.
        violations = {i: fold(t) for i, e, t in terms if i in invariants and e == "forbid"}
        return _Shape(declarations, ints, any_of("forbid", with_invariants=False),
                      any_of("require_approval", with_invariants=True),
                      any_of("permit", with_invariants=False), violations, amount_bad,
                      {k: fold(text(v.applies)) for k, v in history.items()}, contributions, terms,
                      variables, invariants)

    def _bounds(self, sym: Symbolic, var: z3.ExprRef) -> z3.BoolRef | None:
        ctx = self.ctx
        if sym.kind == "string":
            return z3.And(var >= 0, var <= len(self.strings))
        parts = []
        if sym.low is not None:
            parts.append(var >= z3.RealVal(str(sym.low), ctx))
        if sym.high is not None:
            parts.append(var <= z3.RealVal(str(sym.high), ctx))
        return z3.And(*parts) if parts else None

    def _symbolic_fact(self, key: FactKey, variables: Mapping[str, tuple[Symbolic, z3.ExprRef]],
                       declarations: list[str]) -> z3.ExprRef:
        ctx = self.ctx
        kind = key[0]
        attrs = _fact_attrs(key)
        name = attrs[0]
        if name not in variables:  # a path below a symbolic value: absent
            return z3.BoolVal(False, ctx) if kind != "num" and kind != "size" else z3.RealVal(0, ctx)
        sym, var = variables[name]
        path_type = self.cp.policy.types.get(type_name(name), "string")
        typed = _TYPES[sym.kind] == path_type or (path_type == "sized" and sym.kind == "string")
        if kind == "ok":
            return z3.BoolVal(typed, ctx)
        if kind == "has":
            return z3.BoolVal(True, ctx)
        if kind == "num":
            return var if sym.kind in ("int", "real") else z3.RealVal(0, ctx)
        if kind == "bool":
            return var if sym.kind == "bool" else z3.BoolVal(False, ctx)
        if kind == "str" and sym.kind == "string":
            literal = _literal(key[3])
            options = [var == i for i, s in enumerate(self.strings) if F.string_holds(key[1], s, literal)]
            if key[1] not in ("eq", "in"):  # 'other' may or may not pass a prefix/regex test
                free = z3_var(self.ctx, f"other#{len(declarations)}@STEP", "Bool")
                declarations.append(f"(declare-const {free.sexpr()} Bool)")
                options.append(z3.And(var == len(self.strings), free))
            return z3.Or(*options) if options else z3.BoolVal(False, ctx)
        if kind == "size" and sym.kind == "string":
            size = z3_var(self.ctx, f"size#{len(declarations)}@STEP", "Real")
            declarations.append(f"(declare-const {size.sexpr()} Real)")
            declarations.append(f"(assert {(size >= 0).sexpr()})")
            term: z3.ExprRef = size
            for i, s in enumerate(self.strings):
                term = z3.If(var == i, z3.RealVal(len(s), ctx), term)
            return term
        if kind == "same" and typed:
            free = z3_var(self.ctx, f"same#{len(declarations)}@STEP", "Bool")
            declarations.append(f"(declare-const {free.sexpr()} Bool)")
            return free
        return z3.BoolVal(False, ctx) if kind != "size" else z3.RealVal(0, ctx)


class _Folder:
    """Partial evaluation by Z3 itself: a step-shape formula that holds (or fails) for every value
    in its symbolic arguments' domains (ranges, integrality) becomes `true` (or `false`), once per
    shape."""

    def __init__(self, ctx: z3.Context, domain: Sequence[z3.BoolRef]) -> None:
        self.solver = z3.Solver(ctx=ctx)
        self.solver.add(*domain)
        self.symbolic = bool(domain)

    def __call__(self, term: z3.ExprRef) -> str:
        simple = z3.simplify(term)
        if z3.is_true(simple) or z3.is_false(simple) or not self.symbolic:
            return str(simple.sexpr())
        for candidate, value in ((simple, "false"), (z3.Not(simple), "true")):
            self.solver.push()
            self.solver.add(candidate)
            impossible = self.solver.check() == z3.unsat
            self.solver.pop()
            if impossible:
                return value
        return str(simple.sexpr())


def _literal(text: str) -> str | tuple[str, ...]:
    import ast

    value = ast.literal_eval(text)
    return tuple(value) if isinstance(value, tuple) else str(value)


def _string_constants(cp: CompiledPolicy) -> set[str]:
    found: set[str] = set()
    for key in cp.facts:
        if key[0] == "str":
            literal = _literal(key[3])
            found.update(literal if isinstance(literal, tuple) else (literal,))
        elif key[0] == "list":
            import ast

            value = ast.literal_eval(key[2]) if key[2].startswith(("'", '"')) else None
            if isinstance(value, str):
                found.add(value)
    return found


def verify_plan(policy: Policy, plan: Sequence[Mapping[str, Any]], *,
                state: Mapping[str, Any] | None = None, now: datetime | float,
                principal: Mapping[str, Any] | None = None,
                context: Mapping[str, Any] | None = None,
                max_steps: int = DEFAULT_MAX_STEPS) -> PlanVerdict:
    """Check every step of `plan` for every value of its symbolic arguments (see module doc)."""
    if not isinstance(plan, Sequence) or isinstance(plan, (str, bytes)):
        raise InvalidRequest("plan", "must be a list of steps")
    if len(plan) > max_steps:
        raise PlanTooLong(f"the plan has {len(plan)} steps; the maximum is {max_steps}. "
                          "Nothing was checked: split the plan or raise the limit")
    at = epoch_seconds(now)
    if not plan:
        return PlanVerdict("safe", 0, proof={"solver": SOLVER, "note": "an empty plan is safe"})
    cp = compiled(policy)
    with cp.lock:
        return _verify(cp, plan, state, at, principal or {}, context or {})


def _verify(cp: CompiledPolicy, plan: Sequence[Mapping[str, Any]], state: Mapping[str, Any] | None,
            at: float, principal: Mapping[str, Any], context: Mapping[str, Any]) -> PlanVerdict:
    unroller = _Unroller(cp)
    lines: list[str] = []
    steps: list[tuple[_Shape, Subject]] = []
    seen: dict[str, tuple[_Shape, Subject]] = {}  # plans repeat steps: same text, same shape
    for i, step in enumerate(plan):
        where = f"steps[{i}]"
        if not isinstance(step, Mapping):
            raise InvalidRequest(where, "must be an object with action, resource and args")
        try:
            identity = json.dumps(step, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(where, f"not a JSON object: {exc}") from exc
        if identity in seen:
            shape, subject = seen[identity]
            steps.append((shape, subject))
            lines += [d.replace("@STEP", f"@{i}") for d in shape.declarations]
            continue
        unknown = sorted(set(step) - {"action", "resource", "args"})
        if unknown:
            raise InvalidRequest(f"{where}.{unknown[0]}", "unknown step field")
        symbols: dict[str, Symbolic] = {}
        try:
            args = _split_args(step.get("args", {}) or {}, "args", symbols)
            req = normalise_request({"principal": principal, "action": step.get("action"),
                                     "resource": step.get("resource"), "args": _concrete_view(args),
                                     "context": context}, fold_case=cp.policy.lower_resources,
                                    keep_escapes=cp.policy.keep_escapes)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.{exc.field}", exc.message) from exc
        subject = Subject(req.principal, req.action, req.resource, _restore(req.args, args), req.context)
        indices, _ = cp.candidates(req.action, req.resource)
        refuse_overlong(cp, cp.bucket(indices), subject, f"{where}.")
        shape = unroller.shape(indices, subject, symbols)
        seen[identity] = (shape, subject)
        steps.append((shape, subject))
        lines += [d.replace("@STEP", f"@{i}") for d in shape.declarations]

    # The session state before step 0, from the history (as `decide` computes it).
    initial = invariant_state(cp, list(cp.policy.invariants), steps[0][1], state, at)
    query = _Query(cp, [shape for shape, _ in steps], initial, lines)
    proof: dict[str, Any] = {"solver": SOLVER, "method": "bounded model checking",
                             "steps": len(steps), "step_shapes": len(unroller.used)}
    failure = query.first_failure()
    if failure is not None:
        return _counterexample(steps, failure, unroller.strings, proof)
    proof["unsafe_query"] = "unsat: no value makes any step forbidden, denied or over an invariant"
    approval_steps = query.approval_steps()
    if approval_steps:
        return PlanVerdict("needs_approval", len(steps), None, approval_steps, proof)
    return PlanVerdict("safe", len(steps), None, (), proof)


_NAME = re.compile(r"\|((?:forbid|approval|permit|v#[^@|]*|ab#[^@|]*))@(\d+)\|")
_STATE_NAME = re.compile(r"\|st#([a-z_]+)#([^@|]*)@(\d+)\|")


class _Query:
    """Questions about the plan, asked of one incremental solver as SMT-LIB text.

    A step's parts (forbid, approval, permit, an invariant's violation, a budget amount being
    unusable) and the session facts they read are defined in the solver the first time a question
    mentions them. A session fact is written out flat, the session's start plus one sum (or
    disjunction) over the earlier steps: one row for the solver, not a chain of equalities.

    Cumulative invariants are reduced: a budget sum and a request count only grow along the plan
    (a negative or unusable amount is itself a violation), so among the steps that surely count
    for such an invariant, a breach at one implies a breach at the last of them: only the last
    needs asking, plus each step's own unusable amount. Steps that count only for some values are
    all asked. This is what keeps a 1 000-step plan from becoming 1 000 separate refutations.
    """

    def __init__(self, cp: CompiledPolicy, shapes: Sequence[_Shape], initial: Mapping[FactKey, Any],
                 declarations: Sequence[str]) -> None:
        self.ctx = cp.ctx
        self.shapes = shapes
        self.initial = initial
        self.solver = z3.Solver(ctx=cp.ctx)
        self.solver.from_string("\n".join(declarations))
        self.defined: set[str] = set()  # parts and session facts the solver already has
        self.integral = False  # whether every symbolic int is asserted integral
        self.asked = 0  # questions asked, each behind its own literal q<n>
        self.contributions: dict[tuple[str, str], list[str]] = {}
        kinds = {inv.id: inv.kind for inv in cp.policy.invariants}
        self.sure: dict[str, list[int]] = {}  # cumulative invariant -> steps that surely count
        for i, shape in enumerate(shapes):
            for inv_id, matched in shape.history.items():
                if kinds[inv_id] != "flow" and matched == "true" and inv_id in shape.violations:
                    self.sure.setdefault(inv_id, []).append(i)
        self.surely = {(inv_id, i) for inv_id, sure in self.sure.items() for i in sure}

    @cached_property
    def ints(self) -> tuple[list[int], list[str], list[z3.ArithRef]]:
        """The steps, names and variables of every symbolic int, in step order (built on first use)."""
        pairs = [(i, name.replace("@STEP", f"@{i}")) for i, shape in enumerate(self.shapes) for name in shape.ints]
        return [i for i, _ in pairs], [n for _, n in pairs], [z3.Real(n, self.ctx) for _, n in pairs]

    @cached_property
    def reduced_ways(self) -> list[list[str]]:
        """Each step's ways to fail in the reduced question (see the class doc)."""
        return [self.ways(i, reduced=True) for i in range(len(self.shapes))]

    def part(self, name: str, i: int) -> str:
        """Step i's part `name` (forbid, approval, permit, v#<invariant>, ab#<budget>), over @STEP."""
        shape = self.shapes[i]
        kind, _, inv_id = name.partition("#")
        if kind == "v":
            return shape.violations.get(inv_id, "false")
        if kind == "ab":
            return shape.amount_bad.get(inv_id, "false")
        return {"forbid": shape.forbid, "approval": shape.approval, "permit": shape.permit}[kind]

    def ref(self, name: str, i: int) -> str:
        """Step i's part `name` in a question: its constant if folded, else its defined name."""
        text = self.part(name, i)
        return text if text in ("true", "false") else f"|{name}@{i}|"

    def value(self, model: z3.ModelRef, name: str, i: int) -> bool:
        """Step i's part `name` under a model of a question that mentioned it."""
        text = self.ref(name, i)
        if text in ("true", "false"):
            return text == "true"
        return bool(z3.is_true(model.eval(z3.Bool(f"{name}@{i}", self.ctx), model_completion=True)))

    def ways(self, i: int, reduced: bool) -> list[str]:
        """How step i can fail, ways folded to false left out: "local" (a forbid applies, or neither
        an approval nor a permit), "v#<id>" (it breaks the invariant), "ab#<id>" (its amount is
        unusable). Reduced: a sure step's cumulative breach is left to the last sure step."""
        shape = self.shapes[i]
        out = []
        if shape.forbid != "false" or "true" not in (shape.approval, shape.permit):
            out.append("local")
        for inv_id, violated in shape.violations.items():
            if violated == "false":
                continue
            if not reduced or (inv_id, i) not in self.surely:
                out.append(f"v#{inv_id}")
            elif shape.amount_bad.get(inv_id, "false") != "false":
                out.append(f"ab#{inv_id}")
        return out

    def text(self, ways: Sequence[tuple[int, str]]) -> str:
        """SMT-LIB for "one of these (step, way) happens"."""
        parts = []
        for i, way in ways:
            if way == "local":
                forbid, approval, permit = (self.ref(n, i) for n in ("forbid", "approval", "permit"))
                parts.append(f"(or {forbid} (and (not {approval}) (not {permit})))")
            else:
                parts.append(self.ref(way, i))
        return f"(or {' '.join(parts)})" if parts else "false"

    def holds(self, model: z3.ModelRef, i: int, way: str) -> bool:
        """Whether step i fails this way under `model`."""
        if way == "local":
            return self.value(model, "forbid", i) or not (self.value(model, "approval", i)
                                                         or self.value(model, "permit", i))
        return self.value(model, way, i)

    def first_failure(self) -> tuple[int, z3.ModelRef] | None:
        """The earliest step that some instantiation makes fail, with a model in which it fails
        and every part of it is defined; None when no step can fail."""
        low = 0
        while (step := self._earliest(low)) is not None:
            ways = [(step, way) for way in self.ways(step, reduced=False)]
            model = self.model(self.text(ways), step)
            if model is not None:
                return step, model
            # Only fractions of symbolic ints make it fail. From here on every symbolic int is
            # asserted integral (slower, and rare) and the search goes on after this step.
            self.solver.from_string(f"(assert (and true {' '.join(f'(is_int |{n}|)' for n in self.ints[1])}))")
            self.integral = True
            low = step + 1
        return None

    def _earliest(self, low: int) -> int | None:
        """The earliest step that can fail with symbolic ints taken as reals, or None, knowing
        that no step before `low` can."""
        high = self._failing(len(self.shapes) - 1)
        if high is None:
            return None
        # A model's first failing step is an upper bound, and usually the answer: ask just before
        # it first, then bisect (a prefix that can fail still can with more steps after it).
        mid = high - 1
        while low < high:
            found = self._failing(mid)
            if found is None:
                low = mid + 1
            else:
                high = found
            mid = (low + high) // 2
        return high

    def _failing(self, last: int) -> int | None:
        """The reduced question "can some step among 0..last fail?" (ints as reals): None, or the
        first step failing in a model."""
        ways = [(i, way) for i in range(last + 1) for way in self.reduced_ways[i]]
        for inv_id, sure in self.sure.items():
            count = bisect.bisect_right(sure, last)
            if count:
                ways.append((sure[count - 1], f"v#{inv_id}"))
        ways.sort()
        model = self.relaxed(self.text(ways))
        if model is None:
            return None
        return next(i for i, way in ways if self.holds(model, i, way))

    def needs_approval_text(self, i: int) -> str:
        """Step i goes to a human for some values (SMT-LIB), "false" when it never does."""
        shape = self.shapes[i]
        if shape.approval == "false" or shape.forbid == "true":
            return "false"
        return f"(and {self.ref('approval', i)} (not {self.ref('forbid', i)}))"

    def approval_steps(self) -> tuple[int, ...]:
        """Every step that some instantiation sends to a human (models enumerated, each round
        excluding the steps already found)."""
        found: set[int] = set()
        possible = [i for i in range(len(self.shapes)) if self.needs_approval_text(i) != "false"]
        for _ in range(len(possible) + 1):
            rest = [i for i in possible if i not in found]
            if not rest:
                break
            text = " ".join(self.needs_approval_text(i) for i in rest)
            model = self.model(f"(or {text})", len(self.shapes) - 1)
            if model is None:
                break
            found.update(i for i in rest if self.value(model, "approval", i)
                         and not self.value(model, "forbid", i))
        return tuple(sorted(found))

    def relaxed(self, question: str) -> z3.ModelRef | None:
        """A model of `question` (SMT-LIB) with symbolic ints taken as reals, or None (no real
        model: no integer one either)."""
        self._require(question)
        self.asked += 1
        self.solver.from_string(f"(declare-const |q{self.asked}| Bool)\n(assert (=> |q{self.asked}| {question}))")
        return self._check(z3.Bool(f"q{self.asked}", self.ctx))

    def model(self, question: str, upto: int) -> z3.ModelRef | None:
        """A model of `question` whose symbolic ints of steps 0..upto are integers, or None.

        Mixed integer arithmetic over a long plan is slow, and a relaxed model is mostly integral
        (a strict budget breach leaves one fraction): its integral ints are kept and only the
        fractional ones asked again as integers; only if that fails are all of them. (Asserting
        integrality of just the fractional ones would let the next model move the fraction to
        another variable, for as many rounds as there are ints.)
        """
        model = self.relaxed(question)
        if model is None or self.integral:
            return model
        steps, names, variables = self.ints
        count = bisect.bisect_right(steps, upto)
        values = [_number(model.eval(var, model_completion=True)) for var in variables[:count]]
        if all(v.denominator == 1 for v in values):
            return model
        near = " ".join(f"(= |{n}| {_real(v)})" if v.denominator == 1 else f"(is_int |{n}|)"
                        for n, v in zip(names, values, strict=False))
        every = " ".join(f"(is_int |{n}|)" for n in names[:count])
        question_literal = z3.Bool(f"q{self.asked}", self.ctx)
        for text in (near, every):
            self.asked += 1
            self.solver.from_string(f"(declare-const |q{self.asked}| Bool)\n(assert (=> |q{self.asked}| (and {text})))")
            found = self._check(question_literal, z3.Bool(f"q{self.asked}", self.ctx))
            if found is not None:
                return found
        return None

    def _check(self, *literals: z3.BoolRef) -> z3.ModelRef | None:
        result = self.solver.check(*literals)
        if result == z3.unknown:
            raise LicetError(f"the solver could not decide the plan: {self.solver.reason_unknown()}")
        return self.solver.model() if result == z3.sat else None

    def _require(self, text: str) -> None:
        """Define in the solver the step parts `text` mentions and the session facts they read."""
        parts: list[str] = []
        for match in _NAME.finditer(text):
            name = f"{match.group(1)}@{match.group(2)}"
            if name not in self.defined:
                self.defined.add(name)
                body = self.part(match.group(1), int(match.group(2))).replace("@STEP", f"@{match.group(2)}")
                parts.append(f"(declare-const |{name}| Bool)\n(assert (= |{name}| {body}))")
        facts: list[str] = []
        for match in _STATE_NAME.finditer("\n".join(parts)):
            kind, inv_id, step = match.groups()
            if f"st#{kind}#{inv_id}@{step}" not in self.defined:
                self.defined.add(f"st#{kind}#{inv_id}@{step}")
                facts.append(self._fact(kind, inv_id, int(step)))
        self.solver.from_string("\n".join([*facts, *parts]))  # facts first: the parts read them

    def _fact(self, kind: str, inv_id: str, i: int) -> str:
        """SMT-LIB defining a session fact at step i: its start plus every earlier step's share."""
        value = self.initial.get((kind, inv_id))
        if kind in ("tainted", "bad_history"):
            sort, op, start = "Bool", "or", "true" if value else "false"
        else:
            sort, op, start = "Real", "+", _real(value if value is not None else Fraction(0))
        earlier = [t for t in self._contributions(kind, inv_id)[:i] if t]
        body = f"({op} {start} {' '.join(earlier)})" if earlier else start
        name = f"|st#{kind}#{inv_id}@{i}|"  # a constant, not a macro: models show it
        return f"(declare-const {name} {sort})\n(assert (= {name} {body}))"

    def _contributions(self, kind: str, inv_id: str) -> list[str]:
        """Each step's share of a session fact ("" for none). Every step must be permitted for the
        plan to be safe, so each counts toward the budgets and counts of the steps after it and
        may taint them; bad_history is the session's alone."""
        if (kind, inv_id) not in self.contributions:
            out = []
            for j, shape in enumerate(self.shapes):
                matched = shape.history.get(inv_id, "false").replace("@STEP", f"@{j}")
                if kind == "bad_history" or matched == "false":
                    out.append("")
                elif kind == "tainted":
                    out.append(matched)
                else:
                    amount = "1.0" if kind == "count" else shape.amounts.get(inv_id, "0.0").replace("@STEP", f"@{j}")
                    out.append(amount if matched == "true" else f"(ite {matched} {amount} 0.0)")
            self.contributions[kind, inv_id] = out
        return self.contributions[kind, inv_id]


def _real(value: Fraction) -> str:
    value = Fraction(value)
    text = f"(/ {abs(value.numerator)}.0 {value.denominator}.0)"
    return f"(- {text})" if value < 0 else text


def _counterexample(steps: Sequence[tuple[_Shape, Subject]], failure: tuple[int, z3.ModelRef],
                    strings: Sequence[str], proof: dict[str, Any]) -> PlanVerdict:
    """The unsafe verdict: the earliest failing step, the values up to it, and why it fails."""
    step, model = failure
    values: dict[str, Any] = {}
    ctx = model.ctx
    for j in range(step + 1):
        for name, (sym, var) in steps[j][0].symbols.items():
            actual = z3_var(ctx, var.decl().name().replace("@STEP", f"@{j}"), _SORTS[sym.kind])
            values[f"steps[{j}].{name}"] = _shown(model.eval(actual, model_completion=True), sym, strings)
    # Which items applied at the failing step, under the model.
    shape = steps[step][0]
    applied = [(item_id, effect) for item_id, effect, term in shape.items
               if z3.is_true(model.eval(_rename_term(term, step), model_completion=True))]
    forbidding = [i for i, e in applied if e == "forbid" and i not in shape.invariants]
    violated = [i for i, e in applied if e == "forbid" and i in shape.invariants]
    if forbidding:
        rule, invariant, reason = forbidding[0], None, f"forbidden by rule {forbidding[0]}"
    elif violated:
        rule, invariant, reason = None, violated[0], f"breaks invariant {violated[0]}"
    else:
        rule, invariant, reason = None, None, "denied: no permit rule applies"
    proof["unsafe_query"] = "sat"
    if step:
        proof["earlier_steps"] = f"unsat: no value makes any of steps 0..{step - 1} fail"
    return PlanVerdict("unsafe", len(steps), Counterexample(step, values, rule, invariant, reason),
                       (), proof)


def _rename(var: z3.ExprRef, step: int) -> z3.ExprRef:
    return z3.Const(var.decl().name().replace("@STEP", f"@{step}"), var.sort())


def _rename_term(term: z3.ExprRef, step: int) -> z3.ExprRef:
    pairs = [(c, _rename(c, step)) for c in _constants(term) if "@STEP" in c.decl().name()]
    return z3.substitute(term, *pairs) if pairs else term


def _constants(term: z3.ExprRef) -> list[z3.ExprRef]:
    seen: dict[int, z3.ExprRef] = {}
    stack = [term]
    while stack:
        node = stack.pop()
        if z3.is_const(node) and node.decl().kind() == z3.Z3_OP_UNINTERPRETED:
            seen[node.get_id()] = node
        else:
            stack.extend(node.children())
    return list(seen.values())


def _number(value: z3.ExprRef) -> Fraction:
    # Read through the numeral's text ("7", "-1/2"): z3's numerator/denominator calls cost more.
    assert isinstance(value, (z3.IntNumRef, z3.RatNumRef))  # linear arithmetic: rational models
    return Fraction(value.as_string())


def _shown(value: z3.ExprRef, sym: Symbolic, strings: Sequence[str]) -> Any:
    if sym.kind == "bool":
        return z3.is_true(value)
    number = _number(value)
    if sym.kind == "string":
        return strings[int(number)] if 0 <= number < len(strings) else OTHER
    return json_number(number)
