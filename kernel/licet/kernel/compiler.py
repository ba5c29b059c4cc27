"""Compilation of a policy to Z3, and the solver-backed evaluation of candidate rules.

A policy compiles once (per `Policy` object) into Z3 terms over Boolean atoms and rational
variables. Rules are indexed by action and resource prefix; each distinct candidate set gets an
incremental solver holding `indicator_r == applies_r` for its rules, and a cache from the atoms'
valuation to the verdict Z3 produced for it (cores included), so repeated request shapes never
bypass the solver's verdict, they reuse it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import z3

from licet.kernel import facts as F
from licet.kernel.conditions import (
    MACRO_BOUND,
    And,
    Attr,
    BoolAttr,
    Compare,
    Cond,
    Const,
    Has,
    Linear,
    ListHas,
    ListMacro,
    Not,
    Or,
    SameValue,
    SizeOf,
    StringTest,
    Type,
    element_body,
    list_macros,
)
from licet.kernel.errors import KernelFault
from licet.kernel.globs import Glob
from licet.kernel.policy import Invariant, Policy, Rule, Selector

FactKey = tuple[str, ...]
T = TypeVar("T")
InvariantState = Mapping[FactKey, Any]


@dataclass(frozen=True)
class Fact:
    """One input of the solver: a Boolean atom or a rational value, with how to read it."""

    key: FactKey
    label: str
    numeric: bool
    read: Callable[[F.Subject, InvariantState], Any]
    attr: Attr | None = None  # for presence/type facts: the attribute they are about
    guards: tuple[FactKey, ...] = ()  # type facts that must hold for this fact to mean anything


@dataclass(frozen=True)
class Item:
    """A rule or invariant as the solver sees it."""

    id: str
    effect: str  # permit | forbid | require_approval: what applying (an invariant: its violation) decides
    applies: z3.BoolRef
    facts: tuple[FactKey, ...]
    compares: tuple[tuple[str, Linear], ...]
    invariant: Invariant | None = None
    selector: Selector | None = None  # the patterns of a rule or invariant (for `overlong`)
    lists: tuple[Attr, ...] = ()  # the lists its condition's macros iterate over


@dataclass(frozen=True)
class Verdict:
    """What Z3 established for one atom valuation: which items apply, and the cores."""

    applying: tuple[str, ...]
    cores: Mapping[str, tuple[FactKey, ...]]  # item id -> facts in its core


@dataclass
class Bucket:
    """A candidate set: its solver, its facts, and its valuation → verdict cache."""

    items: tuple[Item, ...]
    solver: z3.Solver
    indicators: dict[str, z3.BoolRef]
    negated: dict[str, z3.BoolRef]
    facts: tuple[Fact, ...]
    compares: tuple[tuple[str, Linear], ...]
    cache: dict[tuple[Any, ...], Verdict] = field(default_factory=dict)
    iterating: tuple[Item, ...] = ()  # the items whose macros iterate over lists (see `overlong`)


class CompiledPolicy:
    """A policy's Z3 form: facts, rule terms, the rule index and the per-candidate-set solvers."""

    def __init__(self, policy: Policy, ctx: z3.Context | None = None) -> None:
        self.policy = policy
        self.ctx = ctx or z3.Context()
        # Z3 contexts are not thread-safe; one lock per compiled policy serialises solver use.
        self.lock = threading.RLock()
        # Plans' step shapes (kernel.plans), built once and reused by later plans; under `lock`.
        self.plan_shapes: dict[Any, Any] = {}
        self.facts: dict[FactKey, Fact] = {}
        self.vars: dict[FactKey, z3.ExprRef] = {}
        self._used: list[FactKey] | None = None
        self._literals: dict[FactKey, tuple[z3.BoolRef, z3.BoolRef]] = {}  # (as true, as false)
        self._pins: OrderedDict[tuple[FactKey, Fraction], z3.BoolRef] = OrderedDict()
        self.rules = tuple(self._rule_item(rule) for rule in policy.rules)
        self.invariants = tuple(self._invariant_item(inv) for inv in policy.invariants)
        self.history_matchers = {
            inv.id: self._selector_item(f"history:{inv.id}", inv.source or inv.selector)
            for inv in policy.invariants
        }
        self.amounts = {
            inv.id: self._amount(inv.sum) for inv in policy.invariants if inv.sum is not None
        }
        self._action_index: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, ...], Bucket] = OrderedDict()

    # --- facts ---------------------------------------------------------------------------------
    def _bool(self, key: FactKey, label: str, read: Callable[[F.Subject, InvariantState], Any],
              attr: Attr | None = None, guards: Sequence[Attr] = ()) -> z3.BoolRef:
        if self._used is not None:
            self._used.append(key)
        if key not in self.facts:
            guard_keys = tuple(("ok", g.name, self._type(g)) for g in guards if not g.always_present)
            self.facts[key] = Fact(key, label, False, read, attr, guard_keys)
            var = self.vars[key] = z3.Bool("|".join(key), self.ctx)
            self._literals[key] = (var, z3.Not(var))
        found = self.vars[key]
        assert isinstance(found, z3.BoolRef)
        return found

    def _real(self, key: FactKey, label: str,
              read: Callable[[F.Subject, InvariantState], Any]) -> z3.ArithRef:
        if self._used is not None:
            self._used.append(key)
        if key not in self.facts:
            self.facts[key] = Fact(key, label, True, read)
            self.vars[key] = z3.Real("|".join(key), self.ctx)
            # A numeric fact enters a solve as `tracker => var == value`, the tracker assumed.
            tracker = z3.Bool("fact|" + "|".join(key), self.ctx)
            self._literals[key] = (tracker, tracker)
        found = self.vars[key]
        assert isinstance(found, z3.ArithRef)
        return found

    def _type(self, attr: Attr) -> Type:
        return "string" if attr.always_present else self.policy.types[attr.type_name]

    def _ok(self, attr: Attr) -> z3.BoolRef:
        kind = self._type(attr)
        article = "an" if kind[0] in "aeiou" else "a"

        def read(s: F.Subject, _: InvariantState) -> bool:
            value = s.lookup(attr)
            return value is not F.Missing and F.has_type(value, kind)

        # The type is part of the key: two policies compiled together may type a path differently.
        return self._bool(("ok", attr.name, kind), f"{attr.name} is {article} {kind}", read, attr)

    def _valid(self, attrs: Sequence[Attr]) -> z3.BoolRef:
        checks = [self._ok(a) for a in attrs if not a.always_present]
        return z3.And(*checks) if checks else z3.BoolVal(True, self.ctx)

    def _number(self, leaf: Attr | SizeOf) -> z3.ArithRef:
        if isinstance(leaf, SizeOf):
            attr = leaf.attr

            def read_size(s: F.Subject, _: InvariantState) -> Fraction | None:
                value = s.lookup(attr)
                ok = value is not F.Missing and F.has_type(value, self._type(attr))
                return Fraction(F.size_of(value)) if ok else None

            return self._real(("size", attr.name), f"size({attr.name})", read_size)

        def read_num(s: F.Subject, _: InvariantState) -> Fraction | None:
            value = s.lookup(leaf)
            return F.number(value) if value is not F.Missing and F.has_type(value, "number") else None

        return self._real(("num", leaf.name), leaf.name, read_num)

    def _linear(self, expr: Linear) -> z3.ArithRef:
        total: z3.ArithRef = z3.RealVal(str(expr.constant), self.ctx)
        for leaf, coeff in expr.terms:
            total = total + z3.RealVal(str(coeff), self.ctx) * self._number(leaf)
        return total

    @staticmethod
    def _attrs(expr: Linear) -> list[Attr]:
        return [leaf.attr if isinstance(leaf, SizeOf) else leaf for leaf, _ in expr.terms]

    def _glob(self, kind: str, glob: Glob) -> z3.BoolRef:
        if kind == "act":
            def read(s: F.Subject, _: InvariantState) -> bool:
                return glob.matches(s.action)
        else:
            def read(s: F.Subject, _: InvariantState) -> bool:
                return glob.matches(s.resource)
        label = f"{'action' if kind == 'act' else 'resource'} matches {glob.pattern!r}"
        return self._bool((kind, glob.pattern), label, read)

    # --- three-valued conditions ---------------------------------------------------------------
    def truth(self, cond: Cond) -> tuple[z3.BoolRef, z3.BoolRef]:
        """(is-true, is-error) terms of a condition under three-valued evaluation."""
        false = z3.BoolVal(False, self.ctx)
        if isinstance(cond, Const):
            return z3.BoolVal(cond.value, self.ctx), false
        if isinstance(cond, Not):
            t, e = self.truth(cond.arg)
            return z3.And(z3.Not(t), z3.Not(e)), e
        if isinstance(cond, (And, Or)):
            parts = [self.truth(arg) for arg in cond.args]
            trues = [t for t, _ in parts]
            falses = [z3.And(z3.Not(t), z3.Not(e)) for t, e in parts]
            if isinstance(cond, And):
                t, f = z3.And(*trues), z3.Or(*falses)
            else:
                t, f = z3.Or(*trues), z3.And(*falses)
            return t, z3.And(z3.Not(t), z3.Not(f))
        if isinstance(cond, Has):
            attr = cond.attr

            def read_has(s: F.Subject, _: InvariantState) -> bool:
                return s.lookup(attr) is not F.Missing

            return self._bool(("has", attr.name), f"has({attr.name})", read_has), false
        if isinstance(cond, Compare):
            valid = self._valid(self._attrs(cond.expr))
            lhs = self._linear(cond.expr)
            zero = z3.RealVal(0, self.ctx)
            test = {"==": lhs == zero, "!=": lhs != zero, "<": lhs < zero, "<=": lhs <= zero,
                    ">": lhs > zero, ">=": lhs >= zero}[cond.op]
            return z3.And(valid, test), z3.Not(valid)
        if isinstance(cond, ListMacro):
            return self._macro(cond)
        atom, attrs = self._atom(cond)
        valid = self._valid(attrs)
        return z3.And(valid, atom), z3.Not(valid)

    def _macro(self, macro: ListMacro) -> tuple[z3.BoolRef, z3.BoolRef]:
        """`all` / `exists` over the list's first MACRO_BOUND elements, element i read only when
        size(list) > i: CEL's commutative && / || over the elements (a false element makes `all`
        false, a true one `exists` true, even beside errors). A longer list reads as an error (a
        request with one is refused before this is solved: `overlong`)."""
        size = self._number(SizeOf(macro.attr))
        trues, falses = [], []
        for i in range(MACRO_BOUND):
            present = size > z3.RealVal(i, self.ctx)
            t, e = self.truth(element_body(macro, i))
            f = z3.And(z3.Not(t), z3.Not(e))
            if macro.kind == "all":  # an absent element is neutral: true for all, false for exists
                trues.append(z3.Or(z3.Not(present), t))
                falses.append(z3.And(present, f))
            else:
                trues.append(z3.And(present, t))
                falses.append(z3.Or(z3.Not(present), f))
        if macro.kind == "all":
            whole_t, whole_f = z3.And(*trues), z3.Or(*falses)
        else:
            whole_t, whole_f = z3.Or(*trues), z3.And(*falses)
        usable = z3.And(self._ok(macro.attr), size <= z3.RealVal(MACRO_BOUND, self.ctx))
        return z3.And(usable, whole_t), z3.Or(z3.Not(usable), z3.And(z3.Not(whole_t), z3.Not(whole_f)))

    def _atom(self, cond: Cond) -> tuple[z3.BoolRef, list[Attr]]:
        if isinstance(cond, BoolAttr):
            attr = cond.attr

            def read_bool(s: F.Subject, _: InvariantState) -> bool:
                return s.lookup(attr) is True

            return self._bool(("bool", attr.name), attr.name, read_bool, guards=[attr]), [attr]
        if isinstance(cond, StringTest):
            test = cond
            subject = test.subject

            def read_str(s: F.Subject, _: InvariantState) -> bool:
                value = s.lookup(subject)
                return isinstance(value, str) and F.string_test(test, value)

            literal = (f"[{', '.join(_quote(x) for x in test.literal)}]"
                       if isinstance(test.literal, tuple) else _quote(test.literal))
            label = (f"{subject.name} == {literal}" if test.op == "eq" else
                     f"{subject.name} in {literal}" if test.op == "in" else
                     f"{subject.name}.{test.op}({literal})")
            str_key: FactKey = ("str", test.op, subject.name, repr(test.literal))
            return self._bool(str_key, label, read_str, guards=[subject]), [subject]
        if isinstance(cond, ListHas):
            has = cond

            def read_list(s: F.Subject, _: InvariantState) -> bool:
                value = s.lookup(has.attr)
                return isinstance(value, list) and F.list_has(has, value)

            label = f"{_quote(has.literal)} in {has.attr.name}"
            list_key: FactKey = ("list", has.attr.name, repr(has.literal))
            return self._bool(list_key, label, read_list, guards=[has.attr]), [has.attr]
        if isinstance(cond, SameValue):
            same = cond

            def read_same(s: F.Subject, _: InvariantState) -> bool:
                return F.same_value(same, s.lookup(same.left), s.lookup(same.right))

            label = f"{same.left.name} == {same.right.name}"
            same_key: FactKey = ("same", same.left.name, same.right.name)
            return self._bool(same_key, label, read_same, guards=[same.left, same.right]), [
                same.left, same.right]
        raise KernelFault(f"unexpected condition node {cond!r}")

    def _match(self, selector: Selector, *, permit_style: bool) -> z3.BoolRef:
        action = z3.Or(*[self._glob("act", g) for g in selector.actions])
        parts = [action]
        if selector.resources is not None:
            parts.append(z3.Or(*[self._glob("res", g) for g in selector.resources]))
        t, e = self.truth(selector.when)
        parts.append(t if permit_style else z3.Or(t, e))
        return z3.And(*parts)

    # --- items ---------------------------------------------------------------------------------
    def _tracking(self, build: Callable[[], T]) -> tuple[T, tuple[FactKey, ...]]:
        """Build a term and list the facts it reads (in first-use order)."""
        self._used = []
        try:
            term = build()
            return term, tuple(dict.fromkeys(self._used))
        finally:
            self._used = None

    def _rule_item(self, rule: Rule) -> Item:
        term, keys = self._tracking(
            lambda: self._match(rule.selector, permit_style=rule.effect == "permit"))
        return Item(rule.id, rule.effect, term, keys, _compares(rule.selector.when), None, rule.selector,
                    _lists(rule.selector.when))

    def _selector_item(self, item_id: str, selector: Selector) -> Item:
        term, keys = self._tracking(lambda: self._match(selector, permit_style=False))
        return Item(item_id, "selector", term, keys, _compares(selector.when))

    def _amount(self, expr: Linear) -> tuple[z3.BoolRef, z3.ArithRef, tuple[FactKey, ...]]:
        """A budget's `sum`: (is-valid, value) terms and the facts they read."""
        (valid, value), keys = self._tracking(
            lambda: (self._valid(self._attrs(expr)), self._linear(expr)))
        return valid, value, keys

    def _invariant_item(self, inv: Invariant) -> Item:
        def build() -> z3.BoolRef:
            selected = self._match(inv.selector, permit_style=False)
            if inv.kind == "flow":
                tainted = self._bool(("tainted", inv.id), f"session touched the source of {inv.id}",
                                     lambda _s, st: bool(st[("tainted", inv.id)]))
                return z3.And(tainted, selected)
            limit = z3.RealVal(str(inv.limit), self.ctx)
            if inv.kind == "count":
                count = self._real(("count", inv.id), f"{inv.id}: matching requests in window",
                                   lambda _s, st: st[("count", inv.id)])
                return z3.And(selected, count + 1 > limit)
            assert inv.sum is not None
            spent = self._real(("spent", inv.id), f"{inv.id}: sum in window",
                               lambda _s, st: st[("spent", inv.id)])
            bad = self._bool(("bad_history", inv.id), f"{inv.id}: history has an unusable amount",
                             lambda _s, st: bool(st[("bad_history", inv.id)]))
            valid = self._valid(self._attrs(inv.sum))
            amount = self._linear(inv.sum)
            zero = z3.RealVal(0, self.ctx)
            return z3.And(selected, z3.Or(bad, z3.Not(valid), amount < zero, spent + amount > limit))

        term, keys = self._tracking(build)
        compares = _compares(inv.selector.when)
        return Item(inv.id, inv.effect, term, keys, compares, inv, inv.selector, _lists(inv.selector.when))

    def overlong(self, bucket: Bucket, subject: F.Subject) -> tuple[Attr, int] | None:
        """A list longer than MACRO_BOUND that a rule or invariant whose patterns match `subject`
        iterates over (with its length), or None. Such a request is invalid input."""
        for item in bucket.iterating:
            selector = item.selector
            assert selector is not None  # rules and invariants carry theirs
            if not any(g.matches(subject.action) for g in selector.actions):
                continue
            if selector.resources is not None and not any(g.matches(subject.resource) for g in selector.resources):
                continue
            for attr in item.lists:
                value = subject.lookup(attr)
                if isinstance(value, list) and len(value) > MACRO_BOUND:
                    return attr, len(value)
        return None

    # --- index and buckets ---------------------------------------------------------------------
    def candidates(self, action: str, resource: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Indices into rules+invariants that can apply to this action and resource, and those
        whose actions match but whose resource patterns' literal prefixes cannot."""
        everything: tuple[Rule | Invariant, ...] = (*self.policy.rules, *self.policy.invariants)
        by_action = self._action_index.get(action)
        if by_action is None:
            by_action = tuple(
                i for i, item in enumerate(everything)
                if any(g.matches(action) for g in item.selector.actions)
            )
            self._action_index[action] = by_action
            if len(self._action_index) > 4096:
                self._action_index.popitem(last=False)
        parts = resource.split("/")
        fits, misses = [], []
        for i in by_action:
            resources = everything[i].selector.resources
            if resources is None or any(_prefix_fits(g, parts) for g in resources):
                fits.append(i)
            else:
                misses.append(i)
        return tuple(fits), tuple(misses)

    def bucket(self, indices: tuple[int, ...]) -> Bucket:
        """The solver and cache for one candidate set (built on first use, LRU-bounded)."""
        items_all = (*self.rules, *self.invariants)
        key = tuple(items_all[i].id for i in indices)
        found = self._buckets.get(key)
        if found is not None:
            self._buckets.move_to_end(key)
            return found
        built = self._new_bucket(tuple(items_all[i] for i in indices))
        self._buckets[key] = built
        if len(self._buckets) > 1024:
            self._buckets.popitem(last=False)
        return built

    def history_bucket(self, invariant_id: str) -> Bucket:
        """The solver and cache that decide whether a past event matched an invariant."""
        key = (f"history:{invariant_id}",)
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = self._new_bucket((self.history_matchers[invariant_id],))
        return found

    def _new_bucket(self, items: tuple[Item, ...]) -> Bucket:
        solver = z3.Solver(ctx=self.ctx)
        solver.set("core.minimize", True)
        indicators = {}
        for item in items:
            ind = z3.Bool(f"applies|{item.id}", self.ctx)
            indicators[item.id] = ind
            solver.add(ind == item.applies)
        keys = tuple(dict.fromkeys(k for item in items for k in item.facts))
        compares = tuple(dict.fromkeys(c for item in items for c in item.compares))
        negated = {item_id: z3.Not(ind) for item_id, ind in indicators.items()}
        return Bucket(items, solver, indicators, negated, tuple(self.facts[k] for k in keys), compares,
                      iterating=tuple(item for item in items if item.lists))

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, bucket: Bucket, subject: F.Subject, state: InvariantState,
                 *, explain: Callable[[Bucket, list[str]], Mapping[str, bool]] | None = None,
                 ) -> tuple[Verdict, dict[FactKey, Any]]:
        """Z3's verdict for `subject` over the bucket's items (cached by atom valuation).

        `explain(bucket, applying)` says, per item id, whether to extract a core showing why it
        applies (True) or why it cannot (False); items it omits get no core.
        """
        values = {fact.key: fact.read(subject, state) for fact in bucket.facts}
        key = self._valuation(bucket, values, subject, state)
        cached = bucket.cache.get(key)
        if cached is not None:
            return cached, values
        with self.lock:
            verdict = self._solve(bucket, values, explain)
        if len(bucket.cache) > 65536:
            bucket.cache.clear()
        bucket.cache[key] = verdict
        return verdict, values

    def _valuation(self, bucket: Bucket, values: Mapping[FactKey, Any], subject: F.Subject,
                   state: InvariantState) -> tuple[Any, ...]:
        # Booleans as they are; numbers only through the truth of each comparison that reads
        # them, which is all a verdict can depend on. Invariant comparisons likewise.
        key: list[Any] = [values[f.key] for f in bucket.facts if not f.numeric]
        for op, expr in bucket.compares:
            value = F.linear_value(expr, subject, self.policy.types)
            key.append(None if value is None else F.compare_zero(op, value))
        for item in bucket.items:
            inv = item.invariant
            if inv is None or inv.kind == "flow":
                continue
            assert inv.limit is not None
            if inv.kind == "count":
                key.append(values[("count", inv.id)] + 1 > inv.limit)
                continue
            assert inv.sum is not None
            amount = F.linear_value(inv.sum, subject, self.policy.types)
            spent = values[("spent", inv.id)]
            key.append(None if amount is None else (amount < 0, spent + amount > inv.limit))
        return tuple(key)

    def _pinned(self, key: FactKey, value: Fraction) -> z3.BoolRef:
        """`tracker => var == value` for a numeric fact (kept: request values repeat)."""
        found = self._pins.get((key, value))
        if found is None:
            var, tracker = self.vars[key], self._literals[key][0]
            found = z3.Implies(tracker, var == z3.RealVal(str(value), self.ctx))
            self._pins[(key, value)] = found
            if len(self._pins) > 65536:
                self._pins.popitem(last=False)
        return found

    def _solve(self, bucket: Bucket, values: Mapping[FactKey, Any],
               explain: Callable[[Bucket, list[str]], Mapping[str, bool]] | None) -> Verdict:
        solver = bucket.solver
        solver.push()
        try:
            assumptions: list[z3.BoolRef] = []
            origin: dict[int, FactKey] = {}
            for fact in bucket.facts:
                value = values[fact.key]
                if fact.numeric:
                    if value is None:
                        continue  # absent/mistyped: every read of it is guarded by its type atom
                    literal = self._literals[fact.key][0]
                    solver.add(self._pinned(fact.key, value))
                elif not all(values.get(g, True) for g in fact.guards):
                    continue  # about a mistyped attribute: unconstrained, so never in a core
                else:
                    literal = self._literals[fact.key][0 if value else 1]
                assumptions.append(literal)
                origin[literal.get_id()] = fact.key
            if _check(solver, assumptions) != z3.sat:
                raise KernelFault("the request's facts are inconsistent with the policy encoding")
            model = solver.model()
            applying = [item.id for item in bucket.items if _true_in(model, bucket.indicators[item.id])]
            cores: dict[str, tuple[FactKey, ...]] = {}
            for item_id, applies in (explain(bucket, applying) if explain else {}).items():
                ind = bucket.indicators[item_id]
                result = _check(solver, [*assumptions, bucket.negated[item_id] if applies else ind])
                if result != z3.unsat:
                    raise KernelFault(f"could not prove that {item_id} "
                                      f"{'applies' if applies else 'does not apply'}")
                cores[item_id] = tuple(origin[i] for i in _core_ids(solver) if i in origin)
            return Verdict(tuple(applying), cores)
        finally:
            solver.pop()


def _check(solver: z3.Solver, literals: Sequence[z3.BoolRef]) -> z3.CheckSatResult:
    """`solver.check(*literals)` without z3's per-argument re-casting (~20 µs each, the largest
    cost of a cold decision): our assumptions are Boolean literals already."""
    array = (z3.Ast * len(literals))(*[literal.as_ast() for literal in literals])
    result = z3.Z3_solver_check_assumptions(solver.ctx.ref(), solver.solver, len(literals), array)
    return z3.CheckSatResult(result)


def _true_in(model: z3.ModelRef, indicator: z3.BoolRef) -> bool:
    """Whether `indicator` is true in `model` (completed), without z3's wrapping of the result: the
    value of a Boolean under completion is the context's own `true` or `false`, always alive."""
    out = (z3.Ast * 1)()
    ctx = model.ctx.ref()
    if not z3.Z3_model_eval(ctx, model.model, indicator.as_ast(), True, out):
        raise KernelFault("Z3 could not evaluate an indicator in its own model")
    return bool(z3.Z3_get_bool_value(ctx, out[0]) == z3.Z3_L_TRUE)


def _core_ids(solver: z3.Solver) -> list[int]:
    """The AST ids of the last unsat core's literals, without a Python object per literal."""
    ctx = solver.ctx.ref()
    core = z3.Z3_solver_get_unsat_core(ctx, solver.solver)
    z3.Z3_ast_vector_inc_ref(ctx, core)
    try:
        return [z3.Z3_get_ast_id(ctx, z3.Z3_ast_vector_get(ctx, core, i))
                for i in range(z3.Z3_ast_vector_size(ctx, core))]
    finally:
        z3.Z3_ast_vector_dec_ref(ctx, core)


def _quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compares(cond: Cond) -> tuple[tuple[str, Linear], ...]:
    found: list[tuple[str, Linear]] = []
    stack = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, Compare):
            found.append((node.op, node.expr))
        elif isinstance(node, Not):
            stack.append(node.arg)
        elif isinstance(node, (And, Or)):
            stack.extend(node.args)
        elif isinstance(node, ListMacro):
            # What a verdict reads of the list: which elements exist (size > i), whether it is
            # too long (size > MACRO_BOUND), and each element's own comparisons.
            size = Linear(((SizeOf(node.attr), Fraction(1)),), Fraction(0))
            found += [(">", size.plus(Linear((), Fraction(i)), -1)) for i in range(MACRO_BOUND + 1)]
            stack.extend(element_body(node, i) for i in range(MACRO_BOUND))
    return tuple(found)


def _lists(cond: Cond) -> tuple[Attr, ...]:
    return tuple(dict.fromkeys(macro.attr for macro in list_macros(cond)))


def _prefix_fits(glob: Glob, parts: list[str]) -> bool:
    # The index only excludes a rule when its resource pattern's literal prefix cannot match.
    prefix = glob.literal_prefix
    if glob.is_literal:
        return len(parts) == len(prefix) and tuple(parts) == prefix
    return len(parts) >= len(prefix) and tuple(parts[: len(prefix)]) == prefix


def compiled(policy: Policy) -> CompiledPolicy:
    """The policy's compiled form, built on first use and kept with the policy object."""
    holder = policy.compiled_holder
    if not holder:
        with _COMPILE_LOCK:
            if not holder:
                holder.append(CompiledPolicy(policy))
    result = holder[0]
    assert isinstance(result, CompiledPolicy)
    return result


_COMPILE_LOCK = threading.Lock()
