"""The policy editor's check while typing (issue 20): `POST /v1/policies/validate` round trips for a
100-rule and a 1 000-rule policy, as the dashboard's editor makes them after each pause in typing.

    .venv/bin/python bench/authoring.py                # 100 and 1 000 rules, 21 checks each
    .venv/bin/python bench/authoring.py --runs 5 --sizes 100

Starts `licet serve --demo` (SQLite) on a free port and sends each document over localhost HTTP with the
owner's API key, each time with one character changed (a rule's threshold, as a person typing would),
so no answer can come from a cache. Two figures per size, the API's part of the editor's round trips:
"errors" (`analysis: false`: loading and type-checking, what the editor shows as you type) and
"warnings" (the analysis too: rules that never apply, approval roles nobody holds, which the editor
asks for next, in the background), each plus about a millisecond of HTTP; the page adds its socket hop
and the 300 ms debounce.
Rules are shaped like bench/analysis.py's: rule i permits `svc{i%20}.op{i%7}` on `/t{i%50}/**` when
`args.amount <= …`, a tenth are forbids. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import httpx  # noqa: E402

from tests.server_harness import free_port, wait_until_ready  # noqa: E402


def source(rules: int, typed: int) -> str:
    """A YAML policy of `rules` rules; `typed` changes the last rule's threshold (a keystroke)."""
    lines = ["id: bench-editor", "version: '1'", "rules:"]
    for i in range(rules):
        limit = 100 * (i % 13 + 1) + (typed if i == rules - 1 else 0)
        lines += [f"  - id: r{i}", f"    effect: {'forbid' if i % 10 == 9 else 'permit'}",
                  f"    action: svc{i % 20}.op{i % 7}", f"    resource: ['/t{i % 50}/**']",
                  f"    when: 'args.amount <= {limit}'"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        url = f"http://localhost:{port}"
        log = Path(data_dir) / "server.log"
        process = subprocess.Popen([sys.executable, "-m", "licet", "serve", "--demo", "--port", str(port),
                                    "--data-dir", data_dir], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                   cwd=ROOT, env={**os.environ, "LICET_COOKIE_SECURE": "false"})
        try:
            wait_until_ready(process, url, lambda: f"licet serve --demo did not start: {log.read_text()}")
            owner = json.loads((Path(data_dir) / "demo-keys.json").read_text())["owner_key"]
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {owner}"}, timeout=60) as api:
                print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
                for rules in args.sizes:
                    for label, analysis in (("errors", False), ("warnings", True)):
                        times = []
                        for typed in range(args.runs + 1):
                            text = source(rules, typed)
                            started = time.perf_counter()
                            answer = api.post("/v1/policies/validate", json={"source": text, "analysis": analysis})
                            elapsed = time.perf_counter() - started
                            if answer.status_code != 200:
                                raise SystemExit(f"validate answered {answer.status_code}: {answer.text[:300]}")
                            if typed:  # the first call warms the process (imports, Z3 context)
                                times.append(elapsed)
                        ordered = sorted(times)
                        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
                        print(f"{rules:5d} rules ({len(text) // 1024} KiB), {label:8}: validate p50 "
                              f"{statistics.median(times) * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms, "
                              f"min {ordered[0] * 1000:7.1f} ms over {len(times)} checks")
                print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
