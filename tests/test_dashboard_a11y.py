"""Every dashboard page in a real browser (Debian's Chromium, Playwright) against a real
`licet serve --demo`: axe-core (npm, pinned in tests/node) finds no serious or critical violation on
any page; Tab reaches every control, in order, on the sign-in, approvals and account pages; every page
renders at 1280 and 390 px wide with no sideways scroll on a phone, screenshots of each in
`test-artifacts/screenshots/`.

Its own server (module-scoped `demo` fixture from tests/test_dashboard.py); the owner signs in once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest

from tests.node_clients import modules
from tests.test_dashboard import STEP_UP_SECONDS, Demo, browser, browser_fetch, demo, playwright_api, shot, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
SERIOUS = ("serious", "critical")
FOCUSABLE = ("a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), "
             "textarea:not([disabled]), [tabindex]:not([tabindex='-1'])")


@dataclass(frozen=True)
class Page:
    """A dashboard page: its name (for screenshots), address, what shows once it has loaded, and who
    looks at it."""

    name: str
    path: str
    loaded: str
    who: str = "owner"  # owner | invitee | visitor


@pytest.fixture(scope="module")
def pages(demo: Demo) -> list[Page]:
    with demo.agent() as agent:
        certificate = agent.get("/v1/certificates", params={"limit": 1, "outcome": "permit"}).json()["certificates"][0]
    return [
        Page("sign-in", "/login?tenant=demo", "#sign-in", who="visitor"),
        Page("invite", "/invite?token=an-invitation-token", "#accept", who="visitor"),
        Page("enrol", "/enrol", "#totp-qr svg", who="invitee"),
        Page("overview", "/", "#total-permit"),
        Page("approvals", "/approvals", ".approval"),
        Page("decisions", "/decisions", "#decisions-table .decision-row"),
        Page("audit", "/audit", "#audit-table .audit-row"),
        Page("certificate", f"/certificate?id={certificate['id']}", "#proof-steps"),
        Page("evidence", "/evidence", "#checkpoint-note"),
        Page("account", "/account", "#add-passkey"),
        Page("policies", "/policies", "#versions .version-row"),
        Page("editor", "/editor", "#policy-editor .cm-content"),
        Page("query", "/query", "#query-ask"),
        Page("plans", "/plans", "#plan-steps .plan-step"),
        Page("admin", "/admin", "#keys .key-row"),
        Page("delegations", "/delegations", "#check-grant"),
    ]


@dataclass(frozen=True)
class Browsers:
    """Who looks at the pages: the owner (signed in at `owner_signed_in`, time.monotonic), a person who
    has just accepted an invitation (what /enrol is for) and a visitor who is signed out."""

    owner: Any
    invitee: Any
    visitor: Any
    owner_signed_in: float

    def context(self, page: Page) -> Any:
        return {"owner": self.owner, "invitee": self.invitee, "visitor": self.visitor}[page.who]


@pytest.fixture(scope="module")
def people(browser: Any, demo: Demo) -> Iterator[Browsers]:
    owner = sign_in(browser, demo, "owner")
    signed_in = time.monotonic()
    made = browser_fetch(owner, "POST", "/v1/users", {"email": "ines@demo.licet.localhost",
                                                      "display_name": "Ines Invitee", "role": "auditor"})
    assert made["status"] == 201, made
    invitee = browser.new_context(base_url=demo.url)
    accepted = invitee.request.post("/v1/auth/invitations/accept", data={
        "token": made["body"]["invitation"]["token"], "password": f"licet-{uuid.uuid4().hex}", "use_cookie": True})
    assert accepted.status == 201, accepted.text()
    found = Browsers(owner.context, invitee, browser.new_context(base_url=demo.url), signed_in)
    yield found
    for context in (found.owner, found.invitee, found.visitor):
        context.close()


def _open(people: Browsers, page: Page, width: int) -> Any:
    tab = people.context(page).new_page()
    tab.set_viewport_size({"width": width, "height": 900})
    tab.goto(page.path)
    expect(tab.locator(page.loaded).first).to_be_visible(timeout=15_000)
    return tab


def _axe_violations(tab: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, each with the elements it names."""
    tab.add_script_tag(path=str(modules() / "axe-core" / "axe.min.js"))
    found = tab.evaluate("async () => (await axe.run(document)).violations")
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + "; ".join(f"{n['html'][:600]} ({n.get('failureSummary', '')})" for n in v["nodes"])
            for v in found if v["impact"] in SERIOUS]


def test_axe_finds_no_serious_violation_on_any_page(people: Browsers, pages: list[Page]) -> None:
    problems = {}
    for page in pages:
        tab = _open(people, page, 1280)
        shot(tab, f"{page.name}-1280")
        violations = _axe_violations(tab)
        if violations:
            problems[page.name] = violations
        tab.close()
    assert not problems, problems


def test_every_page_fits_a_phone_without_sideways_scroll(people: Browsers, pages: list[Page]) -> None:
    wide = {}
    for page in pages:
        tab = _open(people, page, 390)
        shot(tab, f"{page.name}-390")
        width = tab.evaluate("document.documentElement.scrollWidth")
        if width > 390 + 1:
            wide[page.name] = width
        tab.close()
    assert not wide, f"pages wider than 390 px: {wide}"


def _tab_order(tab: Any) -> tuple[list[str], list[str]]:
    """The visible focusable controls in document order, and the ones Tab reached from the top, in order
    (each described by its id, class or text)."""
    describe = """el => el.id || el.getAttribute('aria-label') || (el.textContent || '').trim().slice(0, 40)
                   || el.className"""
    expected = tab.eval_on_selector_all(
        FOCUSABLE, f"els => els.filter(e => e.offsetParent !== null || e.getClientRects().length)"
                   f".map({describe})")
    tab.evaluate("document.activeElement && document.activeElement.blur()")
    tab.locator("body").focus()
    reached: list[str] = []
    for _ in range(len(expected) + 5):
        tab.keyboard.press("Tab")
        now = tab.evaluate(f"(() => {{ const el = document.activeElement; "
                           f"return el && el !== document.body ? ({describe})(el) : null; }})()")
        if now is None or (reached and now == reached[0]):
            break
        reached.append(now)
    return expected, reached


@pytest.mark.parametrize("name", ["sign-in", "approvals", "account"])
def test_tab_reaches_every_control_in_order(people: Browsers, pages: list[Page], name: str) -> None:
    page = next(p for p in pages if p.name == name)
    tab = _open(people, page, 1280)
    expected, reached = _tab_order(tab)
    assert expected, "the page has controls"
    assert reached[:len(expected)] == expected, f"Tab reached {reached}, the page's controls are {expected}"
    tab.close()



def test_replacing_an_authenticator_asks_for_the_step_up_in_place(people: Browsers, demo: Demo) -> None:
    tab = people.owner.new_page()
    time.sleep(max(0.0, STEP_UP_SECONDS + 1 - (time.monotonic() - people.owner_signed_in)))  # MFA goes stale
    tab.goto("/enrol")
    tab.fill("#step-up-code", pyotp.TOTP(demo.person("owner")["totp_secret"]).at(time.time() + 30), timeout=15_000)
    tab.click("#step-up-confirm")
    expect(tab.locator("#totp-qr svg")).to_be_visible(timeout=10_000)
    expect(tab.locator("#otpauth")).to_contain_text("otpauth://totp/")
    tab.close()
