"""Policy analysis: what one version permits that another does not, rules that can never apply,
and "can any request like this be permitted?" — answered by Z3 over a fully symbolic request.

Answers are three-valued (docs/analysis.md). "No" (and "equivalent", "attenuates") is an unsat
result over an encoding that over-approximates every normalised request and every session state a
history can produce. "Yes" (and "differs", "widens") is given only with an example the code below
has confirmed by construction: a valid request in normal form, a real history, matching the
question, re-decided by `decide` with the claimed outcomes. Anything else is "unknown", with why.

The symbolic request: action and resource are bounded sequences of segments, each one of the
literal segments the patterns mention or "other" (with its text, when a condition reads it), so
globs are matched exactly; a case-insensitive policy sees the resource through a lowered view.
Attributes have a kind (absent, null, string, number, bool, list, map) consistent along paths;
strings are Z3 strings (string tests and regexes in Z3's sequence/regex theory, `size` their
length), numbers rationals within the JSON range. Session facts belong to the invariant's meaning
(kind, selector, window, sum), not its id, so two versions share them only when they must agree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from typing import Any, Literal

import z3

from licet.kernel.compiler import CompiledPolicy, FactKey
from licet.kernel.conditions import (
    MACRO_BOUND,
    And,
    BoolAttr,
    Compare,
    Cond,
    Has,
    ListHas,
    ListMacro,
    Not,
    Or,
    SameValue,
    Scalar,
    SizeOf,
    StringTest,
)
from licet.kernel.decision import SOLVER, decide
from licet.kernel.errors import InvalidRequest, LicetError
from licet.kernel.facts import Subject, string_holds
from licet.kernel.policy import Invariant, Policy, Rule, Selector, load_policy
from licet.kernel.regex_z3 import search_language
from licet.kernel.requests import casefolded, normalise_request

OTHER_SEGMENT = "x"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")  # kernel.requests: what a refusing policy never accepts
ANY_SCHEME = "other-scheme:"
INT_LIMIT = 2**53 - 1
NOW = 1_000_000_000  # the time examples are decided at (their histories lie before it)


@dataclass(frozen=True)
class Budget:
    """How hard an answer is looked for before it is "unknown": Z3's time per check (ms) and the
    number of candidate examples tried per question."""

    timeout_ms: int = 10_000
    attempts: int = 8
    lemmas: int = 200  # string refinements per check


DEFAULT_BUDGET = Budget()


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
    """A concrete request and history the analysis found, confirmed by re-deciding it."""

    request: Mapping[str, Any]
    session: Mapping[str, Any]  # per policy label: the invariant summary `decide` derived
    outcomes: Mapping[str, str]  # label -> outcome under that policy, re-decided concretely
    rules: Mapping[str, Sequence[str]]
    confirmed: bool
    state: Mapping[str, Any] = field(default_factory=lambda: {"history": []})
    now: int = NOW

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"request": dict(self.request), "state": dict(self.state), "now": self.now,
                "session": dict(self.session), "outcomes": dict(self.outcomes),
                "rules": {k: list(v) for k, v in self.rules.items()}, "confirmed": self.confirmed}


@dataclass(frozen=True)
class NeverApplies:
    """A rule that can apply to no request, or whose effect can never win."""

    policy: str
    rule: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """JSON form."""
        return {"policy": self.policy, "rule": self.rule, "reason": self.reason}


DiffAnswer = Literal["equivalent", "differs", "unknown"]
QueryResult = Literal["yes", "no", "unknown"]


@dataclass(frozen=True)
class PolicyDiff:
    """Requests permitted by `new` and not `old` (gained) and the reverse (lost)."""

    equivalent: bool  # proved equivalent (False when they differ or it is unknown)
    gained: tuple[Example, ...]
    lost: tuple[Example, ...]
    never_applies: tuple[NeverApplies, ...] = ()
    proof: Mapping[str, Any] = field(default_factory=dict)
    answer: DiffAnswer = "equivalent"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet policy diff --json`."""
        return {"answer": self.answer, "reason": self.reason, "equivalent": self.equivalent,
                "gained": [e.to_json() for e in self.gained], "lost": [e.to_json() for e in self.lost],
                "never_applies": [n.to_json() for n in self.never_applies], "proof": dict(self.proof)}


@dataclass(frozen=True)
class QueryAnswer:
    """Whether any request matching a pattern can be permitted: yes with an example, no with a
    proof, or unknown with the reason."""

    permitted: bool  # True only for a confirmed "yes"
    example: Example | None
    proof: Mapping[str, Any]
    answer: QueryResult = "no"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by `licet policy query --json`."""
        return {"answer": self.answer, "reason": self.reason, "permitted": self.permitted,
                "example": self.example.to_json() if self.example else None, "proof": dict(self.proof)}


@dataclass(frozen=True)
class Widening:
    """Whether `child` permits something `parent` does not: "no" (proved), "yes" (with a
    confirmed example) or "unknown" (with the reason)."""

    answer: QueryResult
    example: Example | None = None
    reason: str | None = None


class Strings:
    """A string of `separator`-joined segments: a symbolic length and bounded segment slots, each
    one of the vocabulary's words or "other" (index `other`)."""

    def __init__(self, ctx: z3.Context, name: str, separator: str, patterns: Iterable[str],
                 literals: Iterable[str] = ()) -> None:
        self.separator = separator
        self.name = name
        pats = sorted(set(patterns))
        words = {seg for p in pats for seg in p.split(separator)} - {"*", "**"}
        words.update(seg for literal in literals for seg in literal.split(separator))
        self.absolute = separator == "/"
        if self.absolute:
            # A path's first segment is ""; a URI's is its scheme: one the patterns name, or
            # ANY_SCHEME standing for every other.
            words.update(("", ANY_SCHEME))
        self.vocabulary = sorted(words)
        longest = max((len(p.split(separator)) for p in (*pats, *literals)), default=1) + (
            2 if self.absolute else 0)
        # Longer strings add nothing: segments beyond the patterns' literals only feed wildcards.
        self.bound = longest + 2
        self.length = z3.Int(f"{name}#n", ctx)
        self.segments = [z3.Int(f"{name}#{i}", ctx) for i in range(self.bound)]
        self.other = len(self.vocabulary)
        self.ctx = ctx
        self.texts: list[z3.SeqRef] | None = None
        self.nice: list[z3.BoolRef] = []

    def constraints(self) -> list[z3.BoolRef]:
        """Well-formedness: length within the bound, segment values within the vocabulary."""
        out: list[z3.BoolRef] = [self.length >= 1, self.length <= self.bound]
        empty = self.vocabulary.index("") if "" in self.vocabulary else None
        schemes = [i for i, w in enumerate(self.vocabulary) if w.endswith(":")]
        uri = z3.Or(z3.BoolVal(False, self.ctx), *[self.segments[0] == i for i in schemes])
        if self.absolute and empty is not None:
            out.append(self.length >= 2)
            out.append(z3.Or(self.segments[0] == empty, uri))
            # A path's second segment is empty only in the root "/".
            out.append(z3.Implies(z3.And(self.segments[0] == empty, self.length > 2), self.segments[1] != empty))
            # scheme://authority/...: an empty segment after the scheme, then a named authority.
            out.append(z3.Implies(uri, z3.And(self.length >= 3, self.segments[1] == empty,
                                              self.segments[2] != empty)))
        for i, seg in enumerate(self.segments):
            out.append(z3.And(seg >= 0, seg <= self.other))
            if empty is not None and i >= 2:
                # No empty inner segments; a URI's root path ends in one ("https://host/").
                root = z3.And(uri, i == 3, self.length == 4)
                out.append(z3.Implies(z3.And(i < self.length, z3.Not(root)), seg != empty))
            out.append(z3.Implies(i >= self.length, seg == 0))  # unused slots fixed: one model each
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

    def equals(self, literal: str) -> z3.BoolRef:
        """Whether the symbolic string is exactly `literal` (its segments are in the vocabulary)."""
        parts = literal.split(self.separator)
        if len(parts) > self.bound:
            return z3.BoolVal(False, self.ctx)
        return z3.And(self.length == len(parts),
                      *[self.segments[i] == self.vocabulary.index(w) for i, w in enumerate(parts)])

    def escape_free(self) -> z3.BoolRef:
        """No segment holds a percent-escape `%XX` (what a policy refusing surviving escapes
        demands of a normal form). Of an "other" segment this is not known: a free truth value,
        false in examples built for easy reading only if the text is printed from the model."""
        parts = []
        for i, seg in enumerate(self.segments):
            escaped = [k for k, w in enumerate(self.vocabulary) if _ESCAPE.search(w)]
            parts.append(z3.Implies(i < self.length, z3.And(
                *[seg != k for k in escaped],
                z3.Implies(seg == self.other, z3.Not(z3.Bool(f"{self.name}#escape{i}", self.ctx))))))
        return z3.And(*parts)

    def test(self, op: str, literal: str, extra: list[z3.BoolRef]) -> z3.BoolRef:
        """`startsWith`, `endsWith` or `contains` of `literal` on the whole string, segment by
        segment: the literal's inner parts are whole segments, its ends test one segment's text."""
        parts = literal.split(self.separator)
        last = len(parts) - 1
        false = z3.BoolVal(False, self.ctx)

        def span(start: int, first: str) -> z3.BoolRef:
            if start < 0 or start + last >= self.bound:
                return false
            if last == 0:
                return self._segment(start, first, parts[0], extra)
            inner = [self._segment(start + j, "eq", parts[j], extra) for j in range(1, last)]
            closing = "eq" if op == "endsWith" else "startsWith"
            return z3.And(start + last < self.length, self._segment(start, first, parts[0], extra), *inner,
                          self._segment(start + last, closing, parts[last], extra))

        if op == "startsWith":
            return span(0, "eq" if last else "startsWith")
        if op == "endsWith":
            return z3.Or(false, *[z3.And(self.length == n, span(n - 1 - last, "endsWith"))
                                  for n in range(1, self.bound + 1)])
        first = "contains" if last == 0 else "endsWith"
        return z3.Or(false, *[z3.And(i < self.length, span(i, first)) for i in range(self.bound)])

    def _segment(self, i: int, op: str, literal: str, extra: list[z3.BoolRef]) -> z3.BoolRef:
        """One slot's text `op` literal: decided for vocabulary words, by Z3 for "other"."""
        words = [self.segments[i] == k for k, w in enumerate(self.vocabulary) if string_holds(op, w, literal)]
        text = self.segment_texts(extra)[i]
        value = z3.StringVal(literal, self.ctx)
        other = {"eq": text == value, "startsWith": z3.PrefixOf(value, text),
                 "endsWith": z3.SuffixOf(value, text), "contains": z3.Contains(text, value)}[op]
        return z3.Or(*words, z3.And(self.segments[i] == self.other, other))

    def segment_texts(self, extra: list[z3.BoolRef]) -> list[z3.SeqRef]:
        """Each slot's text (a Z3 string), tied to its vocabulary index; "other" texts are any
        segment outside the vocabulary (constraints appended to `extra` on first use)."""
        if self.texts is None:
            self.texts = [z3.String(f"{self.name}#text{i}", self.ctx) for i in range(self.bound)]
            words = [z3.StringVal(w, self.ctx) for w in self.vocabulary]
            allowed = _segment_chars(self.ctx, self.separator)
            for seg, text in zip(self.segments, self.texts, strict=True):
                for i, word in enumerate(words):
                    extra.append(z3.Implies(seg == i, text == word))
                extra.append(z3.Implies(seg == self.other, z3.And(
                    z3.InRe(text, allowed), *[text != w for w in words])))
                self.nice.append(z3.Implies(seg == self.other, z3.InRe(text, _nice_segment(self.ctx))))
        for i in range(self.bound):  # nice texts hold no escapes
            self.nice.append(z3.Not(z3.Bool(f"{self.name}#escape{i}", self.ctx)))
        return self.texts

    def text(self, extra: list[z3.BoolRef]) -> z3.SeqRef:
        """The whole string as a Z3 string (separators between the used slots)."""
        texts = self.segment_texts(extra)
        sep = z3.StringVal(self.separator, self.ctx)
        joined: z3.SeqRef = texts[0]
        options: list[z3.SeqRef] = [joined]
        for t in texts[1:]:
            joined = z3.Concat(joined, sep, t)
            options.append(joined)
        whole = options[-1]
        for n in range(len(options) - 1, 0, -1):
            whole = z3.If(self.length == n, options[n - 1], whole)
        return whole

    def example(self, model: z3.ModelRef, lowered: Strings | None = None) -> str:
        """The concrete string a model describes (other segments become fresh names)."""
        n = model.eval(self.length, model_completion=True).as_long()
        parts = []
        for i in range(n):
            index = model.eval(self.segments[i], model_completion=True).as_long()
            if index < self.other:
                parts.append(self.vocabulary[index])
                continue
            low = None if lowered is None else model.eval(lowered.segments[i], model_completion=True).as_long()
            if lowered is not None and low is not None and low < lowered.other:
                parts.append(_case_variant(lowered.vocabulary[low], self.vocabulary))
            elif self.texts is not None:
                parts.append(_string(model, self.texts[i]))
            else:
                parts.append(_fresh(self.vocabulary, i))
        return self.separator.join(parts)

    def lowered(self, extra: list[z3.BoolRef]) -> Strings:
        """The view of this string a case-insensitive policy has: each segment lowercased. A word
        maps to its lowercase (a word, or "other"); an "other" segment may lower to any word."""
        view = Strings.__new__(Strings)
        view.__dict__.update(self.__dict__)
        view.name = f"{self.name}#lower"
        view.segments = [z3.Int(f"{view.name}#{i}", self.ctx) for i in range(self.bound)]
        view.texts = None
        view.nice = []
        for raw, low in zip(self.segments, view.segments, strict=True):
            for i, word in enumerate(self.vocabulary):
                target = casefolded(word)
                index = self.vocabulary.index(target) if target in self.vocabulary else self.other
                extra.append(z3.Implies(raw == i, low == index))
            extra.append(z3.Implies(raw == self.other, z3.And(low >= 0, low <= self.other)))
        return view


def _segment_chars(ctx: z3.Context, separator: str) -> z3.ReRef:
    """What one non-empty segment of a normalised action/resource may hold (an over-approximation
    for resources: no separator, backslash or control character; not "." or "..")."""
    sort = z3.ReSort(z3.StringSort(ctx))
    if separator == ".":
        word = z3.Union(z3.Range("a", "z", ctx=ctx), z3.Range("A", "Z", ctx=ctx), z3.Range("0", "9", ctx=ctx),
                        z3.Re(z3.StringVal("_", ctx)), z3.Re(z3.StringVal("-", ctx)))
        return z3.Plus(word)
    banned = z3.Union(z3.Re(z3.StringVal("/", ctx)), z3.Re(z3.StringVal("\\", ctx)),
                      z3.Range("\x00", "\x1f", ctx=ctx), z3.Range("\x7f", "\x9f", ctx=ctx))
    char = z3.Intersect(z3.AllChar(sort), z3.Complement(banned))
    dots = z3.Union(z3.Re(z3.StringVal(".", ctx)), z3.Re(z3.StringVal("..", ctx)))
    return z3.Intersect(z3.Plus(char), z3.Complement(dots))


def _nice_segment(ctx: z3.Context) -> z3.ReRef:
    return z3.Plus(z3.Union(z3.Range("a", "z", ctx=ctx), z3.Range("0", "9", ctx=ctx)))


def _case_variant(word: str, vocabulary: Sequence[str]) -> str:
    """A spelling of `word` outside the vocabulary that lowercases to it (else `word` itself,
    which confirmation then rejects)."""
    for candidate in (word.upper(), word.capitalize(), word.swapcase(), word.title()):
        if casefolded(candidate) == word and candidate not in vocabulary:
            return candidate
    return word


def _fresh(vocabulary: Sequence[str], i: int) -> str:
    name = f"{OTHER_SEGMENT}{i}"
    while name in vocabulary:
        name += "x"
    return name


def _string(model: z3.ModelRef, term: z3.ExprRef) -> str:
    value = model.eval(term, model_completion=True)
    return str(value.as_string()) if z3.is_string_value(value) else ""


# Kinds of a JSON value at a path.
ABSENT, NULL, STRING, NUMBER, BOOL, LIST, MAP = range(7)
_KIND_OF_TYPE = {"string": (STRING,), "number": (NUMBER,), "bool": (BOOL,), "list": (LIST,),
                 "sized": (STRING, LIST, MAP)}
_ROOTS = ("principal", "args", "context")


def _parent(path: str) -> str:
    """`args.a` of `args.a.b`, and the list `args.to` of its element `args.to[3]`."""
    if path.endswith("]"):
        return path[:path.rindex("[")]
    return path.rsplit(".", 1)[0]


def _scalar(text: str) -> Scalar:
    """A `lit in list` fact's literal back from its key (the repr of a str, bool or Fraction)."""
    if text.startswith("Fraction("):
        numerator, denominator = text[len("Fraction("):-1].split(",")
        return Fraction(int(numerator), int(denominator))
    value = _literal(text)
    assert isinstance(value, (str, bool))
    return value


def _paths_of(key: FactKey) -> list[str]:
    if key[0] in ("ok", "has", "num", "size", "bool", "list"):
        return [key[1]]
    if key[0] == "str":
        return [key[2]]
    if key[0] == "same":
        return [key[1], key[2]]
    return []


class SymbolicRequest:
    """The symbolic request (and session) shared by the policies compiled into one Z3 context."""

    def __init__(self, ctx: z3.Context, compiled: Sequence[CompiledPolicy]) -> None:
        self.ctx = ctx
        self.compiled = compiled
        keys = [k for cp in compiled for k in cp.facts]
        self.extra: list[z3.BoolRef] = []
        self.nice: list[z3.BoolRef] = []
        self.approximate: set[str] = set()  # why the encoding is not exact (free atoms)
        literals: dict[str, list[str]] = {"action": [], "resource": []}
        for k in keys:
            if k[0] == "str" and k[1] in ("eq", "in") and k[2] in literals:
                value = _literal(k[3])
                literals[k[2]] += list(value) if isinstance(value, tuple) else [value]
        self.action = Strings(ctx, "action", ".", [k[1] for k in keys if k[0] == "act"], literals["action"])
        self.resource = Strings(ctx, "resource", "/", [k[1] for k in keys if k[0] == "res"],
                                literals["resource"])
        self.extra += [*self.action.constraints(), *self.resource.constraints()]
        self.lowered = (self.resource.lowered(self.extra) if any(cp.policy.lower_resources for cp in compiled)
                        else None)
        paths = {p for k in keys for p in _paths_of(k) if p not in ("action", "resource")}
        for path in list(paths):
            parent = _parent(path)
            while parent not in _ROOTS:
                paths.add(parent)
                parent = _parent(parent)
        self.paths = sorted(paths)
        # A macro's element slots (`args.to[3]`), per list: a request's list is exactly its slots
        # when it has at most MACRO_BOUND elements.
        self.slots: dict[str, list[str]] = {}
        for path in self.paths:
            if path.endswith("]"):
                self.slots.setdefault(_parent(path), []).append(path)
        for slots in self.slots.values():
            slots.sort(key=lambda slot: int(slot[slot.rindex("[") + 1:-1]))
        self.types: dict[str, set[str]] = {}
        for k in keys:
            if k[0] == "ok":
                self.types.setdefault(k[1], set()).add(k[2])
        # Strings tested only against literals are decided lazily (`Lazy`): Z3 decides one
        # regular membership per string fast, but not several memberships of one string at once.
        self.direct = {p for k in keys if k[0] == "same" for p in k[1:]}
        self.sized = {k[1] for k in keys if k[0] == "size"}
        self.lazy: dict[str, list[tuple[z3.BoolRef, z3.ReRef]]] = {}
        self.witness: dict[str, str] = {}
        self.members: dict[str, list[tuple[str, z3.BoolRef]]] = {}
        for k in keys:
            if k[0] == "list":
                self.members.setdefault(k[1], []).append((k[2], z3.Bool(f"member#{k[1]}#{k[2]}", ctx)))
        # `lit in list` is tied to the slots' values, so their strings are Z3 strings, not lazy.
        self.direct.update(slot for path in self.members for slot in self.slots.get(path, ()))
        for path in self.paths:
            self._value_constraints(path)
        self.terms: dict[tuple[object, FactKey], z3.ExprRef] = {}
        self.sessions = _Sessions(ctx, compiled, self.extra)

    # --- attribute values ----------------------------------------------------------------------
    def kind(self, path: str) -> z3.ArithRef:
        """The kind (ABSENT … MAP) of the value at `path`."""
        return z3.Int(f"kind#{path}", self.ctx)

    def string(self, path: str) -> z3.SeqRef:
        """The value at `path` when it is a string."""
        return z3.String(f"str#{path}", self.ctx)

    def number(self, path: str) -> z3.ArithRef:
        """The value at `path` when it is a number."""
        return z3.Real(f"num#{path}", self.ctx)

    def boolean(self, path: str) -> z3.BoolRef:
        """The value at `path` when it is a bool."""
        return z3.Bool(f"bool#{path}", self.ctx)

    def size(self, path: str) -> z3.ArithRef:
        """`size()` of the value at `path` (length, entries, keys)."""
        return z3.Int(f"size#{path}", self.ctx)

    def _value_constraints(self, path: str) -> None:
        kind, ctx = self.kind(path), self.ctx
        out = self.extra
        out.append(z3.And(kind >= ABSENT, kind <= MAP))
        parent = _parent(path)
        if path.endswith("]"):  # element i exists exactly when the list has more than i
            index = int(path[path.rindex("[") + 1:-1])
            out.append((kind != ABSENT) == z3.And(self.kind(parent) == LIST, self.size(parent) > index))
        elif parent not in _ROOTS:
            out.append(z3.Implies(kind != ABSENT, self.kind(parent) == MAP))
        number, size, text = self.number(path), self.size(path), self.string(path)
        out.append(z3.And(number >= -INT_LIMIT, number <= INT_LIMIT))  # requests hold no others
        out.append(size >= 0)
        out.append(z3.Implies(kind == STRING, size == z3.Length(text)))
        members = self.members.get(path, [])
        count = [z3.If(m, 1, 0) for _, m in members]
        out.append(z3.Implies(kind == LIST, size >= z3.Sum(*count) if count else size >= 0))
        slots = self.slots.get(path, [])
        for literal, member in members if slots else ():
            # Exact within the bound; beyond it the elements past the slots may hold the literal.
            found = z3.Or(*[self._holds(slot, _scalar(literal)) for slot in slots])
            out += [z3.Implies(z3.And(kind == LIST, found), member),
                    z3.Implies(z3.And(kind == LIST, member, size <= MACRO_BOUND), found)]
        children = [p for p in self.paths if _parent(p) == path and not p.endswith("]")]
        present = [z3.If(self.kind(c) != ABSENT, 1, 0) for c in children]
        out.append(z3.Implies(kind == MAP, size >= z3.Sum(*present) if present else size >= 0))
        # Examples are easiest to build and print from small decimals and printable ASCII.
        scaled = z3.Int(f"num1000#{path}", ctx)
        self.nice += [z3.ToReal(scaled) == number * 1000, number <= 10**12, number >= -(10**12),
                      z3.InRe(text, z3.Star(z3.Range(" ", "~", ctx=ctx))), size <= (3 if slots else 64)]

    def _holds(self, path: str, value: Scalar) -> z3.BoolRef:
        """The value at `path` is this JSON scalar."""
        kind = self.kind(path)
        if isinstance(value, bool):
            return z3.And(kind == BOOL, self.boolean(path) == value)
        if isinstance(value, Fraction):
            return z3.And(kind == NUMBER, self.number(path) == z3.RealVal(str(value), self.ctx))
        return z3.And(kind == STRING, self.string(path) == z3.StringVal(value, self.ctx))

    # --- facts ---------------------------------------------------------------------------------
    def term(self, key: FactKey, cp: CompiledPolicy | None = None) -> z3.ExprRef:
        """The symbolic meaning of one fact (for session facts and resource tests: as `cp` reads it)."""
        lower = bool(cp is not None and cp.policy.lower_resources)
        cache_key: tuple[object, FactKey] = ((id(cp) if key[0] in _SESSION else lower), key)
        found = self.terms.get(cache_key)
        if found is None:
            found = self.terms[cache_key] = self._term(key, cp, lower)
        return found

    def _resource_view(self, lower: bool) -> Strings:
        return self.lowered if lower and self.lowered is not None else self.resource

    def _text(self, path: str, lower: bool) -> z3.SeqRef:
        if path == "action":
            return self.action.text(self.extra)
        if path == "resource":
            view = self._resource_view(lower)
            text = view.text(self.extra)
            self.nice += view.nice
            return text
        return self.string(path)

    def _term(self, key: FactKey, cp: CompiledPolicy | None, lower: bool) -> z3.ExprRef:
        kind, ctx = key[0], self.ctx
        if kind == "act":
            return self.action.matches(key[1])
        if kind == "res":
            return self._resource_view(lower).matches(key[1])
        if kind == "ok":
            return z3.Or(*[self.kind(key[1]) == k for k in _KIND_OF_TYPE[key[2]]])
        if kind == "has":
            return self.kind(key[1]) != ABSENT
        if kind == "num":
            return self.number(key[1])
        if kind == "size":
            return z3.ToReal(self.size(key[1]))
        if kind == "bool":
            return self.boolean(key[1])
        if kind in _SESSION:
            assert cp is not None
            return self.sessions.term(cp, key)
        if kind == "str":
            op, subject, literal = key[1], key[2], _literal(key[3])
            if subject not in ("action", "resource") and subject not in self.direct:
                return self._lazy_atom(key)
            if subject in ("action", "resource") and op in ("eq", "in"):
                view = self.action if subject == "action" else self._resource_view(lower)
                options = [literal] if op == "eq" else list(literal)
                return z3.Or(z3.BoolVal(False, ctx), *[view.equals(v) for v in options])
            if subject in ("action", "resource") and op != "matches":
                view = self.action if subject == "action" else self._resource_view(lower)
                result = view.test(op, literal, self.extra)
                self.nice += view.nice
                return result
            text = self._text(subject, lower)
            if op == "eq":
                return text == z3.StringVal(literal, ctx)
            if op == "in":
                return z3.Or(z3.BoolVal(False, ctx), *[text == z3.StringVal(v, ctx) for v in literal])
            if op == "startsWith":
                return z3.PrefixOf(z3.StringVal(literal, ctx), text)
            if op == "endsWith":
                return z3.SuffixOf(z3.StringVal(literal, ctx), text)
            if op == "contains":
                return z3.Contains(text, z3.StringVal(literal, ctx))
            language = search_language(literal, ctx)
            if language is None:
                self.approximate.add(f"the regular expression {literal!r} is read as an unknown truth value")
                return z3.Bool(f"free#{'#'.join(key)}#{int(lower)}", ctx)
            return z3.InRe(text, language)
        if kind == "same":
            a, b = key[1], key[2]
            if {a, b} == {"action", "resource"}:
                return z3.BoolVal(False, ctx)  # a resource holds "/", an action never does
            if "action" in (a, b) or "resource" in (a, b):
                return self._text(a, lower) == self._text(b, lower)
            ka, kb = self.kind(a), self.kind(b)
            return z3.And(ka == kb, z3.Or(
                ka == NULL, z3.And(ka == STRING, self.string(a) == self.string(b)),
                z3.And(ka == NUMBER, self.number(a) == self.number(b)),
                z3.And(ka == BOOL, self.boolean(a) == self.boolean(b)),
                z3.And(ka >= LIST, z3.Bool(f"free#same#{a}#{b}", ctx))))
        if kind == "list":
            for literal, member in self.members.get(key[1], []):
                if literal == key[2]:
                    return member
        raise LicetError(f"the analysis has no meaning for the fact {key!r}")

    def _lazy_atom(self, key: FactKey) -> z3.BoolRef:
        op, path, literal = key[1], key[2], _literal(key[3])
        ctx = self.ctx
        full = z3.Full(z3.ReSort(z3.StringSort(ctx)))

        def word(text: str) -> z3.ReRef:
            return z3.Re(z3.StringVal(text, ctx))

        language: z3.ReRef | None
        if op == "eq":
            language = word(literal)
        elif op == "in":
            language = z3.Union(*[word(v) for v in literal]) if len(literal) > 1 else word(literal[0])
        elif op == "startsWith":
            language = z3.Concat(word(literal), full)
        elif op == "endsWith":
            language = z3.Concat(full, word(literal))
        elif op == "contains":
            language = z3.Concat(full, word(literal), full)
        else:
            language = search_language(literal, ctx)
        atom = z3.Bool(f"atom#{'#'.join(key)}", ctx)
        if language is None:
            self.approximate.add(f"the regular expression {literal!r} is read as an unknown truth value")
        else:
            self.lazy.setdefault(path, []).append((atom, language))
        return atom

    def lift(self, cp: CompiledPolicy, terms: Mapping[str, z3.ExprRef]) -> dict[str, z3.ExprRef]:
        """Compiled terms with every fact replaced by its symbolic meaning."""
        pairs = [(cp.vars[k], self.term(k, cp)) for k in cp.facts]
        if not all(old.sort().eq(new.sort()) for old, new in pairs):
            raise TypeError("a fact's symbolic meaning has another sort than the fact")  # a bug, never input
        # z3.substitute checks every pair's sorts again on each call: most of the analysis time for
        # 1 000 rules. The pairs are checked once above and passed to the C API for every term.
        size = len(pairs)
        old = (z3.Ast * size)(*(o.as_ast() for o, _ in pairs))
        new = (z3.Ast * size)(*(n.as_ast() for _, n in pairs))
        return {key: z3.z3._to_expr_ref(z3.Z3_substitute(self.ctx.ref(), term.as_ast(), size, old, new), self.ctx)
                for key, term in terms.items()}

    # --- examples ------------------------------------------------------------------------------
    def example(self, model: z3.ModelRef) -> tuple[dict[str, Any], str]:
        """A concrete request from a model (resource as sent, percent signs escaped), and the
        normal form of its resource the model describes."""
        resource = self.resource.example(model, self.lowered)
        request: dict[str, Any] = {"principal": {}, "action": self.action.example(model),
                                   "resource": resource.replace("%", "%25"), "args": {}, "context": {}}
        for path in self.paths:
            if "[" in path:
                continue  # built with its list (`_value`)
            value = self._value(model, path)
            if value is _ABSENT:
                continue
            root, *fields = path.split(".")
            target = request[root]
            for name in fields[:-1]:
                target = target.setdefault(name, {})
            if fields[-1] not in target:  # a map already built by a longer path stays
                target[fields[-1]] = value
        for path in self.paths:  # maps that must hold more keys than the paths name
            self._pad_map(model, path, request)
        return request, resource

    def _value(self, model: z3.ModelRef, path: str) -> Any:
        kind = model.eval(self.kind(path), model_completion=True).as_long()
        if kind == ABSENT:
            return _ABSENT
        if kind == NULL:
            return None
        if kind == STRING:
            return self.witness.get(path, _string(model, self.string(path)))
        if kind == NUMBER:
            return _json_number(model.eval(self.number(path), model_completion=True).as_fraction())
        if kind == BOOL:
            return bool(z3.is_true(model.eval(self.boolean(path), model_completion=True)))
        if kind == LIST:
            size = model.eval(self.size(path), model_completion=True).as_long()
            out: list[Any] = [self._element(model, slot) for slot in self.slots.get(path, [])[:size]]
            members = [_scalar(lit) for lit, m in self.members.get(path, [])
                       if z3.is_true(model.eval(m, model_completion=True))]
            out += [_json_number(m) if isinstance(m, Fraction) else m for m in members if m not in out]
            return out + [{"pad": i} for i in range(max(0, size - len(out)))]
        return {}

    def _element(self, model: z3.ModelRef, path: str) -> Any:
        """The value of a list element (or of a field below one), maps built from their fields."""
        value = self._value(model, path)
        if isinstance(value, dict):
            for child in self.paths:
                if _parent(child) == path and not child.endswith("]"):
                    found = self._element(model, child)
                    if found is not _ABSENT:
                        value[child.rsplit(".", 1)[1]] = found
            size = model.eval(self.size(path), model_completion=True).as_long()
            i = 0
            while len(value) < size:
                value.setdefault(f"pad{i}", 0)
                i += 1
        return value

    def _pad_map(self, model: z3.ModelRef, path: str, request: dict[str, Any]) -> None:
        if "[" in path or model.eval(self.kind(path), model_completion=True).as_long() != MAP:
            return
        root, *fields = path.split(".")
        target: Any = request[root]
        for name in fields:
            target = target.get(name) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return
        size = model.eval(self.size(path), model_completion=True).as_long()
        i = 0
        while len(target) < size:
            if f"pad{i}" not in target and f"{path}.pad{i}" not in self.paths:
                target[f"pad{i}"] = 0
            i += 1


_ABSENT = object()
_SESSION = ("count", "spent", "tainted", "bad_history")


def _json_number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)


class _Sessions:
    """Session facts, one set per invariant *meaning*: invariants of any policies that aggregate
    the same history the same way (kind, history selector, sum, window, case, types read) share
    them; any others are independent, related only by what holds for every history."""

    def __init__(self, ctx: z3.Context, compiled: Sequence[CompiledPolicy], extra: list[z3.BoolRef]) -> None:
        self.ctx = ctx
        self.signature: dict[tuple[int, str], str] = {}
        self.meaning: dict[str, tuple[CompiledPolicy, Invariant]] = {}
        groups: dict[str, list[tuple[int | None, str]]] = {}
        for cp in compiled:
            for inv in cp.policy.invariants:
                history, sig = _signature(cp.policy, inv)
                self.signature[(id(cp), inv.id)] = sig
                self.meaning.setdefault(sig, (cp, inv))
                groups.setdefault(history, []).append((inv.window_seconds, sig))
        for sig in self.meaning:
            extra.append(self.count(sig) >= 0)
            extra.append(self.spent(sig) >= 0)
        for members in groups.values():
            members = sorted(set(members), key=lambda m: (m[0] is None, m[0] or 0))
            for (_, small), (_, big) in pairwise(members):
                # A wider window over the same events sees at least as much.
                extra += [self.count(small) <= self.count(big), self.spent(small) <= self.spent(big),
                          z3.Implies(self.tainted(small), self.tainted(big)),
                          z3.Implies(self.bad(small), self.bad(big))]

    def count(self, sig: str) -> z3.ArithRef:
        """Matching events in the window."""
        return z3.Int(f"count#{sig}", self.ctx)

    def spent(self, sig: str) -> z3.ArithRef:
        """The sum of usable amounts in the window."""
        return z3.Real(f"spent#{sig}", self.ctx)

    def tainted(self, sig: str) -> z3.BoolRef:
        """A source event lies in the window."""
        return z3.Bool(f"tainted#{sig}", self.ctx)

    def bad(self, sig: str) -> z3.BoolRef:
        """An event in the window had an unusable amount."""
        return z3.Bool(f"bad#{sig}", self.ctx)

    def term(self, cp: CompiledPolicy, key: FactKey) -> z3.ExprRef:
        """A session fact of one of `cp`'s invariants."""
        sig = self.signature[(id(cp), key[1])]
        if key[0] == "count":
            return z3.ToReal(self.count(sig))
        if key[0] == "spent":
            return self.spent(sig)
        return self.tainted(sig) if key[0] == "tainted" else self.bad(sig)

    def empty(self) -> list[z3.BoolRef]:
        """The facts of an empty history."""
        return [z3.And(self.count(s) == 0, self.spent(s) == 0, z3.Not(self.tainted(s)), z3.Not(self.bad(s)))
                for s in self.meaning]

    def targets(self, model: z3.ModelRef) -> list[tuple[CompiledPolicy, Invariant, dict[str, Any]]]:
        """What each invariant meaning must have seen, per the model."""
        out = []
        for sig, (cp, inv) in self.meaning.items():
            value = {
                "count": model.eval(self.count(sig), model_completion=True).as_long(),
                "spent": model.eval(self.spent(sig), model_completion=True).as_fraction(),
                "tainted": z3.is_true(model.eval(self.tainted(sig), model_completion=True)),
                "bad_history": z3.is_true(model.eval(self.bad(sig), model_completion=True)),
            }
            out.append((cp, inv, value))
        return out


def _signature(policy: Policy, inv: Invariant) -> tuple[str, str]:
    """(what events an invariant aggregates and how, that plus its window): equal strings mean
    equal session facts under every history."""
    selector = inv.source or inv.selector
    attrs: set[str] = set()
    _attrs_of(selector.when, attrs)
    for leaf, _ in (inv.sum.terms if inv.sum else ()):
        attrs.add((leaf.attr if isinstance(leaf, SizeOf) else leaf).name)
    types = sorted((a, policy.types.get(a)) for a in attrs)
    history = repr((inv.kind == "flow", inv.kind, selector.actions, selector.resources, selector.when,
                    inv.sum, policy.lower_resources, types))
    return history, repr((history, inv.window_seconds))


def _attrs_of(cond: Cond, out: set[str]) -> None:
    if isinstance(cond, Not):
        _attrs_of(cond.arg, out)
    elif isinstance(cond, (And, Or)):
        for arg in cond.args:
            _attrs_of(arg, out)
    elif isinstance(cond, (Has, BoolAttr, ListHas)):
        out.add(cond.attr.name)
    elif isinstance(cond, StringTest):
        out.add(cond.subject.name)
    elif isinstance(cond, SameValue):
        out.update((cond.left.name, cond.right.name))
    elif isinstance(cond, Compare):
        for leaf, _ in cond.expr.terms:
            out.add((leaf.attr if isinstance(leaf, SizeOf) else leaf).name)
    elif isinstance(cond, ListMacro):
        out.add(cond.attr.name)
        _attrs_of(cond.body, out)


class _Outcomes:
    """One policy's outcome formulas over the shared symbolic request."""

    def __init__(self, cp: CompiledPolicy, request: SymbolicRequest) -> None:
        self.cp = cp
        items = (*cp.rules, *cp.invariants)
        # A request this policy refuses as invalid is decided by nothing in it.
        valid = z3.BoolVal(True, cp.ctx) if cp.policy.keep_escapes else request.resource.escape_free()
        # Nor one with a list longer than the macros' bound where a matching item iterates over it.
        refused = [z3.And(self._selected(request, item.selector), z3.Or(*[
            z3.And(request.kind(a.name) == LIST, request.size(a.name) > MACRO_BOUND) for a in item.lists]))
            for item in items if item.lists and item.selector is not None]
        if refused:
            valid = z3.And(valid, z3.Not(z3.Or(*refused)))
        lifted = request.lift(cp, {item.id: item.applies for item in items})
        self.applies = {i: z3.And(valid, term) for i, term in lifted.items()}
        # A violated invariant decides like a rule of its effect (forbid or require_approval).
        self.effects = {item.id: item.effect for item in items}
        self.invariants = {item.id for item in cp.invariants}
        false = z3.BoolVal(False, cp.ctx)
        self.forbidden = z3.Or(false, *[self.applies[i] for i, e in self.effects.items() if e == "forbid"])
        self.approval = z3.Or(false, *[self.applies[i] for i, e in self.effects.items()
                                       if e == "require_approval"])
        self.permit = z3.Or(false, *[self.applies[i] for i, e in self.effects.items() if e == "permit"])
        self.permitted = z3.And(z3.Not(self.forbidden), z3.Not(self.approval), self.permit)

    def _selected(self, request: SymbolicRequest, selector: Selector) -> z3.BoolRef:
        """The request matches the selector's action and resource patterns (as `cp` reads them)."""
        parts = [z3.Or(*[request.term(("act", g.pattern), self.cp) for g in selector.actions])]
        if selector.resources is not None:
            parts.append(z3.Or(*[request.term(("res", g.pattern), self.cp) for g in selector.resources]))
        return z3.And(*parts)

    def applying(self, model: z3.ModelRef) -> list[str]:
        return sorted(i for i, t in self.applies.items() if z3.is_true(model.eval(t, model_completion=True)))


@dataclass
class _Search:
    """The result of looking for examples of one goal."""

    answer: QueryResult
    examples: list[Example]
    reason: str | None = None


class _Analysis:
    """Policies compiled into one context, with the symbolic request and a solver."""

    def __init__(self, policies: Mapping[str, Policy], budget: Budget = DEFAULT_BUDGET) -> None:
        self.ctx = z3.Context()
        self.budget = budget
        self.labels = list(policies)
        self.policies = dict(policies)
        self.compiled = {label: CompiledPolicy(p, self.ctx) for label, p in policies.items()}
        self.request = SymbolicRequest(self.ctx, list(self.compiled.values()))
        self.outcomes = {label: _Outcomes(cp, self.request) for label, cp in self.compiled.items()}
        self.solver = z3.Solver(ctx=self.ctx)
        self.solver.set("timeout", budget.timeout_ms)
        self.solver.add(*self.request.extra)  # complete: every fact was lifted above
        self.lemmas: list[z3.BoolRef] = []
        self.witnesses: dict[tuple[str, tuple[bool, ...], str | None], str] = {}  # see _string_lemmas
        self.unknown_reason = ""

    def _check(self, *goals: z3.BoolRef) -> z3.CheckSatResult:
        self.solver.push()
        try:
            self.solver.add(*goals)
            return self._solve()
        finally:
            self.solver.pop()

    def _solve(self) -> z3.CheckSatResult:
        """`check()`, with the strings tested against literals decided lazily: each model's
        choice of tests per string is checked as one regular membership; an impossible choice
        becomes a lemma (a fact about all strings) and the solver is asked again."""
        self.solver.add(*self.lemmas)
        for _ in range(self.budget.lemmas):
            result = self.solver.check()
            if result != z3.sat:
                return result
            lemmas = self._string_lemmas(self.solver.model())
            if lemmas is None:
                return result
            if not lemmas:
                self.unknown_reason = "a string test the solver could not decide"
                return z3.unknown
            self.lemmas += lemmas
            self.solver.add(*lemmas)
        self.unknown_reason = f"more than {self.budget.lemmas} string refinements"
        return z3.unknown

    def _string_lemmas(self, model: z3.ModelRef) -> list[z3.BoolRef] | None:
        """None when every lazily decided string has a value agreeing with `model` (kept in
        `witness`), else the lemmas excluding what does not (empty: the check was unknown)."""
        request = self.request
        lemmas: list[z3.BoolRef] = []
        printable = z3.Star(z3.Range(" ", "~", ctx=self.ctx))
        for path, atoms in request.lazy.items():
            kind = request.kind(path)
            if model.eval(kind, model_completion=True).as_long() != STRING:
                continue
            bits = tuple(z3.is_true(model.eval(a, model_completion=True)) for a, _ in atoms)
            size = model.eval(request.size(path), model_completion=True)
            # Most checks ask again for a choice already shown to have a string (every rule checked
            # alone picks the same few tests): the regular check runs once per choice and length.
            key = (path, bits, str(size) if path in request.sized else None)
            if key in self.witnesses:
                request.witness[path] = self.witnesses[key]
                continue
            chosen = [a if bit else z3.Not(a) for (a, _), bit in zip(atoms, bits, strict=True)]
            language = z3.Full(z3.ReSort(z3.StringSort(self.ctx)))
            for (atom, regex), literal in zip(atoms, chosen, strict=True):
                language = z3.Intersect(language, regex if literal.eq(atom) else z3.Complement(regex))
            value = z3.String(f"witness#{path}", self.ctx)
            found = None
            # The length matters only where a condition reads size().
            length = [z3.Length(value) == size] if path in request.sized else []
            for extra in ([z3.InRe(value, printable)], []):
                result = _quick_check(self.ctx, z3.InRe(value, language), *length, *extra)
                if isinstance(result, str):
                    found = result
                    break
                if result == z3.unknown:
                    return []
            if found is not None:
                request.witness[path] = self.witnesses[key] = found
                continue
            anywhere = _quick_check(self.ctx, z3.InRe(value, language))
            if anywhere == z3.unknown:
                return []
            if anywhere == z3.unsat:
                lemmas.append(z3.Implies(kind == STRING, z3.Not(z3.And(*chosen))))
            else:
                lemmas.append(self._length_lemma(value, language, size, z3.And(kind == STRING, *chosen),
                                                 request.size(path)))
        return lemmas or None

    def _length_lemma(self, value: z3.SeqRef, language: z3.ReRef, size: z3.ExprRef, when: z3.BoolRef,
                      variable: z3.ArithRef) -> z3.BoolRef:
        """Why no string of `language` has length `size`: none that long, none that short, or
        just not this length."""
        if _quick_check(self.ctx, z3.InRe(value, language), z3.Length(value) >= size) == z3.unsat:
            return z3.Implies(when, variable < size)
        if _quick_check(self.ctx, z3.InRe(value, language), z3.Length(value) <= size) == z3.unsat:
            return z3.Implies(when, variable > size)
        return z3.Implies(when, variable != size)

    def search(self, goal: z3.BoolRef, limit: int, expect: Mapping[str, bool]) -> _Search:
        """"no" (unsat: proved), or up to `limit` confirmed examples of `goal`, each with a different
        set of applying rules ("yes"), or "unknown" with the reason."""
        first = self._check(goal)
        if first == z3.unsat:
            return _Search("no", [])
        if first == z3.unknown:
            why = self.unknown_reason or f"the solver gave up: {self.solver.reason_unknown()}"
            return _Search("unknown", [], why)
        found: list[Example] = []
        tried = 0
        request = self.request
        # Easy examples first (an empty history, small decimals, printable strings), then any.
        tiers = [[*request.nice, *request.sessions.empty()], []]
        for tier in tiers:
            self.solver.push()
            self.solver.add(goal, *tier)
            try:
                while len(found) < limit and tried < self.budget.attempts:
                    result = self._solve()
                    if result != z3.sat:
                        break
                    tried += 1
                    model = self.solver.model()
                    example = self._example(model, expect)
                    if example.confirmed:
                        found.append(example)
                        block = [o.applies[i] == z3.is_true(model.eval(o.applies[i], model_completion=True))
                                 for o in self.outcomes.values() for i in o.applies]
                    else:
                        block = self._valuation(model)  # refine: this candidate is spurious
                    self.solver.add(z3.Not(z3.And(*block)) if block else z3.BoolVal(False, self.ctx))
            finally:
                self.solver.pop()
            if found:
                return _Search("yes", found)
        notes = sorted(self.request.approximate)
        return _Search("unknown", [], f"no confirmed example after {tried} candidate(s)"
                       + (f" ({'; '.join(notes)})" if notes else ""))

    def _valuation(self, model: z3.ModelRef) -> list[z3.BoolRef]:
        """Every lifted fact's truth in `model`: excluding it moves the search on."""
        out = []
        for term in self.request.terms.values():
            if z3.is_bool(term):
                out.append(term == z3.is_true(model.eval(term, model_completion=True)))
            else:
                out.append(term == model.eval(term, model_completion=True))
        return out

    def _example(self, model: z3.ModelRef, expect: Mapping[str, bool]) -> Example:
        request, resource = self.request.example(model)
        rules = {label: self.outcomes[label].applying(model) for label in self.policies}
        try:
            history = _history(self.request.sessions.targets(model), request)
        except (LicetError, _NoHistory):
            return Example(request, {}, {}, rules, False)
        state = {"history": history}
        outcomes: dict[str, str] = {}
        session: dict[str, Any] = {}
        confirmed = True
        for label, policy in self.policies.items():
            try:
                decision = decide(policy, request, state=state, now=NOW)
            except LicetError as exc:
                outcomes[label] = f"invalid: {exc}"
                confirmed = False
                continue
            outcomes[label] = decision.outcome
            session[label] = {k: dict(v) for k, v in decision.session.items()}
            normal = resource.lower() if policy.lower_resources else resource
            if decision.request.resource != normal or decision.request.action != request["action"]:
                confirmed = False  # the printed request is not the one the model describes
            if label in expect and (decision.outcome == "permit") != expect[label]:
                confirmed = False
        return Example(request, session, outcomes, rules, confirmed, state)

    def never_applies(self, label: str) -> list[NeverApplies]:
        out = []
        o = self.outcomes[label]
        for rule_id, term in o.applies.items():
            effect = o.effects[rule_id]
            if rule_id in o.invariants:
                continue
            # Most rules decide some request: one check of the strongest question settles all three.
            deciding = [term, *([z3.Not(o.forbidden)] if effect != "forbid" else []),
                        *([z3.Not(o.approval)] if effect == "permit" else [])]
            if self._check(*deciding) == z3.sat:
                continue
            if self._check(term) == z3.unsat:
                out.append(NeverApplies(label, rule_id, "no request satisfies its patterns and condition"))
            elif effect != "forbid" and self._check(term, z3.Not(o.forbidden)) == z3.unsat:
                out.append(NeverApplies(label, rule_id, "shadowed: a forbid rule or invariant applies "
                                                        "to every request it matches"))
            elif effect == "permit" and self._check(term, z3.Not(o.forbidden), z3.Not(o.approval)) == z3.unsat:
                out.append(NeverApplies(label, rule_id, "shadowed: every request it matches needs approval"))
        return out


def _quick_check(ctx: z3.Context, *facts: z3.BoolRef) -> z3.CheckSatResult | str:
    """unsat / unknown, or the string `witness#…` takes in a model."""
    solver = z3.Solver(ctx=ctx)
    solver.set("timeout", 2000)
    solver.add(*facts)
    result = solver.check()
    if result != z3.sat:
        return result
    model = solver.model()
    for decl in model.decls():
        if decl.name().startswith("witness#"):
            return _string(model, decl())
    return ""


class _NoHistory(Exception):
    """No history was found giving the session facts a model asks for."""


def _history(targets: Sequence[tuple[CompiledPolicy, Invariant, dict[str, Any]]],
             request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Events (before `NOW`) after which each invariant has seen what `targets` ask: found by
    solving for events matching each invariant's history selector, narrowest window first. The
    result is checked by re-deciding the example, so a wrong guess here is never an answer."""
    from licet.kernel.decision import invariant_state  # the kernel's own aggregation

    events: list[dict[str, Any]] = []
    finite = [inv.window_seconds for _, inv, _ in targets if inv.window_seconds]
    horizon = max(finite, default=0) + 1
    ordered = sorted(targets, key=lambda t: (t[1].window_seconds is None, t[1].window_seconds or 0))
    subject = Subject(request.get("principal", {}), "x", "/", {}, request.get("context", {}))
    for cp, inv, want in ordered:
        have = invariant_state(cp, [inv], subject, {"history": events}, NOW)
        time = NOW - (inv.window_seconds - 1 if inv.window_seconds else horizon)
        if inv.kind == "flow":
            if want["tainted"] and not have[("tainted", inv.id)]:
                events.append({"time": time, **_event(cp.policy, inv, None)})
            elif have[("tainted", inv.id)] and not want["tainted"]:
                raise _NoHistory
        elif inv.kind == "count":
            missing = want["count"] - int(have[("count", inv.id)])
            if missing < 0:
                raise _NoHistory
            if missing:
                event = _event(cp.policy, inv, None)
                events += [{"time": time, **event} for _ in range(missing)]
        else:
            missing_amount = want["spent"] - have[("spent", inv.id)]
            if missing_amount < 0 or (have[("bad_history", inv.id)] and not want["bad_history"]):
                raise _NoHistory
            if missing_amount:
                events.append({"time": time, **_event(cp.policy, inv, "({sum}) * "
                                                      f"{missing_amount.denominator} == {missing_amount.numerator}")})
            if want["bad_history"] and not have[("bad_history", inv.id)]:
                events.append({"time": time, **_event(cp.policy, inv, "({sum}) < 0")})
    return events


def _event(policy: Policy, inv: Invariant, amount: str | None) -> dict[str, Any]:
    """One request matching `inv`'s history selector (and, for budgets, the test `amount` of its
    sum, written with `{sum}`)."""
    index = policy.invariants.index(inv)
    raw = policy.document["invariants"][index]
    selector: Mapping[str, Any] = raw["source"] if inv.kind == "flow" else raw
    when = selector.get("when")
    if amount is not None:
        when = f"({when or 'true'}) && " + amount.format(sum=raw["sum"])
    rule = {"id": "event", "effect": "permit", "action": selector["action"],
            **({"resource": selector["resource"]} if "resource" in selector else {}),
            **({"when": when} if when else {})}
    matcher = load_policy({"id": "event", "resource_case": "insensitive" if policy.lower_resources
                           else "sensitive", "resource_escapes": "keep" if policy.keep_escapes else "refuse",
                           "rules": [rule]}, "<history event>")
    analysis = _Analysis({"event": matcher})
    found = analysis.search(analysis.outcomes["event"].permitted, 1, {"event": True})
    if not found.examples:
        raise _NoHistory
    request = dict(found.examples[0].request)
    return {key: request[key] for key in ("principal", "action", "resource", "args", "context")}


def diff(old: Policy, new: Policy, *, max_examples: int = 5, budget: Budget = DEFAULT_BUDGET) -> PolicyDiff:
    """What `new` permits that `old` did not, and the reverse, each with confirmed examples."""
    analysis = _Analysis({"old": old, "new": new}, budget)
    o, n = analysis.outcomes["old"], analysis.outcomes["new"]
    gained = analysis.search(z3.And(n.permitted, z3.Not(o.permitted)), max_examples,
                             {"new": True, "old": False})
    lost = analysis.search(z3.And(o.permitted, z3.Not(n.permitted)), max_examples,
                           {"old": True, "new": False})
    never = analysis.never_applies("old") + analysis.never_applies("new")
    proof: dict[str, Any] = {"solver": SOLVER, "method": "symbolic request over both versions",
                             "action_segments": analysis.request.action.bound,
                             "resource_segments": analysis.request.resource.bound}
    answer: DiffAnswer
    reason = None
    if gained.answer == "yes" or lost.answer == "yes":
        answer = "differs"
    elif gained.answer == "no" and lost.answer == "no":
        answer = "equivalent"
        proof["equivalence"] = "unsat in both directions: the versions permit exactly the same requests"
    else:
        answer = "unknown"
        reason = "; ".join(r for r in (gained.reason, lost.reason) if r)
    return PolicyDiff(answer == "equivalent", tuple(gained.examples), tuple(lost.examples), tuple(never),
                      proof, answer, reason)


def never_applying_rules(policy: Policy) -> list[NeverApplies]:
    """Rules of `policy` proved never to apply, or whose effect can never decide anything."""
    return _Analysis({"policy": policy}).never_applies("policy")


def query(policy: Policy, pattern: Mapping[str, Any], *, budget: Budget = DEFAULT_BUDGET) -> QueryAnswer:
    """Can any request matching `pattern` ({action, resource, when}) be permitted by `policy`? The
    pattern reads resources as the policy does (case-folded when it is case-insensitive)."""
    selector = {k: v for k, v in pattern.items() if k in ("action", "resource", "when")}
    unknown = sorted(set(pattern) - {"action", "resource", "when"})
    if unknown:
        raise InvalidRequest(f"query.{unknown[0]}", "unknown field (expected action, resource, when)")
    case = "insensitive" if policy.lower_resources else "sensitive"
    escapes = "keep" if policy.keep_escapes else "refuse"
    query_policy = load_policy({"id": "query", "resource_case": case, "resource_escapes": escapes, "rules": [
        {"id": "query", "effect": "permit", **({"action": "**"} | selector)}]}, "<query>")
    analysis = _Analysis({"policy": policy, "query": query_policy}, budget)
    matches = analysis.outcomes["query"].applies["query"]
    found = analysis.search(z3.And(matches, analysis.outcomes["policy"].permitted), 1,
                            {"policy": True, "query": True})
    proof: dict[str, Any] = {"solver": SOLVER, "method": "symbolic request"}
    if found.answer == "yes":
        return QueryAnswer(True, found.examples[0], proof, "yes")
    if found.answer == "no":
        proof["result"] = "unsat: no request matching the pattern is permitted"
        return QueryAnswer(False, None, proof, "no")
    return QueryAnswer(False, None, proof, "unknown", found.reason)


def permits_more(child: Policy, parent: Policy, *, budget: Budget = DEFAULT_BUDGET) -> Widening:
    """Does `child` permit a request `parent` does not? "no" is a proof that it does not."""
    analysis = _Analysis({"parent": parent, "child": child}, budget)
    found = analysis.search(
        z3.And(analysis.outcomes["child"].permitted, z3.Not(analysis.outcomes["parent"].permitted)),
        1, {"child": True, "parent": False})
    return Widening(found.answer, found.examples[0] if found.examples else None, found.reason)


def unapprovable(policy: Policy, voters: Iterable[str]) -> list[tuple[Rule | Invariant, str]]:
    """require_approval rules and invariants naming a role no person who may vote can hold
    (`voters`: the roles that may vote on approvals), each with that role: their requests could never
    be approved."""
    allowed = set(voters)
    items: tuple[Rule | Invariant, ...] = (*policy.rules, *policy.invariants)
    return [(item, item.approval.role) for item in items
            if item.approval is not None and item.approval.role is not None and item.approval.role not in allowed]


def approval_role_warnings(policy: Policy, voters: Iterable[str]) -> list[NeverApplies]:
    """`unapprovable` as warnings (the server refuses to activate such a policy)."""
    allowed = set(voters)
    return [NeverApplies("policy", item.id, f"approval role {role!r} is held by no person who may vote (roles "
                                            f"that may: {', '.join(sorted(allowed))}); the server refuses to "
                                            "activate the policy")
            for item, role in unapprovable(policy, allowed)]


def check_policy(policy: Policy, voters: Iterable[str]) -> list[NeverApplies]:
    """The warnings `licet policy check` and the server's validate share: rules proved never to
    apply, and approval roles no voter can hold."""
    return never_applying_rules(policy) + approval_role_warnings(policy, voters)


__all__ = ["Budget", "Example", "NeverApplies", "PolicyDiff", "QueryAnswer", "Widening", "check_policy",
           "diff", "never_applying_rules", "permits_more", "query", "unapprovable"]


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
