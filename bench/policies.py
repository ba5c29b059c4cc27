"""Deterministic synthetic policies and request streams for the decision benchmark.

One generator feeds every engine: `generate(n_rules, seed)` builds a `Workload` (a structured
policy, a stream of request *templates* and helpers), from which

- `Workload.licet_policy()` is the Licet policy document (a dict `kernel.load_policy` accepts);
- `Workload.cedar_policies()` / `cedar_request()` is the same policy and requests in Cedar;
- `Workload.agentgate()` / `agentgate_request()` is the closest ea-agentgate 1.0.1 equivalent.

Everything is drawn from seeded `random.Random` instances, so a given (n_rules, seed) always yields
the same policy and the same requests.

The policy models a fleet of services `svcNN` with verbs (`svcNN.read`, `svcNN.transfer`, ...) and
resources `/svcNN/<collection>/<item>`. Rules mix effects (about 70 % permit, 15 % forbid, 15 %
require_approval), name one or two actions or a glob (`svcNN.*`, rarely a fleet-wide `*.delete`),
scope resources with globs (`/svc03/data/**`, `/svc03/*/reports`, `/svc03/config/*`) and carry
conditions built from comparisons, `in` lists, `startsWith`, role membership and booleans. Three
invariants ride along: a transfer budget, a delete count and a no-exfiltration flow.

Conditions are kept structured (`Atom`s in a CNF: a list of clauses, each an OR of atoms) so
that the Cedar translation is exact, including Licet's "an absent attribute never widens access" rule
(see `cedar_policies`).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

NOW = 1_748_779_200  # 2025-06-01T12:00:00Z: the fixed "now" every bench decision is made at

VERBS = ("read", "list", "write", "delete", "export", "transfer")
READ_VERBS = ("read", "list")
COLLECTIONS = ("data", "reports", "config", "users", "tmp")
ROLES = ("analyst", "operator", "admin", "auditor", "agent")
DEPARTMENTS = ("finance", "ops", "sales", "research")
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
FORMATS = ("csv", "json", "parquet", "xlsx")
TARGET_PREFIXES = ("prod-", "staging-", "test-", "dev-")
AMOUNT_THRESHOLDS = (100, 1000, 5000, 20000)
COUNT_THRESHOLDS = (10, 50, 200)
RISK_THRESHOLDS = (70, 90)
INTRANET = "https://intranet.example/"
EXTRA_ACTIONS = ("net.post",)  # the flow invariant's sink

# attribute path -> type (every path has one type across the whole policy, as the language wants)
TYPES = {
    "principal.roles": "list",
    "principal.department": "string",
    "context.mfa": "bool",
    "context.region": "string",
    "context.risk_score": "number",
    "args.amount": "number",
    "args.count": "number",
    "args.format": "string",
    "args.target": "string",
    "args.url": "string",
}


# --------------------------------------------------------------------------------------------
# structured policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """One literal of a condition.

    kind: "cmp" (path op number), "in" (path in [strings]), "starts" (path.startsWith(lit)),
    "has_role" ("lit" in principal.roles), "eq" (path == string), "bool" (path), with `negated`
    putting a `!` in front.
    """

    kind: str
    path: str
    op: str = ""
    value: Any = None
    negated: bool = False

    def cel(self) -> str:
        if self.kind == "cmp":
            text = f"{self.path} {self.op} {self.value}"
        elif self.kind == "in":
            text = f"{self.path} in [{', '.join(json.dumps(v) for v in self.value)}]"
        elif self.kind == "starts":
            text = f"{self.path}.startsWith({json.dumps(self.value)})"
        elif self.kind == "has_role":
            text = f"{json.dumps(self.value)} in {self.path}"
        elif self.kind == "eq":
            text = f"{self.path} == {json.dumps(self.value)}"
        elif self.kind == "bool":
            text = self.path
        else:  # pragma: no cover - generator bug
            raise ValueError(self.kind)
        if self.negated:
            return f"!{text}" if self.kind == "bool" else f"!({text})"
        return text


Clause = tuple[Atom, ...]  # OR of atoms
Cnf = tuple[Clause, ...]  # AND of clauses


def cnf_cel(cnf: Cnf) -> str | None:
    parts = []
    for clause in cnf:
        if len(clause) == 1:
            parts.append(clause[0].cel())
        else:
            parts.append("(" + " || ".join(a.cel() for a in clause) + ")")
    return " && ".join(parts) if parts else None


@dataclass(frozen=True)
class SynthRule:
    id: str
    effect: str  # permit | forbid | require_approval
    actions: tuple[str, ...]
    resources: tuple[str, ...] | None
    when: Cnf
    approval: dict[str, Any] | None = None


@dataclass(frozen=True)
class SynthInvariant:
    id: str
    kind: str  # budget | count | flow
    doc: dict[str, Any]
    actions: tuple[str, ...] = ()
    resources: tuple[str, ...] | None = None
    limit: int = 0
    window: int | None = None
    source_actions: tuple[str, ...] = ()
    source_resources: tuple[str, ...] | None = None
    sink_actions: tuple[str, ...] = ()
    sink_not_prefix: str = ""


# --------------------------------------------------------------------------------------------
# globs (segment-aligned, as the language defines them), used to expand and to build requests
# --------------------------------------------------------------------------------------------


@functools.cache
def _glob_regex(pattern: str, sep: str) -> re.Pattern[str]:
    """A segment-aligned glob as a regex: `*` one non-empty segment, `**` zero or more."""
    segs = [s for s in pattern.split(sep) if s] if sep == "/" else pattern.split(sep)
    one = f"[^{re.escape(sep)}]+"
    lead = "/" if sep == "/" else ""
    out = "^" + lead
    for i, seg in enumerate(segs):
        first = i == 0
        if seg == "**":
            # zero or more segments, each with its separator
            out += f"(?:{one}(?:{re.escape(sep)}{one})*)?" if first else \
                f"(?:{re.escape(sep)}{one})*"
            continue
        piece = one if seg == "*" else re.escape(seg)
        out += piece if first else re.escape(sep) + piece
    return re.compile(out + "$")


def glob_match(pattern: str, text: str, sep: str) -> bool:
    if sep == "/" and text != "/":
        text = text.rstrip("/")
    return _glob_regex(pattern, sep).match(text) is not None


def action_match(pattern: str, action: str) -> bool:
    return glob_match(pattern, action, ".")


def resource_match(pattern: str, resource: str) -> bool:
    return glob_match(pattern, resource, "/")


# --------------------------------------------------------------------------------------------
# request helpers
# --------------------------------------------------------------------------------------------


@dataclass
class Template:
    """A request shape: everything fixed except the amount (drawn inside one threshold band)."""

    principal: dict[str, Any]
    action: str
    resource: str
    context: dict[str, Any]
    args: dict[str, Any]
    amount_band: tuple[int, int] | None  # open interval the amount is drawn from, None = no amount
    history: list[dict[str, Any]] | None

    def materialise(self, rng: random.Random, serial: int) -> tuple[dict[str, Any], dict | None]:
        args = dict(self.args)
        if self.amount_band is not None:
            lo, hi = self.amount_band
            args["amount"] = rng.randint(lo + 1, hi - 1)
        args["request_id"] = f"r-{serial:06d}"
        request = {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "args": args,
            "context": self.context,
        }
        state = {"history": self.history} if self.history is not None else None
        return request, state


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


@dataclass
class Workload:
    n_rules: int
    seed: int
    services: list[str]
    actions: list[str]
    rules: list[SynthRule]
    invariants: list[SynthInvariant]
    _rng_seed: int = 0
    _cedar_cache: tuple[str, list[tuple[str, str]]] | None = field(default=None, repr=False)

    # --- Licet -------------------------------------------------------------------------------
    def licet_policy(self) -> dict[str, Any]:
        rules = []
        for r in self.rules:
            doc: dict[str, Any] = {"id": r.id, "effect": r.effect, "action": list(r.actions)}
            if r.resources is not None:
                doc["resource"] = list(r.resources)
            when = cnf_cel(r.when)
            if when:
                doc["when"] = when
            if r.approval:
                doc["approval"] = dict(r.approval)
            rules.append(doc)
        return {
            "id": f"bench-{self.n_rules}",
            "version": "1",
            "description": f"synthetic benchmark policy, {self.n_rules} rules, seed {self.seed}",
            "rules": rules,
            "invariants": [dict(inv.doc) for inv in self.invariants],
        }

    # --- request streams ---------------------------------------------------------------------
    def templates(self, count: int, seed: int) -> list[Template]:
        rng = random.Random(f"templates:{self.seed}:{self.n_rules}:{seed}")
        return [self._template(rng) for _ in range(count)]

    def warm_stream(self, n_shapes: int, n_requests: int, seed: int = 1
                    ) -> list[tuple[dict[str, Any], dict | None]]:
        """`n_requests` requests over `n_shapes` templates, Zipf-ish (weight 1/(rank+1)^1.1)."""
        shapes = self.templates(n_shapes, seed)
        rng = random.Random(f"warm:{self.seed}:{self.n_rules}:{seed}")
        weights = [1.0 / (i + 1) ** 1.1 for i in range(n_shapes)]
        picks = rng.choices(range(n_shapes), weights=weights, k=n_requests)
        return [shapes[i].materialise(rng, k) for k, i in enumerate(picks)]

    def cold_stream(self, n_requests: int, seed: int = 2
                    ) -> list[tuple[dict[str, Any], dict | None]]:
        """Requests from fresh templates, each used once."""
        rng = random.Random(f"cold:{self.seed}:{self.n_rules}:{seed}")
        return [t.materialise(rng, k) for k, t in enumerate(self.templates(n_requests, seed))]

    def _template(self, rng: random.Random) -> Template:
        principal = {
            "id": f"agent-{rng.randrange(50):02d}",
            "tenant": "bench",
            "roles": rng.sample(ROLES, rng.choice((1, 1, 2))),
            "department": rng.choice(DEPARTMENTS),
        }
        roll = rng.random()
        if roll < 0.75 and self.rules:
            rule = rng.choice(self.rules)
            action = rng.choice(self._expand(rule.actions))
            resource = (self._instance(rng, rng.choice(rule.resources)) if rule.resources
                        else self._random_resource(rng, action))
        elif roll < 0.80:
            action = "net.post"
            resource = "/net/egress"
        else:
            action = rng.choice(self.actions)
            resource = self._random_resource(rng, action)
        context: dict[str, Any] = {
            "region": rng.choice(REGIONS),
            "risk_score": rng.randrange(0, 100),
            "source_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        }
        if rng.random() < 0.95:  # 5 % of sessions never did MFA: the flag is absent
            context["mfa"] = rng.random() < 0.85
        if rng.random() < 0.03:
            del context["risk_score"]
        args: dict[str, Any] = {
            "count": rng.choice((1, 5, 20, 100, 500)),
            "format": rng.choice(FORMATS),
            "target": rng.choice(TARGET_PREFIXES) + f"{rng.randrange(1000):03d}",
        }
        if action == "net.post":
            host = INTRANET if rng.random() < 0.5 else "https://api.partner.example/"
            args["url"] = host + "ingest"
        band = None
        if rng.random() < 0.9:
            edges = (0, *AMOUNT_THRESHOLDS, 100_000)
            k = rng.randrange(len(edges) - 1)
            band = (edges[k], edges[k + 1])
        history = None
        if rng.random() < 0.4:
            history = self._history(rng)
        return Template(principal, action, resource, context, args, band, history)

    def _history(self, rng: random.Random) -> list[dict[str, Any]]:
        events = []
        for _ in range(rng.randrange(1, 7)):
            svc = rng.choice(self.services)
            verb = rng.choice(("transfer", "delete", "export", "read"))
            coll = "users" if verb == "export" and rng.random() < 0.5 else rng.choice(COLLECTIONS)
            args: dict[str, Any] = {}
            if verb == "transfer":
                args["amount"] = rng.randrange(100, 4000)
            events.append({
                "time": NOW - rng.randrange(60, 36 * 3600),
                "action": f"{svc}.{verb}",
                "resource": f"/{svc}/{coll}/item{rng.randrange(100)}",
                "args": args,
            })
        events.sort(key=lambda e: e["time"])
        return events

    def _expand(self, patterns: tuple[str, ...]) -> list[str]:
        return [a for a in self.actions if any(action_match(p, a) for p in patterns)]

    def _instance(self, rng: random.Random, pattern: str) -> str:
        out = []
        for seg in pattern.strip("/").split("/"):
            if seg == "*":
                out.append(rng.choice((*COLLECTIONS, f"x{rng.randrange(100)}")))
            elif seg == "**":
                out.extend(f"p{rng.randrange(100)}" for _ in range(rng.randrange(0, 3)))
            else:
                out.append(seg)
        return "/" + "/".join(out)

    def _random_resource(self, rng: random.Random, action: str) -> str:
        svc = action.split(".")[0] if action.startswith("svc") else rng.choice(self.services)
        return f"/{svc}/{rng.choice(COLLECTIONS)}/item{rng.randrange(1000)}"

    # --- Cedar -------------------------------------------------------------------------------
    def cedar_policies(self) -> tuple[str, list[tuple[str, str]]]:
        """Cedar text of the policy, and per Cedar policy (policy0, policy1, ...) its
        (Licet id, Licet effect). Mapping:

        - actions: globs expanded over the (finite, schema-like) action universe into
          `action in [Action::"svc03.read", ...]`;
        - resource globs: exact segment-aligned tests on `resource.path` with `like`
          (`/a/**` -> `path == "/a" || path like "/a/*"`; a `*` segment -> `like` plus a
          `!(path like ...*/*...)` that stops it spanning two segments);
        - conditions: `args.x` -> `context.args.x`, `context.x` -> `context.ctx.x`,
          `principal.x` -> entity attribute; `"r" in principal.roles` -> `.contains`,
          `x in [..]` -> `[..].contains(x)`, `startsWith` -> `like "lit*"`;
        - absent attributes: Cedar skips a policy whose condition errors, which is exactly
          Licet's rule for permits; for forbid / require_approval every literal L becomes
          `(!(has guard) || L)`, so an absent attribute makes them apply, as in Licet;
        - require_approval has no Cedar counterpart: it becomes a `forbid` annotated
          `@licet_effect("require_approval")` (+ quorum/role/ttl annotations); the caller reads
          the deciding policies from the diagnostics: any plain forbid -> forbid, else any
          annotated one -> require_approval;
        - invariants are stateless in Cedar: the caller computes the windowed sum / count /
          taint from the history (timed, in Python, see `cedar_request`) and passes them in
          `context.inv`; three forbids compare them with the limits.
        """
        if self._cedar_cache is not None:
            return self._cedar_cache
        texts: list[str] = []
        index: list[tuple[str, str]] = []
        for r in self.rules:
            guard = r.effect != "permit"
            head = "permit" if r.effect == "permit" else "forbid"
            notes = ""
            if r.effect == "require_approval":
                ap = r.approval or {}
                notes = ('@licet_effect("require_approval") '
                         f'@quorum("{ap.get("quorum", 1)}") @role("{ap.get("role", "approver")}") '
                         f'@ttl("{ap.get("ttl", "15m")}")\n')
            conds = []
            if r.resources is not None:
                conds.append("(" + " || ".join(_cedar_glob(g) for g in r.resources) + ")")
            for clause in r.when:
                conds.append("(" + " || ".join(_cedar_atom(a, guard) for a in clause) + ")")
            body = f" when {{ {' && '.join(conds)} }}" if conds else ""
            texts.append(f'{notes}@licet_id("{r.id}")\n{head} (principal, action in '
                         f"{_cedar_actions(self._expand(r.actions))}, resource){body};")
            index.append((r.id, r.effect))
        for inv in self.invariants:
            if inv.kind == "budget":
                cond = (f"!(context.args has amount) || context.args.amount < 0 || "
                        f"context.inv.{_cid(inv.id)} + context.args.amount > {inv.limit}")
                acts = self._expand(inv.actions)
            elif inv.kind == "count":
                cond = f"context.inv.{_cid(inv.id)} + 1 > {inv.limit}"
                acts = self._expand(inv.actions)
            else:
                lit = _cedar_like_literal(inv.sink_not_prefix) + "*"
                cond = (f'context.inv.{_cid(inv.id)} && (!(context.args has url) || '
                        f'!(context.args.url like "{lit}"))')
                acts = self._expand(inv.sink_actions)
            if not acts:
                continue
            texts.append(f'@licet_id("{inv.id}")\nforbid (principal, action in '
                         f"{_cedar_actions(acts)}, resource) when {{ {cond} }};")
            index.append((inv.id, "invariant"))
        self._cedar_cache = ("\n\n".join(texts), index)
        return self._cedar_cache

    def cedar_request(self, request: dict[str, Any], state: dict | None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Cedar request and entities for one Licet request (invariant state included)."""
        principal = request["principal"]
        pid = principal["id"]
        inv = self.invariant_state(request, state)
        context = {"args": request.get("args", {}), "ctx": request.get("context", {}), "inv": inv}
        attrs = {k: v for k, v in principal.items() if k in ("roles", "department", "tenant")}
        entities = [
            {"uid": {"type": "Agent", "id": pid}, "attrs": attrs, "parents": []},
            {"uid": {"type": "Resource", "id": request["resource"]},
             "attrs": {"path": request["resource"]}, "parents": []},
        ]
        cedar_req = {
            "principal": {"type": "Agent", "id": pid},
            "action": {"type": "Action", "id": request["action"]},
            "resource": {"type": "Resource", "id": request["resource"]},
            "context": context,
        }
        return cedar_req, entities

    def invariant_state(self, request: dict[str, Any], state: dict | None) -> dict[str, Any]:
        """Windowed aggregates over the history (what Licet computes from `state` itself)."""
        history = (state or {}).get("history", [])
        out: dict[str, Any] = {}
        for inv in self.invariants:
            lo = NOW - inv.window if inv.window else -math.inf
            live = [e for e in history if lo < e["time"] <= NOW]
            if inv.kind == "flow":
                out[_cid(inv.id)] = any(
                    any(action_match(p, e["action"]) for p in inv.source_actions)
                    and (inv.source_resources is None
                         or any(resource_match(g, e["resource"]) for g in inv.source_resources))
                    for e in live)
                continue
            hits = [e for e in live if any(action_match(p, e["action"]) for p in inv.actions)]
            if inv.kind == "count":
                out[_cid(inv.id)] = len(hits)
            else:
                out[_cid(inv.id)] = sum(int(e.get("args", {}).get("amount", 0)) for e in hits)
        return out

    # --- ea-agentgate ------------------------------------------------------------------------
    def agentgate(self) -> dict[str, Any]:
        """The closest ea-agentgate 1.0.1 equivalent (`check_admissibility(policies=...,
        obligations=...)`). Its rule language matches an action by exact name (or "*") and a
        resource by exact path, "*" or a trailing-`*` prefix; it has no attribute conditions,
        no require_approval effect scoped to resources, and no state. So:

        - each (expanded action x resource glob) of a rule becomes one rule: permit -> `permit`,
          forbid -> `deny`; a glob becomes the prefix before its first wildcard + "*"
          (`/svc03/data/**` -> `/svc03/data*`), no resource -> "*";
        - require_approval -> an `approval_required` obligation on each expanded action (their
          native approval mechanism; it cannot be scoped by resource or condition);
        - conditions are dropped (there is nothing to express them with): permits are wider and
          forbids stricter than in Licet; invariants have no equivalent and are dropped.

        The bench reports how often its verdicts agree with Licet's.
        """
        pre_rules: list[dict[str, Any]] = []
        obligations: list[dict[str, Any]] = []
        seen_obligations: set[str] = set()
        for r in self.rules:
            acts = self._expand(r.actions)
            scopes = [_agentgate_scope(g) for g in r.resources] if r.resources else ["*"]
            if r.effect == "require_approval":
                for a in acts:
                    if a not in seen_obligations:
                        seen_obligations.add(a)
                        obligations.append({"type": "approval_required", "operation": a})
                continue
            kind = "permit" if r.effect == "permit" else "deny"
            for a in acts:
                for s in dict.fromkeys(scopes):
                    pre_rules.append({"type": kind, "action": a, "resource": s, "rule_id": r.id})
        return {
            "policies": [{"policy_id": f"bench-{self.n_rules}",
                          "policy_json": {"pre_rules": pre_rules}}],
            "obligations": obligations,
            "rule_count": len(pre_rules) + len(obligations),
        }

    @staticmethod
    def agentgate_request(request: dict[str, Any]) -> dict[str, Any]:
        ctx = request.get("context", {})
        return {
            "principal": f"agent:{request['principal']['id']}",
            "action": request["action"],
            "resource": request["resource"],
            "runtime_context": {
                "role": (request["principal"].get("roles") or [""])[0],
                "source_ip": ctx.get("source_ip", ""),
                "mfa_verified": bool(ctx.get("mfa", False)),
                # an approval obligation is checked at the confirm phase; none is approved yet
                "execution_phase": "confirm",
                "human_approved": False,
            },
        }


def _cid(text: str) -> str:
    return text.replace("-", "_")


def _cedar_actions(actions: list[str]) -> str:
    return "[" + ", ".join(f'Action::"{a}"' for a in actions) + "]"


def _cedar_like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")


def _cedar_glob(pattern: str) -> str:
    segs = pattern.strip("/").split("/")
    if "**" in segs:
        if segs.index("**") != len(segs) - 1 or "*" in segs:
            raise ValueError(f"bench generator only emits literal/** globs: {pattern}")
        prefix = "/" + "/".join(segs[:-1]) if len(segs) > 1 else ""
        if not prefix:
            return "true"
        lit = _cedar_like_literal(prefix)
        return f'(resource.path == "{prefix}" || resource.path like "{lit}/*")'
    if "*" not in segs:
        return f'resource.path == "{pattern}"'
    esc = [_cedar_like_literal(s) if s != "*" else "*" for s in segs]
    base = "/" + "/".join(esc)
    spans = []
    for i, s in enumerate(segs):
        if s == "*":
            wide = list(esc)
            wide[i] = "*/*"
            spans.append(f'resource.path like "/{"/".join(wide)}"')
    return f'(resource.path like "{base}" && !({" || ".join(spans)}))'


def _cedar_path(path: str) -> tuple[str, str]:
    """Cedar expression for a Licet path, and the `has` test guarding it."""
    head, name = path.split(".", 1)
    if head == "args":
        return f"context.args.{name}", f"context.args has {name}"
    if head == "context":
        return f"context.ctx.{name}", f"context.ctx has {name}"
    return f"principal.{name}", f"principal has {name}"


def _cedar_atom(atom: Atom, guard: bool) -> str:
    expr, has = _cedar_path(atom.path)
    if atom.kind == "cmp":
        text = f"{expr} {atom.op} {atom.value}"
    elif atom.kind == "in":
        text = "[" + ", ".join(json.dumps(v) for v in atom.value) + f"].contains({expr})"
    elif atom.kind == "starts":
        text = f'{expr} like "{_cedar_like_literal(atom.value)}*"'
    elif atom.kind == "has_role":
        text = f"{expr}.contains({json.dumps(atom.value)})"
    elif atom.kind == "eq":
        text = f"{expr} == {json.dumps(atom.value)}"
    else:
        text = expr
    if atom.negated:
        text = f"!({text})"
    return f"(!({has}) || {text})" if guard else text


def _agentgate_scope(pattern: str) -> str:
    """agentgate resource scope for a glob: the literal prefix before the first wildcard, then
    its trailing-`*` prefix match (`/a/b/**` -> `/a/b*`, `/a/*/c` -> `/a/*`, no wildcard ->
    exact). Wider than the glob, which is the best its scope syntax allows."""
    segs = pattern.strip("/").split("/")
    for i, seg in enumerate(segs):
        if seg in ("*", "**"):
            lit = "/" + "/".join(segs[:i]) if i else ""
            if not lit:
                return "*"
            return lit + ("/*" if seg == "*" else "*")
    return pattern


def generate(n_rules: int, seed: int = 7) -> Workload:
    """A policy of exactly `n_rules` rules (plus three invariants)."""
    rng = random.Random(f"policy:{seed}:{n_rules}")
    n_services = max(4, n_rules // 8)
    services = [f"svc{i:03d}" if n_services > 100 else f"svc{i:02d}" for i in range(n_services)]
    actions = [f"{s}.{v}" for s in services for v in VERBS] + list(EXTRA_ACTIONS)
    rules: list[SynthRule] = []
    # A few fleet-wide rules a real policy always has.
    base = [
        SynthRule("net-post-intranet", "permit", ("net.post",), ("/net/**",),
                  ((Atom("starts", "args.url", value=INTRANET),),)),
        SynthRule("no-delete-without-mfa", "forbid", ("*.delete",), None,
                  ((Atom("bool", "context.mfa", negated=True),),)),
    ]
    rules.extend(base[: max(0, min(len(base), n_rules))])
    while len(rules) < n_rules:
        rules.append(_random_rule(rng, len(rules), services))
    invariants = [
        SynthInvariant(
            "transfer-budget", "budget",
            {"id": "transfer-budget", "kind": "budget", "action": ["*.transfer"],
             "sum": "args.amount", "limit": 50000, "window": "24h"},
            actions=("*.transfer",), limit=50000, window=86400),
        SynthInvariant(
            "delete-rate", "count",
            {"id": "delete-rate", "kind": "count", "action": ["*.delete"], "limit": 4,
             "window": "1h"},
            actions=("*.delete",), limit=4, window=3600),
        SynthInvariant(
            "no-user-export-exfil", "flow",
            {"id": "no-user-export-exfil", "kind": "flow",
             "source": {"action": ["*.export"], "resource": ["/*/users/**"]},
             "sink": {"action": ["net.post"],
                      "when": f"!args.url.startsWith({json.dumps(INTRANET)})"},
             "window": "24h"},
            window=86400, source_actions=("*.export",), source_resources=("/*/users/**",),
            sink_actions=("net.post",), sink_not_prefix=INTRANET),
    ]
    return Workload(n_rules, seed, services, actions, rules, invariants)


def _random_rule(rng: random.Random, k: int, services: list[str]) -> SynthRule:
    svc = rng.choice(services)
    roll = rng.random()
    effect = "permit" if roll < 0.70 else ("forbid" if roll < 0.85 else "require_approval")
    # actions
    if effect == "permit":
        if rng.random() < 0.1:
            acts: tuple[str, ...] = (f"{svc}.*",)
        else:
            acts = tuple(f"{svc}.{v}" for v in rng.sample(VERBS, rng.choice((1, 1, 2))))
    elif effect == "forbid":
        acts = ((f"*.{rng.choice(('delete', 'export'))}",) if rng.random() < 0.01
                else (f"{svc}.{rng.choice(('delete', 'export', 'write', 'transfer'))}",))
    else:
        acts = (f"{svc}.{rng.choice(('write', 'transfer', 'delete', 'export'))}",)
    # resources
    r = rng.random()
    coll = rng.choice(COLLECTIONS)
    if r < 0.2:
        resources: tuple[str, ...] | None = None
    elif r < 0.6:
        resources = (f"/{svc}/{coll}/**",)
    elif r < 0.75:
        resources = (f"/{svc}/*/{coll}",)
    elif r < 0.9:
        resources = (f"/{svc}/{coll}/*",)
    else:
        other = rng.choice([c for c in COLLECTIONS if c != coll])
        resources = (f"/{svc}/{coll}/**", f"/{svc}/{other}/**")
    # conditions
    clauses: list[Clause] = []
    if effect == "permit":
        pool = [
            lambda: Atom("has_role", "principal.roles", value=rng.choice(ROLES)),
            lambda: Atom("in", "context.region", value=tuple(rng.sample(REGIONS, 2))),
            lambda: Atom("bool", "context.mfa"),
            lambda: Atom("cmp", "args.amount", "<=", rng.choice(AMOUNT_THRESHOLDS)),
            lambda: Atom("cmp", "args.count", "<", rng.choice(COUNT_THRESHOLDS)),
            lambda: Atom("in", "args.format", value=tuple(rng.sample(FORMATS, 2))),
            lambda: Atom("starts", "args.target", value=rng.choice(TARGET_PREFIXES)),
            lambda: Atom("eq", "principal.department", value=rng.choice(DEPARTMENTS)),
        ]
        for make in rng.sample(pool, rng.choice((0, 1, 2, 2, 3))):
            clauses.append((make(),))
        if rng.random() < 0.15:
            clauses.append((Atom("has_role", "principal.roles", value=rng.choice(ROLES)),
                            Atom("eq", "principal.department", value=rng.choice(DEPARTMENTS))))
    elif effect == "forbid":
        pool = [
            lambda: Atom("bool", "context.mfa", negated=True),
            lambda: Atom("cmp", "context.risk_score", ">=", rng.choice(RISK_THRESHOLDS)),
            lambda: Atom("starts", "args.target", value="prod-"),
            lambda: Atom("in", "context.region", value=(rng.choice(REGIONS),)),
            lambda: Atom("cmp", "args.amount", ">", rng.choice(AMOUNT_THRESHOLDS[2:])),
        ]
        if rng.random() < 0.8:
            clauses.append((rng.choice(pool)(),))
    else:
        pool = [
            lambda: Atom("cmp", "args.amount", ">", rng.choice(AMOUNT_THRESHOLDS)),
            lambda: Atom("starts", "args.target", value="prod-"),
            lambda: Atom("cmp", "context.risk_score", ">=", rng.choice(RISK_THRESHOLDS)),
        ]
        clauses.append((rng.choice(pool)(),))
    approval = None
    if effect == "require_approval":
        approval = {"quorum": rng.choice((1, 2)), "role": "approver",
                    "ttl": rng.choice(("15m", "1h"))}
    prefix = {"permit": "allow", "forbid": "block", "require_approval": "review"}[effect]
    return SynthRule(f"{prefix}-{k:04d}", effect, acts, resources, tuple(clauses), approval)
