"""The person's own settings, administration and delegations in a real browser (Debian's Chromium, Playwright)
against a real `licet serve --demo` (issue 20): TOTP enrolled from the QR code (read by zxing-cpp from the
pixels the page draws, as a phone would) and a passkey through Chromium's virtual authenticator; sessions
and password change; an API key created, used, revoked and refused by the API at once; people, webhooks
(a delivery retried, a test event sent) and approval defaults; a delegation issued after the kernel's check is shown and revoked after its cascade
is previewed. Screenshots at 1280 and 390 px.

One server for the module (`demo` from tests/test_dashboard.py)."""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import zxingcpp

from tests.server_harness import free_port
from tests.test_dashboard import (
    STEP_UP_SECONDS,
    Demo,
    browser,
    browser_fetch,
    demo_server,
    playwright_api,
    shot,
    sign_in,
    virtual_authenticator,
)

__all__ = ["browser"]  # a pytest fixture, re-exported so this module gets its own browser

expect = playwright_api.expect
SCALE = 4  # the QR code is drawn this many times its shown size before it is read
_last_step: dict[str, int] = {}  # per demo person, the TOTP step last used (the server takes each once)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo server, allowed to post webhooks to this machine (the receiver below), retrying after 1 s."""
    with demo_server(tmp_path_factory.mktemp("dashboard-admin"), LICET_WEBHOOK_PRIVATE_TARGETS="true",
                     LICET_WEBHOOK_BACKOFF_SECONDS="1") as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list[int]]]:
    """A webhook receiver on localhost that answers 500 to the first delivery and 204 to the rest: its URL,
    and the statuses it gave."""
    answered: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            answered.append(500 if not answered else 204)
            self.send_response(answered[-1])
            self.end_headers()

        def log_message(self, *_: Any) -> None:  # quiet
            return

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/hook", answered
    server.shutdown()


def fresh_step(who: str) -> int:
    """A TOTP step the server accepts now for demo person `who` (now ±1, and later than the last one used),
    waiting for the clock if both are spent."""
    while True:
        now = int(time.time() // 30)
        step = max(now, _last_step.get(who, now - 1) + 1)
        if step <= now + 1:
            _last_step[who] = step
            return step
        time.sleep((now + 1) * 30 - time.time() + 0.5)


def fresh_code(demo: Demo, who: str) -> str:
    return str(pyotp.TOTP(demo.person(who)["totp_secret"]).at(fresh_step(who) * 30))


def signed_in(browser: Any, demo: Demo, who: str, width: int = 1280) -> Any:
    """`sign_in` with a code of a step not used before (several sign-ins of one person in a minute)."""
    return sign_in(browser, demo, who, width=width, code_offset=int(fresh_step(who) * 30 + 15 - time.time()))


def step_up(page: Any, demo: Demo, who: str) -> None:
    """Pass a second factor now in `page`'s session (what the step-up dialog sends)."""
    passed = browser_fetch(page, "POST", "/v1/auth/mfa/totp", {"code": fresh_code(demo, who)})
    assert passed["status"] == 200, passed


def done(page: Any, demo: Demo, who: str, result: Any) -> None:
    """After a write on `page`: `result` shows, once the step-up the page may ask for (the MFA went stale) is
    given a fresh code."""
    dialog = page.locator("#step-up-code")
    expect(result.or_(dialog).first).to_be_visible(timeout=15_000)
    if dialog.is_visible():
        dialog.fill(fresh_code(demo, who))
        page.click("#step-up-confirm")
    expect(result).to_be_visible(timeout=15_000)
    expect(dialog).to_be_hidden()  # closed (not fading out) before the next write looks for it


def read_qr(page: Any, selector: str) -> str:
    """The text of the QR code `selector` shows: its SVG drawn on a canvas in the page, the pixels decoded
    by zxing-cpp."""
    drawn = page.evaluate("""async ([selector, scale]) => {
        const svg = document.querySelector(selector);
        const box = svg.getBoundingClientRect();
        const w = Math.ceil(box.width * scale), h = Math.ceil(box.height * scale);
        const img = new Image();
        img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(new XMLSerializer().serializeToString(svg));
        await img.decode();
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h); ctx.drawImage(img, 0, 0, w, h);
        const rgba = ctx.getImageData(0, 0, w, h).data;
        let grey = '';
        for (let i = 0; i < w * h; i++) grey += String.fromCharCode(rgba[4 * i + 1]);
        return {w, h, grey: btoa(grey)};
    }""", [selector, SCALE])
    pixels = memoryview(base64.b64decode(drawn["grey"])).cast("B", shape=[drawn["h"], drawn["w"]])
    found = [b.text for b in zxingcpp.read_barcodes(pixels)]
    assert len(found) == 1, f"one QR code expected, read {found}"
    return str(found[0])


def invited(browser: Any, demo: Demo, owner: Any, role: str, width: int = 1280) -> tuple[Any, str, str]:
    """A person of `role` the owner invites, who accepted in a browser of their own: its page (signed in,
    no second factor yet), their email and password."""
    email = f"{role}-{uuid.uuid4().hex[:6]}@demo.licet.localhost"
    step_up(owner, demo, "owner")
    made = browser_fetch(owner, "POST", "/v1/users", {"email": email, "display_name": f"New {role}", "role": role})
    assert made["status"] == 201, made
    password = f"licet-{uuid.uuid4().hex}"
    context = browser.new_context(base_url=demo.url, viewport={"width": width, "height": 900})
    accepted = context.request.post("/v1/auth/invitations/accept", data={
        "token": made["body"]["invitation"]["token"], "password": password, "use_cookie": True})
    assert accepted.status == 201, accepted.text()
    return context.new_page(), email, password


def test_settings_enrol_totp_from_the_qr_code_and_a_passkey(browser: Any, demo: Demo) -> None:
    owner = signed_in(browser, demo, "owner")
    page, email, password = invited(browser, demo, owner, "approver")
    page.goto("/account")
    expect(page.locator("#totp-state")).to_contain_text("Off", timeout=15_000)
    page.click("#enrol-totp")
    expect(page.locator("#totp-qr svg")).to_be_visible(timeout=15_000)
    uri = read_qr(page, "#totp-qr svg")
    assert uri == page.locator("#otpauth").inner_text(), "the QR code carries the URI shown beside it"
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP) and email in uri.replace("%40", "@")
    page.fill("#enrol-code", totp.now())
    page.click("#enrol-confirm")
    expect(page.locator("#backup-codes")).to_be_visible(timeout=10_000)
    backup_codes = page.locator("#backup-codes").inner_text().split()
    assert len(backup_codes) == 10, backup_codes
    # The authenticator now signs this person in: a new browser, password then a code from the QR's secret.
    fresh = browser.new_context(base_url=demo.url).new_page()
    fresh.goto("/login?tenant=demo")
    fresh.fill("#email", email)
    fresh.fill("#password", password)
    fresh.click("#sign-in")
    fresh.wait_for_selector("#code", timeout=15_000)
    fresh.fill("#code", totp.at(time.time() + 30))  # each code counts once: the next step's
    fresh.click("#verify-code")
    expect(fresh.locator("#whoami")).to_contain_text(email, timeout=15_000)
    # A passkey, added on the settings page through the virtual authenticator (after a step-up with one of
    # the backup codes the enrolment showed, so the MFA is fresh however slow the machine).
    cdp, authenticator = virtual_authenticator(fresh)
    fresh.goto("/account")
    expect(fresh.locator("#totp-state")).to_contain_text("On", timeout=15_000)
    passed = browser_fetch(fresh, "POST", "/v1/auth/mfa/totp", {"code": backup_codes[0]})
    assert passed["status"] == 200, passed
    fresh.fill("#passkey-name", "test laptop")
    fresh.click("#add-passkey")
    expect(fresh.locator("#account-notice")).to_contain_text("test laptop", timeout=15_000)
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1 and credentials[0]["rpId"] == "localhost"
    listed = browser_fetch(fresh, "GET", "/v1/auth/passkeys")["body"]["passkeys"]
    assert [p["name"] for p in listed] == ["test laptop"]
    # Both sessions of this person are listed, this one marked; revoking the other signs it out at once.
    expect(fresh.locator("#sessions .session")).to_have_count(2)
    expect(fresh.locator("#sessions .session[data-current='true']")).to_contain_text("this session")
    shot(fresh, "account-1280")
    fresh.locator("#sessions .session[data-current='false'] .session-revoke").click()
    expect(fresh.locator("#account-notice")).to_contain_text("Session revoked", timeout=10_000)
    assert browser_fetch(page, "GET", "/v1/auth/me")["status"] == 401
    page.context.close()
    fresh.context.close()
    owner.context.close()


def test_settings_password_change_never_reaches_the_dashboard(browser: Any, demo: Demo) -> None:
    owner = signed_in(browser, demo, "owner")
    page, email, password = invited(browser, demo, owner, "auditor")
    other = browser.new_context(base_url=demo.url).request
    assert other.post("/v1/auth/login", data={"tenant": "demo", "email": email, "password": password,
                                              "use_cookie": True}).status == 200
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(str(payload))))
    page.goto("/account")
    new_password = f"Another-{uuid.uuid4().hex}"
    page.fill("#current-password", "not my password", timeout=15_000)
    page.fill("#new-password", new_password)
    page.click("#change-password")
    expect(page.locator("#account-error")).to_contain_text("invalid_credentials", timeout=10_000)
    page.fill("#current-password", password)
    page.fill("#new-password", new_password)
    page.click("#change-password")
    # Two argon2 runs (check the current password, hash the new one): seconds on a loaded 2-core machine.
    expect(page.locator("#account-notice")).to_contain_text("1 other session signed out", timeout=30_000)
    expect(page.locator("#new-password")).to_have_value("")
    assert other.get("/v1/auth/me").status == 401, "the other session ended"
    assert not any(password in f or new_password in f for f in frames), "a password reached the dashboard"
    anonymous = browser.new_context(base_url=demo.url).request
    assert anonymous.post("/v1/auth/login", data={"tenant": "demo", "email": email,
                                                  "password": new_password}).status == 200
    page.context.close()
    owner.context.close()


def test_admin_creates_a_key_that_works_then_revokes_it_and_the_api_refuses_it_at_once(browser: Any,
                                                                                        demo: Demo) -> None:
    admin = signed_in(browser, demo, "admin")
    admin.goto("/admin")
    expect(admin.locator("#keys .key-row").first).to_be_visible(timeout=15_000)
    name = f"bot-{uuid.uuid4().hex[:6]}"
    admin.fill("#key-name", name)
    admin.select_option("#key-role", "agent")
    admin.fill("#key-principal", f"agent:{name}")
    admin.fill("#key-principal-roles", "payments-agent")
    admin.fill("#key-expires", (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d"))
    admin.click("#create-key")
    done(admin, demo, "admin", admin.locator("#shown-once"))
    expect(admin.locator("#shown-once")).to_have_text(re.compile(r"^licet_"))
    secret = admin.locator("#shown-once").inner_text()
    expect(admin.locator(f"#keys .key-row[data-name='{name}'] .key-state")).to_have_text("active")
    shot(admin, "admin-1280")
    request = {"action": "payments.transfer", "resource": "/accounts/acc-001",
               "args": {"amount": 5, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}}
    with demo.agent(secret) as agent:
        assert agent.post("/v1/decide", json=request).json()["decision"] == "permit"
        admin.locator(f"#keys .key-row[data-name='{name}'] .key-revoke").click()
        done(admin, demo, "admin", admin.locator(f"#keys .key-row[data-name='{name}'] .key-state",
                                                 has_text="revoked"))
        refused = agent.post("/v1/decide", json=request)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated", refused.text
    admin.context.close()


def test_admin_people_keys_webhooks_and_defaults_stepping_up_in_place(browser: Any, demo: Demo,
                                                                      receiver: tuple[str, list[int]]) -> None:
    """From an admin whose MFA has gone stale: the first write asks for a code in place, then completes; then
    people, a key's rotation, a webhook with its deliveries (a retry after a 500), and the approval defaults."""
    admin = signed_in(browser, demo, "admin")
    since = time.monotonic()
    admin.goto("/admin")
    expect(admin.locator("#people .person-row").first).to_be_visible(timeout=15_000)
    time.sleep(max(0.0, STEP_UP_SECONDS + 1 - (time.monotonic() - since)))
    email = f"newcomer-{uuid.uuid4().hex[:6]}@demo.licet.localhost"
    admin.fill("#invite-email", email)
    admin.fill("#invite-name", "Newcomer")
    admin.select_option("#invite-role", "auditor")
    admin.click("#invite")
    expect(admin.locator("#step-up-code")).to_be_visible(timeout=10_000)
    shot(admin, "admin-step-up")
    admin.fill("#step-up-code", fresh_code(demo, "admin"))
    admin.click("#step-up-confirm")
    expect(admin.locator("#shown-once")).to_contain_text("/invite?token=", timeout=10_000)
    expect(admin.locator("#step-up-code")).to_be_hidden()
    token = admin.locator("#shown-once").inner_text().split("token=")[1]
    row = admin.locator(f"#people .person-row[data-email='{email}']")
    expect(row.locator(".person-role")).to_have_value("auditor")
    row.locator(".person-role").select_option("approver")
    done(admin, demo, "admin", admin.locator("#admin-notice", has_text=f"{email} is now approver"))
    row.locator(".person-disable").click()
    done(admin, demo, "admin", row.locator(".person-enable"))
    row.locator(".person-reinvite").click()
    done(admin, demo, "admin", admin.locator("#admin-notice", has_text="earlier links no longer work"))
    with demo.agent(demo.data["owner_key"]) as owner:
        people = {u["email"]: u for u in owner.get("/v1/users").json()["users"]}
        assert people[email]["role"] == "approver" and people[email]["disabled_at"] is not None
        stale = owner.post("/v1/auth/invitations/accept", json={"token": token, "password": f"x-{uuid.uuid4()}"})
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_invitation", stale.text
    # A key's rotation shows the new secret once; the old one stops at once.
    step_up(admin, demo, "admin")
    made = browser_fetch(admin, "POST", "/v1/keys", {"name": "to-rotate", "role": "agent", "principal_id": "agent:rot"})
    assert made["status"] == 201, made
    admin.reload()
    admin.locator("#keys .key-row[data-name='to-rotate'] .key-rotate").first.click()
    done(admin, demo, "admin", admin.locator("#admin-notice", has_text="rotated"))
    expect(admin.locator("#shown-once")).to_have_text(re.compile(r"^licet_"))
    with demo.agent(made["body"]["secret"]) as old, demo.agent(admin.locator("#shown-once").inner_text()) as new:
        assert old.get("/v1/approvals").status_code == 401
        assert new.get("/v1/approvals").status_code == 200
    # A webhook for opened approvals; an approval opens; its delivery fails once (500), is retried, arrives.
    url, answered = receiver
    admin.fill("#hook-url", url)
    admin.check("#hook-event-opened")
    admin.click("#create-hook")
    done(admin, demo, "admin", admin.locator("#hooks .hook", has_text=url))
    expect(admin.locator("#shown-once")).to_contain_text("whsec_")
    with demo.agent() as agent:
        opened = agent.post("/v1/decide", json={"action": "payments.transfer", "resource": "/accounts/acc-002", "args": {
            "amount": 6100, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}}).json()
    assert opened["decision"] == "require_approval", opened
    deadline = time.monotonic() + 30
    while answered[-2:] != [500, 204] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answered == [500, 204], answered
    admin.locator("#hooks .hook", has_text=url).locator(".hook-deliveries").click()
    delivery = admin.locator("#deliveries .delivery-row").first
    expect(delivery.locator(".delivery-state")).to_have_text("delivered", timeout=10_000)
    expect(delivery.locator(".delivery-attempts")).to_have_text("2")  # the 500, then the retry
    expect(delivery.locator(".delivery-event")).to_have_text("opened")
    # A test event goes the same way: its delivery row shows at once, then it arrives (the receiver's 204).
    admin.locator("#hooks .hook", has_text=url).locator(".hook-test").click()
    done(admin, demo, "admin", admin.locator("#admin-notice", has_text=f"Test event queued for {url}"))
    tested = admin.locator("#deliveries .delivery-row").filter(has=admin.locator(".delivery-event", has_text="test"))
    expect(tested).to_have_count(1)
    deadline = time.monotonic() + 30
    while len(answered) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answered == [500, 204, 204], answered
    admin.locator("#hooks .hook", has_text=url).locator(".hook-deliveries").click()
    expect(tested.locator(".delivery-state")).to_have_text("delivered", timeout=10_000)
    expect(tested.locator(".delivery-attempts")).to_have_text("1")
    shot(admin, "admin-webhooks")
    # Approval defaults: escalate to the owner after 10 minutes.
    admin.fill("#settings-escalate_after_seconds", "600")
    admin.select_option("#settings-escalate-role", "owner")
    admin.click("#save-settings")
    done(admin, demo, "admin", admin.locator("#admin-notice", has_text="Approval defaults saved"))
    saved = browser_fetch(admin, "GET", "/v1/approvals/settings")["body"]
    assert saved["escalate_after_seconds"] == 600 and saved["escalate_role"] == "owner"
    admin.context.close()


def test_delegation_issued_after_the_kernels_check_and_revoked_after_its_cascade(browser: Any, demo: Demo) -> None:
    owner = signed_in(browser, demo, "owner")
    me = "user:owner@demo.licet.localhost"
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    owner.goto("/delegations")
    owner.fill("#grant-delegate", me, timeout=15_000)  # to oneself, so the page can re-delegate it below
    owner.fill("#grant-expires", later)
    owner.fill("#grant-depth", "1")
    owner.click("#check-grant")
    expect(owner.locator("#grant-check")).to_contain_text("nothing to attenuate", timeout=15_000)
    owner.click("#issue-grant")
    expect(owner.locator("#delegations-notice")).to_contain_text("issued", timeout=10_000)
    root = browser_fetch(owner, "GET", "/v1/delegations")["body"]["grants"][-1]
    # A re-delegation that widens the scope: the kernel's counterexample, and no way to issue it.
    owner.fill("#grant-delegate", "agent:helper")
    owner.select_option("#grant-parent", root["id"])
    owner.fill("#grant-expires", later)
    owner.fill("#grant-depth", "0")  # the root allows one more level: this one is the last
    owner.fill("#grant-scope", "- id: wide\n  effect: permit\n  action: [payments.refund]\n  resource: ['/accounts/*']"
                               "\n  when: args.amount <= 1000\n")
    owner.click("#check-grant")
    expect(owner.locator("#grant-check")).to_contain_text("Widens its parent", timeout=30_000)
    expect(owner.locator("#grant-check")).to_contain_text("scope permits a request")
    expect(owner.locator("#grant-counterexample")).to_contain_text('"payments.refund"')
    amount = json.loads(owner.locator("#grant-counterexample").inner_text())["args"]["amount"]
    assert 100 < amount <= 1000, amount  # allowed by the child (<= 1000), not by the root (<= 100)
    expect(owner.locator("#issue-grant")).to_have_count(0)
    # A narrower one: proved, then issued under the root.
    owner.fill("#grant-scope", "- id: narrow\n  effect: permit\n  action: [payments.refund]\n  resource: ['/accounts/*']"
                               "\n  when: args.amount <= 10\n")
    owner.click("#check-grant")
    expect(owner.locator("#grant-check")).to_contain_text("kernel proved", timeout=30_000)
    owner.click("#issue-grant")
    expect(owner.locator("#delegations-notice")).to_contain_text("agent:helper", timeout=10_000)
    child = owner.locator(".grant[data-depth='1']").filter(has_text="agent:helper").first
    expect(child).to_be_visible()
    shot(owner, "delegations-1280")
    # Revoking the root: the preview names both grants, and nothing is revoked until confirmed.
    owner.locator(f".grant[data-id='{root['id']}'] .grant-revoke").click()
    expect(owner.locator("#cascade .cascade-item")).to_have_count(2, timeout=10_000)
    live = [g for g in browser_fetch(owner, "GET", "/v1/delegations")["body"]["grants"] if g["revoked_at"] is None]
    assert root["id"] in {g["id"] for g in live}
    owner.click("#confirm-revoke")
    expect(owner.locator("#delegations-notice")).to_contain_text("Revoked 2 grant(s)", timeout=10_000)
    expect(owner.locator(f".grant[data-id='{root['id']}'] .grant-state")).to_contain_text("revoked")
    owner.context.close()


def test_pages_at_a_phone_width(browser: Any, demo: Demo) -> None:
    owner = signed_in(browser, demo, "owner", width=390)
    for path, marker in (("/account", "#add-passkey"), ("/admin", "#create-key"), ("/delegations", "#check-grant")):
        owner.goto(path)
        expect(owner.locator(marker)).to_be_visible(timeout=15_000)
        width = owner.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"{path} scrolls sideways at 390 px ({width} px wide)"
        shot(owner, f"{path.strip('/')}-390")
    owner.context.close()
