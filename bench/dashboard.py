"""The dashboard's speed with a store of 10^5 decisions and 10^3 pending approvals (issue 18).

    .venv/bin/python bench/dashboard.py                      # 10^5 decisions, 10^3 approvals, ~4-5 min
    .venv/bin/python bench/dashboard.py --decisions 20000 --approvals 200 --no-build   # ~1 min

What it does: starts `licet serve --demo` on SQLite once (people with TOTP, the demo's payments policy),
stops it, adds the decisions and approvals straight through the server's own write path
(`server.decisions.decide_and_record`, the code `POST /v1/decide` runs: real decisions, signed
certificates, log appends, approvals opened), in transactions of 1 000, then starts the server again
and measures, printing figures (nothing is asserted):

- **first rows**: a fresh browser tab (Debian's Chromium, Playwright) of a signed-in person loading
  `/approvals` and `/decisions` in full (HTML, scripts, socket, state, API call), to the first row shown;
  and a click in the navigation from the overview to the same pages. Sign-in itself (password + TOTP,
  to the overview's first figure) is timed once per demo person (a TOTP code is good once);
- **explorer calls**: `GET /v1/certificates` as the page makes them (newest page, page turns deep in
  the log, each filter and a combination), round trips over localhost HTTP with the owner's API key:
  server time plus about a millisecond of client and socket;
- **exports**: CSV and JSON lines of every decision, rows per second as the client receives them;
- **live queue**: an agent's request opens an approval; the time until an open approvals page shows it;
- **impact view** (issue 20): two 100-rule versions of one policy (bench/authoring.py's document, the
  second with one permit's threshold raised), the first activated by the owner signed in in the browser.
  The calls `/policies`' impact view makes, over localhost HTTP with the owner's API key: the semantic
  diff (`POST /v1/policies/{id}/diff` of version 2 against the active one) and a replay page
  (`POST .../replay`, 1 000 recorded decisions); and in the browser, a click on "Show impact" to the
  kernel's answer shown, and to the replay summary (up to 20 pages of 1 000 of the store's decisions);
- **frontend build**: `python -m licet.dashboard.build` in a copy of the dashboard with a fresh `.web` (npm's
  cache warm), then again when up to date, then restored from the build cache (`--no-build` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import httpx  # noqa: E402
import pyotp  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.authoring import source as rules_source  # noqa: E402
from tests.server_harness import free_port, wait_until_ready  # noqa: E402
from tests.test_dashboard import browser_fetch  # noqa: E402

console = Console(width=130)
CHROMIUM = "/usr/bin/chromium"
BATCH = 1000
AGENTS = [f"agent:bench-{i:02d}" for i in range(20)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


# ---- the store ------------------------------------------------------------------------------------------

def _requests(decisions: int, approvals: int, rng: random.Random) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(agent, action, resource, args): `approvals` large transfers (each distinct, so each opens its own
    approval) spread among permits, forbids and denies."""
    approval_at = set(rng.sample(range(decisions), min(approvals, decisions)))
    iban = "DE89370400440532013000"
    for i in range(decisions):
        agent = AGENTS[i % len(AGENTS)]
        account = f"/accounts/acc-{rng.randrange(1000):04d}"
        if i in approval_at:  # its own requester, whose daily budget (10 000) is untouched
            yield f"agent:requester-{i}", "payments.transfer", account, {
                "amount": 1001 + i % 8000, "currency": "EUR", "country": "DE", "beneficiary_iban": iban,
                "reference": f"bench-{i}"}
            continue
        kind = rng.random()
        if kind < 0.55:
            yield agent, "payments.read", f"{account}/statements/2025-{rng.randrange(1, 13):02d}", {}
        elif kind < 0.75:
            yield agent, "payments.transfer", account, {"amount": rng.randrange(1, 400), "currency": "EUR",
                                                        "country": rng.choice(["DE", "FR", "KP"]),
                                                        "beneficiary_iban": iban}
        elif kind < 0.9:
            yield agent, "payments.refund", account, {"amount": rng.randrange(1, 90), "currency": "EUR",
                                                      "charged_amount": 100}
        else:
            yield agent, rng.choice(["payments.close", "payments.export"]), account, {}


async def _seed(data_dir: Path, decisions: int, approvals: int) -> float:
    from sqlalchemy import select

    from licet.server.decisions import DecideInput, decide_and_record
    from licet.server.identity import Caller
    from licet.server.models import ApiKey
    from licet.server.services import Services
    from licet.server.settings import Settings

    services = Services(Settings(data_dir=data_dir))
    async with services.db.read() as session:
        key_id = (await session.execute(select(ApiKey.id).where(
            ApiKey.tenant_id == "demo", ApiKey.principal_id == "agent:payments-bot"))).scalars().first()
    asks = [DecideInput(Caller("demo", "agent", agent, ("payments-agent",), key_id=key_id), action, resource, args,
                        "127.0.0.1")
            for agent, action, resource, args in _requests(decisions, approvals, random.Random(18))]

    def record(session: Any, batch: list[DecideInput]) -> None:
        for ask in batch:
            decide_and_record(session, services, ask)

    start = time.perf_counter()
    for at in range(0, len(asks), BATCH):
        await services.db.run_write(record, asks[at:at + BATCH])
        console.print(f"  seeded {min(at + BATCH, len(asks))} / {len(asks)}", end="\r")
    took = time.perf_counter() - start
    await services.db.dispose()
    return took


@contextmanager
def serving(data_dir: Path, port: int) -> Iterator[str]:
    url = f"http://localhost:{port}"
    env = {**os.environ, "LICET_RP_ID": "localhost", "LICET_RP_ORIGINS": json.dumps([url]),
           "LICET_COOKIE_SECURE": "false", "LICET_SOURCE_LOCK_FAILURES": "100000"}
    log = (data_dir / "server.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "licet", "serve", "--demo", "--port", str(port),
                                "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_until_ready(process, url, lambda: f"licet serve did not start: "
                                               f"{(data_dir / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


# ---- measurements ---------------------------------------------------------------------------------------

def api_calls(url: str, owner: str, runs: int) -> list[tuple[str, list[float]]]:
    """Round trips of `GET /v1/certificates` as the explorer makes them."""
    figures: list[tuple[str, list[float]]] = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {owner}"}, timeout=60) as client:
        newest = client.get("/v1/certificates", params={"limit": 1}).json()["certificates"][0]
        top = newest["log_index"]
        rng = random.Random(5)
        cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("newest page (50)", lambda: {"limit": 50}),
            ("page turn: before=random index", lambda: {"limit": 50, "before": rng.randrange(50, top)}),
            ("outcome=forbid", lambda: {"outcome": "forbid", "limit": 50}),
            ("outcome=require_approval, older page", lambda: {"outcome": "require_approval", "limit": 50,
                                                              "before": rng.randrange(top // 2, top)}),
            ("action=payments.re*", lambda: {"action": "payments.re*", "limit": 50}),
            ("agent (principal)", lambda: {"principal": rng.choice(AGENTS), "limit": 50}),
            ("rule=sanctioned-countries", lambda: {"rule": "sanctioned-countries", "limit": 50}),
            ("since/until: one hour ago to now", lambda: {"since": _ago(3600), "until": _ago(0), "limit": 50}),
            ("agent + action + outcome", lambda: {"principal": rng.choice(AGENTS), "action": "payments.*",
                                                  "outcome": "permit", "limit": 50}),
            ("rare match: action=payments.close + agent", lambda: {"action": "payments.close",
                                                                  "principal": rng.choice(AGENTS), "limit": 50}),
        ]
        for name, params in cases:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                answer = client.get("/v1/certificates", params=params())
                times.append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
            figures.append((name, times))
    return figures


def _ago(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def exports(url: str, owner: str) -> list[tuple[str, int, float]]:
    out = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {owner}"}, timeout=600) as client:
        for fmt in ("csv", "jsonl"):
            start = time.perf_counter()
            lines = 0
            with client.stream("GET", "/v1/certificates/export", params={"format": fmt}) as answer:
                for chunk in answer.iter_bytes():
                    lines += chunk.count(b"\n")
            took = time.perf_counter() - start
            out.append((fmt, lines - (1 if fmt == "csv" else 0), took))
    return out


def _signed_in(browser: Any, url: str, person: dict[str, Any], *, code_at: float) -> tuple[Any, Any, float]:
    """A new browser context signed in as demo `person` (password, then the TOTP code of `code_at`), its
    page on the overview, and the seconds from the sign-in click to the overview's first figure."""
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/login?tenant=demo")
    page.fill("#email", person["email"])
    page.fill("#password", person["password"])
    page.wait_for_timeout(300)
    start = time.perf_counter()
    page.click("#sign-in")
    page.wait_for_selector("#code")
    page.fill("#code", pyotp.TOTP(person["totp_secret"]).at(code_at))
    page.click("#verify-code")
    page.wait_for_selector("#active-policy", timeout=60_000)
    return context, page, time.perf_counter() - start


def browser_figures(url: str, demo: dict[str, Any], runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, Any] = {"sign-in": [], "/approvals": [], "/decisions": [], "nav /approvals": [],
                               "nav /decisions": [], "live": []}
    rows = {"/approvals": ".approval", "/decisions": "#decisions-table .decision-row"}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        contexts = []
        for person in demo["people"]:
            context, page, seconds = _signed_in(browser, url, person, code_at=time.time())
            figures["sign-in"].append(seconds)
            contexts.append(context)
            page.close()
        context = contexts[0]  # the owner
        for _ in range(runs):
            for path, selector in rows.items():
                page = context.new_page()
                start = time.perf_counter()
                page.goto(path, wait_until="commit")
                page.wait_for_selector(selector, timeout=60_000)
                figures[path].append(time.perf_counter() - start)
                page.close()
            page = context.new_page()
            for path, selector in rows.items():
                page.goto("/")
                page.wait_for_selector("#active-policy", timeout=60_000)
                start = time.perf_counter()
                page.click(f"#nav-{path.strip('/')}")
                page.wait_for_selector(selector, timeout=60_000)
                figures[f"nav {path}"].append(time.perf_counter() - start)
            page.close()
        # The live queue: a new approval, from the agent's request to the open page showing it.
        page = context.new_page()
        page.goto("/approvals")
        page.wait_for_selector(".approval", timeout=60_000)
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {demo['agent_key']}"}) as agent:
            for i in range(runs):
                args = {"amount": 2000 + i, "currency": "EUR", "country": "DE",
                        "beneficiary_iban": "DE89370400440532013000", "reference": f"live-{time.time()}"}
                start = time.perf_counter()
                opened = agent.post("/v1/decide", json={"action": "payments.transfer", "resource": "/accounts/acc-1",
                                                        "args": args}).json()
                page.wait_for_selector(f".approval[data-approval-id='{opened['approval']['id']}']", timeout=30_000)
                figures["live"].append(time.perf_counter() - start)
        for context in contexts:
            context.close()
        browser.close()
    return figures


IMPACT_RULES = 100


def impact_figures(url: str, demo: dict[str, Any], runs: int, api_runs: int) -> dict[str, list[float]]:
    """The impact view of two 100-rule versions: its API calls, and its render after "Show impact".
    Run last: it makes the bench policy the active one."""
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"diff": [], "replay": [], "answer": [], "summary": []}
    owner = next(p for p in demo["people"] if p["email"].startswith("owner@"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        # browser_figures used the code of now: a TOTP code is good once.
        context, page, _ = _signed_in(browser, url, owner, code_at=time.time() + 30)
        first = rules_source(IMPACT_RULES, 0)
        second = first.replace("args.amount <= 100'", "args.amount <= 150'", 1)  # rule r0, a permit, allows more
        made = [browser_fetch(page, "POST", "/v1/policies", {"source": text}) for text in (first, second)]
        assert all(m["status"] == 201 for m in made), made
        policy = made[0]["body"]["policy"]["id"]
        active = browser_fetch(page, "POST", f"/v1/policies/{policy}/versions/1/activate", {"reason": "bench"})
        assert active["status"] == 200, active  # the sign-in's second factor is the step-up
        page.close()
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {demo['owner_key']}"}, timeout=120) as api:
            premise = api.post(f"/v1/policies/{policy}/diff", json={"version": 2}).json()
            assert premise["answer"] == "differs", premise  # each timed diff finds and confirms examples
            calls = {"diff": ("diff", {"version": 2}),
                     "replay": ("replay", {"version": 2, "days": 7, "limit": 1000})}
            for name, (route, body) in calls.items():
                for _ in range(api_runs):
                    start = time.perf_counter()
                    answer = api.post(f"/v1/policies/{policy}/{route}", json=body)
                    figures[name].append(time.perf_counter() - start)
                    assert answer.status_code == 200, answer.text
        for _ in range(runs):
            page = context.new_page()
            page.goto(f"/policies?policy={policy}")
            page.wait_for_selector("#versions .version-row[data-number='2']", timeout=60_000)
            start = time.perf_counter()
            page.click("#show-impact")
            page.wait_for_selector("#semantic-answer", timeout=120_000)
            figures["answer"].append(time.perf_counter() - start)
            page.wait_for_selector("#replay-summary", timeout=600_000)
            figures["summary"].append(time.perf_counter() - start)
            page.close()
        context.close()
        browser.close()
    return figures


def build_times() -> list[tuple[str, float, str]]:
    """The frontend build in a copy of the dashboard: fresh `.web` (npm cache warm), up to date, restored."""
    out = []
    with tempfile.TemporaryDirectory(prefix="licet-build-bench-") as tmp:
        root = Path(tmp) / "dashboard"  # a copy of the distribution, ahead of the checkout's on the path
        shutil.copytree(ROOT / "dashboard", root, ignore=shutil.ignore_patterns(
            ".web", "frontend", "__pycache__", ".states", "build", "*.egg-info"))
        env = {**os.environ, "LICET_FRONTEND_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(root)}

        def run(label: str, *extra: str) -> None:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "licet.dashboard.build", *extra], cwd=tmp, env=env,
                                  capture_output=True, text=True)
            took = time.perf_counter() - start
            said = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else \
                f"failed: {done.stderr.strip()[-300:]}"
            out.append((label, took, said))

        run("cold: fresh .web, npm cache warm")
        run("cached: up to date")
        shutil.rmtree(root / "licet" / "dashboard" / "frontend" / "build" / "client")
        run("cached: restored from the build cache")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--approvals", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7, help="browser samples per figure")
    parser.add_argument("--api-runs", type=int, default=40, help="API calls per explorer filter")
    parser.add_argument("--no-build", action="store_true", help="skip the frontend build timings")
    parser.add_argument("--data-dir", type=Path, help="keep the store here (default: a temporary directory)")
    options = parser.parse_args()

    keep = options.data_dir
    data_dir = keep or Path(tempfile.mkdtemp(prefix="licet-dashboard-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    try:
        console.print(f"[bold]Dashboard bench[/]: {options.decisions} decisions, {options.approvals} approvals, "
                      f"SQLite in {data_dir}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        with serving(data_dir, port):
            pass  # the demo: tenant, people, keys, policy
        demo = json.loads((data_dir / "demo-keys.json").read_text())
        seeded = asyncio.run(_seed(data_dir, options.decisions, options.approvals))
        console.print(f"seeded {options.decisions} decisions through server.decisions.decide_and_record in "
                      f"{seeded:.1f} s ({options.decisions / seeded:.0f}/s)")
        with serving(data_dir, port) as url:
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {demo['owner_key']}"}) as owner:
                pending = owner.get("/v1/approvals", params={"state": "pending", "limit": 500}).json()["approvals"]
                size = owner.get("/v1/certificates", params={"limit": 1}).json()["certificates"][0]["log_index"] + 1
            console.print(f"store: {size} log entries, {len(pending)}{'+' if len(pending) == 500 else ''} "
                          "pending approvals")
            calls = api_calls(url, demo["owner_key"], options.api_runs)
            exported = exports(url, demo["owner_key"])
            shown = browser_figures(url, demo, options.runs)
            impact = impact_figures(url, demo, options.runs, options.api_runs)
        build = [] if options.no_build else build_times()
    finally:
        if keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(title=f"Browser (Chromium), {options.runs} samples each")
    for column in ("what", "p50", "min", "max"):
        table.add_column(column)
    labels = {"sign-in": "sign-in: password + TOTP → overview figures (once per person)",
              "/approvals": "full load of /approvals → first approval shown",
              "/decisions": "full load of /decisions → first decision row",
              "nav /approvals": "overview → Approvals link → first approval",
              "nav /decisions": "overview → Decisions link → first decision row",
              "live": "agent opens an approval → shown in an open queue page"}
    for key, label in labels.items():
        values = shown[key]
        table.add_row(label, ms(statistics.median(values)), ms(min(values)), ms(max(values)))
    console.print(table)

    table = Table(title=f"Explorer API: GET /v1/certificates round trips over localhost, {options.api_runs} each")
    for column in ("filter", "p50", "p99"):
        table.add_column(column)
    for name, times in calls:
        table.add_row(name, ms(statistics.median(times)), ms(pct(times, 0.99)))
    console.print(table)

    table = Table(title=f"Impact view of two {IMPACT_RULES}-rule versions: API calls over localhost "
                        f"({options.api_runs} each) and the page ({options.runs} samples)")
    for column in ("what", "p50", "p99", "min", "max"):
        table.add_column(column)
    labels = {"diff": "POST /v1/policies/{id}/diff (v2 against the active v1)",
              "replay": "POST /v1/policies/{id}/replay (one page: 1 000 decisions)",
              "answer": "page: Show impact → the kernel's answer shown",
              "summary": "page: Show impact → replay summary shown (≤ 20 pages)"}
    for key, label in labels.items():
        values = impact[key]
        table.add_row(label, ms(statistics.median(values)), ms(pct(values, 0.99)), ms(min(values)), ms(max(values)))
    console.print(table)

    table = Table(title="Exports (every decision, streamed)")
    for column in ("format", "rows", "seconds", "rows/s"):
        table.add_column(column)
    for fmt, rows, took in exported:
        table.add_row(fmt, str(rows), f"{took:.2f}", f"{rows / took:,.0f}")
    console.print(table)

    if build:
        table = Table(title="Frontend build (python -m licet.dashboard.build, in a copy of dashboard/)")
        for column in ("case", "seconds", "result"):
            table.add_column(column)
        for label, took, said in build:
            table.add_row(label, f"{took:.1f}", said)
        console.print(table)
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
