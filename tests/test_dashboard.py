"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
`licet serve --demo`: signing in, the live approvals queue with a 2-of-2 quorum and a step-up, and
what a person who may not vote sees (and what the API answers them).

One server per module; screenshots of each page go to `test-artifacts/screenshots/`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.server_harness import IN_CI, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
STEP_UP_SECONDS = 15  # short, so a vote after it asks for a step-up within the test

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    if IN_CI:
        raise RuntimeError("Chromium is missing (/usr/bin/chromium): scripts/test installs it")
    pytest.skip("Chromium is not installed", allow_module_level=True)


@dataclass
class Demo:
    url: str
    data: dict[str, Any]
    log: Path

    def person(self, email_prefix: str) -> dict[str, str]:
        return next(p for p in self.data["people"] if p["email"].startswith(email_prefix + "@"))

    def agent(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key or self.data['agent_key']}"},
                            timeout=30)


@contextmanager
def demo_server(data_dir: Path, **env: str) -> Iterator[Demo]:
    """`licet serve --demo` on a free port of localhost (the passkeys' relying party), with `env` added
    (e.g. LICET_DATABASE_URL); stopped afterwards."""
    port = free_port()
    url = f"http://localhost:{port}"
    log = data_dir / "server.log"
    env = {**os.environ, "LICET_RP_ID": "localhost", "LICET_RP_ORIGINS": json.dumps([url]),
           "LICET_COOKIE_SECURE": "false", "LICET_STEP_UP_SECONDS": str(STEP_UP_SECONDS),
           "LICET_SOURCE_LOCK_FAILURES": "100000", **env}
    process = subprocess.Popen([sys.executable, "-m", "licet", "serve", "--demo", "--port", str(port),
                                "--data-dir", str(data_dir)], env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, cwd=ROOT)
    wait_until_ready(process, url, lambda: f"licet serve --demo did not start: {log.read_text()}")
    try:
        yield Demo(url, json.loads((data_dir / "demo-keys.json").read_text()), log)
    finally:
        process.terminate()
        process.wait(10)
    assert "does not match the backend state schema" not in log.read_text(), "stale frontend build"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with demo_server(tmp_path_factory.mktemp("dashboard-demo")) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def browser_fetch(page: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """`path` of `/v1` called from `page` as its person (session cookie and CSRF token): {status, body}."""
    return dict(page.evaluate("""async ([method, path, body]) => {
        const csrf = (document.cookie.match(/licet_csrf=([^;]*)/) || [])[1] || '';
        const r = await fetch(path, {method, headers: {'content-type': 'application/json',
            'x-csrf-token': decodeURIComponent(csrf)}, body: body === null ? undefined : JSON.stringify(body)});
        return {status: r.status, body: await r.json()};
    }""", [method, path, body]))


def virtual_authenticator(page: Any) -> tuple[Any, str]:
    """A CTAP2 platform authenticator with resident keys and user verification in `page`'s browser
    (Chromium's CDP virtual authenticator): the CDP session and the authenticator's id."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, str(added["authenticatorId"])


def sign_in(browser: Any, demo: Demo, who: str, *, width: int = 1280, code_offset: int = 0) -> Any:
    """A new browser context signed in as demo person `who` with password and TOTP; its page."""
    person = demo.person(who)
    context = browser.new_context(base_url=demo.url, viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto("/login?tenant=demo")
    page.fill("#email", person["email"])
    page.fill("#password", person["password"])
    page.click("#sign-in")
    page.wait_for_selector("#code")
    page.fill("#code", pyotp.TOTP(person["totp_secret"]).at(time.time() + code_offset))
    page.click("#verify-code")
    playwright_api.expect(page.locator("#whoami")).to_contain_text(person["email"], timeout=15_000)
    return page


def test_unsigned_visitor_is_sent_to_sign_in(browser: Any, demo: Demo) -> None:
    page = browser.new_page(base_url=demo.url)
    page.goto("/approvals")
    playwright_api.expect(page).to_have_url(re.compile(r"/login/?$"), timeout=15_000)
    page.close()


def test_wrong_password_is_refused_with_the_apis_message(browser: Any, demo: Demo) -> None:
    page = browser.new_page(base_url=demo.url)
    page.goto("/login?tenant=demo")
    page.fill("#email", demo.person("ana")["email"])
    page.fill("#password", "not the password at all")
    page.click("#sign-in")
    playwright_api.expect(page.locator("#sign-in-error")).to_contain_text("invalid_credentials", timeout=15_000)
    shot(page, "sign-in-error")
    page.close()


def test_password_and_totp_sign_in_never_sends_the_password_to_the_dashboard(browser: Any, demo: Demo) -> None:
    person = demo.person("owner")
    context = browser.new_context(base_url=demo.url)
    page = context.new_page()
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(str(payload))))
    page.goto("/login?tenant=demo")
    shot(page, "sign-in")
    page.fill("#email", person["email"])
    page.fill("#password", person["password"])
    page.click("#sign-in")
    page.wait_for_selector("#code")
    page.fill("#code", pyotp.TOTP(person["totp_secret"]).now())
    page.click("#verify-code")
    playwright_api.expect(page.locator("#active-policy")).to_contain_text("payments-agent v2", timeout=15_000)
    playwright_api.expect(page.locator("#pending-count")).not_to_have_text("0")
    with httpx.Client(base_url=demo.url, headers={"authorization": f"Bearer {demo.data['owner_key']}"}) as owner:
        summary = owner.get("/v1/certificates/summary", params={"window": "day"}).json()
    assert summary["totals"]["forbid"] >= 1 and summary["totals"]["deny"] >= 1, "the demo's traffic"
    for outcome, count in summary["totals"].items():
        playwright_api.expect(page.locator(f"#total-{outcome}")).to_have_text(f"{outcome}: {count}")
    for ranked in summary["most_refused_actions"]:
        playwright_api.expect(page.locator("#refused-actions")).to_contain_text(ranked["name"])
    shot(page, "overview")
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["licet_session"]["httpOnly"] and not cookies["licet_csrf"]["httpOnly"]
    assert frames, "the page talks to the dashboard over its socket"
    assert not any(person["password"] in f for f in frames)
    context.close()


def test_two_approvers_reach_the_quorum_live_one_after_a_step_up(browser: Any, demo: Demo) -> None:
    quorum_flow(browser, demo)


def quorum_flow(browser: Any, demo: Demo) -> None:
    """Ana and Ben (each signed in here) watch the queue; an agent's request opens a 2-of-2 approval that
    shows in both without a reload; Ana approves, Ben after a step-up in place; the agent's retry gets a
    permit naming both."""
    ben = sign_in(browser, demo, "ben")
    ben_signed_in = time.monotonic()
    ana = sign_in(browser, demo, "ana")
    for page in (ana, ben):
        page.goto("/approvals")
        page.wait_for_selector(".approval")
    shot(ana, "approvals-1280")
    # A new request opens an approval: both open queues show it without a reload.
    args = {"amount": 7777, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000",
            "reference": "live-test"}
    request = {"action": "payments.transfer", "resource": "/accounts/acc-002", "args": args}
    with demo.agent() as agent:
        opened = agent.post("/v1/decide", json=request).json()
    assert opened["decision"] == "require_approval"
    approval_id = opened["approval"]["id"]
    card = f".approval[data-approval-id='{approval_id}']"
    for page in (ana, ben):
        playwright_api.expect(page.locator(card)).to_contain_text("7777", timeout=5_000)
        playwright_api.expect(page.locator(f"{card} .policy")).to_have_text("payments-agent v2")
    # Ana signed in with MFA moments ago: her vote counts at once.
    ana.locator(f"{card} .approve").click()
    playwright_api.expect(ana.locator("#approvals-notice")).to_contain_text("1 of 2", timeout=10_000)
    # Ben's MFA is stale by now: the page asks for a step-up in place, then completes the vote.
    time.sleep(max(0.0, STEP_UP_SECONDS + 1 - (time.monotonic() - ben_signed_in)))
    ben.locator(f"{card} .approve").click()
    ben.wait_for_selector("#step-up-code", timeout=10_000)
    shot(ben, "step-up")
    # A code is good for its 30 s step ±1 and once: the next step's code is later than the sign-in's.
    ben.fill("#step-up-code", pyotp.TOTP(demo.person("ben")["totp_secret"]).at(time.time() + 30))
    ben.click("#step-up-confirm")
    playwright_api.expect(ben.locator("#approvals-notice")).to_contain_text("granted", timeout=10_000)
    playwright_api.expect(ana.locator(card)).to_have_count(0, timeout=5_000)  # no longer pending
    # The agent's retry with the approval gets a permit naming both approvers.
    with demo.agent() as agent:
        retried = agent.post("/v1/decide", json={**request, "approval": approval_id}).json()
    assert retried["decision"] == "permit"
    used = retried["certificate"]["approval"]
    assert used["id"] == approval_id
    assert sorted(used["approvers"]) == ["user:ana@demo.licet.localhost", "user:ben@demo.licet.localhost"]
    ana.context.close()
    ben.context.close()


def test_the_requesters_key_creator_sees_why_not_and_the_api_refuses_a_forged_vote(browser: Any, demo: Demo) -> None:
    owner = sign_in(browser, demo, "owner", code_offset=30)
    # The owner, fresh from MFA, makes an agent key; its request opens an approval the owner may not vote on.
    made = browser_fetch(owner, "POST", "/v1/keys", {"name": "owner-made agent", "role": "agent",
                                                     "principal_id": "agent:owner-bot",
                                                     "principal_roles": ["payments-agent"]})
    assert made["status"] == 201, made
    args = {"amount": 3100, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}
    with demo.agent(made["body"]["secret"]) as agent:
        opened = agent.post("/v1/decide", json={"action": "payments.transfer", "resource": "/accounts/acc-003",
                                                "args": args}).json()
    approval_id = opened["approval"]["id"]
    owner.goto("/approvals")
    card = owner.locator(f".approval[data-approval-id='{approval_id}']")
    playwright_api.expect(card.locator(".why-not")).to_contain_text("never approves its own request",
                                                                    timeout=10_000)
    assert card.locator(".approve").count() == 0
    shot(owner, "approvals-why-not")
    forged = browser_fetch(owner, "POST", f"/v1/approvals/{approval_id}/approve", {})
    assert forged["status"] == 403 and forged["body"]["error"]["code"] == "self_approval"
    owner.context.close()


def test_pages_render_on_a_phone_width(browser: Any, demo: Demo) -> None:
    page = sign_in(browser, demo, "admin", width=390)
    for path, marker in (("/", "#active-policy"), ("/approvals", "h1")):
        page.goto(path)
        page.wait_for_selector(marker)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"{path} scrolls sideways at 390 px ({width} px wide)"
        shot(page, f"{path.strip('/') or 'overview'}-390")
    page.context.close()
