"""Signing in, in a real browser (Debian's Chromium, Playwright) against a real `licet serve --demo`:
passkeys through Chromium's virtual authenticator (registered on /account, then signing in alone, as a
second factor and as the approvals page's step-up, and refused once removed), backup codes (made on
/account after a step-up in place, each good once), an invitation accepted with TOTP enrolment, and the
throttle's lock shown as such.

Its own server (module-scoped `demo` fixture from tests/test_dashboard.py); each demo person signs in
with a TOTP code once here (a code is good once)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import pyotp

from tests.test_dashboard import (
    STEP_UP_SECONDS,
    Demo,
    browser,
    browser_fetch,
    demo,
    playwright_api,
    shot,
    sign_in,
    virtual_authenticator,
)

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
TRANSFER = {"action": "payments.transfer", "resource": "/accounts/acc-002",
            "args": {"amount": 5555, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}}


def _stale(since: float) -> None:
    """Wait until an MFA passed at `since` (time.monotonic) is older than the server's step-up window."""
    time.sleep(max(0.0, STEP_UP_SECONDS + 1 - (time.monotonic() - since)))


def _sign_out(page: Any) -> None:
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible(timeout=15_000)


def _password(page: Any, person: dict[str, str]) -> None:
    """The sign-in page's first step, from a signed-out page; waits for the second-factor step."""
    page.goto("/login?tenant=demo")
    page.fill("#email", person["email"])
    page.fill("#password", person["password"])
    page.click("#sign-in")
    page.wait_for_selector("#code", timeout=15_000)


def test_a_passkey_registered_on_the_account_page_signs_in_alone_steps_up_and_stops_once_removed(
        browser: Any, demo: Demo) -> None:
    ana = demo.person("ana")
    page = sign_in(browser, demo, "ana")
    cdp, authenticator = virtual_authenticator(page)
    page.goto("/account")
    expect(page.locator("#no-passkeys")).to_be_visible(timeout=15_000)
    page.fill("#passkey-name", "Ana's laptop")
    page.click("#add-passkey")
    expect(page.locator("#passkeys .passkey-name")).to_have_text(["Ana's laptop"], timeout=15_000)
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(stored) == 1 and stored[0]["isResidentCredential"] and stored[0]["rpId"] == "localhost"
    listed = browser_fetch(page, "GET", "/v1/auth/passkeys")
    assert [k["name"] for k in listed["body"]["passkeys"]] == ["Ana's laptop"]
    page.locator(".passkey-new-name input").fill("Ana's work laptop")
    page.locator(".passkey-rename").click()
    expect(page.locator("#passkeys .passkey-name")).to_have_text(["Ana's work laptop"], timeout=10_000)
    assert [k["name"] for k in browser_fetch(page, "GET", "/v1/auth/passkeys")["body"]["passkeys"]] == [
        "Ana's work laptop"]
    shot(page, "account-passkey")

    # The passkey alone signs her in (no email, password or code).
    _sign_out(page)
    page.goto("/login?tenant=demo")
    page.click("#passkey-sign-in")
    expect(page.locator("#whoami")).to_contain_text(ana["email"], timeout=15_000)
    signed_in_at = time.monotonic()
    assert browser_fetch(page, "GET", "/v1/auth/me")["body"]["session"]["method"] == "passkey"

    # Once her MFA is stale, a vote asks for a step-up in place, and the passkey gives it.
    with demo.agent() as agent:
        opened = agent.post("/v1/decide", json=TRANSFER).json()
    assert opened["decision"] == "require_approval", opened
    card = f".approval[data-approval-id='{opened['approval']['id']}']"
    page.goto("/approvals")
    expect(page.locator(card)).to_be_visible(timeout=15_000)
    _stale(signed_in_at)
    page.locator(f"{card} .approve").click()
    page.click("#step-up-passkey", timeout=10_000)
    expect(page.locator("#approvals-notice")).to_contain_text("1 of 2", timeout=10_000)
    assert browser_fetch(page, "GET", f"/v1/approvals/{opened['approval']['id']}")["body"]["approvals"] == 1

    # After a password, the passkey is a second factor too.
    _sign_out(page)
    _password(page, ana)
    page.click("#passkey-check")
    expect(page.locator("#whoami")).to_contain_text(ana["email"], timeout=15_000)

    # Removed (MFA is fresh from the passkey just now), it no longer signs anybody in.
    page.goto("/account")
    page.locator(".passkey-remove").click()
    expect(page.locator("#no-passkeys")).to_be_visible(timeout=10_000)
    assert browser_fetch(page, "GET", "/v1/auth/passkeys")["body"]["passkeys"] == []
    _sign_out(page)
    page.goto("/login?tenant=demo")
    page.click("#passkey-sign-in")
    expect(page.locator("#sign-in-error")).to_contain_text("unknown passkey", timeout=15_000)
    page.context.close()


def test_backup_codes_made_after_a_step_up_each_sign_in_once(browser: Any, demo: Demo) -> None:
    ben = demo.person("ben")
    page = sign_in(browser, demo, "ben")
    signed_in_at = time.monotonic()
    page.goto("/account")
    expect(page.locator("#backup-codes-left")).to_have_text("0", timeout=15_000)
    _stale(signed_in_at)
    page.click("#new-backup-codes")
    # A code later than the sign-in's (each is good once).
    page.fill("#step-up-code", pyotp.TOTP(ben["totp_secret"]).at(time.time() + 30), timeout=10_000)
    page.click("#step-up-confirm")
    expect(page.locator("#backup-codes")).to_be_visible(timeout=10_000)
    codes = page.locator("#backup-codes").inner_text().split()
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    expect(page.locator("#backup-codes-left")).to_have_text("10")
    shot(page, "account-backup-codes")

    _sign_out(page)
    _password(page, ben)
    page.fill("#code", codes[0])
    page.click("#verify-code")
    expect(page.locator("#whoami")).to_contain_text(ben["email"], timeout=15_000)
    me = browser_fetch(page, "GET", "/v1/auth/me")["body"]
    assert me["backup_codes_left"] == 9 and me["session"]["stage"] == "active"

    _sign_out(page)
    _password(page, ben)
    page.fill("#code", codes[0])
    page.click("#verify-code")
    expect(page.locator("#sign-in-error")).to_contain_text("invalid_code", timeout=15_000)
    page.fill("#code", codes[1])
    page.click("#verify-code")
    expect(page.locator("#whoami")).to_contain_text(ben["email"], timeout=15_000)
    page.context.close()


def test_an_invited_person_sets_a_password_enrols_totp_and_lands_signed_in(browser: Any, demo: Demo) -> None:
    owner = sign_in(browser, demo, "owner")
    invited = {}
    for name in ("carla", "dario"):  # right after the owner's sign-in: adding people needs a recent MFA
        made = browser_fetch(owner, "POST", "/v1/users", {"email": f"{name}@demo.licet.localhost",
                                                          "display_name": name.title(), "role": "approver"})
        assert made["status"] == 201, made
        invited[name] = (made["body"]["user"]["id"], made["body"]["invitation"]["token"])
    owner.context.close()
    password = f"licet-{uuid.uuid4().hex}"

    page = browser.new_context(base_url=demo.url).new_page()
    page.goto(f"/invite?token={invited['carla'][1]}")
    expect(page.locator("#invitation")).to_have_value(invited["carla"][1], timeout=15_000)
    page.fill("#new-password", "password1234")
    page.click("#accept")
    expect(page.locator("#invite-error")).to_contain_text("weak_password", timeout=15_000)
    shot(page, "invite-weak-password")
    page.fill("#new-password", password)
    page.click("#accept")
    expect(page.locator("#totp-qr svg")).to_be_visible(timeout=15_000)
    secret = pyotp.parse_uri(page.locator("#otpauth").inner_text()).secret
    page.fill("#enrol-code", pyotp.TOTP(secret).now())
    page.click("#enrol-confirm")
    expect(page.locator("#backup-codes")).to_be_visible(timeout=10_000)
    assert len(page.locator("#backup-codes").inner_text().split()) == 10
    page.get_by_role("link", name="Continue").click()
    expect(page.locator("#whoami")).to_contain_text("carla@demo.licet.localhost", timeout=15_000)
    me = browser_fetch(page, "GET", "/v1/auth/me")["body"]
    assert me["mfa_methods"] == ["totp"] and me["session"]["stage"] == "active" and me["user"]["role"] == "approver"
    page.context.close()

    # The same invitation again, and one past its expiry, are refused with the API's message.
    database = demo.log.parent / "licet.db"
    with sqlite3.connect(database) as db:
        db.execute("UPDATE invitations SET expires_at = '2000-01-01 00:00:00.000000' WHERE user_id = ?",
                   (invited["dario"][0],))
    for token in (invited["carla"][1], invited["dario"][1]):
        page = browser.new_context(base_url=demo.url).new_page()
        page.goto(f"/invite?token={token}")
        expect(page.locator("#invitation")).to_have_value(token, timeout=15_000)
        page.fill("#new-password", f"licet-{uuid.uuid4().hex}")
        page.click("#accept")
        expect(page.locator("#invite-error")).to_contain_text("the invitation is unknown, used or expired",
                                                              timeout=15_000)
        page.context.close()


def test_five_wrong_passwords_lock_the_account_and_the_page_says_so(browser: Any, demo: Demo) -> None:
    admin = demo.person("admin")
    page = browser.new_context(base_url=demo.url).new_page()
    page.goto("/login?tenant=demo")
    page.fill("#email", admin["email"])
    statuses = []
    for attempt in range(6):  # five wrong passwords, then the right one
        page.fill("#password", admin["password"] if attempt == 5 else f"wrong password {attempt}")
        with page.expect_response(lambda r: r.url.endswith("/v1/auth/login")) as answer:
            page.click("#sign-in")
        statuses.append(answer.value.status)
    assert statuses == [401] * 5 + [429]
    error = page.locator("#sign-in-error")
    expect(error).to_contain_text("Sign-in locked: too many failed attempts: try again in", timeout=10_000)
    expect(error).to_contain_text("too_many_attempts")
    shot(page, "sign-in-locked")
    page.context.close()
