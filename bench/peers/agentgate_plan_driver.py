"""Time ea-agentgate 1.0.1's `verify_plan` on plans written by `bench/plans.py`.

Runs inside the separate Python 3.13 venv `bench/.peers/agentgate-venv` (ea-agentgate needs
Python >= 3.13), so it imports nothing from this repository. Usage:

    python agentgate_plan_driver.py WORKLOAD.json

WORKLOAD.json: {"principal": "agent:...", "policies": [...], "obligations": [...],
                "plans": [{"id": "...", "reps": 3, "steps": [{"action", "resource", "context"}]}]}

Prints one JSON object on stdout: {"version", "python", "counterfactual_bounds", "plans": [{"id",
"times_ms", "safe", "blocked_step_index", "blocked_reason", "steps_checked", "total_steps"}]}.

`ea_agentgate.verification.verify_plan(principal=, steps=, policies=, obligations=, ...)` calls
`check_admissibility` once per step, each step on its own (no state is carried from one step to
the next: no budget, no count, no taint), and returns at the first inadmissible step;
`steps_checked` is how many per-step results it produced. Its server-side counterpart
(`server.policy_governance.kernel.counterfactual_verifier.verify_counterfactual_plan`, which needs
the server's database) first cuts the plan to a per-risk-tier bound; `counterfactual_bounds` reports
those bounds as read from the installed package (not hard-coded here).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of the first plan")
    opts = parser.parse_args()

    # The same production-like set-up as agentgate_driver.py: a random signing key, Z3 consulted
    # on every step ("enforce"), no OS keyring; "development" only because "production" insists on
    # a PostgreSQL DATABASE_URL at import.
    os.environ["AGENTGATE_DECISION_SIGNING_KEY"] = base64.b64encode(os.urandom(32)).decode()
    os.environ["AGENTGATE_Z3_MODE"] = "enforce"
    os.environ["AGENTGATE_ENV"] = "development"
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    logging.disable(logging.WARNING)

    from importlib.metadata import version

    from ea_agentgate.verification import verify_plan

    try:
        from licet.server.policy_governance.kernel.counterfactual_verifier import RISK_BOUNDS
        bounds: dict[str, int] | None = dict(RISK_BOUNDS)
    except Exception:  # noqa: BLE001 - informational only
        bounds = None

    with open(opts.workload, encoding="utf-8") as fh:
        workload = json.load(fh)
    principal = workload["principal"]
    policies, obligations = workload["policies"], workload["obligations"]

    def call(steps):  # type: ignore[no-untyped-def]
        return verify_plan(principal=principal, steps=steps, policies=policies,
                           obligations=obligations, tenant_id="bench")

    plans = workload["plans"]
    for _ in range(opts.warmup if plans else 0):
        call(plans[0]["steps"])

    out = {"version": version("ea-agentgate"), "python": sys.version.split()[0],
           "counterfactual_bounds": bounds, "plans": []}
    for plan in plans:
        times: list[float] = []
        result = None
        for _ in range(max(1, int(plan.get("reps", 1)))):
            t0 = time.perf_counter_ns()
            result = call(plan["steps"])
            times.append((time.perf_counter_ns() - t0) / 1e6)
        assert result is not None
        out["plans"].append({
            "id": plan["id"],
            "times_ms": times,
            "safe": bool(result.safe),
            "blocked_step_index": result.blocked_step_index,
            "blocked_reason": result.blocked_reason,
            "steps_checked": len(result.step_results),
            "total_steps": result.total_steps,
        })
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
