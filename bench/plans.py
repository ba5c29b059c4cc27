"""Plan verification (bounded model checking) and policy diff, next to ea-agentgate's `verify_plan`.

    .venv/bin/python bench/plans.py            # 10 / 100 / 1 000 / 10 000 steps + diff, ~2.5 min
    .venv/bin/python bench/plans.py --quick    # fewer repetitions, 10 000-step safe + budget plans, ~1 min
    .venv/bin/python bench/plans.py --help

One payments policy (`POLICY` below) with all three invariant kinds — a 24 h transfer budget, a
24 h refund count and a PII → external-webhook flow — and, per plan length, three plans whose
transfer and refund amounts are symbolic (`{"symbolic": "int", "min": 1, "max": 1000}`):

- **safe**: the session has already spent exactly `limit − 1 000 × (transfers in the plan)`, so
  the budget holds with equality when every amount takes its maximum; posts after the PII read
  go to the intranet only. Expected: `safe` (for every value).
- **budget**: the same plan with its second-to-last step turned into one more transfer. Expected:
  `unsafe`, first failing step = the last step (n−1), invariant `daily-transfer-budget`.
- **flow**: the safe plan with the intranet post at n−5 given a symbolic URL. Expected: `unsafe`
  at step n−5, invariant `no-pii-exfiltration` (some URL is not the intranet).

Each verdict is checked against that expectation, and *replayed*: the counterexample's values (or
every amount at its maximum, for a safe plan) are substituted and every step is decided one by one
with `kernel.decide`, the session history growing as the steps run. A counterexample is confirmed
when the replay's first non-permitted step is the counterexample's step.

10 000 steps: the default `max_steps` (10 000) admits them, so each of the three plans runs once
in a subprocess with a 60 s timeout ("timed out" if so; not replayed: `decide` over a 10 000-event
history, step after step, takes too long), and a 10 001-step plan shows the refusal (`PlanTooLong`,
nothing checked).

ea-agentgate 1.0.1's `ea_agentgate.verification.verify_plan` gets the same steps (action and
resource: its rules read no arguments) and a translation of the same policy; it decides each step
on its own with `check_admissibility` (no budget, count or taint carried between steps) and stops
at the first inadmissible step. Its "steps checked" column is the number of per-step results it
returned.

`kernel.analysis.diff` runs on two versions of `bench/policies.py`'s 100-rule policy (seed 7): an
identical copy (expected: equivalent) and a version with three rules changed.

Nothing here asserts on time: it prints figures, with the DESIGN.md targets beside them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root (kernel)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (policies, peers)

import policies as gen
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent

console = Console(width=None if sys.stdout.isatty() else 170)

# DESIGN.md "Performance budgets": a plan with symbolic arguments and three invariants.
TARGETS_MS = {100: 20.0, 1000: 250.0, 10000: 5000.0}
BIG_TIMEOUT_S = 60.0

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z, fixed so every run sees the same windows
PRINCIPAL = {"id": "agent-7", "tenant": "acme", "roles": ["payments-agent"]}
CONTEXT = {"mfa": True, "source_ip": "10.0.4.7"}
BUDGET_LIMIT = 5_000_000
COUNT_LIMIT = 1000
STEP_MAX = 1000  # the largest transfer a plan step may make (large-transfer approval is > 1000)
INTRANET = "https://intranet.example/"
IBAN = "DE89370400440532013000"

POLICY = f"""
id: payments-plans
version: "1"
description: Treasury payments agent, with the three invariant kinds plan verification threads.
rules:
  - id: read-accounts
    effect: permit
    action: [payments.read, payments.list]
    resource: ["/accounts/**"]
    when: '"payments-agent" in principal.roles'
  - id: transfer
    effect: permit
    action: payments.transfer
    resource: ["/accounts/*"]
    when: >-
      "payments-agent" in principal.roles && args.amount > 0
      && args.currency in ["EUR", "USD", "GBP", "CHF"] && size(args.beneficiary_iban) >= 15
  - id: refund
    effect: permit
    action: payments.refund
    resource: ["/accounts/*/charges/*"]
    when: '"payments-agent" in principal.roles && args.amount > 0 && args.amount <= args.charged_amount'
  - id: read-customers
    effect: permit
    action: db.read
    resource: ["/pii/customers/**"]
    when: '"payments-agent" in principal.roles'
  - id: webhooks
    description: Notifications to our ledger and to partners (the flow invariant guards PII).
    effect: permit
    action: http.post
    resource: ["/hooks/**"]
  - id: large-transfer
    effect: require_approval
    action: payments.transfer
    when: 'args.amount > {STEP_MAX}'
    approval: {{quorum: 2, role: approver, ttl: 15m}}
  - id: money-needs-mfa
    effect: forbid
    action: [payments.transfer, payments.refund]
    when: '!context.mfa'
  - id: sanctioned-countries
    effect: forbid
    action: payments.transfer
    when: 'args.country in ["KP", "IR", "SY", "CU", "RU", "BY"]'
  - id: blocked-currencies
    effect: forbid
    action: [payments.transfer, payments.refund]
    when: 'args.currency in ["BTC", "ETH", "XMR", "USDT", "RUB"]'
  - id: no-admin
    effect: forbid
    action: ["payments.*", "db.*", "http.*"]
    resource: ["/admin/**"]
invariants:
  - {{id: daily-transfer-budget, kind: budget, action: [payments.transfer], sum: args.amount,
     limit: {BUDGET_LIMIT}, window: 24h}}
  - {{id: daily-refund-count, kind: count, action: [payments.refund], limit: {COUNT_LIMIT}, window: 24h}}
  - id: no-pii-exfiltration
    kind: flow
    source: {{action: [db.read], resource: ["/pii/**"]}}
    sink: {{action: [http.post], when: '!args.url.startsWith("{INTRANET}")'}}
"""
ACTIONS = ("payments.read", "payments.list", "payments.transfer", "payments.refund", "db.read",
           "http.post")

VARIANTS = ("safe", "budget", "flow")
EXPECTED_INVARIANT = {"budget": "daily-transfer-budget", "flow": "no-pii-exfiltration"}


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------


def _transfer(account: str) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": account,
            "args": {"amount": {"symbolic": "int", "min": 1, "max": STEP_MAX}, "currency": "EUR",
                     "country": "DE", "beneficiary_iban": IBAN}}


def build_plan(n: int, variant: str) -> list[dict[str, Any]]:
    """`n` steps in blocks of ten: read, 5 transfers, a PII read, an intranet post, a refund, a
    list. The very first step posts to a partner (external) before any PII was read: allowed."""
    steps: list[dict[str, Any]] = []
    for i in range(n):
        block, k = divmod(i, 10)
        account = f"/accounts/acc-{block % 50:02d}"
        if k == 0 and block == 0:
            step = {"action": "http.post", "resource": "/hooks/partner",
                    "args": {"url": "https://partner.example/notify", "event": "batch-start"}}
        elif k == 0:
            step = {"action": "payments.read", "resource": f"{account}/balance", "args": {}}
        elif k in (1, 2, 4, 7, 9):
            step = _transfer(account)
        elif k == 3:
            step = {"action": "db.read", "resource": f"/pii/customers/c{block:05d}", "args": {}}
        elif k == 5:
            step = {"action": "http.post", "resource": "/hooks/ledger",
                    "args": {"url": f"{INTRANET}ledger/{block}", "event": "posted"}}
        elif k == 6:
            step = {"action": "payments.refund", "resource": f"{account}/charges/ch-{block}",
                    "args": {"amount": {"symbolic": "real", "min": 0.5, "max": 250},
                             "charged_amount": 250, "currency": "EUR"}}
        else:
            step = {"action": "payments.list", "resource": account, "args": {}}
        steps.append(step)
    if variant == "budget":  # one transfer more than the headroom allows, just before the last
        steps[n - 2] = _transfer(f"/accounts/acc-{(n - 2) // 10 % 50:02d}")
    elif variant == "flow":  # after the PII read: a post to some URL
        steps[n - 5] = {"action": "http.post", "resource": "/hooks/ledger",
                        "args": {"url": {"symbolic": "string"}, "event": "posted"}}
    return steps


def transfers_in(plan: list[dict[str, Any]]) -> int:
    return sum(1 for s in plan if s["action"] == "payments.transfer")


def session_state(n: int) -> dict[str, Any]:
    """The session so far: transfers already made today, leaving exactly 1 000 per transfer of
    the safe plan (spread over 50 events), and nothing else."""
    headroom = STEP_MAX * transfers_in(build_plan(n, "safe"))
    spent = max(0, BUDGET_LIMIT - headroom)
    events = []
    for j in range(50):
        amount = spent // 50 + (1 if j < spent % 50 else 0)
        if amount:
            events.append({"time": NOW - 3600 - 60 * j, "action": "payments.transfer",
                           "resource": f"/accounts/acc-{j % 7:02d}",
                           "args": {"amount": amount, "currency": "EUR", "country": "DE",
                                    "beneficiary_iban": IBAN}})
    return {"history": events}


def expected(n: int, variant: str) -> tuple[str, int | None, str | None]:
    if variant == "safe":
        return "safe", None, None
    return "unsafe", (n - 1 if variant == "budget" else n - 5), EXPECTED_INVARIANT[variant]


# --------------------------------------------------------------------------------------------
# replay: the verdict re-checked step by step with kernel.decide
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> int | float:
    if isinstance(value, str):
        value = Fraction(value)
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return value


def _instantiate(value: Any, path: str, values: dict[str, Any] | None) -> Any:
    if isinstance(value, dict) and "symbolic" in value:
        if values is not None and path in values:
            chosen = values[path]
            if value["symbolic"] == "string":
                # the kernel's "<other>": a value unlike every constant the policy mentions
                return "https://collector.example/upload" if chosen == "<other>" else chosen
            return chosen if value["symbolic"] == "bool" else _number(chosen)
        if value["symbolic"] in ("int", "real"):
            return _number(value["max"])  # worst case for the budget
        return "https://collector.example/upload" if value["symbolic"] == "string" else True
    if isinstance(value, dict):
        return {k: _instantiate(v, f"{path}.{k}", values) for k, v in value.items()}
    return value


def replay(policy: Any, plan: list[dict[str, Any]], state: dict[str, Any],
           values: dict[str, Any] | None, upto: int | None = None) -> tuple[int | None, str, list[str]]:
    """Decide the instantiated steps in order; the first step that is not permitted (index,
    outcome, rules) or (None, "permit", [])."""
    from licet.kernel import decide

    history = list(state.get("history", []))
    last = len(plan) - 1 if upto is None else upto
    for i, step in enumerate(plan[: last + 1]):
        args = _instantiate(step.get("args", {}), f"steps[{i}].args", values)
        request = {"principal": PRINCIPAL, "action": step["action"], "resource": step["resource"],
                   "args": args, "context": CONTEXT}
        decision = decide(policy, request, state={"history": history}, now=NOW)
        if decision.outcome != "permit":
            return i, decision.outcome, list(decision.rules)
        history.append({"time": NOW, "action": step["action"], "resource": step["resource"],
                        "args": args})
    return None, "permit", []


# --------------------------------------------------------------------------------------------
# Licet
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    n: int
    variant: str
    verdict: str = "—"
    steps_checked: int = 0
    counterexample: dict[str, Any] | None = None
    first_ms: float | None = None
    times: list[float] = field(default_factory=list)
    note: str = ""  # "timed out", "refused", errors
    replay: str = ""
    replay_ok: bool | None = None
    ag: dict[str, Any] | None = None

    @property
    def p50(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def matches(self) -> bool:
        verdict, step, invariant = expected(self.n, self.variant)
        if self.verdict != verdict:
            return False
        if step is None:
            return self.counterexample is None
        ce = self.counterexample or {}
        return ce.get("step") == step and ce.get("invariant") == invariant


def load_policy() -> Any:
    from licet.kernel import load_policy as load

    return load(POLICY, "bench/plans.py:POLICY")


def verify(policy: Any, plan: list[dict[str, Any]], state: dict[str, Any], **kw: Any) -> tuple[Any, float]:
    from licet.kernel.plans import verify_plan

    t0 = time.perf_counter()
    verdict = verify_plan(policy, plan, state=state, now=NOW, principal=PRINCIPAL, context=CONTEXT,
                          **kw)
    return verdict, (time.perf_counter() - t0) * 1000


def run_case(policy: Any, n: int, variant: str, reps: int, min_reps: int, cell_s: float,
             do_replay: bool) -> Case:
    case = Case(n, variant)
    plan, state = build_plan(n, variant), session_state(n)
    try:
        result, case.first_ms = verify(policy, plan, state)  # untimed warm-up, shown as "first"
        for _ in range(reps):
            result, ms = verify(policy, plan, state)
            case.times.append(ms)
            if len(case.times) >= min_reps and sum(case.times) > cell_s * 1000:
                break  # a slow cell gets fewer repetitions (never fewer than min_reps)
    except Exception as exc:  # noqa: BLE001 - a bench prints what went wrong and goes on
        case.note = f"{type(exc).__name__}: {exc}"
        return case
    case.verdict, case.steps_checked = result.verdict, result.steps_checked
    if result.counterexample is not None:
        case.counterexample = result.counterexample.to_json()
    if do_replay:
        case.replay, case.replay_ok = replay_check(policy, plan, state, case)
    return case


def replay_check(policy: Any, plan: list[dict[str, Any]], state: dict[str, Any], case: Case
                 ) -> tuple[str, bool]:
    ce = case.counterexample
    if ce is None:
        first, outcome, rules = replay(policy, plan, state, None)
        if first is None:
            return "all permit (max)", case.verdict != "unsafe"
        return f"@ {first}: {outcome} {','.join(rules)} (max)", False
    first, outcome, rules = replay(policy, plan, state, ce["values"], upto=ce["step"])
    if first is None:
        return f"@ {ce['step']}: permit", False
    return f"@ {first}: {outcome}", first == ce["step"]


def child_main(spec: str) -> int:
    """`--child N:VARIANT`: one verification in this process, JSON on stdout (for 10 000 steps)."""
    n_text, variant = spec.split(":")
    n = int(n_text)
    policy = load_policy()
    verify(policy, build_plan(10, "safe"), session_state(10))  # compile outside the timing
    plan, state = build_plan(n, variant), session_state(n)
    result, ms = verify(policy, plan, state)  # default max_steps
    out = {"verdict": result.verdict, "steps_checked": result.steps_checked, "ms": ms,
           "counterexample": result.counterexample.to_json() if result.counterexample else None}
    print(json.dumps(out))
    return 0


def run_big(n: int, variant: str, timeout: float) -> Case:
    case = Case(n, variant)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{n}:{variant}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        case.note = f"timed out (> {timeout:.0f} s)"
        return case
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        case.note = f"failed: {tail[0]}"
        return case
    out = json.loads(done.stdout.strip().splitlines()[-1])
    case.verdict, case.steps_checked = out["verdict"], out["steps_checked"]
    case.counterexample, case.times = out["counterexample"], [out["ms"]]
    return case


def run_refusal(policy: Any, n: int) -> Case:
    """A plan over the default max_steps: refused before anything is checked."""
    from licet.kernel.plans import PlanTooLong

    case = Case(n, "safe")
    plan, state = build_plan(n, "safe"), session_state(n)
    t0 = time.perf_counter()
    try:
        result = verify(policy, plan, state)[0]
    except PlanTooLong as exc:
        case.times = [(time.perf_counter() - t0) * 1000]
        case.verdict, case.note = "refused", str(exc).split(".")[0]
        return case
    case.verdict, case.steps_checked = result.verdict, result.steps_checked
    case.note = "NOT refused"
    return case


# --------------------------------------------------------------------------------------------
# ea-agentgate
# --------------------------------------------------------------------------------------------


def agentgate_translation() -> dict[str, Any]:
    """The same policy in agentgate's rule language (exact names or "*", resource scopes that are
    exact, "*" or a trailing-`*` prefix, no conditions, no state).

    Permits keep their action/resource scope (conditions dropped: wider). Forbids and approvals
    with a condition are dropped: on these plans their conditions are false at every step (an
    MFA session, country DE, currency EUR, amounts ≤ 1 000), so they do not apply in Licet either;
    translating them unconditionally would block every transfer. The unconditional `no-admin`
    forbid becomes `deny` rules. Invariants have no counterpart."""
    import yaml

    doc = yaml.safe_load(POLICY)
    pre_rules: list[dict[str, Any]] = []
    for rule in doc["rules"]:
        patterns = rule["action"] if isinstance(rule["action"], list) else [rule["action"]]
        actions = [a for a in ACTIONS if any(gen.action_match(p, a) for p in patterns)]
        if rule["effect"] == "permit":
            kind = "permit"
        elif rule["effect"] == "forbid" and "when" not in rule:
            kind = "deny"
        else:
            continue
        scopes = [gen._agentgate_scope(g) for g in rule.get("resource", [])] or ["*"]
        for action in actions:
            for scope in dict.fromkeys(scopes):
                pre_rules.append({"type": kind, "action": action, "resource": scope,
                                  "rule_id": rule["id"]})
    return {"policies": [{"policy_id": "payments-plans", "policy_json": {"pre_rules": pre_rules}}],
            "obligations": []}


def agentgate_steps(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    context = {"role": PRINCIPAL["roles"][0], "source_ip": CONTEXT["source_ip"],
               "mfa_verified": True, "execution_phase": "confirm", "human_approved": False}
    return [{"action": s["action"], "resource": s["resource"], "context": dict(context)}
            for s in plan]


def run_agentgate(cases: list[Case], reps: dict[int, int], timeout: float
                  ) -> tuple[str | None, dict[str, Any] | None]:
    from peers import agentgate

    try:
        python = agentgate.ensure_venv(lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except agentgate.PeerUnavailable as exc:
        return str(exc), None
    workload = {"principal": f"agent:{PRINCIPAL['id']}", **agentgate_translation(),
                "plans": [{"id": f"{c.n}:{c.variant}",
                           "reps": reps.get(c.n, 1) if c.variant == "safe" or c.n < 1000 else 1,
                           "steps": agentgate_steps(build_plan(c.n, c.variant))} for c in cases]}
    path = agentgate.VENV.parent / "agentgate-plans-workload.json"
    path.write_text(json.dumps(workload))
    driver = BENCH / "peers" / "agentgate_plan_driver.py"
    # Its top-level `server` package would be shadowed by ours: run away from the repo.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    try:
        done = subprocess.run([str(python), str(driver), str(path)], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=agentgate.VENV.parent, env=env)
    except subprocess.TimeoutExpired:
        return f"agentgate plan driver timed out after {timeout:.0f} s", None
    if done.returncode != 0:
        return "agentgate plan driver failed: " + " | ".join(done.stderr.strip().splitlines()[-3:]), None
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "agentgate plan driver printed no JSON report", None
    by_id = {p["id"]: p for p in report["plans"]}
    for c in cases:
        c.ag = by_id.get(f"{c.n}:{c.variant}")
    return None, report


# --------------------------------------------------------------------------------------------
# policy diff
# --------------------------------------------------------------------------------------------


def changed_version(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Three edits an author might make: widen a permit (drop its condition), delete a forbid,
    narrow another permit (require MFA)."""
    new = copy.deepcopy(doc)
    new["version"] = "2"
    rules = new["rules"]
    changes = []
    widen = next(r for r in rules[2:] if r["effect"] == "permit" and "when" in r)
    changes.append(f"{widen['id']}: condition dropped")
    del widen["when"]
    drop = next(r for r in rules[2:] if r["effect"] == "forbid")
    changes.append(f"{drop['id']} (forbid) deleted")
    rules.remove(drop)
    narrow = next(r for r in rules[2:] if r["effect"] == "permit" and "when" in r
                  and "context.mfa" not in r["when"] and r is not widen)
    changes.append(f"{narrow['id']}: now also requires context.mfa")
    narrow["when"] = f"({narrow['when']}) && context.mfa"
    return new, changes


@dataclass
class DiffResult:
    label: str
    ms: float = 0.0
    equivalent: bool | None = None
    gained: int = 0
    lost: int = 0
    never: int = 0
    confirmed: str = ""
    example: str = ""
    changes: list[str] = field(default_factory=list)
    note: str = ""


def run_diff(n_rules: int, seed: int) -> list[DiffResult]:
    from licet.kernel import load_policy as load
    from licet.kernel.analysis import diff

    doc = gen.generate(n_rules, seed=seed).licet_policy()
    new_doc, changes = changed_version(doc)
    out = []
    for label, other, what in (("identical copy", copy.deepcopy(doc), []),
                               ("3 rules changed", new_doc, changes)):
        res = DiffResult(label, changes=what)
        try:
            old, new = load(doc), load(other)  # fresh objects: nothing compiled before the timing
            t0 = time.perf_counter()
            d = diff(old, new, max_examples=5)
            res.ms = (time.perf_counter() - t0) * 1000
        except Exception as exc:  # noqa: BLE001
            res.note = f"{type(exc).__name__}: {exc}"
            out.append(res)
            continue
        res.equivalent, res.gained, res.lost = d.equivalent, len(d.gained), len(d.lost)
        res.never = len(d.never_applies)
        examples = [*d.gained, *d.lost]
        res.confirmed = f"{sum(e.confirmed for e in examples)}/{len(examples)}" if examples else "—"
        if examples:
            e = examples[0]
            res.example = (f"{e.request['action']} {e.request['resource']}: "
                           f"{e.outcomes.get('old')} → {e.outcomes.get('new')}")
        out.append(res)
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def _ms(value: float | None, target: float | None = None) -> str:
    if value is None:
        return "[dim]—[/dim]"
    text = f"{value:.2f}" if value < 10 else f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"
    if target is None:
        return text
    return f"[green]{text}[/green]" if value <= target else f"[red]{text}[/red]"


SHORT = {"daily-transfer-budget": "budget", "daily-refund-count": "count",
         "no-pii-exfiltration": "flow"}


def _verdict_text(case: Case) -> str:
    if case.verdict == "refused":
        return "[green]refused[/green] (PlanTooLong)"
    if case.note and not case.times:
        return f"[red]{case.note}[/red]"
    ce = case.counterexample
    if ce is None:
        return case.verdict
    what = (SHORT.get(ce.get("invariant") or "", ce.get("invariant"))
            or (f"rule {ce['rule']}" if ce.get("rule") else "no permit"))
    return f"{case.verdict} @ {ce['step']}: {what}"


def _target_text(n: int) -> str:
    if n >= 10000:
        return "refuse or ≤ 5 000"
    target = TARGETS_MS.get(n)
    return f"≤ {target:.0f}" if target else "[dim]—[/dim]"


def print_plan_table(cases: list[Case], ag_note: str | None) -> None:
    table = Table(title="Plan verification: symbolic amounts; budget + count + flow invariants; "
                        "times in ms", title_justify="left")
    table.add_column("steps", justify="right", style="bold")
    table.add_column("plan")
    table.add_column("licet verdict @ step")
    table.add_column("as ex-\npected", justify="center")
    table.add_column("replay with\nkernel.decide")
    table.add_column("licet p50\n(reps)", justify="right")
    table.add_column("1st\nrun", justify="right")
    table.add_column("DESIGN.md\ntarget")
    table.add_column("agentgate\nverdict")
    table.add_column("agentgate\nsteps checked", justify="right")
    table.add_column("agentgate\np50 (reps)", justify="right")
    for c in cases:
        target = TARGETS_MS.get(c.n)
        if c.verdict == "refused":
            ok = "[green]✓[/green]"
        elif c.note and not c.times:
            ok = "[red]✗[/red]"
        else:
            ok = "[green]✓[/green]" if c.matches() else "[red]✗[/red]"
        if c.replay_ok is None:
            rep = "[dim]—[/dim]"
        else:
            rep = ("[green]✓[/green] " if c.replay_ok else "[red]✗[/red] ") + c.replay
        timing = f"{_ms(c.p50, target)} ({len(c.times)})" if c.times else "[dim]—[/dim]"
        if c.ag is None:
            ag_verdict = ag_checked = ag_ms = "[dim]—[/dim]"
        else:
            ag_verdict = "safe" if c.ag["safe"] else f"blocked @ {c.ag['blocked_step_index']}"
            ag_checked = f"{c.ag['steps_checked']:,} / {c.n:,}"
            ag_ms = f"{_ms(statistics.median(c.ag['times_ms']))} ({len(c.ag['times_ms'])})"
        table.add_row(f"{c.n:,}", c.variant, _verdict_text(c), ok, rep, timing,
                      _ms(c.first_ms), _target_text(c.n), ag_verdict, ag_checked, ag_ms)
    console.print(table)
    if ag_note:
        console.print(f"[yellow]agentgate columns skipped:[/yellow] {ag_note}")


def print_counterexamples(cases: list[Case]) -> None:
    shown = [c for c in cases if c.counterexample and c.n <= 1000]
    if not shown:
        return
    console.print("[bold]Counterexamples[/bold] (values at and just before the failing step)")
    for c in shown:
        ce = c.counterexample
        assert ce is not None
        values = ce["values"]
        tail = {k: v for k, v in values.items()
                if int(k.split("]")[0].split("[")[1]) >= ce["step"] - 2}
        extra = ""
        if c.variant == "budget":
            spent = sum(_number(e["args"]["amount"]) for e in session_state(c.n)["history"])
            plan = build_plan(c.n, c.variant)
            total = spent + sum(_number(v) for k, v in values.items()
                                if plan[int(k.split("]")[0].split("[")[1])]["action"]
                                == "payments.transfer")
            extra = f"  spent before the plan {spent:,} + plan transfers → {total:,} > {BUDGET_LIMIT:,}"
        console.print(f"  {c.n:>5,} {c.variant:<6} step {ce['step']} ({c.steps_checked:,} checked): "
                      f"{ce['reason']}; {json.dumps(tail)}{extra}")


def print_diff_table(results: list[DiffResult], n_rules: int, seed: int) -> None:
    table = Table(title=f"kernel.analysis.diff, bench/policies.py generator ({n_rules} rules, "
                        f"seed {seed})", title_justify="left")
    table.add_column("new version")
    table.add_column("ms", justify="right")
    table.add_column("equivalent")
    table.add_column("gained / lost\nexamples", justify="right")
    table.add_column("confirmed by\ndecide", justify="right")
    table.add_column("never-applying\nrules", justify="right")
    table.add_column("first example")
    table.add_column("DESIGN.md\ntarget")
    for r in results:
        if r.note:
            table.add_row(r.label, "—", f"[red]{r.note}[/red]", "", "", "", "", "—")
            continue
        table.add_row(r.label, _ms(r.ms), str(r.equivalent), f"{r.gained} / {r.lost}", r.confirmed,
                      str(r.never), r.example or "[dim]—[/dim]", "[dim]none set[/dim]")
    console.print(table)
    for r in results:
        if r.changes:
            console.print(f"[dim]{r.label}: " + "; ".join(r.changes) + "[/dim]")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "cpus": str(os.cpu_count())}
    try:
        out["z3"] = version("z3-solver")
    except PackageNotFoundError:
        out["z3"] = "absent"
    return out


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Licet plan verification (10 / 100 / 1 000 / 10 000 steps) and policy diff, "
                    "next to ea-agentgate 1.0.1's verify_plan.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (5/3/1), no 10 000-step flow plan, no "
                             "replay at 1 000 steps")
    parser.add_argument("--sizes", default="10,100,1000", help="plan lengths timed in-process")
    parser.add_argument("--big", default=None,
                        help="10 000-step variants run in a subprocess (default: safe,budget,flow; "
                             "quick: safe,budget; 'none' skips)")
    parser.add_argument("--timeout", type=float, default=BIG_TIMEOUT_S,
                        help="seconds allowed per 10 000-step run (60)")
    parser.add_argument("--no-agentgate", action="store_true", help="skip the agentgate columns")
    parser.add_argument("--no-replay", action="store_true", help="skip the kernel.decide replays")
    parser.add_argument("--diff-rules", type=int, default=100, help="policy size for diff (100)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed for diff (7)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        return child_main(opts.child)

    sizes = [int(s) for s in opts.sizes.split(",") if s.strip()]
    reps = {10: 5, 100: 3, 1000: 1} if opts.quick else {10: 21, 100: 11, 1000: 5}
    min_reps = 1 if opts.quick else 3
    cell_s = 4.0 if opts.quick else 8.0  # seconds of repetitions per cell, at least min_reps
    big = opts.big or ("safe,budget" if opts.quick else "safe,budget,flow")
    big_variants = [] if big == "none" else [v for v in big.split(",") if v in VARIANTS]

    env = versions()
    console.print(f"[bold]Licet plan bench[/bold]  sizes {sizes} + 10,000 {big_variants}  "
                  f"{'quick' if opts.quick else 'default'}\n[dim]python {env['python']} on "
                  f"{env['machine']} × {env['cpus']} cpus, z3 {env['z3']}, load average "
                  f"{_load()}[/dim]")
    started = time.perf_counter()
    try:
        policy = load_policy()
    except Exception as exc:  # noqa: BLE001
        console.print(f"[red]the kernel cannot load the bench policy:[/red] {exc}")
        return 2

    cases: list[Case] = []
    for n in sizes:
        for variant in VARIANTS:
            with console.status(f"[{n:>5} steps] {variant} ..."):
                do_replay = not opts.no_replay and not (opts.quick and n >= 1000)
                cases.append(run_case(policy, n, variant, reps.get(n, 1), min_reps, cell_s,
                                      do_replay))
        console.print(f"[dim][{n:>5} steps] done ({time.perf_counter() - started:.0f} s)[/dim]")
    for variant in big_variants:
        with console.status(f"[10,000 steps] {variant} (subprocess, {opts.timeout:.0f} s "
                            "timeout) ..."):
            cases.append(run_big(10000, variant, opts.timeout))
        console.print(f"[dim][10,000 steps] {variant} done "
                      f"({time.perf_counter() - started:.0f} s)[/dim]")
    cases.append(run_refusal(policy, 10001))

    ag_note: str | None = "disabled (--no-agentgate)" if opts.no_agentgate else None
    ag_report = None
    if not opts.no_agentgate:
        # agentgate is stateless: at 10 000 steps the unsafe variants would give it the same
        # answer on (almost) the same steps, so it runs the safe plan only.
        ag_cases = [c for c in cases if c.verdict != "refused" and (c.n < 10000 or c.variant == "safe")]
        ag_reps = {10: 5, 100: 3, 1000: 1} if opts.quick else {10: 5, 100: 5, 1000: 2}
        with console.status("agentgate verify_plan (separate Python 3.13 venv) ..."):
            ag_note, ag_report = run_agentgate(ag_cases, ag_reps, timeout=900)
        console.print(f"[dim]\\[agentgate] done ({time.perf_counter() - started:.0f} s)[/dim]")

    with console.status(f"diff at {opts.diff_rules} rules ..."):
        diffs = run_diff(opts.diff_rules, opts.seed)

    console.print()
    print_plan_table(cases, ag_note)
    print_counterexamples(cases)
    console.print()
    print_diff_table(diffs, opts.diff_rules, opts.seed)
    notes = [
        "licet: kernel.plans.verify_plan(policy, plan, state=, now=, principal=, context=) with "
        "the default max_steps (10 000); p50 over the repetitions after one untimed first run "
        "(1st run ms; the very first also compiles the policy). 10 000 steps: one run in a "
        f"subprocess after a warm-up compile, {opts.timeout:.0f} s timeout. 10 001 steps: the "
        "time to refuse.",
        "replay: the counterexample's values (safe: every amount at its maximum) substituted and "
        "each step decided in order with kernel.decide, the history growing; ✓ = the first "
        "non-permitted step is the counterexample's step (safe: every step permitted).",
        "agentgate: ea_agentgate.verification.verify_plan, Z3 mode enforce, one "
        "check_admissibility per step with no state between steps, stopping at the first "
        "inadmissible step; 'steps checked' = per-step results returned. Permits translated "
        "(conditions dropped), conditional forbids/approvals dropped (false on these plans), "
        "invariants have no counterpart — so it calls the budget and flow plans safe.",
    ]
    if ag_report and ag_report.get("counterfactual_bounds"):
        bounds = ag_report["counterfactual_bounds"]
        notes.append("agentgate's server-side verify_counterfactual_plan (needs its database) "
                     "first truncates a plan to steps[:bound] with bound by risk tier "
                     f"{bounds}: at most {max(bounds.values())} steps of any plan are looked at.")
    console.print("[dim]" + "\n".join(notes) + "[/dim]")
    console.print(f"[dim]total {time.perf_counter() - started:.0f} s; load average now {_load()} "
                  "(other work on this machine moves these figures)[/dim]")

    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "env": env,
            "plans": [{"steps": c.n, "plan": c.variant, "verdict": c.verdict,
                       "steps_checked": c.steps_checked, "counterexample": c.counterexample,
                       "as_expected": c.verdict == "refused" or c.matches(),
                       "replay": c.replay, "replay_ok": c.replay_ok, "first_ms": c.first_ms,
                       "times_ms": c.times, "note": c.note, "agentgate": c.ag} for c in cases],
            "diff": [r.__dict__ for r in diffs],
            "agentgate": {k: v for k, v in (ag_report or {}).items() if k != "plans"},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
