"""Time ea-agentgate 1.0.1's `check_admissibility` on a workload written by `bench/decide.py`.

Runs inside the separate Python 3.13 venv `bench/.peers/agentgate-venv` (ea-agentgate needs
Python >= 3.13), so it imports nothing from this repository. Usage:

    python agentgate_driver.py WORKLOAD.json [--mode enforce|shadow|off] [--warmup 20]

WORKLOAD.json: {"sizes": [{"n": 10, "policies": [...], "obligations": [...],
                            "requests": [{"principal", "action", "resource", "runtime_context"}]}]}
Prints one JSON object on stdout: {"version", "python", "mode", "sizes": [{"n", "times_ms",
"outcomes", "signed", "certificate_bytes"}]}. Each timed call is one `check_admissibility`
(which evaluates the six predicates, runs Z3 in enforce/shadow mode, and signs an Ed25519
decision certificate), exactly as a user of the package calls it.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time


def _classify(result) -> str:  # type: ignore[no-untyped-def]
    """Map agentgate's verdict onto Licet's four outcomes (for the agreement figure)."""
    if result.decision == "ADMISSIBLE":
        return "permit"
    failed = set(result.failed_predicates)
    if "DenyExists" in failed or "NotDenyExists" in failed:
        return "forbid"
    if "ObligationsMet" in failed:
        return "require_approval"
    return "deny"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload")
    parser.add_argument("--mode", default="enforce", choices=("enforce", "shadow", "off"))
    parser.add_argument("--warmup", type=int, default=20)
    opts = parser.parse_args()

    # Production-like solver configuration: a real random signing key (not the package's
    # hard-coded development fallback) and Z3 consulted on every decision ("enforce"; "off" is
    # refused outside local/dev/test). AGENTGATE_ENV stays "development" only because importing
    # the solver in "production" insists on a PostgreSQL DATABASE_URL; the decision path is the
    # same. No OS keyring lookups.
    os.environ["AGENTGATE_DECISION_SIGNING_KEY"] = base64.b64encode(os.urandom(32)).decode()
    os.environ["AGENTGATE_Z3_MODE"] = opts.mode
    os.environ["AGENTGATE_ENV"] = "development"
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    logging.disable(logging.WARNING)

    from importlib.metadata import version

    from ea_agentgate.verification import check_admissibility

    with open(opts.workload, encoding="utf-8") as fh:
        workload = json.load(fh)

    out = {"version": version("ea-agentgate"), "python": sys.version.split()[0],
           "mode": opts.mode, "sizes": []}
    for size in workload["sizes"]:
        policies, obligations = size["policies"], size["obligations"]
        requests = size["requests"]

        def call(r, policies=policies, obligations=obligations):  # type: ignore[no-untyped-def]
            return check_admissibility(
                principal=r["principal"], action=r["action"], resource=r["resource"],
                policies=policies, obligations=obligations,
                runtime_context=r["runtime_context"], tenant_id="bench",
            )

        for r in requests[: opts.warmup]:
            call(r)
        times: list[float] = []
        outcomes: list[str] = []
        result = None
        for r in requests:
            t0 = time.perf_counter_ns()
            result = call(r)
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e6)
            outcomes.append(_classify(result))
        out["sizes"].append({
            "n": size["n"],
            "times_ms": times,
            "outcomes": outcomes,
            "signed": bool(result and result.signature),
            "certificate_bytes": len(json.dumps(result.certificate_raw)) if result else 0,
        })
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
