"""docs/sdk.md runs: its ```python blocks, in order, as one script against a live server (the demo's
payments policy, an agent key of the test's own in LICET_URL and LICET_API_KEY, two approvers who
approve whatever the agent asks while the blocks run), in a fresh working directory. And it names
every public name of `licet.sdk`."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from licet import sdk
from tests.server_harness import Person, Tenant

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "sdk.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def python_blocks() -> list[tuple[int, str]]:
    """`(line, source)` of each ```python block of docs/sdk.md, in order."""
    text = DOC.read_text()
    return [(text.count("\n", 0, found.start()) + 2, found.group(2))
            for found in FENCE.finditer(text) if found.group(1) == "python"]


def demo_payments_policy() -> str:
    """The payments policy `licet serve --demo` activates (what a reader of the page runs against)."""
    from licet.server.tenants import _MFA_RULE, _MFA_RULE_FOR_PEOPLE

    source = (ROOT / "examples" / "payments-agent.yaml").read_text()
    assert _MFA_RULE in source
    return source.replace(_MFA_RULE, _MFA_RULE_FOR_PEOPLE)


def approve_until(stop: threading.Event, approvers: list[Person], voted: list[str]) -> None:
    """Until `stop` is set, every pending approval gets both approvers' votes."""
    while not stop.is_set():
        with approvers[0].client() as first:
            pending = [a["id"] for a in first.get("/v1/approvals", params={"state": "pending"}).json()["approvals"]]
        for approval_id in pending:
            for person in approvers:
                with person.client() as client:
                    reply = client.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "docs test"})
                    assert reply.status_code == 200, reply.text
            voted.append(approval_id)
        if not pending:
            stop.wait(0.2)


def test_the_page_has_python_blocks_and_names_every_public_name() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 10
    for line, source in blocks:
        compile(source, f"docs/sdk.md:{line}", "exec")  # a SyntaxError names the block's line
    text = DOC.read_text()
    assert [name for name in sdk.__all__ if f"`{name}" not in text and f"import {name}" not in text
            and f" {name}," not in text] == []


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_every_python_block_runs_in_order(tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    tenant.activate(demo_payments_policy())
    monkeypatch.setenv("LICET_URL", tenant.server.url)
    monkeypatch.setenv("LICET_API_KEY", tenant.key("agent", "agent:payments-bot", ["payments-agent"]))
    monkeypatch.chdir(tmp_path)
    approvers = [tenant.person("approver"), tenant.person("approver")]
    stop, voted = threading.Event(), []
    voter = threading.Thread(target=approve_until, args=(stop, approvers, voted), daemon=True)
    voter.start()
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for line, source in python_blocks():
            try:
                exec(compile(source, f"docs/sdk.md:{line}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"the block at docs/sdk.md:{line} failed: {exc!r}") from exc
    finally:
        stop.set()
        voter.join(30)
    printed = capsys.readouterr().out
    assert len(voted) == 1, "the approvals block asked exactly once"
    assert "transferred 2500 EUR from acc-001" in printed  # the approved transfer ran
    assert "forbid ('sanctioned-countries',)" in printed and "breaks invariant daily-transfer-budget" in printed
    assert "fail closed:" in printed and "('daily-budget',) {'daily-budget': {'spent': 1000" in printed
    assert (tmp_path / "licet-log" / "session.sqlite3").exists()
