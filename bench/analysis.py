"""Policy analysis at scale: query, diff and delegation check over 10, 100 and 1 000 rules, with and
without string/regex conditions; prints the p50 time and the share of "unknown" answers.

    .venv/bin/python bench/analysis.py              # 10 / 100 / 1 000 rules, 3 runs each
    .venv/bin/python bench/analysis.py --runs 1 --sizes 10 100

Policies are generated deterministically: rule i permits `svc{i%20}.op{i%7}` on `/t{i%50}/**` with a
numeric condition (`args.amount <= …`) and, in the "strings" variant, also a string test on an
argument (startsWith / endsWith / contains / a regex / an `in` list, by rule). A tenth of the rules
are forbids. The diff compares a version with its copy whose last rule has a raised threshold; the
query asks for a `svc3.*` request on `/t3/**`; the delegation check compares the policy (as a
parent scope) with a narrower child of half its rules. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from licet import kernel
from licet.kernel.analysis import diff, permits_more, query

STRING_TESTS = ('args.to.endsWith("@example.com")', 'args.to.startsWith("ops-")', 'args.to.contains("team")',
                'args.to.matches("^[a-z]+-[0-9]+@corp\\\\.example$")', 'args.to in ["a@x.io", "b@x.io"]')


def policy(rules: int, strings: bool, *, bump: int = 0, keep: float = 1.0) -> kernel.Policy:
    body = []
    for i in range(int(rules * keep)):
        limit = 100 * (i % 13 + 1) + (bump if i == rules - 1 else 0)
        when = f"args.amount <= {limit}"
        if strings:
            when += f" && {STRING_TESTS[i % len(STRING_TESTS)]}"
        body.append({"id": f"r{i}", "effect": "forbid" if i % 10 == 9 else "permit",
                     "action": f"svc{i % 20}.op{i % 7}", "resource": f"/t{i % 50}/**", "when": when})
    return kernel.load_policy({"id": "bench", "rules": body})


def timed(run: Callable[[], str], runs: int) -> tuple[float, float]:
    times, unknown = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - start)
        unknown += answer == "unknown"
    return statistics.median(times), unknown / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000])
    args = parser.parse_args()
    print(f"{'rules':>6} {'strings':>7} {'command':>16} {'p50 s':>8} {'unknown':>8}")
    for size in args.sizes:
        for strings in (False, True):
            base = policy(size, strings)
            bumped = policy(size, strings, bump=50)
            child = policy(size, strings, keep=0.5)
            pattern: dict[str, Any] = {"action": "svc3.*", "resource": "/t3/**"}
            cases: dict[str, Callable[[], str]] = {
                "query": lambda b=base, p=pattern: query(b, p).answer,  # type: ignore[misc]
                "diff": lambda b=base, n=bumped: diff(b, n, max_examples=1).answer,  # type: ignore[misc]
                "delegation check": lambda b=base, c=child: permits_more(c, b).answer,  # type: ignore[misc]
            }
            for name, run in cases.items():
                p50, unknown = timed(run, args.runs)
                print(f"{size:>6} {'yes' if strings else 'no':>7} {name:>16} {p50:>8.2f} {unknown:>8.0%}",
                      flush=True)


if __name__ == "__main__":
    main()
