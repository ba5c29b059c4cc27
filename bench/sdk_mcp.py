"""What the SDK and the MCP governance proxy add per call, p50/p99 in milliseconds.

    .venv/bin/python bench/sdk_mcp.py            # ~30 s
    .venv/bin/python bench/sdk_mcp.py --quick    # fewer samples, ~10 s

(a) MCP: one `tools/call` of the fixture server's `echo` tool (tests/mcp_upstream_fixture.py) from
    the official MCP client over stdio, straight to the upstream, then through `licet mcp proxy`
    (which decides the call with `POST /v1/decide` on a real `licet serve`, then forwards it).
(b) SDK: one decision of the same permitted request by `kernel.decide` alone (the floor), by
    `sdk.LocalLicet.decide` (kernel + Ed25519 certificate + append to a local log directory), and by
    `sdk.LicetClient.decide` against `licet serve` (HTTP, SQLite, each decision signed, logged and
    committed before it answers).

The script starts its own `licet serve` on a temporary SQLite data directory (the test suite's
launcher, as bench/http.py does), provisions the demo tenant with a small policy and removes it all
at the end. Client, proxy, upstream and server share one machine: compare rows within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, bench/ would come first on sys.path and its `http.py` would shadow the standard
# library's `http` package: the repository root replaces it.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from licet import kernel  # noqa: E402
from licet.sdk import LicetClient, LocalLicet  # noqa: E402
from tests.server_harness import launch  # noqa: E402 - the test suite's way to start a server

FIXTURE = ROOT / "tests" / "mcp_upstream_fixture.py"
POLICY = """\
id: bench-sdk-mcp
version: 1
rules:
  - id: read-accounts
    effect: permit
    action: [payments.read, payments.list]
    resource: ["/accounts/**"]
    when: '"payments-agent" in principal.roles'
  - {id: no-prod-delete, effect: forbid, action: ["*.delete"], resource: ["/prod/**"]}
  - {id: echo, effect: permit, action: [mcp.fixture.echo]}
"""
ACTION, RESOURCE = "payments.read", "/accounts/acc-001/statements/2025-05"
console = Console()


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": statistics.median(ordered) * 1000,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


def timed(call: Callable[[], Any], n: int, warmup: int) -> dict[str, float]:
    """`call` run `warmup` times untimed, then `n` times timed."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def timed_async(call: Callable[[], Awaitable[Any]], n: int, warmup: int) -> dict[str, float]:
    """The async `timed`."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def _provision(database_url: str, data_dir: Path, policy_file: Path) -> str:
    """The demo tenant with the bench policy active; its agent key's secret."""
    from licet.server.migrations import upgrade_async
    from licet.server.services import Services
    from licet.server.settings import Settings
    from licet.server.tenants import _add_version, seed_demo

    await upgrade_async(database_url)
    services = Services(Settings(data_dir=data_dir, database_url=database_url))
    try:
        seeded = await seed_demo(services, ROOT / "examples")
        await _add_version(services, seeded["tenant"], Path(policy_file).read_text(), str(policy_file), activate=True)
    finally:
        await services.db.dispose()
    return str(seeded["agent_key"])


async def mcp_echo(params: StdioServerParameters, n: int, warmup: int) -> dict[str, float]:
    """p50/p99 of `echo` calls over one MCP stdio session."""
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await session.list_tools()

            async def call() -> None:
                result = await session.call_tool("echo", {"text": "hello"})
                if result.is_error:
                    raise RuntimeError(f"echo failed: {result.content}")

            return await timed_async(call, n, warmup)


def bench_mcp(url: str, key: str, n: int, warmup: int) -> dict[str, dict[str, float]]:
    """The upstream's `echo` directly and through the proxy."""
    direct = StdioServerParameters(command=sys.executable, args=[str(FIXTURE)], cwd=str(ROOT))
    upstream = shlex.join([sys.executable, str(FIXTURE)])
    proxied = StdioServerParameters(
        command=sys.executable, args=["-m", "licet", "mcp", "proxy", "--name", "fixture", "--upstream", upstream],
        env={"LICET_URL": url, "LICET_API_KEY": key, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    return {"MCP echo, direct to the upstream": asyncio.run(mcp_echo(direct, n, warmup)),
            "MCP echo, through licet mcp proxy": asyncio.run(mcp_echo(proxied, n, warmup))}


def bench_sdk(url: str, key: str, work: Path, n: int, warmup: int) -> dict[str, dict[str, float]]:
    """One permitted decision: the kernel alone, local mode, remote mode."""
    policy = kernel.load_policy(POLICY, "bench.yaml")
    principal = {"id": "agent:payments-bot", "tenant": "demo", "roles": ["payments-agent"]}
    context = {"authenticated": True, "mfa": False, "source_ip": "127.0.0.1"}
    request = {"principal": principal, "context": context, "action": ACTION, "resource": RESOURCE, "args": {}}

    def direct() -> None:
        assert kernel.decide(policy, request, now=datetime.now(UTC)).outcome == "permit"

    local = LocalLicet(policy, kernel.Signer(os.urandom(32)), work / "local-log", principal=principal,
                       tenant="demo", context=context)
    remote = LicetClient(url, key, timeout=30)
    try:
        def local_call() -> None:
            assert local.decide(ACTION, RESOURCE, {}).permitted

        def remote_call() -> None:
            assert remote.decide(ACTION, RESOURCE, {}).permitted

        return {"kernel.decide (no certificate, the floor)": timed(direct, n, warmup),
                "SDK local: LocalLicet.decide": timed(local_call, n, warmup),
                "SDK remote: LicetClient.decide": timed(remote_call, n, warmup)}
    finally:
        local.close()
        remote.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (~10 s)")
    parser.add_argument("--mcp-calls", type=int, default=500, help="timed MCP calls per row")
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions per SDK row")
    args = parser.parse_args()
    mcp_calls, decisions = (100, 300) if args.quick else (args.mcp_calls, args.decisions)
    work = Path(tempfile.mkdtemp(prefix="licet-bench-sdk-mcp-"))
    try:
        data_dir = work / "data"
        data_dir.mkdir()
        policy_file = work / "bench.yaml"
        policy_file.write_text(POLICY)
        database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
        key = asyncio.run(_provision(database_url, data_dir, policy_file))
        process, url = launch(database_url, data_dir, work / "server.log")
        try:
            with console.status("MCP: direct and proxied tool calls"):
                rows = bench_mcp(url, key, mcp_calls, warmup=20)
            with console.status("SDK: kernel, local and remote decisions"):
                rows |= bench_sdk(url, key, work, decisions, warmup=50)
        finally:
            process.terminate()
            process.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"Per-call latency ({os.cpu_count()} CPUs; client, proxy, upstream and server on one machine)")
    for column in ("what one sample is", "n", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column.startswith("what") else "right")
    for name, row in rows.items():
        table.add_row(name, str(row["n"]), f"{row['p50']:.3f}", f"{row['p99']:.3f}")
    console.print(table)
    direct, proxied = rows["MCP echo, direct to the upstream"], rows["MCP echo, through licet mcp proxy"]
    floor = rows["kernel.decide (no certificate, the floor)"]
    overhead = Table(title="Overhead (difference of percentiles)")
    for column in ("what", "p50 ms", "p99 ms"):
        overhead.add_column(column, justify="left" if column == "what" else "right")
    for name, row, base in [("proxy per tool call (proxied - direct)", proxied, direct),
                            ("SDK local mode (LocalLicet - kernel.decide)", rows["SDK local: LocalLicet.decide"], floor),
                            ("SDK remote mode (LicetClient - kernel.decide)", rows["SDK remote: LicetClient.decide"],
                             floor)]:
        overhead.add_row(name, f"{row['p50'] - base['p50']:.3f}", f"{row['p99'] - base['p99']:.3f}")
    console.print(overhead)


if __name__ == "__main__":
    main()
