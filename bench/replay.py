"""Replay throughput: recorded decisions re-decided per second against a draft (issue 20).

    .venv/bin/python bench/replay.py                 # 100 rules, 5 000 recorded decisions
    .venv/bin/python bench/replay.py --rules 1000 --decisions 2000

What is timed is what `POST /v1/policies/{id}/replay` does per page once its rows are read: parse
each stored certificate (JSON), re-decide it with the kernel's warm path (the draft compiled once,
the certificate's own time and session facts), and tally old -> new outcomes. The decisions are
recorded first, under the generated policy (`bench/policies.py`, seeded), with signed
certificates. Two drafts: the recording version itself (nothing may change) and one with every
tenth rule dropped. One core (the route runs one page in one worker thread). Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The repo root instead of bench/ on the import path: bench/http.py would shadow the standard `http`.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from bench import policies as gen  # noqa: E402
from licet import kernel  # noqa: E402
from licet.server.replay import Known, Recorded, replay_rows  # noqa: E402


def record(policy: kernel.Policy, wl: gen.Workload, count: int) -> list[bytes]:
    """`count` signed certificates of the workload's warm request stream, as stored (canonical JSON)."""
    signer = kernel.Signer(os.urandom(32))
    issued = datetime.fromtimestamp(gen.NOW, UTC)
    leaves = []
    for request, state in wl.warm_stream(200, count):
        decision = kernel.decide(policy, request, state=state, now=gen.NOW)
        certificate = kernel.issue_certificate(
            decision,
            signer=signer,
            tenant="bench",
            issued_at=issued,
            certificate_id=kernel.uuid7(issued, os.urandom(10)),
        )
        leaves.append(kernel.certificate_leaf(certificate))
    return leaves


def timed_replay(draft: kernel.Policy, leaves: list[bytes], known: Known) -> tuple[float, int, int]:
    """Seconds to parse and re-decide every leaf; how many changed and how many were undetermined."""
    started = time.perf_counter()
    rows = [Recorded(str(i), i, "bench", json.loads(leaf)) for i, leaf in enumerate(leaves)]
    page = replay_rows(draft, rows, known, deadline=float("inf"))
    return time.perf_counter() - started, page.changed, page.done - sum(page.counts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--decisions", type=int, default=5000)
    opts = parser.parse_args()
    wl = gen.generate(opts.rules)
    document = wl.licet_policy()
    recorded = kernel.load_policy(document, "recorded")
    started = time.perf_counter()
    leaves = record(recorded, wl, opts.decisions)
    print(f"recorded {len(leaves)} decisions under a {opts.rules}-rule policy in {time.perf_counter() - started:.1f} s")
    fewer = {**document, "version": "2", "rules": [r for i, r in enumerate(document["rules"]) if i % 10 != 9]}
    for name, draft in (
        ("unchanged", kernel.load_policy(document, "unchanged")),
        ("every tenth rule dropped", kernel.load_policy(fewer, "draft")),
    ):
        known = Known({recorded.hash: recorded}, {})
        timed_replay(draft, leaves[:50], known)  # compiles the draft (once per version, as the server does)
        seconds, changed, undetermined = timed_replay(draft, leaves, known)
        print(
            f"{name:>26}: {len(leaves) / seconds:8.0f} decisions/s  ({seconds:.2f} s; changed {changed}, "
            f"undetermined {undetermined})  target >= 2000/s"
        )


if __name__ == "__main__":
    main()
