"""`POST /v1/decide` over real HTTP: latency and throughput of a running `licet serve`.

    .venv/bin/python bench/http.py              # SQLite and PostgreSQL, 1 / 8 / 32 clients, ~2 min
    .venv/bin/python bench/http.py --quick      # 5 s per level
    .venv/bin/python bench/http.py --backends sqlite --clients 1 8 --client wrk httpx
    .venv/bin/python bench/http.py --backends sqlite --sqlite-synchronous NORMAL FULL --checkpoints 200

Each backend gets a fresh `licet serve` process (uvicorn, one worker, as the README starts it), a
fresh database migrated by Alembic, a tenant with `examples/payments-agent.yaml` active and an agent
key. The load comes from wrk (C, one thread, `apt install wrk`): each of N connections sends its next
request as soon as the last one answered (closed loop), so "decisions/s" is what the server
sustained at that concurrency. `--client httpx` uses Python clients instead (asyncio tasks sharing
one httpx pool), which spend about a millisecond of the shared CPU per request themselves: compare
the two in one run to see what the load generator costs. Every request is decided, signed, appended to the tenant's evidence log and committed
before it answers. The request mix: statement reads (permit), transfers with varying amounts
(permit, then forbid once the daily budget is spent: the invariant reads the session history),
and unknown actions (deny). Any answer other than 200 aborts the run. The load generator runs on the
same 2-core machine as the server and takes CPU from it: figures are a floor, compare rows within
one run.

What durability costs (docs/production.md, "Durability"): `--sqlite-synchronous NORMAL FULL` runs each
SQLite level under both settings; `--checkpoints N` then times N rounds of one decision followed by
`GET /v1/evidence/checkpoint`, each of which signs a new checkpoint (a synced COMMIT, and the synced
record of signed heads) — the "checkpoint ms" columns.
"""

# ruff: noqa: E402 - the path fix below must run before any import that reaches the stdlib's `http`

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and `http.py` would shadow the
# standard library's `http` package that httpx imports.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import asyncio
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from tests.server_harness import Server, fresh_pg_database, launch  # the test suite's way to start a server

BUDGET = {"p50_ms": 3.0, "per_second": 500}
console = Console(width=190)


async def _provision(database_url: str, data_dir: Path) -> dict[str, Any]:
    """The demo tenant, with the payments example active (`seed_demo`'s keys)."""
    from licet.server.migrations import upgrade_async
    from licet.server.services import Services
    from licet.server.settings import Settings
    from licet.server.tenants import seed_demo

    await upgrade_async(database_url)
    services = Services(Settings(data_dir=data_dir, database_url=database_url))
    try:
        seeded = await seed_demo(services, ROOT / "examples")
    finally:
        await services.db.dispose()
    return seeded


def _more_tenants(server: Server, demo_owner_key: str, count: int) -> list[str]:
    """`count` more tenants with the demo tenant's active policy, through the public API; their agent
    keys' secrets."""
    with server.client(demo_owner_key) as demo:
        active = demo.get("/v1/policies").json()["active"]
        source = demo.get(f"/v1/policies/{active['policy_id']}/versions/{active['number']}").json()["source"]
    keys = []
    for _ in range(count):
        tenant = server.new_tenant()
        tenant.activate(source)
        keys.append(tenant.key("agent", "agent:payments-bot", ["payments-agent"]))
    return keys


async def _analyse(database_url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


def _requests(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        pick = rng.random()
        if pick < 0.5:
            out.append({"action": "payments.read", "resource": f"/accounts/acc-{i % 50:03d}/statements/2025-05"})
        elif pick < 0.85:
            out.append({"action": "payments.transfer", "resource": f"/accounts/acc-{i % 50:03d}",
                        "args": {"amount": rng.randint(1, 400), "currency": "EUR", "country": "DE"}})
        else:
            out.append({"action": "payments.unknown", "resource": "/accounts/acc-001"})
    return out


async def _load(url: str, keys: list[str], clients: int, requests: list[dict[str, Any]]) -> dict[str, Any]:
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    queue = iter(enumerate(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker() -> None:
            for i, body in queue:
                started = time.perf_counter()
                reply = await client.post("/v1/decide", json=body,
                                          headers={"Authorization": f"Bearer {keys[i % len(keys)]}"})
                latencies.append(time.perf_counter() - started)
                if reply.status_code != 200:
                    raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
                decision = reply.json()["decision"]
                outcomes[decision] = outcomes.get(decision, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"n": len(latencies), "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "per_second": len(latencies) / elapsed, "outcomes": outcomes}


# The wrk script: cycles through the request bodies, counts outcomes and non-200 answers in each
# thread, and prints one JSON line of figures at the end.
WRK_SCRIPT = r"""
local bodies = {%(bodies)s}
local keys = {%(keys)s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) sent = 0; outcomes = {}; failed = 0; failure = "" end
function request()
  sent = sent + 1
  local headers = {["Authorization"] = "Bearer " .. keys[(sent - 1) %% #keys + 1],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/v1/decide", headers, bodies[(sent - 1) %% #bodies + 1])
end
function response(status, headers, body)
  if status ~= 200 then
    failed = failed + 1
    if failure == "" then failure = status .. ": " .. body:sub(1, 300) end
    return
  end
  local decision = body:match('^{"decision": "(%%a+)"') or "unparsed"
  outcomes[decision] = (outcomes[decision] or 0) + 1
end
function done(summary, latency, requests)
  local counts, failed, failure = {}, 0, ""
  for _, thread in ipairs(threads) do
    for name, n in pairs(thread:get("outcomes")) do counts[name] = (counts[name] or 0) + n end
    failed = failed + thread:get("failed")
    if failure == "" then failure = thread:get("failure") end
  end
  local parts = {}
  for name, n in pairs(counts) do table.insert(parts, string.format('"%%s": %%d', name, n)) end
  io.write(string.format('LICET {"n": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "failed": %%d, ' ..
    '"failure": %%q, "outcomes": {%%s}}\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), failed, failure, table.concat(parts, ", ")))
end
"""


def _lua_string(text: str) -> str:
    assert "]==]" not in text, text
    return f"[==[{text}]==]"


def _wrk(url: str, keys: list[str], clients: int, requests: list[dict[str, Any]], seconds: int,
         work: Path) -> dict[str, Any]:
    script = work / "decide.lua"
    script.write_text(WRK_SCRIPT % {"bodies": ", ".join(_lua_string(json.dumps(r)) for r in requests),
                                    "keys": ", ".join(_lua_string(k) for k in keys)})
    finished = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "60s", "-s", str(script), url],
        capture_output=True, text=True, check=True)
    line = next((ln for ln in finished.stdout.splitlines() if ln.startswith("LICET ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures: {finished.stdout}{finished.stderr}")
    figures = json.loads(line.removeprefix("LICET "))
    if figures["failed"]:
        raise RuntimeError(f"{figures['failed']} requests failed, the first with {figures['failure']}")
    return {"n": figures["n"], "p50": figures["p50_us"] / 1000, "p99": figures["p99_us"] / 1000,
            "per_second": figures["n"] / figures["seconds"], "outcomes": figures["outcomes"]}


async def _checkpoints(url: str, key: str, rounds: int) -> dict[str, float]:
    """p50 and p99 (ms) of `GET /v1/evidence/checkpoint` right after a decision: each signs a new head."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for body in _requests(rounds, seed=rounds):
            decided = await client.post("/v1/decide", json=body)
            size = decided.json()["log_index"] + 1
            started = time.perf_counter()
            reply = await client.get("/v1/evidence/checkpoint")
            latencies.append(time.perf_counter() - started)
            if reply.status_code != 200 or reply.json()["size"] != size:
                raise RuntimeError(f"checkpoint: {reply.status_code} {reply.text[:300]}")
    latencies.sort()
    return {"checkpoint_p50": statistics.median(latencies) * 1000,
            "checkpoint_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


def _cpu_seconds(server: set[int], database: str | None) -> tuple[float, float]:
    """User and system CPU seconds of the `server` processes, and of the PostgreSQL backends serving
    `database` (their process titles name it), from /proc."""
    workers = postgres = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(entry.name) in server:
            workers += seconds
        elif database is not None and command.startswith("postgres: ") and f" {database} " in command:
            postgres += seconds
    return workers, postgres


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def run_backend(backend: str, client: str, clients: list[int], per_level: int, seconds: int,
                warmup: int, synchronous: str = "NORMAL", checkpoints: int = 0, workers: int = 1,
                tenants: int = 1) -> list[dict[str, Any]]:
    """Figures for one backend at each concurrency level (and of signing checkpoints, if asked), the
    load spread over `tenants` tenants (one agent key each) and served by `workers` processes."""
    work = Path(tempfile.mkdtemp(prefix=f"licet-bench-{backend}-"))
    try:
        data_dir = work / "data"
        database_url = (fresh_pg_database("licet_bench_http") if backend == "postgresql"
                        else f"sqlite+aiosqlite:///{data_dir / 'licet.db'}")
        data_dir.mkdir(parents=True)
        seeded = asyncio.run(_provision(database_url, data_dir))
        process, url = launch(database_url, data_dir, work / "server.log",
                              {"LICET_SQLITE_SYNCHRONOUS": synchronous}, ("--workers", str(workers)))
        try:
            server = Server(backend, url, database_url, data_dir, process)
            keys = [str(seeded["agent_key"]), *_more_tenants(server, str(seeded["owner_key"]), tenants - 1)]
            asyncio.run(_load(url, keys, 4, _requests(warmup, seed=0)))
            if backend == "postgresql":
                # The tables were empty a second ago and autovacuum analyses only once a minute: without
                # statistics the planner joins session history by scanning it once per event.
                asyncio.run(_analyse(database_url))
            rows = []
            for level in clients:
                requests = _requests(per_level, seed=level)
                cpu = functools.partial(_cpu_seconds, _descendants(process.pid),
                                        database_url.rsplit("/", 1)[1] if backend == "postgresql" else None)
                before = cpu()
                figures = (_wrk(url, keys, level, requests, seconds, work) if client == "wrk"
                           else asyncio.run(_load(url, keys, level, requests)))
                after = cpu()
                figures["worker_cpu_ms"] = (after[0] - before[0]) * 1000 / figures["n"]
                figures["postgres_cpu_ms"] = (after[1] - before[1]) * 1000 / figures["n"]
                rows.append({"backend": backend, "synchronous": synchronous if backend == "sqlite" else "",
                             "client": client, "workers": workers, "tenants": tenants, "clients": level,
                             **figures})
            if checkpoints:
                signing = asyncio.run(_checkpoints(url, keys[0], checkpoints))
                for row in rows:
                    row.update(signing)
            return rows
        finally:
            process.terminate()
            process.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--client", nargs="+", default=["wrk"], choices=["wrk", "httpx"],
                        help="load generator(s): wrk (C) and/or Python httpx clients")
    parser.add_argument("--requests", type=int, default=3000,
                        help="httpx: requests per level; wrk: distinct request bodies it cycles through")
    parser.add_argument("--seconds", type=int, default=15, help="wrk: seconds per level")
    parser.add_argument("--quick", action="store_true", help="600 requests / 5 s per level")
    parser.add_argument("--sqlite-synchronous", nargs="+", default=["NORMAL"], choices=["NORMAL", "FULL"],
                        help="SQLite: LICET_SQLITE_SYNCHRONOUS for each run (both: what durability costs)")
    parser.add_argument("--workers", nargs="+", type=int, default=[1],
                        help="API worker processes (`licet serve --workers N`; more than one needs PostgreSQL)")
    parser.add_argument("--tenants", nargs="+", type=int, default=[1],
                        help="spread the load over this many tenants, one agent key each")
    parser.add_argument("--checkpoints", type=int, default=0,
                        help="then time this many checkpoint signings, each right after a decision")
    args = parser.parse_args()
    per_level, seconds = (600, 5) if args.quick else (args.requests, args.seconds)
    if "wrk" in args.client and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt install wrk), or use --client httpx")
    rows = []
    for backend in args.backends:
        for workers in args.workers if backend == "postgresql" else [1]:
            for tenants in args.tenants:
                for synchronous in args.sqlite_synchronous if backend == "sqlite" else ["NORMAL"]:
                    for client in args.client:
                        rows += run_backend(backend, client, args.clients, per_level, seconds, warmup=200,
                                            synchronous=synchronous, checkpoints=args.checkpoints,
                                            workers=workers, tenants=tenants)
    table = Table(title=f"POST /v1/decide over HTTP (uvicorn; {os.cpu_count()} CPUs, client on the same machine)")
    columns = ["backend", "synchronous", "client", "workers", "tenants", "clients", "requests", "p50 ms", "p99 ms",
               "decisions/s", "worker CPU ms", "PostgreSQL CPU ms",
               "outcomes"] + (["checkpoint p50 ms", "checkpoint p99 ms"] if args.checkpoints else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("backend", "synchronous", "client", "outcomes")
                         else "right")
    for row in rows:
        p50_ok = row["p50"] <= BUDGET["p50_ms"]
        rate_ok = row["per_second"] >= BUDGET["per_second"]
        signing = ([f"{row['checkpoint_p50']:.2f}", f"{row['checkpoint_p99']:.2f}"] if args.checkpoints else [])
        table.add_row(row["backend"], row["synchronous"], row["client"], str(row["workers"]), str(row["tenants"]),
                      str(row["clients"]), str(row["n"]),
                      f"[{'green' if p50_ok else 'red'}]{row['p50']:.2f}[/]", f"{row['p99']:.2f}",
                      f"[{'green' if rate_ok else 'red'}]{row['per_second']:.0f}[/]", f"{row['worker_cpu_ms']:.2f}",
                      f"{row['postgres_cpu_ms']:.2f}" if row["backend"] == "postgresql" else "",
                      ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items())), *signing)
    console.print(table)
    console.print(f"DESIGN.md budget on SQLite: p50 ≤ {BUDGET['p50_ms']} ms and ≥ {BUDGET['per_second']} "
                  "decisions/s (green when met).")


if __name__ == "__main__":
    main()
