"""The policies page in a real browser (Debian's Chromium, Playwright) against a real `licet serve
--demo`: the versions of the demo's payments policy as the API lists them, the YAML of a version, the
side-by-side diff of the example (v1) and the demo's version (v2), and the impact of v1 against the
active v2: the semantic diff's confirmed differences and a replay whose counts are the API's.

Its own server (module-scoped `demo` fixture from tests/test_dashboard.py); the owner signs in once;
screenshots go to `test-artifacts/screenshots/`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from licet.dashboard.pages.policies import side_by_side
from tests.test_dashboard import Demo, browser, demo, playwright_api, shot, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
DEMO_CHANGE = '!("payments-agent" in principal.roles)'  # what the demo's v2 adds to money-needs-mfa


@pytest.fixture(scope="module")
def owner(browser: Any, demo: Demo) -> Iterator[Any]:
    """The demo owner's browser context, signed in once (a TOTP code is good once)."""
    context = sign_in(browser, demo, "owner").context
    yield context
    context.close()


@pytest.fixture(scope="module")
def payments(demo: Demo) -> dict[str, Any]:
    """The demo's payments policy as the API lists it (two versions, v2 active)."""
    with demo.agent(demo.data["owner_key"]) as api:
        listed = api.get("/v1/policies").json()
        policy = api.get(f"/v1/policies/{listed['active']['policy_id']}").json()
    assert policy["name"] == "payments-agent" and [v["number"] for v in policy["versions"]] == [2, 1]
    return dict(policy)


def _open(owner: Any, width: int) -> Any:
    page = owner.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/policies")
    expect(page.locator("#versions .version-row")).to_have_count(2, timeout=30_000)
    return page


def test_the_versions_and_their_yaml_render_on_a_desktop_and_a_phone(owner: Any, payments: dict[str, Any]) -> None:
    for width in (1280, 390):
        page = _open(owner, width)
        for version in payments["versions"]:
            row = page.locator(f"#versions .version-row[data-number='{version['number']}']")
            expect(row).to_contain_text(version["created_by"])
            expect(row).to_contain_text(version["hash"][:19])
            expect(row.get_by_text("active", exact=True)).to_have_count(1 if version["active"] else 0)
        expect(page.locator("#yaml-heading")).to_have_text("Version 2")
        expect(page.locator("#version-yaml")).to_contain_text(DEMO_CHANGE)
        page.get_by_role("button", name="Show YAML of version 1").click()
        expect(page.locator("#yaml-heading")).to_have_text("Version 1")
        expect(page.locator("#version-yaml")).to_contain_text("money-needs-mfa")
        expect(page.locator("#version-yaml")).not_to_contain_text(DEMO_CHANGE)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scroll"
        shot(page, f"policies-{width}")
        page.close()


def test_the_text_diff_shows_the_demo_s_change(owner: Any, demo: Demo, payments: dict[str, Any]) -> None:
    page = _open(owner, 1280)
    expect(page.locator("#diff-summary")).to_contain_text("v1 → v2")
    with demo.agent(demo.data["owner_key"]) as api:
        old, new = (api.get(f"/v1/policies/{payments['id']}/versions/{n}").json()["source"] for n in (1, 2))
    expected = side_by_side(old, new)
    changed = [r for r in expected if r["kind"] != "same"]
    assert changed, "the demo's v2 changes v1"
    expect(page.locator("#text-diff .diff-row")).to_have_count(len(expected))
    marked = page.locator("#text-diff .diff-row[data-kind='changed']")
    expect(marked).to_have_count(sum(1 for r in changed if r["kind"] == "changed"))
    expect(marked.locator(".diff-new")).to_contain_text([DEMO_CHANGE])
    # Another pair: a version against itself has no difference.
    page.select_option("#diff-left", "2")
    page.click("#compare")
    expect(page.locator("#diff-summary")).to_contain_text("v2 → v2: identical text")
    expect(page.locator("#text-diff .diff-row[data-kind='same']")).to_have_count(len(new.splitlines()))
    page.close()


def _replayed(demo: Demo, policy_id: str, **body: Any) -> tuple[Counter[tuple[str, str]], int]:
    """The API's replay, every page: counts by (old, new) outcome and how many changed."""
    counts: Counter[tuple[str, str]] = Counter()
    changed = 0
    with demo.agent(demo.data["owner_key"]) as api:
        while True:
            answer = api.post(f"/v1/policies/{policy_id}/replay", json=body).json()
            counts.update({(c["old"], c["new"]): c["count"] for c in answer["counts"]})
            changed += answer["changed"]
            if answer["next_cursor"] is None:
                return counts, changed
            body = {"version": body["version"], "cursor": answer["next_cursor"]}


def test_the_impact_lists_confirmed_differences_and_the_api_s_replay(
    owner: Any, demo: Demo, payments: dict[str, Any]
) -> None:
    page = _open(owner, 1280)
    page.select_option("#impact-version", "1")
    page.fill("#replay-days", "1")
    page.click("#show-impact")
    expect(page.locator("#replay-summary")).to_contain_text("would change", timeout=90_000)
    with demo.agent(demo.data["owner_key"]) as api:
        semantic = api.post(f"/v1/policies/{payments['id']}/diff", json={"version": 1}).json()
    # v1 (the example verbatim) forbids agent transfers without MFA; the active v2 permits them.
    assert semantic["answer"] == "differs" and semantic["lost"], semantic
    expect(page.locator("#semantic-answer")).to_have_text("differs")
    expect(page.locator("#lost .example")).to_have_count(len(semantic["lost"]))
    expect(page.locator("#gained .example")).to_have_count(len(semantic["gained"]))
    expect(page.locator("#lost")).to_contain_text("payments.transfer")
    counts, changed = _replayed(demo, payments["id"], version=1, days=1)
    assert changed >= 1, "the demo's permitted transfer is forbidden under v1"
    rows = page.locator("#replay-counts .replay-count")
    expect(rows).to_have_count(len(counts))
    shown = Counter(
        {
            (rows.nth(i).get_attribute("data-old"), rows.nth(i).get_attribute("data-new")): int(
                rows.nth(i).locator(".count").inner_text()
            )
            for i in range(rows.count())
        }
    )
    assert shown == counts
    expect(page.locator("#replay-changes .replay-change")).to_have_count(changed)
    expect(page.locator("#replay-summary")).to_contain_text(f"{changed} would change")
    shot(page, "policies-impact")
    page.close()
