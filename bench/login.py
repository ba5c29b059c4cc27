"""Sign-in cost, and whether a burst of sign-ins starves decisions.

    .venv/bin/python bench/login.py            # SQLite, ~1 min
    .venv/bin/python bench/login.py --quick

Prints (1) the argon2id hash and verify time in-process (the parameters of server/auth/passwords.py),
(2) `POST /v1/auth/login` latency over HTTP, one at a time, and (3) `POST /v1/decide` p50/p99 from
one closed-loop client, alone and while 50 people sign in concurrently without pause. Password
hashing runs one at a time per process, off the event loop, so decisions should keep their latency
while sign-ins queue. Server and load run on the same 2-core machine: compare rows within one run.
"""

# ruff: noqa: E402 - the path fix below must run before imports of the project

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time

import httpx
from rich.console import Console
from rich.table import Table

from licet.server.auth.passwords import CONTEXT
from tests.server_harness import Server, launch

console = Console()
TRANSFER = {"action": "payments.read", "resource": "/accounts/acc-001/statements/2025-05"}


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _decide_for(url: str, key: str, seconds: float) -> list[float]:
    timings = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reply = await client.post("/v1/decide", json=TRANSFER)
            assert reply.status_code == 200, reply.text
            timings.append(time.perf_counter() - started)
    return timings


async def _sign_in_forever(url: str, body: dict[str, str], stop: asyncio.Event, done: list[float]) -> None:
    # One person per client: attempts are counted before they are checked, so one account signing in
    # many times at once is locked out like a parallel guesser would be (server/auth/throttle.py).
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while not stop.is_set():
            started = time.perf_counter()
            reply = await client.post("/v1/auth/login", json=body)
            assert reply.status_code == 200, reply.text
            done.append(time.perf_counter() - started)


async def _under_load(url: str, key: str, bodies: list[dict[str, str]], seconds: float,
                      ) -> tuple[list[float], list[float]]:
    stop, done = asyncio.Event(), []
    signing_in = [asyncio.create_task(_sign_in_forever(url, body, stop, done)) for body in bodies]
    await asyncio.sleep(1.0)  # let the sign-in queue fill
    decisions = await _decide_for(url, key, seconds)
    stop.set()
    await asyncio.gather(*signing_in)
    return decisions, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--logins", type=int, default=50, help="people signing in concurrently")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 15.0

    stored = CONTEXT.hash("bench password 123")
    hashing, verifying = [], []
    for _ in range(5 if args.quick else 20):
        started = time.perf_counter()
        CONTEXT.hash("bench password 123")
        hashing.append(time.perf_counter() - started)
        started = time.perf_counter()
        CONTEXT.verify("bench password 123", stored)
        verifying.append(time.perf_counter() - started)

    tmp = Path(tempfile.mkdtemp(prefix="licet-login-bench-"))
    try:
        data_dir = tmp / "data"
        process, url = launch(f"sqlite+aiosqlite:///{data_dir / 'licet.db'}", data_dir, tmp / "server.log")
        try:
            server = Server("sqlite", url, f"sqlite+aiosqlite:///{data_dir / 'licet.db'}", data_dir, process)
            tenant = server.new_tenant()
            tenant.activate(Path("examples/payments-agent.yaml").read_text())
            key = tenant.key("agent", "agent:payments-bot", ["payments-agent"])
            people = [tenant.person("auditor", mfa=False) for _ in range(args.logins)]
            bodies = [{"tenant": tenant.id, "email": who.email, "password": who.password} for who in people]
            body = bodies[0]
            sequential = []
            with httpx.Client(base_url=url, timeout=60) as client:
                for _ in range(10 if args.quick else 30):
                    started = time.perf_counter()
                    assert client.post("/v1/auth/login", json=body).status_code == 200
                    sequential.append(time.perf_counter() - started)
            alone = asyncio.run(_decide_for(url, key, seconds))
            loaded, logins = asyncio.run(_under_load(url, key, bodies, seconds))
        finally:
            process.terminate()
            process.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title="Sign-in cost and decisions under sign-in load (SQLite, one server process)")
    for column in ("measure", "n", "p50 ms", "p99 ms", "per second"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    rows = [("argon2id hash (in-process)", hashing, None), ("argon2id verify (in-process)", verifying, None),
            ("POST /v1/auth/login, one at a time", sequential, None),
            ("POST /v1/decide alone", alone, len(alone) / seconds),
            (f"POST /v1/decide with {args.logins} clients signing in", loaded, len(loaded) / seconds),
            (f"POST /v1/auth/login under that load ({args.logins} concurrent)", logins, len(logins) / (seconds + 1))]
    for name, values, rate in rows:
        p50, p99 = _ms(values)
        table.add_row(name, str(len(values)), f"{p50:.2f}", f"{p99:.2f}", f"{rate:.0f}" if rate else "")
    console.print(table)


if __name__ == "__main__":
    main()
