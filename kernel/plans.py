"""Plans: bounded model checking of a multi-step plan whose arguments may be symbolic.

Every step is unrolled with the invariant state (budget sums, counts, flow taint) threaded from
one step to the next, starting from the session's state. Concrete facts are evaluated first
(partial evaluation: most of a step folds to constants in Z3's simplifier); each distinct step
shape is turned into SMT-LIB text once, instantiated per step by renaming, and the whole
unrolling is handed to Z3 as one parsed script (DESIGN.md, "Build big formulas cheaply").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Literal

import z3

from kernel import facts as F
from kernel.compiler import CompiledPolicy, FactKey, compiled
from kernel.decision import SOLVER, epoch_seconds, invariant_state
from kernel.errors import InvalidRequest, LicetError
from kernel.facts import Subject
from kernel.numbers import exact
from kernel.policy import Policy
from kernel.requests import normalise_request

Verdict = Literal["safe", "unsafe", "needs_approval"]
SymbolicKind = Literal["int", "real", "bool", "string"]
DEFAULT_MAX_STEPS = 10_000
OTHER = "<other>"  # a string value different from every constant the policy mentions
_STATE_KINDS = ("spent", "count", "tainted", "bad_history")
_TYPES = {"int": "number", "real": "number", "bool": "bool", "string": "string"}


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
    if kind in ("ok", "num", "size", "bool", "has", "list"):
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
    integral: list[str]  # integrality of symbolic ints, asserted only when a model is wanted
    forbid: str  # a forbid rule applies (invariants apart)
    approval: str
    permit: str
    violations: dict[str, str]  # invariant id -> this step breaks it (text), for candidate invariants
    amount_bad: dict[str, str]  # budget id -> this step's own amount is unusable (text)
    history: dict[str, str]  # invariant id -> does this step count for it (text)
    amounts: dict[str, str]  # budget id -> this step's contribution (text)
    items: list[tuple[str, str, z3.BoolRef]]  # (id, effect, term over @STEP names)
    symbols: dict[str, tuple[Symbolic, z3.ExprRef]]  # attribute -> (spec, template variable)


class _Unroller:
    """Builds the per-step texts and the session-state chain for one plan."""

    def __init__(self, cp: CompiledPolicy) -> None:
        self.cp = cp
        self.ctx = cp.ctx
        self.strings = sorted(_string_constants(cp))
        self.shapes: dict[Any, _Shape] = {}

    def _var(self, name: str, sort: str) -> z3.ExprRef:
        if sort == "Int":
            return z3.Int(name, self.ctx)
        if sort == "Real":
            return z3.Real(name, self.ctx)
        return z3.Bool(name, self.ctx)

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
        found = self.shapes.get(signature)
        if found is None:
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
        integral: list[str] = []
        variables: dict[str, tuple[Symbolic, z3.ExprRef]] = {}
        ranges: list[z3.BoolRef] = []
        for name, sym in sorted(symbols.items()):
            # Symbolic ints are reals plus integrality: mixed integer arithmetic over a long plan
            # is slow, and when the real relaxation has no counterexample no integer one exists.
            sort = {"int": "Real", "real": "Real", "bool": "Bool", "string": "Int"}[sym.kind]
            var = self._var(f"arg#{name}@STEP", sort)
            variables[name] = (sym, var)
            declarations.append(f"(declare-const {var.sexpr()} {sort})")
            if sym.kind == "int":
                integral.append(f"(is_int {var.sexpr()})")
            bounds = self._bounds(sym, var)
            if bounds is not None:
                ranges.append(bounds)
                declarations.append(f"(assert {bounds.sexpr()})")
        pairs: list[tuple[z3.ExprRef, z3.ExprRef]] = []
        for key in keys:
            var = self.cp.vars[key]
            if key[0] in _STATE_KINDS:
                sort = "Bool" if key[0] in ("tainted", "bad_history") else "Real"
                pairs.append((var, self._var(f"st#{key[0]}#{key[1]}@STEP", sort)))
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
        false = z3.BoolVal(False, ctx)
        fold = _Folder(ctx, ranges)

        def any_of(effects: tuple[str, ...]) -> str:
            chosen = [t for _, e, t in terms if e in effects]
            return fold(z3.Or(*chosen)) if chosen else str(false.sexpr())

        contributions, amount_bad = {}, {}
        zero = z3.RealVal(0, ctx)
        for inv_id, (valid, amount, _) in amounts.items():
            contributions[inv_id] = text(z3.If(valid, amount, zero)).sexpr()
            amount_bad[inv_id] = fold(text(z3.Or(z3.Not(valid), amount < zero)))
        violations = {i: fold(t) for i, e, t in terms if e == "invariant"}
        return _Shape(declarations, integral, any_of(("forbid",)), any_of(("require_approval",)),
                      any_of(("permit",)), violations, amount_bad,
                      {k: fold(text(v.applies)) for k, v in history.items()}, contributions, terms,
                      variables)

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
        path_type = self.cp.policy.types.get(name, "string")
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
                free = self._var(f"other#{len(declarations)}@STEP", "Bool")
                declarations.append(f"(declare-const {free.sexpr()} Bool)")
                options.append(z3.And(var == len(self.strings), free))
            return z3.Or(*options) if options else z3.BoolVal(False, ctx)
        if kind == "size" and sym.kind == "string":
            size = self._var(f"size#{len(declarations)}@STEP", "Real")
            declarations.append(f"(declare-const {size.sexpr()} Real)")
            declarations.append(f"(assert {(size >= 0).sexpr()})")
            term: z3.ExprRef = size
            for i, s in enumerate(self.strings):
                term = z3.If(var == i, z3.RealVal(len(s), ctx), term)
            return term
        if kind == "same" and typed:
            free = self._var(f"same#{len(declarations)}@STEP", "Bool")
            declarations.append(f"(declare-const {free.sexpr()} Bool)")
            return free
        return z3.BoolVal(False, ctx) if kind != "size" else z3.RealVal(0, ctx)


class _Folder:
    """Partial evaluation by Z3 itself: a step-shape formula that holds (or fails) for every value
    in its symbolic arguments' ranges becomes `true` (or `false`), once per shape."""

    def __init__(self, ctx: z3.Context, ranges: Sequence[z3.BoolRef]) -> None:
        self.solver = z3.Solver(ctx=ctx)
        self.solver.add(*ranges)
        self.symbolic = bool(ranges)

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
    integral: list[str] = []
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
            integral += [d.replace("@STEP", f"@{i}") for d in shape.integral]
            continue
        unknown = sorted(set(step) - {"action", "resource", "args"})
        if unknown:
            raise InvalidRequest(f"{where}.{unknown[0]}", "unknown step field")
        symbols: dict[str, Symbolic] = {}
        try:
            args = _split_args(step.get("args", {}) or {}, "args", symbols)
            req = normalise_request({"principal": principal, "action": step.get("action"),
                                     "resource": step.get("resource"), "args": _concrete_view(args),
                                     "context": context}, lower_resource=cp.policy.lower_resources)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.{exc.field}", exc.message) from exc
        subject = Subject(req.principal, req.action, req.resource, _restore(req.args, args), req.context)
        indices, _ = cp.candidates(req.action, req.resource)
        shape = unroller.shape(indices, subject, symbols)
        seen[identity] = (shape, subject)
        steps.append((shape, subject))
        lines += [d.replace("@STEP", f"@{i}") for d in shape.declarations]
        integral += [d.replace("@STEP", f"@{i}") for d in shape.integral]

    # The session state before step 0, from the history (as `decide` computes it).
    initial = invariant_state(cp, list(cp.policy.invariants), steps[0][1], state, at)
    shapes = [shape for shape, _ in steps]
    query = _Query(cp, shapes)
    proof: dict[str, Any] = {"solver": SOLVER, "method": "bounded model checking",
                             "steps": len(steps), "step_shapes": len(unroller.shapes)}
    # First the reduced question, with only what it mentions and session sums written out flat
    # (one row each for the solver, not a chain of a thousand equalities).
    unsafe = query.unsafe(len(steps) - 1)
    mentioned = " ".join([unsafe, *(query.needs_approval_text(i) for i in range(len(steps)))])
    query.solver = _solver(cp, lines, _parts(shapes, mentioned), _flat_state(cp, shapes, initial, mentioned))
    if integral:  # kept out of the script: its mere presence makes Z3 pick mixed-integer arithmetic
        query.integral = f"(assert (and {' '.join(integral)}))"
    query.solver.from_string(query.define("unsafe", unsafe))
    if query.model("unsafe") is not None:
        # Unsafe: the full unrolling (every part of every step, state threaded) to find the
        # earliest failing step and read the counterexample.
        everything = _parts(shapes, None)
        query.solver = _solver(cp, lines, everything, _chained_state(cp, shapes, initial))
        query.solver.from_string(query.define("unsafe", unsafe))
        model = query.model("unsafe")
        if model is None:
            raise LicetError("internal: the full unrolling disagrees with the reduced one")
        return _counterexample(cp, model, steps, query, proof)
    proof["unsafe_query"] = "unsat: no value makes any step forbidden, denied or over an invariant"
    approval_steps = query.approval_steps()
    if approval_steps:
        return PlanVerdict("needs_approval", len(steps), None, approval_steps, proof)
    return PlanVerdict("safe", len(steps), None, (), proof)


_NAME = re.compile(r"\|((?:forbid|approval|permit|v#[^@|]*|ab#[^@|]*))@(\d+)\|")
_STATE_NAME = re.compile(r"\|st#([a-z_]+)#([^@|]*)@(\d+)\|")


def _parts(shapes: Sequence[_Shape], mentioned: str | None) -> list[str]:
    """Definitions of the per-step parts (all, or those `mentioned`), each once."""
    wanted = None if mentioned is None else {(m.group(1), int(m.group(2)))
                                              for m in _NAME.finditer(mentioned)}
    out: list[str] = []
    for i, shape in enumerate(shapes):
        named = {"forbid": shape.forbid, "approval": shape.approval, "permit": shape.permit,
                 **{f"v#{k}": v for k, v in shape.violations.items()},
                 **{f"ab#{k}": v for k, v in shape.amount_bad.items()}}
        for name, value in named.items():
            if value in ("true", "false"):
                continue  # folded: the query uses the constant itself (see _Query.ref)
            if wanted is not None and (name, i) not in wanted:
                continue
            out.append(f"(declare-const |{name}@{i}| Bool)")
            out.append(f"(assert (= |{name}@{i}| {value.replace('@STEP', f'@{i}')}))")
    return out


def _solver(cp: CompiledPolicy, declarations: Sequence[str], parts: Sequence[str],
            state: Sequence[str]) -> z3.Solver:
    solver = z3.Solver(ctx=cp.ctx)
    # State definitions come before the parts that read them; parsed straight into the solver.
    solver.from_string("\n".join([*declarations, *state, *parts]))
    return solver


def _initial(cp: CompiledPolicy, initial: Mapping[FactKey, Any], kind: str, inv_id: str) -> str:
    value = initial.get((kind, inv_id))
    if kind in ("tainted", "bad_history"):
        return "true" if value else "false"
    return _real(value if value is not None else Fraction(0))


def _contribution(cp: CompiledPolicy, shape: _Shape, inv_id: str, kind: str, j: int) -> str:
    matched = shape.history.get(inv_id, "false").replace("@STEP", f"@{j}")
    if kind == "tainted":
        return matched
    amount = "1.0" if kind == "count" else shape.amounts.get(inv_id, "0.0").replace("@STEP", f"@{j}")
    return f"(ite {matched} {amount} 0.0)"


def _flat_state(cp: CompiledPolicy, shapes: Sequence[_Shape], initial: Mapping[FactKey, Any],
                mentioned: str) -> list[str]:
    """Session facts the reduced query reads, each written out as one sum (or disjunction)."""
    parts = _parts(shapes, mentioned)
    names = {(m.group(1), m.group(2), int(m.group(3))) for m in _STATE_NAME.finditer("\n".join(parts))}
    out = []
    for kind, inv_id, i in sorted(names):
        start = _initial(cp, initial, kind, inv_id)
        terms = [_contribution(cp, shapes[j], inv_id, kind, j) for j in range(i)] if kind != "bad_history" else []
        terms = [t for t in terms if t not in ("false", "(ite false 1.0 0.0)", "(ite false 0.0 0.0)")]
        sort = "Bool" if kind in ("tainted", "bad_history") else "Real"
        op = "or" if sort == "Bool" else "+"
        body = f"({op} {start} {' '.join(terms)})" if terms else start
        out.append(f"(define-fun |st#{kind}#{inv_id}@{i}| () {sort} {body})")
    return out


def _chained_state(cp: CompiledPolicy, shapes: Sequence[_Shape], initial: Mapping[FactKey, Any]) -> list[str]:
    """Every step's session facts, each defined from the previous step's (for reading models)."""
    out = []
    for inv in cp.policy.invariants:
        for kind in _STATE_KINDS:
            if (kind, inv.id) in initial:
                sort = "Bool" if kind in ("tainted", "bad_history") else "Real"
                out += _state(kind, inv.id, 0, sort, _initial(cp, initial, kind, inv.id))
    for i in range(1, len(shapes)):
        out += _advance(cp, shapes[i - 1], i)
    return out


def _real(value: Fraction) -> str:
    value = Fraction(value)
    text = f"(/ {abs(value.numerator)}.0 {value.denominator}.0)"
    return f"(- {text})" if value < 0 else text


def _advance(cp: CompiledPolicy, previous: _Shape, i: int) -> list[str]:
    # Step i's session state: step i-1 happened (every step must be permitted for the plan to be
    # safe), so it counts toward budgets and counts and may taint the session.
    out = []
    for inv in cp.policy.invariants:
        matched = previous.history.get(inv.id, "false").replace("@STEP", f"@{i - 1}")
        prev = f"|st#{{}}#{inv.id}@{i - 1}|"
        if inv.kind == "flow":
            out += _state("tainted", inv.id, i, "Bool", f"(or {prev.format('tainted')} {matched})")
        elif inv.kind == "count":
            out += _state("count", inv.id, i, "Real", f"(+ {prev.format('count')} (ite {matched} 1.0 0.0))")
        else:
            amount = previous.amounts.get(inv.id, "0.0").replace("@STEP", f"@{i - 1}")
            out += _state("spent", inv.id, i, "Real", f"(+ {prev.format('spent')} (ite {matched} {amount} 0.0))")
            out += _state("bad_history", inv.id, i, "Bool", prev.format("bad_history"))
    return out


def _state(kind: str, inv_id: str, step: int, sort: str, value: str) -> list[str]:
    # A fresh constant per step (not a macro): sums stay linear in size, and models show them.
    name = f"|st#{kind}#{inv_id}@{step}|"
    return [f"(declare-const {name} {sort})", f"(assert (= {name} {value}))"]


class _Query:
    """The unsafe query over a prefix of the plan, with cumulative invariants reduced.

    A budget sum and a request count only grow along the plan (a negative or unusable amount is
    itself a violation), so among the steps that surely count for such an invariant, a breach at
    one implies a breach at the last of them: only the last needs asking, plus each step's own
    unusable amount. Steps that count only for some values are all asked. This is what keeps a
    1 000-step plan from becoming 1 000 separate refutations.

    Queries are SMT-LIB text behind a Boolean name, parsed straight into the solver.
    """

    def __init__(self, cp: CompiledPolicy, shapes: Sequence[_Shape]) -> None:
        self.ctx = cp.ctx
        self.shapes = shapes
        self.solver: z3.Solver | None = None
        self.integral = ""
        kinds = {inv.id: inv.kind for inv in cp.policy.invariants}
        self.sure: dict[str, list[int]] = {}  # cumulative invariant -> steps that surely count
        for i, shape in enumerate(shapes):
            for inv_id, matched in shape.history.items():
                if kinds[inv_id] != "flow" and matched == "true" and inv_id in shape.violations:
                    self.sure.setdefault(inv_id, []).append(i)

    @staticmethod
    def define(name: str, text: str) -> str:
        """SMT-LIB making `name` imply the query `text`."""
        return f"(declare-const |{name}| Bool)\n(assert (=> |{name}| {text}))"

    def ref(self, name: str, i: int) -> str:
        """Step i's part `name` in SMT-LIB: its constant if folded, else its declared name."""
        shape = self.shapes[i]
        kind, _, inv_id = name.partition("#")
        text = {"forbid": shape.forbid, "approval": shape.approval, "permit": shape.permit,
                "v": shape.violations.get(inv_id, "false"),
                "ab": shape.amount_bad.get(inv_id, "false")}[kind]
        return text if text in ("true", "false") else f"|{name}@{i}|"

    def local(self, i: int) -> str:
        """Step i fails on its own: a forbid applies, or neither an approval nor a permit."""
        shape = self.shapes[i]
        if shape.forbid == "false" and "true" in (shape.approval, shape.permit):
            return "false"  # folded: permitted (or sent to a human) for every value
        forbid, approval, permit = (self.ref(n, i) for n in ("forbid", "approval", "permit"))
        return f"(or {forbid} (and (not {approval}) (not {permit})))"

    def fails(self, i: int) -> z3.BoolRef:
        """Step i is not permitted (unreduced, for reading a model)."""
        violations = [self.ref(f"v#{k}", i) for k in self.shapes[i].violations]
        text = f"(or {self.local(i)} {' '.join(violations)})"
        return self._term(text)

    def _term(self, text: str) -> z3.BoolRef:
        names = set(re.findall(r"\|[^|]*\|", text))
        declarations = "".join(f"(declare-const {n} Bool)" for n in names)
        return z3.parse_smt2_string(f"{declarations}(assert {text})", ctx=self.ctx)[0]

    def unsafe(self, last: int) -> str:
        """Some step among 0..last is not permitted, for some values."""
        parts: list[str] = []
        for i in range(last + 1):
            shape = self.shapes[i]
            parts.append(self.local(i))
            for inv_id, violated in shape.violations.items():
                if violated == "false":
                    continue
                if i not in self.sure.get(inv_id, []):
                    parts.append(self.ref(f"v#{inv_id}", i))
                elif shape.amount_bad.get(inv_id, "false") != "false":
                    parts.append(self.ref(f"ab#{inv_id}", i))
        for inv_id, sure in self.sure.items():
            upto = [i for i in sure if i <= last]
            if upto:
                parts.append(self.ref(f"v#{inv_id}", upto[-1]))
        parts = [p for p in parts if p != "false"]
        return f"(or {' '.join(parts)})" if parts else "false"

    def needs_approval_text(self, i: int) -> str:
        """Step i goes to a human for some values (SMT-LIB), "false" when it never does."""
        shape = self.shapes[i]
        if shape.approval == "false" or shape.forbid == "true":
            return "false"
        return f"(and {self.ref('approval', i)} (not {self.ref('forbid', i)}))"

    def model(self, name: str, extra: str = "") -> z3.ModelRef | None:
        """A model where the query `name` holds, or None.

        Symbolic ints are first relaxed to reals (no real model: no integer one, and mixed
        integer arithmetic over long plans is slow); only a relaxed model is checked again
        with integrality.
        """
        solver = self.solver
        assert solver is not None
        if extra:
            solver.from_string(extra)
        literal = z3.Bool(name, self.ctx)
        result = solver.check(literal)
        if result == z3.sat and self.integral:
            solver.push()
            try:
                solver.from_string(self.integral)
                result = solver.check(literal)
                model = solver.model() if result == z3.sat else None
            finally:
                solver.pop()
            if result == z3.unknown:
                raise LicetError(f"the solver could not decide the plan: {solver.reason_unknown()}")
            return model
        if result == z3.unknown:
            raise LicetError(f"the solver could not decide the plan: {solver.reason_unknown()}")
        return solver.model() if result == z3.sat else None

    def approval_steps(self) -> tuple[int, ...]:
        """Every step that some instantiation sends to a human (models enumerated, each round
        excluding the steps already found)."""
        found: set[int] = set()
        possible = [i for i in range(len(self.shapes)) if self.needs_approval_text(i) != "false"]
        for round_ in range(len(possible) + 1):
            rest = [i for i in possible if i not in found]
            if not rest:
                break
            text = " ".join(self.needs_approval_text(i) for i in rest)
            model = self.model(f"approval-{round_}", self.define(f"approval-{round_}", f"(or {text})"))
            if model is None:
                break
            found.update(i for i in rest if z3.is_true(model.eval(
                self._term(self.needs_approval_text(i)), model_completion=True)))
        return tuple(sorted(found))


def _counterexample(cp: CompiledPolicy, model: z3.ModelRef, steps: Sequence[tuple[_Shape, Subject]],
                    query: _Query, proof: dict[str, Any]) -> PlanVerdict:
    # The earliest step that can fail: binary search over prefixes, keeping the last model.
    def first_failing(found: z3.ModelRef, upto: int) -> int:
        return min(i for i in range(upto + 1)
                   if z3.is_true(found.eval(query.fails(i), model_completion=True)))

    low, high = 0, first_failing(model, len(steps) - 1)
    while low < high:
        mid = (low + high) // 2
        found = query.model(f"unsafe-{mid}", query.define(f"unsafe-{mid}", query.unsafe(mid)))
        if found is not None:
            model, high = found, first_failing(found, mid)
        else:
            low = mid + 1
    step = high
    shape = steps[step][0]
    values: dict[str, Any] = {}
    for j in range(step + 1):
        for name, (sym, var) in steps[j][0].symbols.items():
            actual = model.eval(_rename(var, j, cp), model_completion=True)
            values[f"steps[{j}].{name}"] = _shown(actual, sym, _Unroller(cp).strings)
    # Which items applied at the failing step, under the model.
    renamed = []
    for item_id, effect, term in shape.items:
        step_term = _rename_term(term, step, cp)
        renamed.append((item_id, effect, z3.is_true(model.eval(step_term, model_completion=True))))
    forbidding = [i for i, e, on in renamed if on and e == "forbid"]
    violated = [i for i, e, on in renamed if on and e == "invariant"]
    if forbidding:
        rule, invariant, reason = forbidding[0], None, f"forbidden by rule {forbidding[0]}"
    elif violated:
        rule, invariant, reason = None, violated[0], f"breaks invariant {violated[0]}"
    else:
        rule, invariant, reason = None, None, "denied: no permit rule applies"
    proof["unsafe_query"] = "sat"
    return PlanVerdict("unsafe", len(steps), Counterexample(step, values, rule, invariant, reason),
                       (), proof)


def _rename(var: z3.ExprRef, step: int, cp: CompiledPolicy) -> z3.ExprRef:
    name = var.decl().name().replace("@STEP", f"@{step}")
    sort = var.sort()
    return z3.Const(name, sort)


def _rename_term(term: z3.ExprRef, step: int, cp: CompiledPolicy) -> z3.ExprRef:
    consts = _constants(term)
    pairs = [(c, _rename(c, step, cp)) for c in consts if "@STEP" in c.decl().name()]
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


def _shown(value: z3.ExprRef, sym: Symbolic, strings: Sequence[str]) -> Any:
    if sym.kind == "bool":
        return z3.is_true(value)
    if sym.kind == "string":
        index = value.as_long()
        return strings[index] if 0 <= index < len(strings) else OTHER
    fraction = value.as_fraction()
    return fraction.numerator if fraction.denominator == 1 else str(fraction)
