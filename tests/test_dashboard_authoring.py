"""Authoring in a real browser (Debian's Chromium, Playwright) against a real `licet serve --demo`: the
policy editor (an error shown at its line within a second of typing, fixed, saved as a version), the
activation (the impact shown once more, a step-up asked for in place, then the agent's next decision
uses the new version), the roll-back (what returning to the earlier version changes, shown before it is
done), the query page (yes with its example, no with its proof, as the API answers) and the plan
playground (an unsafe plan shows the failing step and values `licet plan verify` prints; a plan verified
against a draft fails where the draft forbids and passes under the active version).

The tests run in file order on one server (module-scoped `demo` fixture from tests/test_dashboard.py):
the version saved by the first is activated by the second. Screenshots go to `test-artifacts/screenshots/`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from licet import kernel
from tests.test_dashboard import STEP_UP_SECONDS, Demo, browser, demo, playwright_api, shot, sign_in

__all__ = ["browser", "demo"]  # pytest fixtures, re-exported so this module gets its own server

expect = playwright_api.expect
OWNER_READS = ('when: \'"payments-agent" in principal.roles || "treasury-analyst" in principal.roles\'',
               'when: \'"payments-agent" in principal.roles || "treasury-analyst" in principal.roles '
               '|| "owner" in principal.roles\'')
THRESHOLD = ("when: 'args.amount > 1000'", "when: 'args.amount > 5000'")
TYPO = ("when: 'args.amount > 5000'", "when: 'args.amount >> 5000'")
TRANSFER = {"action": "payments.transfer", "resource": "/accounts/acc-001",
            "args": {"amount": 3000, "currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}}


@dataclass
class Owner:
    context: Any
    signed_in: float  # time.monotonic() of the sign-in's second factor


@pytest.fixture(scope="module")
def owner(browser: Any, demo: Demo) -> Iterator[Owner]:
    """The demo owner's browser context, signed in once (a TOTP code is good once)."""
    page = sign_in(browser, demo, "owner")
    found = Owner(page.context, time.monotonic())
    page.close()
    yield found
    found.context.close()


@pytest.fixture(scope="module")
def payments(demo: Demo) -> dict[str, Any]:
    """The demo's payments policy as the API lists it, with v2's document."""
    with demo.agent(demo.data["owner_key"]) as api:
        listed = api.get("/v1/policies").json()
        policy = api.get(f"/v1/policies/{listed['active']['policy_id']}").json()
        source = api.get(f"/v1/policies/{policy['id']}/versions/2").json()["source"]
    assert policy["name"] == "payments-agent" and source.count(THRESHOLD[0]) == 1 and OWNER_READS[0] in source
    return {**policy, "v2": source, "v3": source.replace(*THRESHOLD).replace(*OWNER_READS)}


def _open(owner: Owner, path: str, loaded: str, width: int = 1280) -> Any:
    page = owner.context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(path)
    expect(page.locator(loaded).first).to_be_visible(timeout=30_000)
    return page


def _type_document(page: Any, text: str) -> None:
    """Replace the editor's document as a person would: select all, then type (one input event)."""
    page.locator("#policy-editor .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def test_an_error_shows_at_its_line_within_a_second_then_the_fixed_draft_is_saved(
    owner: Owner, demo: Demo, payments: dict[str, Any]
) -> None:
    page = _open(owner, "/editor", "#policy-editor .cm-content")
    expect(page.locator("#editor-status")).to_contain_text("Valid: policy payments-agent", timeout=15_000)
    expect(page.locator("#policy-editor .cm-lineNumbers .cm-gutterElement").nth(5)).to_be_visible()
    broken = payments["v3"].replace(*TYPO)
    with pytest.raises(kernel.PolicyError) as refused:
        kernel.load_policy(broken, "source")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if ">>" in text)
    assert refused.value.line == line  # the kernel points at the typo's own line
    _type_document(page, broken)
    started = time.monotonic()
    error = page.locator(f"#problems li[data-severity='error'][data-line='{line}']")
    expect(error).to_be_visible(timeout=1_000)  # 300 ms of debounce and the validation round trip
    shown_after = time.monotonic() - started
    assert shown_after < 1.0, shown_after
    expect(error).to_have_attribute("data-column", str(refused.value.column))
    expect(error).to_contain_text(f"line {line}, column {refused.value.column}")
    expect(page.locator("#editor-status")).to_contain_text(f"1 error, at line {line}")
    expect(page.locator("#policy-editor .cm-lint-marker-error")).to_have_count(1)  # in the gutter too
    expect(page.locator("#save-version")).to_be_disabled()
    error.locator("button").click()  # moves the cursor to the error
    assert page.evaluate("window.licetEditor.cursor('policy-editor')") == {
        "line": line, "column": refused.value.column}
    shot(page, "editor-error-1280")
    _type_document(page, payments["v3"])
    expect(page.locator("#editor-status")).to_contain_text("Valid: policy payments-agent", timeout=5_000)
    expect(page.locator("#problems li[data-severity='error']")).to_have_count(0)
    page.click("#save-version")
    expect(page.locator("#editor-notice")).to_contain_text("Saved as payments-agent v3")
    with demo.agent(demo.data["owner_key"]) as api:
        saved = api.get(f"/v1/policies/{payments['id']}/versions/3").json()
    assert saved["source"] == payments["v3"] and not saved["active"]
    page.close()


def test_the_editor_lists_the_analysis_warnings_at_their_rules(owner: Owner, payments: dict[str, Any]) -> None:
    page = _open(owner, "/editor", "#policy-editor .cm-content")
    expect(page.locator("#editor-status")).to_contain_text("Valid", timeout=15_000)
    # A rule no request can reach, and an approval role nobody who votes holds.
    extra = ("\n  - id: never\n    effect: permit\n    action: payments.read\n    when: 'args.amount > 5 && args.amount < 2'\n"
             "  - id: nobody-approves\n    effect: require_approval\n    action: payments.refund\n"
             "    when: 'args.amount > 100000'\n"
             "    approval: {quorum: 1, role: treasurer}\n")
    text = payments["v3"].replace("\ninvariants:", extra + "\ninvariants:")
    lines = text.splitlines()
    _type_document(page, text)
    warnings = page.locator("#problems li[data-severity='warning']")
    expect(warnings).to_have_count(2, timeout=10_000)
    for rule in ("never", "nobody-approves"):
        at = lines.index(f"  - id: {rule}") + 1
        expect(page.locator(f"#problems li[data-severity='warning'][data-line='{at}']")).to_contain_text(
            f"rule {rule}:")
    expect(page.locator("#problems")).to_contain_text("treasurer")
    expect(page.locator("#editor-status")).to_contain_text("2 warnings")
    page.close()


def test_activation_shows_the_impact_asks_for_a_step_up_and_the_next_decision_uses_it(
    owner: Owner, demo: Demo, payments: dict[str, Any]
) -> None:
    with demo.agent() as agent:
        before = agent.post("/v1/decide", json=TRANSFER).json()
    assert before["decision"] == "require_approval"  # v2: above 1 000 needs two approvers
    time.sleep(max(0.0, STEP_UP_SECONDS + 1 - (time.monotonic() - owner.signed_in)))  # the sign-in's MFA goes stale
    page = _open(owner, "/editor", "#policy-editor .cm-content")
    expect(page.locator("#activate-version option")).to_have_count(3, timeout=15_000)
    page.select_option("#activate-version", "3")
    page.click("#activate")
    expect(page.locator("#confirm-impact")).to_contain_text("permits requests", timeout=60_000)
    expect(page.locator("#confirm-gained .example").first).to_be_visible()
    expect(page.locator("#confirm-gained")).to_contain_text("payments.")
    shot(page, "editor-activate-impact")
    page.click("#confirm-activation")
    page.wait_for_selector("#step-up-code", timeout=10_000)
    page.fill("#step-up-code", pyotp.TOTP(demo.person("owner")["totp_secret"]).at(time.time() + 30))
    page.click("#step-up-confirm")
    expect(page.locator("#editor-notice")).to_contain_text("v3 is now active", timeout=10_000)
    v3 = kernel.load_policy(payments["v3"], "source")
    with demo.agent() as agent:
        after = agent.post("/v1/decide", json=TRANSFER).json()
    assert after["decision"] == "permit", after  # v3: only above 5 000
    assert after["certificate"]["policy"]["hash"] == v3.hash
    expect(page.locator("#active-label")).to_contain_text("payments-agent v3")
    page.close()


def test_roll_back_shows_what_returning_to_the_earlier_version_changes_before_it_is_done(
    owner: Owner, demo: Demo, payments: dict[str, Any]
) -> None:
    with demo.agent(demo.data["owner_key"]) as api:
        listed = api.get("/v1/policies").json()
        diff = api.post(f"/v1/policies/{payments['id']}/diff", json={"version": 2, "max_examples": 3}).json()
    assert (listed["active"]["number"], listed["rollback_to"]["number"]) == (3, 2)  # after the activation test
    assert diff["answer"] == "differs" and diff["lost"] and not diff["gained"]  # v2 permits less than v3
    page = _open(owner, "/editor", "#policy-editor .cm-content")
    page.click("#rollback")
    expect(page.get_by_role("dialog")).to_contain_text("Roll back to v2?")
    expect(page.locator("#confirm-impact")).to_contain_text("v2 permits requests the active payments-agent v3",
                                                            timeout=60_000)
    expect(page.locator("#confirm-impact")).to_contain_text(f"refuses requests it permits ({len(diff['lost'])} shown)")
    expect(page.locator("#confirm-lost .example")).to_have_count(len(diff["lost"]))
    expect(page.locator("#confirm-gained .example")).to_have_count(0)
    shot(page, "editor-rollback-impact")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    with demo.agent(demo.data["owner_key"]) as api:
        assert api.get("/v1/policies").json()["active"]["number"] == 3  # nothing rolled back
    page.close()


def _query(page: Any, action: str, resource: str, when: str) -> None:
    page.fill("#query-action", action)
    page.fill("#query-resource", resource)
    page.fill("#query-when", when)
    page.click("#query-ask")


@pytest.mark.parametrize("width", [1280, 390])
def test_query_answers_yes_with_its_example_and_no_with_its_proof(owner: Owner, demo: Demo, width: int) -> None:
    page = _open(owner, "/query", "#query-ask", width)
    expect(page.locator("#query-version option").first).to_contain_text("The active version (payments-agent v")
    yes = ("payments.transfer", "/accounts/*", "args.amount > 100")
    no = ("payments.transfer", "/accounts/*", 'args.currency == "BTC"')
    with demo.agent(demo.data["owner_key"]) as api:
        answers = [api.post("/v1/policies/query", json={"pattern": dict(zip(("action", "resource", "when"), p,
                                                                              strict=True))}).json()
                   for p in (yes, no)]
    assert [a["answer"] for a in answers] == ["yes", "no"]
    _query(page, *yes)
    expect(page.locator("#query-answer")).to_have_text("yes", timeout=30_000)
    example = answers[0]["example"]["request"]
    expect(page.locator("#query-example")).to_contain_text('"action": "payments.transfer"')
    assert json.loads(page.locator("#query-example").inner_text())["action"] == example["action"]
    expect(page.locator("#query-outcomes")).to_contain_text("permit")
    shot(page, f"query-yes-{width}")
    _query(page, *no)
    expect(page.locator("#query-answer")).to_have_text("no", timeout=30_000)
    expect(page.locator("#query-proof")).to_contain_text(answers[1]["proof"]["result"])
    expect(page.locator("#query-example")).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scroll"
    shot(page, f"query-no-{width}")
    page.close()


def _cli_verify(demo: Demo, owner_email: str, steps: list[dict[str, Any]], tmp: Path) -> tuple[dict[str, Any], str]:
    """`licet plan verify` on the active version's document, as the API verifies for the signed-in owner
    (their principal, a session that passed MFA, from this machine): its JSON and its text."""
    with demo.agent(demo.data["owner_key"]) as api:
        active = api.get("/v1/policies").json()["active"]
        source = api.get(f"/v1/policies/{active['policy_id']}/versions/{active['number']}").json()["source"]
    (tmp / "policy.yaml").write_text(source)
    plan = {"principal": {"id": f"user:{owner_email}", "tenant": "demo", "roles": ["owner"]},
            "context": {"authenticated": True, "mfa": True, "source_ip": "127.0.0.1"}, "steps": steps}
    (tmp / "plan.json").write_text(json.dumps(plan))
    runs = [subprocess.run([sys.executable, "-m", "licet", "plan", "verify", "--policy", "policy.yaml", "--plan",
                            "plan.json", *extra], cwd=tmp, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}) for extra in (["--json"], [])]
    assert [r.returncode for r in runs] == [1, 1], runs  # 1: unsafe
    return json.loads(runs[0].stdout), runs[1].stdout


@pytest.mark.parametrize("width", [1280, 390])
def test_an_unsafe_plan_shows_the_failing_step_and_values_of_licet_plan_verify(
    owner: Owner, demo: Demo, tmp_path: Path, width: int
) -> None:
    page = _open(owner, "/plans", "#plan-steps .plan-step", width)
    page.click("#clear-plan")
    expect(page.locator("#plan-steps .plan-step")).to_have_count(0)
    # Built step by step: a read, then a transfer of a symbolic amount of at most 9 000.
    page.fill("#step-action", "payments.read")
    page.fill("#step-resource", "/accounts/acc-001")
    page.click("#add-step")
    expect(page.locator("#plan-steps .plan-step")).to_have_count(1)
    page.fill("#step-action", "payments.transfer")
    page.fill("#step-resource", "/accounts/acc-002")
    page.fill("#step-args", '{"currency": "EUR", "country": "DE", "beneficiary_iban": "DE89370400440532013000"}')
    page.fill("#symbolic-name", "amount")
    page.select_option("#symbolic-kind", "int")
    page.fill("#symbolic-min", "1")
    page.fill("#symbolic-max", "9000")
    page.click("#add-step")
    expect(page.locator("#plan-steps .plan-step")).to_have_count(2)
    steps = json.loads(page.locator("#plan-json").input_value())
    assert steps[1]["args"]["amount"] == {"symbolic": "int", "min": 1, "max": 9000}
    page.click("#verify-plan")
    expect(page.locator("#plan-verdict")).to_have_text("unsafe", timeout=30_000)
    verdict, text = _cli_verify(demo, demo.person("owner")["email"], steps, tmp_path)
    found = verdict["counterexample"]
    failing = page.locator("#plan-steps .plan-step[data-state='failing']")
    expect(failing).to_have_count(1)
    expect(failing).to_have_attribute("data-index", str(found["step"]))
    assert f"step {found['step']} fails: {found['reason']}" in text
    expect(failing.locator(".reason")).to_have_text(found["reason"])
    printed = re.findall(rf"^  steps\[{found['step']}\]\.(\S+) = (.+)$", text, re.MULTILINE)
    assert len(printed) == len(found["values"]), text
    expect(failing.locator(".value")).to_have_text([f"{name} = {value}" for name, value in printed])
    for earlier in range(found["step"]):
        expect(page.locator(f"#plan-steps .plan-step[data-index='{earlier}']")).to_have_attribute("data-state",
                                                                                               "checked")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scroll"
    shot(page, f"plans-unsafe-{width}")
    page.close()


def test_a_safe_plan_marks_every_step_as_passing(owner: Owner, demo: Demo) -> None:
    page = _open(owner, "/plans", "#plan-steps .plan-step")
    steps = [{"action": "payments.read", "resource": "/accounts/acc-001", "args": {}}]
    page.fill("#plan-json", json.dumps(steps))
    expect(page.locator("#plan-steps .plan-step")).to_have_count(1)
    page.click("#verify-plan")
    with demo.agent(demo.data["owner_key"]) as api:
        active = api.get("/v1/policies").json()["active"]
    expect(page.locator("#plan-verdict")).to_have_text(re.compile("safe|unsafe|needs_approval"), timeout=30_000)
    assert active["number"] == 3  # after the activation test: v3 lets the owner read accounts
    expect(page.locator("#plan-verdict")).to_have_text("safe")
    expect(page.locator("#plan-steps .plan-step[data-state='checked']")).to_have_count(1)
    page.close()


def test_a_plan_verified_against_a_draft_fails_where_the_draft_forbids_and_passes_under_the_active_version(
    owner: Owner, demo: Demo, payments: dict[str, Any]
) -> None:
    draft = payments["v3"].replace("\nrules:\n", "\nrules:\n  - {id: draft-no-reads, effect: forbid, "
                                   "action: [payments.read], resource: ['/accounts/**']}\n", 1)
    with demo.agent(demo.data["owner_key"]) as api:
        stored = api.post("/v1/policies", json={"source": draft})
        assert stored.status_code == 201, stored.text
        number = stored.json()["version"]["number"]
        assert api.get("/v1/policies").json()["active"]["number"] == 3  # the new version is only a draft
    page = _open(owner, "/plans", "#plan-steps .plan-step")
    page.fill("#plan-json", json.dumps([{"action": "payments.read", "resource": "/accounts/acc-001", "args": {}}]))
    expect(page.locator("#plan-steps .plan-step")).to_have_count(1)
    page.select_option("#plan-version", label=f"payments-agent v{number}")
    page.click("#verify-plan")
    expect(page.locator("#plan-verdict")).to_have_text("unsafe", timeout=30_000)
    failing = page.locator("#plan-steps .plan-step[data-state='failing']")
    expect(failing).to_have_attribute("data-index", "0")
    expect(failing.locator(".reason")).to_contain_text("draft-no-reads")
    shot(page, "plans-draft-unsafe")
    page.select_option("#plan-version", index=0)  # the active version
    expect(page.locator("#plan-verdict")).to_have_count(0)  # the draft's verdict no longer shows
    page.click("#verify-plan")
    expect(page.locator("#plan-verdict")).to_have_text("safe", timeout=30_000)
    expect(page.locator("#plan-steps .plan-step[data-index='0']")).to_have_attribute("data-state", "checked")
    page.close()
