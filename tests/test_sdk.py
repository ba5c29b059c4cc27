"""The SDK against a real server (SQLite and PostgreSQL) and in local mode: typed results and
exceptions, guarded tools that run only on permit, pre-flight plans, offline verification, and
failing closed when the server is unreachable."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from licet import kernel, sdk
from licet.kernel.note import parse_verifier_key
from tests.conftest import PAYMENTS
from tests.server_harness import Tenant, free_port


def _transfer_tools(agent: sdk.Agent, ran: list[Any]) -> Any:
    @agent.tool(resource="/accounts/{account}")
    def payments__transfer(account: str, amount: int, currency: str = "EUR") -> str:
        ran.append((account, amount))
        return f"sent {amount}"

    return payments__transfer


def test_guarded_tool_runs_only_on_permit(tenant: Tenant) -> None:
    ran: list[Any] = []
    with sdk.LicetClient(tenant.server.url, tenant.key(roles=["ops"])) as client:
        agent = sdk.Agent(client)
        transfer = _transfer_tools(agent, ran)
        assert transfer("acc-1", 100) == "sent 100"
        first = agent.last_certificate
        assert first is not None and first["decision"] == "permit"
        assert first["request"]["args"] == {"account": "acc-1", "amount": 100, "currency": "EUR"}
        first["decision"] = "tampered"  # a copy: the agent's record is unchanged
        assert agent.last_certificate["decision"] == "permit"  # type: ignore[index]
        with pytest.raises(sdk.ApprovalRequired) as approval:
            transfer("acc-1", 2000)
        assert approval.value.decision.rules == ("large-transfer",)
        with pytest.raises(sdk.Forbidden):
            transfer("acc-1", 4950)  # over the daily budget
        assert ran == [("acc-1", 100)]
        keys = [kernel.parse_public_key(json.dumps(k)) for k in client.evidence_keys()["certificate_keys"]]
        certificate = agent.last_certificate
        assert certificate is not None and sdk.verified(sdk.verify_certificate(certificate, keys))
        log = client.evidence_keys()["log"]
        proof = client.proof(certificate["id"])
        vkey = parse_verifier_key(log["verifier_key"])
        assert sdk.verified(sdk.verify_bundle(certificate, proof["bundle"], [vkey], origin=log["origin"]))


def test_decide_results_and_preflight(tenant: Tenant) -> None:
    with sdk.LicetClient(tenant.server.url, tenant.key()) as client:
        denied = client.decide("db.drop", "/x")
        assert denied.decision == "deny" and not denied.permitted and denied.log_index is not None
        with pytest.raises(sdk.Denied):
            sdk.errors.raise_for_decision(denied)
        step = {"action": "payments.transfer", "resource": "/accounts/a",
                "args": {"amount": {"symbolic": "int", "min": 1, "max": 2000}, "currency": "EUR"}}
        plan = client.verify_plan([step] * 3)
        assert plan.verdict in ("unsafe", "needs_approval") and not plan.safe
        with pytest.raises(sdk.ApiError) as bad:
            client.decide("payments.transfer", "/a/../../x")
        assert bad.value.status == 422 and bad.value.code == "invalid_request"


def test_async_client(tenant: Tenant) -> None:
    async def run() -> tuple[str, str]:
        async with sdk.AsyncLicetClient(tenant.server.url, tenant.key()) as client:
            result = await client.decide("payments.transfer", "/accounts/a", {"amount": 5, "currency": "EUR"})
            fetched = await client.certificate(result.certificate_id)
            return result.decision, fetched["certificate"]["id"]

    decision, fetched_id = asyncio.run(run())
    assert decision == "permit" and fetched_id


def test_unreachable_server_fails_closed() -> None:
    ran: list[Any] = []
    with sdk.LicetClient(f"http://127.0.0.1:{free_port()}", "licet_x", retries=1, timeout=1) as client:
        agent = sdk.Agent(client)
        transfer = _transfer_tools(agent, ran)
        with pytest.raises(sdk.LicetUnavailable):
            transfer("acc-1", 1)
    assert ran == [] and agent.last_certificate is None


def test_local_mode_issues_the_same_certificates(tmp_path: Path) -> None:
    signer = kernel.Signer(os.urandom(32))
    local = sdk.LocalLicet(kernel.load_policy(PAYMENTS), signer, tmp_path / "log",
                           principal={"id": "agent:local", "role": "ops"}, context={"mfa": True})
    try:
        ran: list[Any] = []
        agent = sdk.Agent(local)
        transfer = _transfer_tools(agent, ran)
        transfer("acc-9", 900)
        with pytest.raises(sdk.ApprovalRequired):
            transfer("acc-9", 1500)
        certificate = agent.last_certificate
        assert certificate is not None and certificate["tenant"] == "local"
        assert sdk.verified(sdk.verify_certificate(certificate, [signer.public_key], policy=local.policy))
        assert local.log.size == 2 and ran == [("acc-9", 900)]
        plan = agent.preflight([("payments.transfer", "/accounts/a", {"amount": 1000, "currency": "EUR"})] * 5)
        assert plan.verdict == "unsafe" and plan.counterexample is not None  # 900 + 5 * 1000 > 5000
    finally:
        local.close()


def test_example_agents_run_offline() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    plain = subprocess.run([sys.executable, "examples/agents/plain_agent.py"], cwd=root, capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[:4] == [
        "permit: transferred 250 EUR from acc-001", "forbid: sanctioned-countries",
        "approval required: large-transfer", "pre-flight: unsafe (first failing step 9, daily-transfer-budget)"]
    loop = subprocess.run([sys.executable, "examples/agents/function_calling.py"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert loop.returncode == 0, loop.stderr
    lines = loop.stdout.splitlines()
    assert lines[0] == "pre-flight of 3 calls: unsafe (first failing step 2)"
    assert lines[1] == "tool payments__refund(ch-1): refunded 40 EUR of ch-1"
    assert lines[2].startswith("tool payments__refund(ch-2): needs approval (large-refund)")
    assert lines[3].startswith("tool payments__refund(ch-3): deny by default deny")
