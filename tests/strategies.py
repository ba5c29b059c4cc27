"""Hypothesis strategies for Licet policies, requests and session states.

Policies are drawn around a small per-policy vocabulary (`PolicyCtx`: attribute paths with one type
each, string/number constants, action and resource segments) and requests are drawn from the same
vocabulary, so rules apply often; requests also carry absent and wrong-typed attributes, traversal
and percent-encoded resources, URIs and plainly invalid fields. Generated policies are
type-consistent (each attribute path has one type), except where a path ends up compared only
with another path — then the spec says the policy is invalid, and the agreement test checks that
the kernel rejects it.
"""

from __future__ import annotations

import copy
import random
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "Case",
    "PolicyCtx",
    "invalid_policy",
    "policy_and_requests",
    "regex_pattern",
]

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------

# No path is a prefix of another, so every typed path can hold a leaf value.
PATHS = (
    "principal.role", "principal.level", "principal.groups", "principal.admin", "principal.team",
    "principal.flags.vip", "args.amount", "args.fee", "args.name", "args.url", "args.tags",
    "args.force", "args.meta.kind", "args.meta.n", "args.payload", "args.count",
    "context.mfa", "context.risk", "context.ip", "context.session.age", "context.flags.trusted",
)
# Lists that `all` / `exists` iterate over (issue 21), with what their elements are: strings, or maps
# of MAP_ELEMENT_FIELDS. Never in PATHS, so a list's type comes from its macros alone.
MACRO_LISTS = {"args.to": "string", "args.items": "map", "context.hops": "string"}
MAP_ELEMENT_FIELDS = {"amount": "number", "name": "string", "ok": "bool"}
MACRO_BOUND = 16  # the longest list a macro reads; a longer one is invalid input
# Paths only ever used under has(): no type needed.
HAS_ONLY_PATHS = ("args.extra", "principal.nick", "context.trace.id")
TYPES = ("string", "string", "string", "number", "number", "number", "bool", "bool", "list",
         "sized")

STRING_CONSTS = (
    "ops", "admin", "analyst", "Ops", "https://intranet.example/", "https://evil.example/x", "a.b",
    "", "é", "😀x", "a b", "x'y", 'q"r', "back\\slash", "10.0.0.1", "user@example.com",
    "a12", "db.read", "x\x85y", "x\u2028y", "\U0001f600",
)
# Strings that only requests carry: RE2-vs-Python regex corner cases, near misses.
EXTRA_REQUEST_STRINGS = ("ops\n", "٣", "OPS", "ops ", " ops", "op", "https://intranet.example",
                         "xopsx", "😀", "e\u0301")
NUMBER_LITERALS = ("0", "1", "2", "3", "5", "10", "100", "1000", "5000", "0.5", "2.25", "0.1",
                   "0.2", "0.3", "1000.5", "9007199254740991")
SERVICES = ("db", "api", "payments", "http", "email", "fs")
VERBS = ("read", "write", "delete", "delete_all", "transfer", "post", "send", "list")
SEGMENTS = ("data", "database", "pii", "api", "v1", "prod", "x", "Data", "a.b", "é", "users",
            "%2f", "...", "e\u0301", "Stra\u00dfe", "STRASSE", "\u03a3\u039f\u03a6\u038a\u0391\u03a3", "\u212a",
            "x\u2028y")
URI_PREFIXES = ("https://api.example.com", "HTTPS://Api.Example.COM", "s3://bucket")
WINDOWS: tuple[str | int, ...] = ("1h", "24h", "30m", "90s", "1d", 3600, 600)
WINDOW_SECONDS = {"1h": 3600, "24h": 86400, "30m": 1800, "90s": 90, "1d": 86400, 3600: 3600,
                  600: 600}
NOW_BASE = 1_700_000_000
_ACTION_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass
class PolicyCtx:
    """What a policy is built from; requests draw from the same pools so rules apply often."""

    types: dict[str, str]
    strings: list[str]
    numbers: list[str]  # literal texts
    services: list[str]
    verbs: list[str]
    segments: list[str]
    uri_prefixes: list[str]
    insensitive: bool
    stateful: bool
    action_globs: list[str] = field(default_factory=list)
    resource_globs: list[str] = field(default_factory=list)
    list_literals: list[str] = field(default_factory=list)
    macro_lists: dict[str, str] = field(default_factory=dict)  # path -> element kind (MACRO_LISTS)

    def lists_of(self, *, args_only: bool = False) -> list[str]:
        return [p for p in self.macro_lists if not args_only or p.startswith("args.")]

    def paths_of(self, typ: str, *, args_only: bool = False) -> list[str]:
        return [p for p, t in self.types.items()
                if t == typ and (not args_only or p.startswith("args."))]


@dataclass
class Case:
    """One policy and the (request, state, now) triples to decide under it."""

    policy: dict[str, Any]
    requests: list[tuple[dict[str, Any], dict[str, Any] | None, float | datetime]]

    def __repr__(self) -> str:
        # Hypothesis prints the falsifying Case; the failing request itself is in the assertion.
        return f"Case(policy={self.policy!r}, requests=<{len(self.requests)} requests>)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# --------------------------------------------------------------------------------------------------
# Literals
# --------------------------------------------------------------------------------------------------


def cel_string(s: str, quote: str = '"') -> str:
    """A CEL string literal for `s` (only `\\\\` and quote escapes)."""
    return quote + s.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


_REGEX_META = set("\\.^$|?*+()[]{}")


def regex_escape(s: str) -> str:
    return "".join("\\" + c if c in _REGEX_META else c for c in s)


@st.composite
def regex_pattern(draw: st.DrawFn, strings: list[str] | None = None) -> str:
    """A regex of the RE2 ∩ Python subset: literals, classes, `.`, anchors, groups, quantifiers."""
    pool = strings or list(STRING_CONSTS)
    s = draw(st.sampled_from(pool))
    k = draw(st.integers(1, 4))
    derived = ["^" + regex_escape(s[:k]), regex_escape(s[-k:]) + "$", regex_escape(s),
               "^" + regex_escape(s) + "$"]
    fixed = [
        r"\d+", r"^\d{2,4}$", "^[a-z]+$", "[A-Z]", "(ops|admin)", "a.c", r"^https?://[a-z.]+/",
        r"\s", r"\w+@\w+\.com", "^$", "ops$", r"^[^/]*\.[a-z]{1,3}$", "(?:ab)+|x?y*z", "[-a]",
        r"[\d.]{3,}", "é|😀", "^.{2}$",
    ]
    return draw(st.sampled_from(derived)) if draw(st.booleans()) else draw(st.sampled_from(fixed))


def _num_lit(text: str, negative: bool = False) -> str:
    return f"-{text}" if negative else text


# --------------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------------


def _paren(s: str) -> str:
    return f"({s})"


@st.composite
def num_expr(draw: st.DrawFn, ctx: PolicyCtx, depth: int, args_only: bool = False) -> str:
    paths = ctx.paths_of("number", args_only=args_only)
    opts = ["lit"] + (["path"] * 3 if paths else [])
    sized = ctx.paths_of("sized", args_only=args_only) + ctx.paths_of("list", args_only=args_only)
    if sized:
        opts.append("size")
    if depth > 0:
        opts += ["add", "sub", "neg", "mul", "mul"]
    kind = draw(st.sampled_from(opts))
    if kind == "path":
        return draw(st.sampled_from(paths))
    if kind == "lit":
        return _num_lit(draw(st.sampled_from(ctx.numbers)), draw(st.booleans()) and
                        draw(st.booleans()))
    if kind == "size":
        p = draw(st.sampled_from(sized))
        return f"size({p})" if draw(st.booleans()) else f"{p}.size()"
    sub = num_expr(ctx, depth - 1, args_only)
    if kind in ("add", "sub"):
        op = "+" if kind == "add" else "-"
        right = draw(sub)
        if " " in right and (op == "-" or draw(st.booleans())):
            right = _paren(right)
        return f"{draw(sub)} {op} {right}"
    if kind == "neg":
        inner = draw(sub)
        return f"-{inner}" if "." in inner and " " not in inner else f"-{_paren(inner)}"
    k = draw(st.sampled_from(ctx.numbers))
    inner = draw(sub)
    inner = _paren(inner) if " " in inner else inner
    return f"{k} * {inner}" if draw(st.booleans()) else f"{inner} * {k}"


@st.composite
def str_operand(draw: st.DrawFn, ctx: PolicyCtx, args_only: bool = False) -> str:
    paths = ctx.paths_of("string", args_only=args_only)
    opts = ["resource", "action"] + paths * 3
    return draw(st.sampled_from(opts))


@st.composite
def str_literal(draw: st.DrawFn, ctx: PolicyCtx, subject: str) -> str:
    if subject == "resource":
        pool = _resource_literals(ctx)
    elif subject == "action":
        pool = [f"{s}.{v}" for s in ctx.services for v in ctx.verbs]
    else:
        pool = ctx.strings
    return cel_string(draw(st.sampled_from(pool)), draw(st.sampled_from(['"', "'"])))


def _resource_literals(ctx: PolicyCtx) -> list[str]:
    out = ["/" + s for s in ctx.segments] + ["/" + "/".join(ctx.segments[:2]), "/"]
    return [o.lower() if ctx.insensitive else o for o in out]


@st.composite
def element_cond(draw: st.DrawFn, ctx: PolicyCtx, var: str, kind: str, depth: int,
                 args_only: bool) -> str:
    """A macro's condition on its element `var` (a string, or a map of MAP_ELEMENT_FIELDS),
    sometimes combined with a condition on the rest of the request."""
    if depth > 0 and draw(st.integers(0, 2)) == 0:
        op = draw(st.sampled_from(["&&", "||", "!", "outer"]))
        sub = element_cond(ctx, var, kind, depth - 1, args_only)
        if op == "!":
            return f"!({draw(sub)})"
        right = draw(atom(ctx, args_only, macros=False)) if op == "outer" else draw(sub)
        return f"({draw(sub)}) {draw(st.sampled_from(['&&', '||'])) if op == 'outer' else op} ({right})"
    lit = cel_string(draw(st.sampled_from([*ctx.strings, "@example.com"])))
    if kind == "string":
        choice = draw(st.integers(0, 6))
        if choice == 0:
            return f"{var} == {lit}" if draw(st.booleans()) else f"{var} != {lit}"
        if choice == 1:
            return f"{var}.matches({cel_string(draw(regex_pattern(ctx.strings)))})"
        if choice == 2:
            return f"size({var}) > {draw(st.sampled_from(['0', '1', '5']))}"
        if choice == 3:
            return f"{var} in [{lit}, {cel_string(draw(st.sampled_from(ctx.strings)))}]"
        return f"{var}.{draw(st.sampled_from(['startsWith', 'endsWith', 'contains']))}({lit})"
    choice = draw(st.integers(0, 5))
    number = draw(st.sampled_from(ctx.numbers))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    if choice == 0:
        return f"{var}.amount {op} {number}"
    if choice == 1 and ctx.paths_of("number", args_only=args_only):
        return f"{var}.amount + {draw(st.sampled_from(ctx.paths_of('number', args_only=args_only)))} {op} {number}"
    if choice == 2:
        return f"{var}.name.{draw(st.sampled_from(['startsWith', 'endsWith']))}({lit})"
    if choice == 3:
        return f"{var}.ok" if draw(st.booleans()) else f"!{var}.ok"
    if choice == 4:
        return f"has({var}.{draw(st.sampled_from(sorted(MAP_ELEMENT_FIELDS)))})"
    return f"{var}.name == {lit}"


@st.composite
def macro(draw: st.DrawFn, ctx: PolicyCtx, args_only: bool) -> str:
    """`list.all(x, ...)`, `list.exists(x, ...)`, and the other uses of a macro's list."""
    path = draw(st.sampled_from(ctx.lists_of(args_only=args_only)))
    kind = ctx.macro_lists[path]
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return f"size({path}) {draw(st.sampled_from(['>', '<=', '==']))} {draw(st.sampled_from(['0', '2', '16']))}"
    if choice == 1 and kind == "string":
        lit = draw(st.sampled_from(ctx.strings))
        ctx.list_literals.append(lit)
        return f"{cel_string(lit)} in {path}"
    var = draw(st.sampled_from(["r", "x", "item", "e"]))
    body = draw(element_cond(ctx, var, kind, 2, args_only))
    return f"{path}.{draw(st.sampled_from(['all', 'exists']))}({var}, {body})"


@st.composite
def atom(draw: st.DrawFn, ctx: PolicyCtx, args_only: bool = False, macros: bool = True) -> str:
    bools = ctx.paths_of("bool", args_only=args_only)
    lists = ctx.paths_of("list", args_only=args_only)
    strs = ctx.paths_of("string", args_only=args_only)
    sized = ctx.paths_of("sized", args_only=args_only)
    opts = ["numcmp", "numcmp", "streq", "streq", "strfn", "strfn", "in_list", "has", "const"]
    if bools:
        opts += ["bool", "bool", "booleq"]
    if lists:
        opts += ["lit_in", "lit_in"]
    if strs or lists or sized:
        opts += ["size"]
    if macros and ctx.lists_of(args_only=args_only):
        opts += ["macro", "macro", "macro"]
    kind = draw(st.sampled_from(opts))
    if kind == "macro":
        return draw(macro(ctx, args_only))
    if kind == "bool":
        p = draw(st.sampled_from(bools))
        return p if draw(st.booleans()) else f"!{p}"
    if kind == "booleq":
        p = draw(st.sampled_from(bools))
        lit = draw(st.sampled_from(["true", "false"]))
        op = draw(st.sampled_from(["==", "!="]))
        return f"{p} {op} {lit}" if draw(st.booleans()) else f"{lit} {op} {p}"
    if kind == "const":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "numcmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"{draw(num_expr(ctx, 2, args_only))} {op} {draw(num_expr(ctx, 1, args_only))}"
    if kind == "streq":
        left = draw(str_operand(ctx, args_only))
        op = draw(st.sampled_from(["==", "!="]))
        two_operands = draw(st.integers(0, 4)) == 0
        right = draw(str_operand(ctx, args_only)) if two_operands else draw(str_literal(ctx, left))
        return f"{left} {op} {right}" if draw(st.booleans()) else f"{right} {op} {left}"
    if kind == "strfn":
        subject = draw(str_operand(ctx, args_only))
        fn = draw(st.sampled_from(["startsWith", "endsWith", "contains", "matches"]))
        regex = fn == "matches"
        arg = cel_string(draw(regex_pattern(ctx.strings))) if regex else draw(str_literal(ctx, subject))
        return f"{subject}.{fn}({arg})"
    if kind == "in_list":
        if draw(st.booleans()) or not ctx.paths_of("number", args_only=args_only):
            subject = draw(str_operand(ctx, args_only))
            items = draw(st.lists(str_literal(ctx, subject), min_size=1, max_size=4))
        else:
            subject = draw(st.sampled_from(ctx.paths_of("number", args_only=args_only)))
            items = draw(st.lists(st.sampled_from(ctx.numbers), min_size=1, max_size=4))
        return f"{subject} in [{', '.join(items)}]"
    if kind == "lit_in":
        lit = draw(st.sampled_from(ctx.strings))
        ctx.list_literals.append(lit)
        return f"{cel_string(lit)} in {draw(st.sampled_from(lists))}"
    if kind == "size":
        p = draw(st.sampled_from([*strs, *lists, *sized, "resource"]))
        n = draw(st.sampled_from(["0", "1", "2", "3", "5", "10"]))
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        call = f"size({p})" if draw(st.booleans()) else f"{p}.size()"
        return f"{call} {op} {n}"
    # has
    candidates = [*ctx.types, *HAS_ONLY_PATHS, "args.meta", "principal.flags", "context.flags"]
    if args_only:
        candidates = [c for c in candidates if c.startswith("args.")]
    return f"has({draw(st.sampled_from(candidates))})"


@st.composite
def bool_expr(draw: st.DrawFn, ctx: PolicyCtx, depth: int = 3, args_only: bool = False) -> str:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(atom(ctx, args_only))
    kind = draw(st.sampled_from(["and", "or", "not", "paren"]))
    sub = bool_expr(ctx, depth - 1, args_only)
    if kind == "not":
        return f"!{_paren(draw(sub))}"
    if kind == "paren":
        return _paren(draw(sub))
    op = "&&" if kind == "and" else "||"
    left, right = draw(sub), draw(sub)
    # Parenthesise operands containing a binary operator most of the time; without them, CEL
    # precedence regroups && / || (still well-typed, a good parser test).
    if draw(st.integers(0, 3)) > 0:
        left, right = _paren(left), _paren(right)
    return f"{left} {op} {right}"


# --------------------------------------------------------------------------------------------------
# Globs
# --------------------------------------------------------------------------------------------------


@st.composite
def action_glob(draw: st.DrawFn, ctx: PolicyCtx) -> str:
    svc = draw(st.sampled_from(ctx.services))
    verb = draw(st.sampled_from(ctx.verbs))
    shapes = [f"{svc}.{verb}", f"{svc}.{verb}", f"{svc}.*", f"*.{verb}", "**", f"{svc}.**",
              f"**.{verb}", f"{svc}.sub.{verb}", "*", f"{svc}.*.{verb}", f"{svc}"]
    g = draw(st.sampled_from(shapes))
    ctx.action_globs.append(g)
    return g


@st.composite
def resource_glob(draw: st.DrawFn, ctx: PolicyCtx) -> str:
    n = draw(st.integers(0, 3))
    segs = []
    for _ in range(n):
        segs.append(draw(st.sampled_from([*ctx.segments, *ctx.segments, "*", "**"])))
    if draw(st.integers(0, 3)) == 0:
        segs.append("**")
    prefix = draw(st.sampled_from(ctx.uri_prefixes)) if draw(st.integers(0, 5)) == 0 else ""
    glob = prefix + "/" + "/".join(segs)
    # Cosmetic non-normal forms that pattern normalisation must undo.
    cosmetic = draw(st.integers(0, 9))
    if cosmetic == 0 and segs:
        glob += "/"
    elif cosmetic == 1 and segs:
        glob = glob.replace("/", "//", 1) if not prefix else glob
    elif cosmetic == 2 and segs and segs[0] not in ("*", "**"):
        glob = glob.replace(f"/{segs[0]}", f"/{segs[0]}/.", 1)
    elif cosmetic == 3 and segs and segs[0] not in ("*", "**"):
        glob = glob.replace(f"/{segs[0]}", f"/zz/../{segs[0]}", 1)
    ctx.resource_globs.append(glob)
    return glob


def _str_or_list(draw: st.DrawFn, items: list[str]) -> str | list[str]:
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return items


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


@st.composite
def policy_ctx(draw: st.DrawFn, *, stateful: bool) -> PolicyCtx:
    paths = draw(st.lists(st.sampled_from(PATHS), min_size=2, max_size=8, unique=True))
    types = {p: draw(st.sampled_from(TYPES)) for p in paths}
    if stateful:
        types["args.amount"] = "number"
    return PolicyCtx(
        types=types,
        strings=draw(st.lists(st.sampled_from(STRING_CONSTS), min_size=2, max_size=5, unique=True)),
        numbers=draw(st.lists(st.sampled_from(NUMBER_LITERALS), min_size=2, max_size=5,
                              unique=True)),
        services=draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True)),
        verbs=draw(st.lists(st.sampled_from(VERBS), min_size=1, max_size=4, unique=True)),
        segments=draw(st.lists(st.sampled_from(SEGMENTS), min_size=2, max_size=5, unique=True)),
        uri_prefixes=draw(st.lists(st.sampled_from(URI_PREFIXES), min_size=1, max_size=2,
                                   unique=True)),
        insensitive=draw(st.integers(0, 4)) == 0,
        stateful=stateful,
        macro_lists={p: MACRO_LISTS[p] for p in draw(st.lists(st.sampled_from(sorted(MACRO_LISTS)),
                                                              max_size=2, unique=True))},
    )


@st.composite
def rule(draw: st.DrawFn, ctx: PolicyCtx, idx: int) -> dict[str, Any]:
    effect = draw(st.sampled_from(["permit", "permit", "permit", "forbid", "require_approval"]))
    r: dict[str, Any] = {"id": f"r{idx:02d}", "effect": effect}
    r["action"] = _str_or_list(draw, draw(st.lists(action_glob(ctx), min_size=1, max_size=3)))
    if draw(st.integers(0, 2)) > 0:
        r["resource"] = _str_or_list(draw, draw(st.lists(resource_glob(ctx), min_size=1,
                                                         max_size=3)))
    if draw(st.integers(0, 4)) > 0:
        r["when"] = draw(bool_expr(ctx))
    if draw(st.integers(0, 9)) == 0:
        r["description"] = "generated rule"
    if effect == "require_approval" and draw(st.booleans()):
        r["approval"] = _approval_block(draw)
    return r


@st.composite
def selector(draw: st.DrawFn, ctx: PolicyCtx, *, when_prob: int = 2) -> dict[str, Any]:
    s: dict[str, Any] = {
        "action": _str_or_list(draw, draw(st.lists(action_glob(ctx), min_size=1, max_size=2)))}
    if draw(st.integers(0, 2)) == 0:
        s["resource"] = _str_or_list(draw, [draw(resource_glob(ctx))])
    if draw(st.integers(0, when_prob)) == 0:
        s["when"] = draw(bool_expr(ctx, 2, args_only=True))
    return s


def _approval_block(draw: st.DrawFn) -> dict[str, Any]:
    return draw(st.fixed_dictionaries({}, optional={
        "quorum": st.integers(1, 3), "role": st.just("approver"),
        "ttl": st.sampled_from(["15m", "1h", 900])}))


@st.composite
def invariant(draw: st.DrawFn, ctx: PolicyCtx, idx: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["budget", "count", "flow"]))
    inv: dict[str, Any] = {"id": f"i{idx:02d}", "kind": kind}
    # An invariant's effect: omitted (forbid), written out, or require_approval (issue 21).
    effect = draw(st.sampled_from([None, None, "forbid", "require_approval", "require_approval"]))
    if effect is not None:
        inv["effect"] = effect
    if effect == "require_approval" and draw(st.booleans()):
        inv["approval"] = _approval_block(draw)
    if kind == "flow":
        inv["source"] = draw(selector(ctx))
        inv["sink"] = draw(selector(ctx, when_prob=1))
        if draw(st.integers(0, 3)) == 0:
            inv["window"] = draw(st.sampled_from(WINDOWS))
        return inv
    inv.update(draw(selector(ctx)))
    if kind == "budget":
        inv["sum"] = draw(st.sampled_from(["args.amount", "args.amount", "2 * args.amount",
                                           "args.amount + 1", "args.amount * 0.5"]))
        if draw(st.integers(0, 3)) == 0:
            inv["sum"] = draw(num_expr(ctx, 2, args_only=True))
        inv["limit"] = draw(st.sampled_from([0, 10, 100, 1000, 5000, 100.5, 2.25]))
    else:
        inv["limit"] = draw(st.sampled_from([0, 1, 2, 3, 5]))
    if draw(st.integers(0, 3)) > 0:
        inv["window"] = draw(st.sampled_from(WINDOWS))
    return inv


@st.composite
def policy(draw: st.DrawFn, ctx: PolicyCtx) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": draw(st.sampled_from(["payments-agent", "p1", "a_b.c-9"]))}
    if draw(st.integers(0, 3)) == 0:
        doc["version"] = draw(st.sampled_from(["3", 7]))
    if draw(st.integers(0, 5)) == 0:
        doc["description"] = "generated"
    if ctx.insensitive:
        doc["resource_case"] = "insensitive"
    elif draw(st.integers(0, 5)) == 0:
        doc["resource_case"] = "sensitive"
    if draw(st.integers(0, 4)) == 0:
        doc["resource_escapes"] = draw(st.sampled_from(["keep", "refuse"]))
    n_rules = draw(st.integers(0, 6))
    doc["rules"] = [draw(rule(ctx, i)) for i in range(n_rules)]
    if ctx.stateful:
        doc["invariants"] = [draw(invariant(ctx, i)) for i in range(draw(st.integers(1, 3)))]
    return doc


# --------------------------------------------------------------------------------------------------
# Requests
#
# Requests and histories are built from a per-request seed with `random.Random`: drawing each of their
# hundreds of small choices through Hypothesis costs ~0.2 ms apiece, which would make 10 000
# decisions take many minutes. The shrinker still shrinks the policy and drops requests, so a failure
# ends as one policy with a single request.
# --------------------------------------------------------------------------------------------------


def _number_value(rnd: random.Random, ctx: PolicyCtx) -> int | float:
    text = rnd.choice(ctx.numbers)
    base: int | float = float(text) if "." in text else int(text)
    op = rnd.randint(0, 9)
    if op == 0:
        return base + 1
    if op == 1:
        return base - 1
    if op == 2:
        return base + 0.5
    if op == 3:
        return -base
    if op == 4:
        return float(base)
    if op == 5:
        return rnd.randint(-10, 6000)
    if op == 6:
        return rnd.choice([0.1, 0.2, 0.30000000000000004, 1e-7, 2.5e3, -0.0])
    return base


_TEXT_ALPHABET = "ab/.:_ -%é😀\\'\"0"


def _string_value(rnd: random.Random, ctx: PolicyCtx) -> str:
    op = rnd.randint(0, 9)
    s = rnd.choice(ctx.strings)
    if op <= 4:
        return s
    if op == 5:
        return s + rnd.choice(["x", "/y", "1"])
    if op == 6:
        return rnd.choice(["x", "pre-"]) + s
    if op == 7:
        return rnd.choice(EXTRA_REQUEST_STRINGS)
    if op == 8:
        return rnd.choice(STRING_CONSTS)
    return "".join(rnd.choice(_TEXT_ALPHABET) for _ in range(rnd.randint(0, 6)))


def _value_of(rnd: random.Random, ctx: PolicyCtx, typ: str) -> Any:
    if typ == "string":
        return _string_value(rnd, ctx)
    if typ == "number":
        return _number_value(rnd, ctx)
    if typ == "bool":
        return rnd.random() < 0.5
    if typ == "list":
        pool = [*ctx.strings, *ctx.list_literals, "other"]
        return [rnd.choice(pool) for _ in range(rnd.randint(0, 4))]
    kind = rnd.choice(["string", "list", "map"])
    if kind == "map":
        return {k: rnd.randint(0, 3) for k in rnd.sample(["a", "b", "c"], rnd.randint(0, 3))}
    return _value_of(rnd, ctx, kind)


_WRONG: dict[str, tuple[Any, ...]] = {
    "string": (1, 0, 2.5, True, False, None, ["ops"], {"a": "ops"}),
    "number": ("1", "100", True, False, None, [1], {"n": 1}),
    "bool": (1, 0, "true", "false", None, [True]),
    "list": ("ops", 1, True, None, {"0": "ops"}),
    "sized": (1, 2.5, True, None),
}


def _set_path(roots: dict[str, Any], path: str, value: Any) -> None:
    root, *fields = path.split(".")
    cur = roots[root]
    for f in fields[:-1]:
        if f not in cur:
            cur[f] = {}
        nxt = cur[f]
        if not isinstance(nxt, dict):
            return
        cur = nxt
    cur[fields[-1]] = value


def _element(rnd: random.Random, ctx: PolicyCtx, kind: str) -> Any:
    """One element of a macro's list: mostly of its kind, sometimes not (an error for the body)."""
    if rnd.randint(0, 9) == 0:
        return copy.deepcopy(rnd.choice([1, None, True, "x", [], {"amount": "1"}]))
    if kind == "string":
        return rnd.choice([_string_value(rnd, ctx), "user@example.com", f"a{rnd.choice(ctx.strings)}"])
    fields = {"amount": _number_value(rnd, ctx) if rnd.randint(0, 5) else rnd.choice(["5", None]),
              "name": _string_value(rnd, ctx), "ok": rnd.random() < 0.5}
    return {k: v for k, v in fields.items() if rnd.randint(0, 4)}


def _macro_list(rnd: random.Random, ctx: PolicyCtx, kind: str) -> Any:
    """A macro's list: short mostly, at and just over the bound sometimes, or not a list."""
    mode = rnd.randint(0, 19)
    if mode == 0:
        return copy.deepcopy(rnd.choice(["x", 3, {"0": "x"}, None]))
    length = (MACRO_BOUND if mode == 1 else MACRO_BOUND + 1 if mode == 2 else rnd.randint(0, 4))
    return [_element(rnd, ctx, kind) for _ in range(length)]


def _attributes(rnd: random.Random, ctx: PolicyCtx, paths: dict[str, str],
                lists: dict[str, str] | None = None) -> dict[str, Any]:
    roots: dict[str, Any] = {"principal": {}, "args": {}, "context": {}}
    for path, kind in (lists or {}).items():
        if rnd.randint(0, 5):
            _set_path(roots, path, _macro_list(rnd, ctx, kind))
    for path, typ in paths.items():
        mode = rnd.randint(0, 9)
        if mode <= 1:
            continue  # absent
        if mode == 2 and path.count(".") == 2:
            _set_path(roots, path.rsplit(".", 1)[0], rnd.choice(["x", 1, None, []]))
            continue  # an intermediate that is not a map
        if mode == 3:
            _set_path(roots, path, copy.deepcopy(rnd.choice(_WRONG[typ])))
            continue
        _set_path(roots, path, _value_of(rnd, ctx, typ))
    for extra in HAS_ONLY_PATHS:
        if rnd.randint(0, 2) == 0:
            _set_path(roots, extra, copy.deepcopy(rnd.choice([None, "v", 0, {"k": 1}])))
    return roots


def _instantiate_action(rnd: random.Random, ctx: PolicyCtx, glob: str) -> str:
    pool = [*ctx.services, *ctx.verbs]
    segs: list[str] = []
    for seg in glob.split("."):
        if seg == "*":
            segs.append(rnd.choice(pool))
        elif seg == "**":
            segs.extend(rnd.choice(pool) for _ in range(rnd.randint(0, 2)))
        else:
            segs.append(seg)
    return ".".join(segs) or rnd.choice(ctx.verbs)


_NEAR_MISS_ACTIONS = ("db.delete_all", "a.b.delete", "db", "DB.read", "db.read-x", "db.sub.read",
                      "payments.transfer")
_INVALID_ACTIONS = ("", "db..read", ".db", "db.", "db read", "db.ré", "db/read", 5, None, "db.*")


def request_action(rnd: random.Random, ctx: PolicyCtx) -> Any:
    mode = rnd.randint(0, 19)
    if mode < 12 and ctx.action_globs:
        return _instantiate_action(rnd, ctx, rnd.choice(ctx.action_globs))
    if mode < 16:
        return f"{rnd.choice(ctx.services)}.{rnd.choice(ctx.verbs)}"
    if mode < 19:
        return rnd.choice(_NEAR_MISS_ACTIONS)
    return rnd.choice(_INVALID_ACTIONS)


def _split_uri(resource: str) -> tuple[str, str]:
    for p in URI_PREFIXES:
        if resource.startswith(p):
            return p, resource[len(p):]
    return "", resource


def _instantiate_resource(rnd: random.Random, ctx: PolicyCtx, glob: str) -> str:
    prefix, glob = _split_uri(glob)
    out: list[str] = []
    for seg in glob.split("/")[1:]:
        if seg == "*":
            out.append(rnd.choice(ctx.segments))
        elif seg == "**":
            out.extend(rnd.choice(ctx.segments) for _ in range(rnd.randint(0, 2)))
        else:
            out.append(seg)
    return prefix + "/" + "/".join(out)


def _percent_encode(s: str) -> str:
    return "".join(f"%{b:02X}" if i % 2 else f"%{b:02x}"
                   for i, b in enumerate(s.encode("utf-8")))


def _obfuscate(rnd: random.Random, resource: str, insensitive: bool) -> str:
    """Rewrite a resource into a non-normal form (usually an equivalent one)."""
    prefix, path = _split_uri(resource)
    if prefix and rnd.random() < 0.5:
        prefix = prefix.upper() if rnd.random() < 0.5 else prefix.lower()
    for _ in range(rnd.randint(0, 2)):
        trick = rnd.randint(0, 10)
        at = rnd.choice([i for i, c in enumerate(path) if c in "/\\"] or [0])
        if trick == 0:
            path = path[:at] + "/." + path[at:]
        elif trick == 1:
            path = path[:at] + "/zz/.." + path[at:]
        elif trick == 2:
            path = path[:at] + "/" + path[at:]
        elif trick == 3:
            path = path[:at] + "\\" + path[at + 1:]
        elif trick == 4:
            path = path + "/"
        elif trick == 5 and len(path) > 1:
            i = rnd.randint(0, len(path) - 1)
            path = path[:i] + _percent_encode(path[i]) + path[i + 1:]
        elif trick == 6:
            path = path[:at] + "/%2e" + path[at:]
        elif trick == 7 and insensitive:
            path = path.upper()
        elif trick == 8:
            path = unicodedata.normalize("NFD", path)
        elif trick == 9 and len(path) > 1:  # double-encoded: an escape survives the one decode
            i = rnd.randint(0, len(path) - 1)
            path = path[:i] + _percent_encode(path[i]).replace("%", "%25") + path[i + 1:]
        elif trick == 10 and insensitive:
            path = path.casefold() if rnd.random() < 0.5 else path.swapcase()
    return prefix + path


_ODD_RESOURCES: tuple[Any, ...] = (
    "/..", "/a/../..", "/%2e%2e/x", "/%2E%2E", "/a/%2e%2e/%2e%2e/b", "/a\\..\\..\\b",
    "", "a/b", "data", "mailto:x@y", "/a\x00b", "/a%00b", "/a\nb", "/a%0ab", "/a%1Fb",
    "\t/a", 5, None, ["/a"], "https://h/../x", "/%252e%252e/x", "/a/%2e%2e/b",
    "//a\\b", "/a/./b/", "/a/.../b", "/%2F%2Fx",
)


def request_resource(rnd: random.Random, ctx: PolicyCtx) -> Any:
    mode = rnd.randint(0, 19)
    if mode < 11 and ctx.resource_globs:
        base = _instantiate_resource(rnd, ctx, rnd.choice(ctx.resource_globs))
    elif mode < 13:
        base = rnd.choice(ctx.uri_prefixes) + "/" + "/".join(
            rnd.choice(ctx.segments) for _ in range(rnd.randint(0, 3)))
    elif mode < 17:
        base = "/" + "/".join(rnd.choice(ctx.segments) for _ in range(rnd.randint(0, 3)))
    else:
        return copy.deepcopy(rnd.choice(_ODD_RESOURCES))
    if rnd.randint(0, 2) > 0:
        return _obfuscate(rnd, base, ctx.insensitive)
    return base


_BAD_NUMBERS = (2**53, -(2**53), 10**20, float("inf"), float("-inf"), float("nan"), 2**53 - 1,
                -(2**53 - 1))


def request(rnd: random.Random, ctx: PolicyCtx) -> dict[str, Any]:
    """A request drawn around the policy's vocabulary."""
    roots = _attributes(rnd, ctx, ctx.types, ctx.macro_lists)
    if rnd.randint(0, 39) == 0:
        bad = rnd.choice(_BAD_NUMBERS)
        where = roots[rnd.choice(["principal", "args", "context"])]
        if rnd.random() < 0.5:
            where["big"] = bad
        else:
            where["nested"] = {"list": [1, bad]}
    req: dict[str, Any] = {"action": request_action(rnd, ctx),
                           "resource": request_resource(rnd, ctx)}
    if rnd.randint(0, 99) == 0:
        req[rnd.choice(["role", "approval", "Action"])] = "x"  # unknown field: invalid
    for part in ("principal", "args", "context"):
        mode = rnd.randint(0, 59)
        if mode < 3 and not roots[part]:
            continue  # missing = {}
        if mode == 59:
            req[part] = copy.deepcopy(rnd.choice([None, "x", [], 1]))
        else:
            req[part] = roots[part]
    return req


# --------------------------------------------------------------------------------------------------
# Session state
# --------------------------------------------------------------------------------------------------


def _clean_resource(rnd: random.Random, ctx: PolicyCtx) -> str:
    """An already-normalised resource (as stored in history)."""
    segs = [s for s in ctx.segments if "%" not in s] or ["data"]
    if ctx.resource_globs and rnd.random() < 0.5:
        prefix, path = _split_uri(_instantiate_resource(rnd, ctx, rnd.choice(ctx.resource_globs)))
        parts: list[str] = []
        for seg in path.split("/"):  # normalise the pattern's cosmetic forms by hand
            if seg in ("", "."):
                continue
            if seg == "..":
                if parts:
                    parts.pop()
                continue
            parts.append("x" if "%" in seg else seg)
        res = prefix.lower() + "/" + "/".join(parts)
    else:
        res = "/" + "/".join(rnd.choice(segs) for _ in range(rnd.randint(0, 3)))
    return res.lower() if ctx.insensitive else res


def history(rnd: random.Random, ctx: PolicyCtx, now: float, windows: list[int]
            ) -> dict[str, Any]:
    """Session state: permitted events around the invariants' windows."""
    events = []
    arg_paths = {p: t for p, t in ctx.types.items() if p.startswith("args.")}
    for _ in range(rnd.randint(0, 6)):
        window = rnd.choice(windows or [3600])
        offset = rnd.choice([0, 1, 0.5, window - 1, window, window + 1, window / 2])
        if rnd.randint(0, 9) == 0:
            offset = -rnd.choice([1, 0.5, 100])
        args = _attributes(rnd, ctx, arg_paths, {p: k for p, k in ctx.macro_lists.items()
                                                 if p.startswith("args.")})["args"]
        if "args.amount" in arg_paths and rnd.randint(0, 9) == 0:
            args["amount"] = -rnd.choice([1, 0.5])
        action = request_action(rnd, ctx)
        if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
            action = f"{ctx.services[0]}.{ctx.verbs[0]}"
        events.append({"time": now - offset, "action": action,
                       "resource": _clean_resource(rnd, ctx), "args": args})
    return {"history": events}


# --------------------------------------------------------------------------------------------------
# Top level
# --------------------------------------------------------------------------------------------------


def decision_input(seed: int, ctx: PolicyCtx, doc: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, Any] | None, float | datetime]:
    """(request, state, now) for one seed."""
    rnd = random.Random(seed)
    req = request(rnd, ctx)
    now = NOW_BASE + rnd.choice([0, 0.5, 12345])
    state: dict[str, Any] | None = None
    invs = doc.get("invariants", [])
    if ctx.stateful:
        windows = [WINDOW_SECONDS[inv["window"]] for inv in invs if "window" in inv]
        state = history(rnd, ctx, now, windows)
    elif rnd.randint(0, 4) == 0:
        state = rnd.choice([None, {"history": []}])
    when: float | datetime = float(now)
    if rnd.randint(0, 9) == 0:
        when = datetime.fromtimestamp(now, tz=UTC)
    return req, state, when


@st.composite
def policy_and_requests(draw: st.DrawFn, *, stateful: bool = False, min_requests: int = 20,
                        max_requests: int = 50) -> Case:
    """A policy and many (request, state, now) triples under it."""
    ctx = draw(policy_ctx(stateful=stateful))
    doc = draw(policy(ctx))
    if not ctx.action_globs:
        ctx.action_globs.extend(["db.read", "db.delete"])
    seeds = draw(st.lists(st.integers(0, 2**32 - 1), min_size=min_requests,
                          max_size=max_requests))
    return Case(doc, [decision_input(seed, ctx, doc) for seed in seeds])

# --------------------------------------------------------------------------------------------------
# Invalid policies
# --------------------------------------------------------------------------------------------------

BAD_CONDITIONS = (
    "args.amount >",
    "args.amount / 2 > 1",
    "args.amount % 2 == 0",
    "args.amount * args.fee > 1",
    "foo.bar == 1",
    "principal == 1",
    "args == 1",
    "args.amount > 1 ? true : false",
    "[1, 2] == args.amount",
    "has(resource)",
    "has(args)",
    "args.q1 == args.q2",
    'args.amount > 1 && args.amount == "a"',
    'args.name == "a" && args.name',
    "context.mfa && context.mfa > 1",
    '"x" in args.amount && args.amount > 0',
    'args.tags.contains("x") && "x" in args.tags',
    'args.name.matches("(a)\\\\1")',
    'args.name.matches("(?=a)b")',
    'args.name.matches("(?<!a)b")',
    "args.name.matches(args.url)",
    'args.name.startsWith(args.url) && args.url == "x"',
    "args.amount in [1, \"a\"]",
    'resource > "a"',
    "action < 3",
    'size("abc") > 1',
    "size(args.amount) > 1 && args.amount > 2",
    "true && 1",
    "!1",
    '"a" + "b" == "ab"',
    "args.x.exists(y, y.all(z, z))",
    "args.x.exists_one(y, y)",
    "args.x.all(y)",
    "args.x.all(args, true)",
    "resource.all(r, true)",
    "args.x.all(y, y) && args.x > 1",
    "args.x.exists(1, true)",
    "int(args.amount) > 1",
    "1 < 2 < 3",
    "args.amount >> 2",
    "args.amount = 2",
    "args.name == 'unterminated",
    "",
)


@st.composite
def invalid_policy(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid generated policy with one mutation the spec makes a compile error."""
    ctx = draw(policy_ctx(stateful=draw(st.booleans())))
    doc = draw(policy(ctx))
    doc = copy.deepcopy(doc)
    if not doc["rules"]:
        doc["rules"].append({"id": "r99", "effect": "permit", "action": "db.read"})
    rules = doc["rules"]
    target = draw(st.sampled_from(rules))
    kind = draw(st.sampled_from([
        "unknown_top", "unknown_rule", "duplicate_id", "bad_effect", "action_star_inside",
        "resource_star_inside", "resource_climbs", "bad_when", "bad_when", "bad_when",
        "approval_on_permit", "empty_action", "missing_action", "bad_policy_id",
        "missing_id", "bad_case", "bad_invariant", "action_bad_chars", "bad_duration",
    ]))
    if kind == "unknown_top":
        doc[draw(st.sampled_from(["rulez", "Rules", "extra"]))] = []
    elif kind == "unknown_rule":
        target[draw(st.sampled_from(["efect", "conditions", "resources", "When"]))] = "x"
    elif kind == "duplicate_id":
        rules.append({"id": target["id"], "effect": "forbid", "action": "db.read"})
    elif kind == "bad_effect":
        target["effect"] = draw(st.sampled_from(["allow", "deny", "Permit", ""]))
        target.pop("approval", None)
    elif kind == "action_star_inside":
        target["action"] = [draw(st.sampled_from(["db.del*", "*db.read", "db.**x", "d*b.read"]))]
    elif kind == "action_bad_chars":
        target["action"] = [""]
    elif kind == "resource_star_inside":
        target["resource"] = [draw(st.sampled_from(["/data/*.csv", "/da*ta", "/**x/y",
                                                    "https://*.example.com/x"]))]
    elif kind == "resource_climbs":
        target["resource"] = [draw(st.sampled_from(["/..", "/a/../..", "/../x"]))]
    elif kind == "bad_when":
        target["when"] = draw(st.sampled_from(BAD_CONDITIONS))
    elif kind == "approval_on_permit":
        target["effect"] = "permit"
        target["approval"] = {"quorum": 2}
    elif kind == "empty_action":
        target["action"] = []
    elif kind == "missing_action":
        target.pop("action", None)
    elif kind == "bad_policy_id":
        doc["id"] = draw(st.sampled_from(["bad id", "", "a/b", "é"]))
    elif kind == "missing_id":
        target.pop("id")
    elif kind == "bad_case":
        doc["resource_case"] = draw(st.sampled_from(["Insensitive", "lower", True]))
    elif kind == "bad_duration":
        target["effect"] = "require_approval"
        target["approval"] = {"ttl": draw(st.sampled_from(["15 m", "15min", "-5s", "1.5h", "m"]))}
    else:
        doc.setdefault("invariants", []).append(draw(st.sampled_from([
            {"id": "bad", "kind": "budget", "action": "db.read", "limit": 5},  # no sum
            {"id": "bad", "kind": "count", "action": "db.read", "limit": -1},
            {"id": "bad", "kind": "count", "action": "db.read"},  # no limit
            {"id": "bad", "kind": "quota", "action": "db.read", "limit": 1},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "window": "soon"},
            {"id": "bad", "kind": "count", "limit": 1},  # no action
            {"id": "bad", "kind": "flow", "source": {"action": "db.read"}},  # no sink
            {"id": "bad", "kind": "flow", "source": {"action": "db.read", "x": 1},
             "sink": {"action": "http.post"}},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "sum": "args.amount"},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "effect": "permit"},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "effect": "deny"},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1,
             "approval": {"quorum": 2}},  # approval on a forbid invariant
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "effect": "require_approval",
             "approval": {"quorum": 0}},
            {"id": "bad", "kind": "count", "action": "db.read", "limit": 1, "effect": "require_approval",
             "approval": {"quorom": 2}},
        ])))
    return doc, kind
