"""The decisions and audit explorer in a real browser (Debian's Chromium, Playwright) against a real
`licet serve --demo` on SQLite: a filter (outcome, action glob, time) shows exactly the rows the API lists
for it and lives in the address; Older/Newer walk the API's keyset pages; the CSV and JSON-lines
downloads of a filter equal the API's listing of it; the audit trail filters likewise; an approver sees
the API's refusal of the audit trail; both pages fit a phone's width.

Its own server (module-scoped `demo` fixture from tests/test_dashboard.py); screenshots go to
`test-artifacts/screenshots/`."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from licet.dashboard.pages.explorer import audit_row, chosen, decision_row, shown_time
from tests.test_dashboard import Demo, browser, demo, playwright_api, shot, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
EXTRA = (  # more traffic than the demo's five requests, so pages and filters have something to show
    ("payments.read", "/accounts/acc-002/statements/2025-06", {}),
    ("payments.close", "/accounts/acc-002", {}),
    ("payments.read", "/accounts/acc-003/statements/2025-07", {}),
    ("payments.transfer", "/accounts/acc-002", {"amount": 60, "currency": "EUR", "country": "KP",
                                                "beneficiary_iban": "DE89370400440532013000"}),
    ("payments.read", "/accounts/acc-004/statements/2025-08", {}),
    ("payments.refund", "/accounts/acc-004", {}),
    ("payments.read", "/accounts/acc-005/statements/2025-09", {}),
)


@pytest.fixture(scope="module")
def traffic(demo: Demo) -> Demo:
    with demo.agent() as agent:
        for action, resource, args in EXTRA:
            answer = agent.post("/v1/decide", json={"action": action, "resource": resource, "args": args})
            assert answer.status_code == 200, answer.text
    return demo


@pytest.fixture(scope="module")
def person(browser: Any, traffic: Demo) -> Iterator[Callable[..., Any]]:
    """A new page of demo person `who`'s browser context, signed in once per module (a TOTP code is
    good once, so a second sign-in within its 30 s step would be refused)."""
    contexts: dict[str, Any] = {}

    def open_page(who: str, width: int = 1280) -> Any:
        if who not in contexts:
            contexts[who] = sign_in(browser, traffic, who).context
        page = contexts[who].new_page()
        page.set_viewport_size({"width": width, "height": 900})
        return page

    yield open_page
    for context in contexts.values():
        context.close()


def _owner(demo: Demo) -> Any:
    return demo.agent(demo.data["owner_key"])


def _listing(demo: Demo, route: str, items: str, **filters: Any) -> list[dict[str, Any]]:
    """Every item the API lists for `filters`, newest first, page by page."""
    found: list[dict[str, Any]] = []
    before = None
    with _owner(demo) as owner:
        while True:
            params = {**filters, "limit": 500, **({"before": before} if before is not None else {})}
            answer = owner.get(route, params=params)
            assert answer.status_code == 200, answer.text
            found += answer.json()[items]
            before = answer.json()["next_before"]
            if before is None:
                return found


def _page(demo: Demo, route: str, items: str, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    with _owner(demo) as owner:
        answer = owner.get(route, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()[items], answer.json()["next_before"]


def _shown(page: Any, selector: str, expected: list[str], timeout: float = 15) -> None:
    """Wait until the rows `selector` show exactly the ids `expected` (in order); fail naming both."""
    deadline = time.monotonic() + timeout
    while True:
        ids = page.eval_on_selector_all(selector, "rows => rows.map(r => r.dataset.id)")
        if ids == expected or time.monotonic() > deadline:
            break
        page.wait_for_timeout(100)
    assert ids == expected, f"shown {ids}, the API lists {expected}"


def _decisions(page: Any, expected: list[dict[str, Any]]) -> None:
    _shown(page, "#decisions-table .decision-row", [c["id"] for c in expected])


def _no_sideways_scroll(page: Any, path: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"{path} scrolls sideways at 390 px ({width} px wide)"


def test_rows_as_the_tables_show_them() -> None:
    item = {"id": "c1", "log_index": 7, "issued_at": "2026-01-02T03:04:05.678901", "principal_id": "agent:a",
            "action": "payments.read", "resource": None, "decision": "permit", "rules": ["r1", "r2"]}
    assert decision_row(item) == {"id": "c1", "log_index": "7", "time": "2026-01-02 03:04:05 UTC", "agent": "agent:a",
                                  "action": "payments.read", "resource": "", "decision": "permit", "rules": "r1, r2",
                                  "href": "/certificate?id=c1"}
    assert shown_time("2026-01-02T05:04:05+02:00") == "2026-01-02 03:04:05 UTC"
    assert shown_time("not a time") == "not a time"
    event = {"id": 3, "at": "2026-01-02T03:04:05Z", "actor": "user:x", "action": "auth.login", "target": None,
             "details": {"b": 1, "a": "é"}}
    assert audit_row(event)["details"] == '{"a": "é", "b": 1}' and audit_row(event)["target"] == ""
    assert chosen({"action": " payments.* ", "rule": "", "other": "x", "outcome": None}, ("outcome", "action", "rule")) \
        == {"action": "payments.*"}


def test_outcome_filter_shows_exactly_the_apis_rows_and_lives_in_the_address(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("admin")
    page.goto("/decisions")
    _decisions(page, _page(traffic, "/v1/certificates", "certificates", limit=50)[0])
    page.select_option("#f-outcome", "forbid")
    page.click("#apply-filter")
    expect(page.locator("#filter-in-use")).to_have_text("outcome = forbid", timeout=15_000)
    forbidden = _listing(traffic, "/v1/certificates", "certificates", outcome="forbid")
    assert len(forbidden) >= 2 and {c["decision"] for c in forbidden} == {"forbid"}
    _decisions(page, forbidden)
    assert parse_qs(urlsplit(page.url).query) == {"outcome": ["forbid"]}
    expect(page.locator("#page-summary")).to_contain_text(f"{len(forbidden)} decisions")
    # Each row links to its certificate's page.
    first = page.locator("#decisions-table .decision-row").first.locator(".certificate-link")
    assert first.get_attribute("href") == f"/certificate?id={forbidden[0]['id']}"
    shot(page, "decisions-1280")
    # Reloaded (or shared), the address gives the same view, and the form shows its filter.
    page.reload()
    _decisions(page, forbidden)
    expect(page.locator("#f-outcome")).to_have_value("forbid")
    page.close()


def test_action_glob_and_time_filters(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("admin")
    page.goto("/decisions")
    page.wait_for_selector("#decisions-table .decision-row")
    page.fill("#f-action", "payments.*d")  # payments.read and payments.refund
    page.click("#apply-filter")
    expect(page.locator("#filter-in-use")).to_have_text("action = payments.*d", timeout=15_000)
    matching = _listing(traffic, "/v1/certificates", "certificates", action="payments.*d")
    assert {c["action"] for c in matching} == {"payments.read", "payments.refund"}
    _decisions(page, matching)
    # A time range from the address: since the fourth-newest decision's second (the API keeps UTC).
    newest = _listing(traffic, "/v1/certificates", "certificates")
    since = newest[3]["issued_at"][:19]
    page.goto(f"/decisions?since={since}&action=payments.*")
    _decisions(page, _listing(traffic, "/v1/certificates", "certificates", since=since, action="payments.*"))
    # A datetime-local field normalises its value: a time on the minute drops its seconds.
    expect(page.locator("#f-since")).to_have_value(since.removesuffix(":00"))
    page.close()


def test_older_and_newer_walk_the_apis_pages(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("admin")
    first, after_first = _page(traffic, "/v1/certificates", "certificates", limit=3)
    second, after_second = _page(traffic, "/v1/certificates", "certificates", limit=3, before=after_first)
    third, _ = _page(traffic, "/v1/certificates", "certificates", limit=3, before=after_second)
    assert len(first) == len(second) == len(third) == 3
    page.goto("/decisions?limit=3")
    _decisions(page, first)
    expect(page.locator("#page-newer")).to_be_disabled()
    page.click("#page-older")
    _decisions(page, second)
    expect(page.locator("#page-summary")).to_contain_text("Page 2: 3 decisions")
    page.click("#page-older")
    _decisions(page, third)
    page.click("#page-newer")
    _decisions(page, second)
    page.click("#page-newer")
    _decisions(page, first)
    expect(page.locator("#page-newer")).to_be_disabled()
    # The last page says so and offers no older one.
    everything = _listing(traffic, "/v1/certificates", "certificates")
    page.goto(f"/decisions?limit={len(everything) + 1}")
    _decisions(page, everything)
    expect(page.locator("#page-older")).to_be_disabled()
    expect(page.locator("#page-summary")).to_contain_text("the oldest page")
    page.close()


def _download(page: Any, link: str) -> str:
    with page.expect_download() as info:
        page.click(link)
    path = info.value.path()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_csv_and_jsonl_downloads_equal_the_apis_listing_of_the_filter(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("owner")
    filters = {"action": "payments.*", "outcome": "permit"}
    listed = _listing(traffic, "/v1/certificates", "certificates", **filters)
    assert len(listed) >= 3
    page.goto("/decisions?action=payments.*&outcome=permit&limit=2")  # the export covers every page
    _decisions(page, listed[:2])
    assert page.get_attribute("#export-csv", "href") == "/v1/certificates/export?format=csv&action=payments.%2A&outcome=permit"
    rows = list(csv.DictReader(io.StringIO(_download(page, "#export-csv"))))
    assert [r["id"] for r in rows] == [c["id"] for c in listed]
    for row, item in zip(rows, listed, strict=True):
        assert row == {"log_index": str(item["log_index"]), "id": item["id"], "issued_at": item["issued_at"],
                       "principal_id": item["principal_id"], "action": item["action"], "decision": item["decision"],
                       "rules": " ".join(item["rules"]), "request_hash": item["request_hash"]}
    lines = [json.loads(line) for line in _download(page, "#export-jsonl").splitlines()]
    assert [{k: v for k, v in line.items() if k != "certificate"} for line in lines] == listed
    assert all(line["certificate"]["id"] == line["id"] for line in lines)
    page.close()


def _events(page: Any, expected: list[dict[str, Any]]) -> None:
    _shown(page, "#audit-table .audit-row", [str(e["id"]) for e in expected])


def test_audit_trail_filtered_by_event_glob_and_actor(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("admin")
    page.goto("/audit")
    page.fill("#f-action", "auth.*")
    page.click("#apply-filter")
    expect(page.locator("#filter-in-use")).to_have_text("action = auth.*", timeout=15_000)
    signins = _listing(traffic, "/v1/audit", "events", action="auth.*")
    assert signins and all(e["action"].startswith("auth.") for e in signins)
    _events(page, signins)
    shot(page, "audit-1280")
    actor = signins[0]["actor"]
    page.fill("#f-actor", actor)
    page.click("#apply-filter")
    expect(page.locator("#filter-in-use")).to_contain_text(f"actor = {actor}", timeout=15_000)
    _events(page, _listing(traffic, "/v1/audit", "events", action="auth.*", actor=actor))
    rows = _listing(traffic, "/v1/audit", "events", action="auth.*", actor=actor)
    lines = [json.loads(line) for line in _download(page, "#export-jsonl").splitlines()]
    assert lines == rows
    page.close()


def test_an_approver_sees_the_apis_refusal_of_the_audit_trail(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("ana")
    page.goto("/audit")
    refusal = page.locator("#explorer-error")
    expect(refusal).to_be_visible(timeout=15_000)
    assert refusal.get_attribute("role") == "alert"
    answer = page.request.get(f"{traffic.url}/v1/audit")  # the browser's own session: refused, as shown
    assert answer.status == 403
    expect(refusal).to_contain_text(answer.json()["error"]["code"])
    assert page.locator("#audit-table").count() == 0 and page.locator("#export-csv").count() == 0
    shot(page, "audit-refused")
    # The decisions explorer is theirs to read.
    page.goto("/decisions")
    page.wait_for_selector("#decisions-table .decision-row", timeout=15_000)
    page.close()


@pytest.mark.parametrize("path", ["/decisions", "/audit"])
def test_explorer_fits_a_phone(person: Callable[..., Any], traffic: Demo, path: str) -> None:
    page = person("admin", width=390)
    page.goto(path)
    page.wait_for_selector(".decision-row" if path == "/decisions" else ".audit-row", timeout=15_000)
    _no_sideways_scroll(page, path)
    shot(page, f"{path.strip('/')}-390")
    page.close()


def test_filter_and_pages_are_reachable_by_keyboard(person: Callable[..., Any], traffic: Demo) -> None:
    page = person("admin")
    page.goto("/decisions?limit=3")
    page.wait_for_selector("#decisions-table .decision-row", timeout=15_000)
    reached: set[str] = set()
    wanted = {"f-principal", "f-action", "f-outcome", "f-rule", "f-since", "f-until", "f-limit", "apply-filter",
              "export-csv", "export-jsonl", "page-older"}
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement && document.activeElement.id || ''"))
        if wanted <= reached:
            break
    assert wanted <= reached, f"not reachable by Tab: {sorted(wanted - reached)}"
    page.close()
