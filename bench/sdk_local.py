"""Local mode's cost per decision with its session history in SQLite (`<log_dir>/session.sqlite3`):
decide, sign, append to the local log and record, one transaction each, durable (fsync) writes.

    .venv/bin/python bench/sdk_local.py            # 200 and 1 000 more transfers, then 200 reads

Transfers touch the daily budget (their state is read from the stored contributions, so the cost
grows with the events inside the window, not with the whole history); reads touch no invariant
and read no state. Prints figures only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, bench/ would come first on sys.path and its `http.py` would shadow the standard
# library's `http` (which httpx imports).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from licet import kernel  # noqa: E402
from licet.sdk import LocalLicet  # noqa: E402

EXAMPLES = HERE.parent / "examples"
TRANSFER = {"amount": 1, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}


def per_decide(local: LocalLicet, action: str, resource: str, args: dict[str, object], n: int) -> float:
    """Milliseconds per `local.decide` over `n` decisions."""
    start = time.perf_counter()
    for _ in range(n):
        local.decide(action, resource, args)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="licet-bench-local-") as work:
        local = LocalLicet(EXAMPLES / "payments-agent.yaml", kernel.Signer(os.urandom(32)), Path(work) / "log",
                           principal={"id": "agent:bench", "roles": ["payments-agent"]}, context={"mfa": True})
        try:
            local.decide("payments.transfer", "/accounts/acc-001", TRANSFER)  # compile the policy first
            for n in (200, 1000):
                took = per_decide(local, "payments.transfer", "/accounts/acc-001", TRANSFER, n)
                print(f"transfer (budget read), {local.log.size:5d} events after: {took:6.2f} ms per decision")
            took = per_decide(local, "payments.read", "/accounts/acc-001", {}, 200)
            print(f"read (no invariant involved):           {took:6.2f} ms per decision")
        finally:
            local.close()


if __name__ == "__main__":
    main()
