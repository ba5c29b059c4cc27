"""Each role, each page: the dashboard offers exactly what the API allows that role, and the API refuses
the rest when the page's calls are made anyway (issue 18: "hide the button *and* have the server refuse").

The oracle is the server's role table (`licet.server.roles`, which `docs/roles.md` is generated from and
`tests/test_roles.py` checks route by route). Its own demo server; the owner invites a policy author and
an auditor, who accept in their own browser contexts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from licet.dashboard.layout import NAV
from licet.server.roles import allowed
from tests.test_dashboard import Demo, browser, browser_fetch, demo, playwright_api, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
ROLES = ("owner", "admin", "policy_author", "approver", "auditor")
# The call each page makes first; a person who may not make it sees the API's refusal.
PAGE_CALLS = {"/approvals": ("/v1/approvals?state=pending", "#approvals-error"),
              "/audit": ("/v1/audit", "#explorer-error"),
              "/admin": ("/v1/keys", "#admin-error"),
              "/delegations": ("/v1/delegations", "#delegations-error")}
# The writes of the administration and delegation pages, each with the permission the API checks, and a
# body it refuses as invalid (a role that holds the permission gets a 4xx that is not `forbidden`, and
# nothing changes). Nil ids: the routes check the role before looking anything up.
NIL = "00000000-0000-0000-0000-000000000000"
ADMIN_WRITES = (("POST", "/v1/users", "users.manage"), ("POST", f"/v1/users/{NIL}/role", "users.manage"),
                ("POST", f"/v1/users/{NIL}/disable", "users.manage"),
                ("POST", f"/v1/users/{NIL}/invitation", "users.manage"), ("POST", "/v1/keys", "keys.manage"),
                ("POST", f"/v1/keys/{NIL}/revoke", "keys.manage"), ("POST", f"/v1/keys/{NIL}/rotate", "keys.manage"),
                ("POST", "/v1/webhooks", "webhooks.manage"), ("POST", f"/v1/webhooks/{NIL}/test", "webhooks.manage"),
                ("PUT", "/v1/approvals/settings", "webhooks.manage"),
                ("POST", "/v1/delegations?dry_run=true", "delegations.write"),
                ("POST", f"/v1/delegations/{NIL}/revoke?dry_run=true", "delegations.write"))


@pytest.fixture(scope="module")
def pages(browser: Any, demo: Demo) -> Iterator[dict[str, Any]]:
    """A signed-in page for each role: the demo's people, and two people the owner invites."""
    owner = sign_in(browser, demo, "owner")
    found = {"owner": owner, "admin": sign_in(browser, demo, "admin"), "approver": sign_in(browser, demo, "ana")}
    for role in ("policy_author", "auditor"):
        made = browser_fetch(owner, "POST", "/v1/users", {"email": f"{role}-{uuid.uuid4().hex[:6]}@demo.licet.localhost",
                                                          "display_name": role, "role": role})
        assert made["status"] == 201, made
        context = browser.new_context(base_url=demo.url, viewport={"width": 1280, "height": 900})
        accepted = context.request.post("/v1/auth/invitations/accept", data={
            "token": made["body"]["invitation"]["token"], "password": f"licet-{uuid.uuid4().hex}", "use_cookie": True})
        assert accepted.status == 201, accepted.text()
        found[role] = context.new_page()
        found[role].goto("/account")  # a page of the site: its cookie is what browser_fetch sends
    yield found
    for page in found.values():
        page.context.close()


@pytest.mark.parametrize("role", ROLES)
def test_navigation_offers_exactly_the_pages_the_role_may_read(pages: dict[str, Any], role: str) -> None:
    page = pages[role]
    page.goto("/account")
    expect(page.locator("#whoami")).to_contain_text(role, timeout=15_000)
    for label, path, permission in NAV:
        link = page.locator(f"#nav-{path.strip('/') or 'overview'}")
        if permission is None or allowed(role, permission):
            expect(link).to_have_text(label)
        else:
            expect(link).to_have_count(0)


@pytest.mark.parametrize("role", ROLES)
def test_a_page_the_role_may_not_read_shows_the_apis_refusal(pages: dict[str, Any], role: str) -> None:
    page = pages[role]
    for path, (call, refusal) in PAGE_CALLS.items():
        permission = next(p for _, route, p in NAV if route == path)
        assert permission is not None, f"{path} is a page some role may not read"
        answer = browser_fetch(page, "GET", call)
        page.goto(path)
        if allowed(role, permission):
            assert answer["status"] == 200, (role, path, answer)
            expect(page.locator("h1")).to_be_visible(timeout=15_000)
            expect(page.locator(refusal)).to_have_count(0)
        else:
            assert answer["status"] == 403 and answer["body"]["error"]["code"] == "forbidden", (role, path, answer)
            expect(page.locator(refusal)).to_contain_text("forbidden", timeout=15_000)


@pytest.mark.parametrize("role", ROLES)
def test_vote_buttons_only_for_who_the_api_lets_vote(pages: dict[str, Any], demo: Demo, role: str) -> None:
    """The demo's pending transfer needs two approvers of role `approver`: only they see Approve and Deny;
    everyone else who may see the queue is told why not, and the API refuses their vote."""
    page = pages[role]
    with demo.agent() as agent:
        pending = agent.get("/v1/approvals", params={"state": "pending"}).json()["approvals"]
    approval = next(a for a in pending if a["roles"] == ["approver"])
    card = page.locator(f".approval[data-approval-id='{approval['id']}']")
    if role == "approver":
        page.goto("/approvals")
        expect(card.locator(".approve")).to_be_visible(timeout=15_000)
        expect(card.locator(".deny")).to_be_visible()
        return  # the vote itself is tested in tests/test_dashboard.py (quorum flow)
    vote = browser_fetch(page, "POST", f"/v1/approvals/{approval['id']}/approve", {"reason": None})
    assert vote["status"] == 403, (role, vote)
    if not allowed(role, "approvals.vote"):
        assert vote["body"]["error"]["code"] == "forbidden", vote
    else:  # the role votes, but not on this approval (or not without a fresh second factor)
        assert vote["body"]["error"]["code"] in ("not_an_approver", "step_up_required"), vote
    if not allowed(role, "approvals.status"):
        return
    page.goto("/approvals")
    expect(card.locator(".why-not")).to_be_visible(timeout=15_000)
    expect(card.locator(".approve")).to_have_count(0)
    expect(card.locator(".deny")).to_have_count(0)


@pytest.mark.parametrize("role", ROLES)
def test_administrative_writes_are_refused_by_the_api_to_roles_without_them(pages: dict[str, Any], role: str) -> None:
    """What /admin and /delegations would send, sent from the role's own browser session: `forbidden` exactly
    where the role table says so; the page offers the delegation form only where the API would take it."""
    page = pages[role]
    for method, path, permission in ADMIN_WRITES:
        answer = browser_fetch(page, method, path, {"role": "no such role", "url": "not a url"})
        if allowed(role, permission):
            assert answer["status"] != 403 or answer["body"]["error"]["code"] == "step_up_required", \
                (role, method, path, answer)
            assert 400 <= answer["status"] < 500, (role, method, path, answer)
        else:
            assert answer["status"] == 403 and answer["body"]["error"]["code"] == "forbidden", \
                (role, method, path, answer)
    page.goto("/delegations")
    expect(page.locator("h1")).to_have_text("Delegations", timeout=15_000)
    expect(page.locator("#check-grant")).to_have_count(1 if allowed(role, "delegations.write") else 0)
