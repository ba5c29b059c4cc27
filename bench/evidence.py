"""Evidence log throughput: appends, proofs at a million leaves, consistency proofs, audits.

    .venv/bin/python bench/evidence.py            # 10^6-leaf logs in memory and in SQLite, ~1-2 min
    .venv/bin/python bench/evidence.py --quick    # 10^5 leaves, ~15 s
    .venv/bin/python bench/evidence.py --help

The leaves are real certificates: a pool of 256 signed by `kernel.issue_certificate` for decisions
of `examples/payments-agent.yaml` (about 1.3 KB of canonical JSON each), cycled to fill the logs.
Every timing below runs the code `licet log` and the server run:

- **appends/s single**: `TransparencyLog.append(leaf)`, one leaf per call (in SQLite: one
  `BEGIN IMMEDIATE` transaction each, `synchronous=FULL`, so each is on disk when it returns);
- **appends/s batched**: `append_many` with 1 000 leaves per call (one transaction per batch);
- **inclusion proof**: `inclusion_proof(i)` at random `i` of the 10^6-leaf log (O(log n) stored
  hashes read), and `verify_inclusion` of it; median and p99 of 2 000;
- **consistency proof**: `consistency_proof(m, 10^6)` at random `m`, and `verify_consistency`;
- **bundle verify**: `kernel.bundle.verify_bundle` of one certificate's tlog-proof (parse, note
  signature, origin, inclusion);
- **audit**: `kernel.log.audit_log` over the whole log (leaf hashes, every stored subtree hash and
  each kept checkpoint recomputed and compared), serial and, for SQLite, with one worker process
  per CPU as `licet log audit` does.

Nothing is asserted: figures are printed next to the DESIGN.md budgets.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root (kernel, licet)

from rich.console import Console
from rich.table import Table

from licet import kernel
from licet.kernel.bundle import make_bundle, verify_bundle
from licet.kernel.certificate import certificate_leaf
from licet.kernel.checkpoint import tenant_origin
from licet.kernel.keys import Signer
from licet.kernel.log import MemoryLogStore, TransparencyLog, audit_log
from licet.kernel.merkle import leaf_hash, verify_consistency, verify_inclusion
from licet.kernel.note import NoteSigner
from licet.sdk.logstore import SQLiteLogStore, open_log, parallel_chunk_mapper

console = Console(width=None if sys.stdout.isatty() else 130)
ROOT = Path(__file__).resolve().parent.parent
ORIGIN = tenant_origin("bench.licet.example", "acme")
BATCH = 1000

# DESIGN.md "Performance budgets".
TARGET_BATCHED = 5000.0  # appends/s
TARGET_PROOF_MS = 2.0  # inclusion proof at 10^6 leaves
TARGET_AUDIT = 300_000.0  # leaves/s
# ea-agentgate 1.0.1's hash-chained evidence (from its own measurements; it has no Merkle proofs).
AGENTGATE_REFERENCE = "ea-agentgate 1.0.1 evidence chain: ~4 ms per append (~250/s), ~0.2 ms per entry to verify (~5 000/s), no inclusion or consistency proofs"


def certificate_pool(count: int) -> list[dict[str, Any]]:
    """Real signed certificates of varied decisions (payments policy, random key)."""
    policy = kernel.load_policy((ROOT / "examples" / "payments-agent.yaml").read_text(), "payments-agent.yaml")
    signer = kernel.Signer(os.urandom(32))
    now = datetime.now(UTC)
    rng = random.Random(7)
    pool = []
    for i in range(count):
        body = {
            "principal": {"id": f"agent-{i % 17}", "role": rng.choice(["ops", "analyst", "approver"])},
            "action": rng.choice(["payments.transfer", "api.read", "payments.refund"]),
            "resource": rng.choice(["/accounts/1", "/api/v1/balances", "/accounts/42"]),
            "args": {"amount": rng.randrange(1, 20_000), "currency": rng.choice(["EUR", "USD"])},
        }
        try:
            decision = kernel.decide(policy, body, now=now)
        except kernel.LicetError:
            continue
        pool.append(
            kernel.issue_certificate(
                decision, signer=signer, tenant="acme", issued_at=now, certificate_id=kernel.uuid7(now, os.urandom(10))
            )
        )
    return pool


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def samples_ms(fn: Callable[[int], Any], args: list[int]) -> list[float]:
    out = []
    for arg in args:
        start = time.perf_counter()
        fn(arg)
        out.append((time.perf_counter() - start) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def fill(log: TransparencyLog, leaves: list[bytes], total: int) -> float:
    """Append `total` leaves (cycling the pool) in batches; returns appends per second."""
    pool = len(leaves)
    first = log.size
    start = time.perf_counter()
    for at in range(first, total, BATCH):
        count = min(BATCH, total - at)
        log.append_many([leaves[(at + k) % pool] for k in range(count)])
    return (total - first) / (time.perf_counter() - start)


def single_rate(log: TransparencyLog, leaves: list[bytes], count: int) -> float:
    pool = len(leaves)
    start = time.perf_counter()
    for k in range(count):
        log.append(leaves[k % pool])
    return count / (time.perf_counter() - start)


def proof_figures(log: TransparencyLog, leaves: list[bytes], size: int, rng: random.Random, n: int) -> dict[str, Any]:
    root = log.root(size)
    indices = [rng.randrange(size) for _ in range(n)]
    proofs = {}

    def gen(i: int) -> None:
        proofs[i] = log.inclusion_proof(i, size)

    gen_ms = samples_ms(gen, indices)
    hashes = {i: leaf_hash(leaves[i % len(leaves)]) for i in indices}
    ver_ms = samples_ms(lambda i: verify_inclusion(i, size, hashes[i], proofs[i].hashes, root), indices)
    olds = [rng.randrange(1, size) for _ in range(n)]
    old_roots = {m: log.root(m) for m in olds}
    cproofs = {}

    def cgen(m: int) -> None:
        cproofs[m] = log.consistency_proof(m, size)

    cgen_ms = samples_ms(cgen, olds)
    cver_ms = samples_ms(lambda m: verify_consistency(m, size, old_roots[m], root, cproofs[m].hashes), olds)
    return {"gen": gen_ms, "verify": ver_ms, "cgen": cgen_ms, "cverify": cver_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10^5-leaf logs and fewer samples")
    parser.add_argument("--leaves", type=int, default=None, help="leaves in the big logs (default 10^6, quick 10^5)")
    parser.add_argument("--samples", type=int, default=None, help="proofs timed per figure (default 2000)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="audit worker processes for SQLite")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite log goes (default: a temp dir)")
    args = parser.parse_args(argv)
    big = args.leaves or (100_000 if args.quick else 1_000_000)
    samples = args.samples or (500 if args.quick else 2000)
    rng = random.Random(11)

    console.print(
        f"[bold]Licet evidence log bench[/] — Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"SQLite {__import__('sqlite3').sqlite_version}, {big:,} leaves; "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine moves every figure)"
    )
    t0 = time.perf_counter()
    pool = certificate_pool(256)
    leaves = [certificate_leaf(c) for c in pool]
    console.print(
        f"certificate pool: {len(pool)} real certificates, {statistics.mean(map(len, leaves)):.0f} bytes "
        f"of canonical JSON on average ({time.perf_counter() - t0:.1f} s to issue)"
    )
    signer = NoteSigner(ORIGIN, Signer(os.urandom(32)))
    rows: list[tuple[str, str, str, str, str]] = []

    def row(
        what: str, memory: str, sqlite: str, target: str = "", ok: tuple[bool | None, bool | None] = (None, None)
    ) -> None:
        """One table row; `ok` says, per store, whether the target is met (None: not measured)."""
        verdicts = {store: met for store, met in zip(("memory", "SQLite"), ok, strict=True) if met is not None}
        if not verdicts:
            mark = ""
        elif len(set(verdicts.values())) == 1:
            mark = "[green]met[/]" if next(iter(verdicts.values())) else "[red]missed[/]"
        else:
            mark = ", ".join(
                f"{store} {'[green]met[/]' if met else '[red]missed[/]'}" for store, met in verdicts.items()
            )
        rows.append((what, memory, sqlite, target, mark))

    # --- appends -----------------------------------------------------------------------------
    mem_single = single_rate(TransparencyLog(MemoryLogStore(), ORIGIN), leaves, 20_000)
    mem_batched = fill(TransparencyLog(MemoryLogStore(), ORIGIN), leaves, 200_000)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        sql_single = single_rate(open_log(Path(scratch) / "single", ORIGIN), leaves, 1000 if args.quick else 2000)
        sql_batched = fill(open_log(Path(scratch) / "batched", ORIGIN), leaves, 100_000)
    row("appends/s, single (one per call)", f"{mem_single:,.0f}", f"{sql_single:,.0f}")
    row(
        "appends/s, batched (1 000 per call)",
        f"{mem_batched:,.0f}",
        f"{sql_batched:,.0f}",
        f"≥ {TARGET_BATCHED:,.0f}",
        (mem_batched >= TARGET_BATCHED, sql_batched >= TARGET_BATCHED),
    )

    # --- the big logs --------------------------------------------------------------------------
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        mem_log = TransparencyLog(MemoryLogStore(), ORIGIN)
        mem_fill = fill(mem_log, leaves, big)
        mem_log.sign_checkpoint(signer)
        sql_log = open_log(Path(scratch) / "big", ORIGIN)
        sql_fill = fill(sql_log, leaves, big)
        sql_log.sign_checkpoint(signer)
        db_bytes = (Path(scratch) / "big" / "log.sqlite3").stat().st_size
        row(
            f"appends/s, batched, filling {big:,} leaves",
            f"{mem_fill:,.0f}",
            f"{sql_fill:,.0f}",
            f"≥ {TARGET_BATCHED:,.0f}",
            (mem_fill >= TARGET_BATCHED, sql_fill >= TARGET_BATCHED),
        )

        mem = proof_figures(mem_log, leaves, big, rng, samples)
        sql = proof_figures(sql_log, leaves, big, rng, samples)
        row(
            f"inclusion proof at {big:,}: generate p50 / p99 (ms)",
            f"{p(mem['gen'], 50):.3f} / {p(mem['gen'], 99):.3f}",
            f"{p(sql['gen'], 50):.3f} / {p(sql['gen'], 99):.3f}",
            f"≤ {TARGET_PROOF_MS} ms",
            (p(mem["gen"], 50) <= TARGET_PROOF_MS, p(sql["gen"], 50) <= TARGET_PROOF_MS),
        )
        row(
            "inclusion proof: verify p50 / p99 (ms)",
            f"{p(mem['verify'], 50):.3f} / {p(mem['verify'], 99):.3f}",
            f"{p(sql['verify'], 50):.3f} / {p(sql['verify'], 99):.3f}",
        )
        row(
            "consistency proof m -> n: generate p50 / p99 (ms)",
            f"{p(mem['cgen'], 50):.3f} / {p(mem['cgen'], 99):.3f}",
            f"{p(sql['cgen'], 50):.3f} / {p(sql['cgen'], 99):.3f}",
        )
        row(
            "consistency proof: verify p50 / p99 (ms)",
            f"{p(mem['cverify'], 50):.3f} / {p(mem['cverify'], 99):.3f}",
            f"{p(sql['cverify'], 50):.3f} / {p(sql['cverify'], 99):.3f}",
        )

        note = sql_log.latest_checkpoint() or ""
        index = big - 7
        bundle = make_bundle(sql_log.leaf(index), sql_log.inclusion_proof(index, big), note)
        cert = pool[index % len(pool)]
        keys = [signer.verifier]
        bundle_ms = samples_ms(lambda _: verify_bundle(cert, bundle, keys), list(range(samples)))
        sign_ms = samples_ms(lambda _: mem_log.sign_checkpoint(signer), list(range(50)))
        row("bundle verify (tlog-proof of one certificate) p50 (ms)", f"{p(bundle_ms, 50):.3f}", "—", "")
        row("checkpoint signing p50 (ms)", f"{p(sign_ms, 50):.3f}", "—", "")

        mem_audit = big / timed(lambda: audit_log(mem_log.store, log_keys=keys))
        reader = SQLiteLogStore(Path(scratch) / "big" / "log.sqlite3", read_only=True)  # as `licet log audit`
        sql_audit = big / timed(lambda: audit_log(reader, log_keys=keys))
        jobs = max(1, args.jobs)

        def parallel() -> None:
            with parallel_chunk_mapper(Path(scratch) / "big" / "log.sqlite3", jobs) as mapper:
                report = audit_log(reader, log_keys=keys, map_chunks=mapper)
            assert report.ok, report.problems

        sql_parallel = big / timed(parallel)
        reader.close()
        row(
            "audit leaves/s, one process",
            f"{mem_audit:,.0f}",
            f"{sql_audit:,.0f}",
            f"≥ {TARGET_AUDIT:,.0f}",
            (mem_audit >= TARGET_AUDIT, sql_audit >= TARGET_AUDIT),
        )
        row(
            f"audit leaves/s, {jobs} worker processes",
            "—",
            f"{sql_parallel:,.0f}",
            f"≥ {TARGET_AUDIT:,.0f}",
            (None, sql_parallel >= TARGET_AUDIT),
        )

    table = Table("", "in memory", "SQLite", "DESIGN.md target", title="Licet evidence log")
    for what, memory, sqlite, target, mark in rows:
        table.add_row(what, memory, sqlite, f"{target} {mark}".strip())
    console.print(table)
    console.print(f"SQLite file at {big:,} leaves: {db_bytes / 1e6:,.0f} MB (entries, leaf hashes, subtree hashes)")
    console.print(f"reference: {AGENTGATE_REFERENCE}")
    console.print(f"total bench time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
