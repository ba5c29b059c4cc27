"""The SDK against a real server (SQLite and PostgreSQL) and in local mode: typed results and
exceptions, guarded tools that run only on permit, pre-flight plans, offline verification, and
failing closed when the server is unreachable."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from licet import kernel, sdk
from licet.kernel.note import parse_verifier_key
from tests.conftest import PAYMENTS
from tests.server_harness import Tenant, free_port

TRANSFER = ("payments.transfer", "/accounts/a")


@pytest.fixture(params=("sync", "async"))
def flavour(request: pytest.FixtureRequest) -> str:
    """Which client an SDK test goes through: `LicetClient` or `AsyncLicetClient`."""
    return str(request.param)


def through(flavour: str, url: str, key: str, use: Callable[[Any], Any], **options: Any) -> Any:
    """`use(client)` with a new client of `flavour`; what it returns, awaited if it is awaitable."""

    async def settle(found: Any) -> Any:
        return await found if inspect.isawaitable(found) else found

    if flavour == "sync":
        with sdk.LicetClient(url, key, **options) as client:
            return asyncio.run(settle(use(client)))

    async def run() -> Any:
        async with sdk.AsyncLicetClient(url, key, **options) as client:
            return await settle(use(client))

    return asyncio.run(run())


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


def test_every_client_call_with_either_client(tenant: Tenant, flavour: str) -> None:
    agent_key = tenant.key(principal_id=f"agent:{flavour}")

    def call(use: Callable[[Any], Any], key: str = agent_key) -> Any:
        return through(flavour, tenant.server.url, key, use)

    permit = call(lambda c: c.decide(*TRANSFER, {"amount": 5, "currency": "EUR"}, idempotency_key="k-1"))
    assert isinstance(permit, sdk.DecisionResult) and permit.permitted and not permit.replayed
    again = call(lambda c: c.decide(*TRANSFER, {"amount": 5, "currency": "EUR"}, idempotency_key="k-1"))
    assert again.replayed and again.certificate_id == permit.certificate_id
    found = call(lambda c: c.capabilities(["payments.transfer", "db.drop"]))["actions"]
    assert found["payments.transfer"]["permit"] and not found["db.drop"]["permit"]
    stored = call(lambda c: c.certificate(permit.certificate_id))
    assert stored["certificate"] == permit.certificate and stored["log_index"] == permit.log_index

    keys = call(lambda c: c.trusted_keys())
    assert isinstance(keys, sdk.TrustedKeys)
    assert [k.to_json() for k in keys.certificate_keys] == call(lambda c: c.evidence_keys())["certificate_keys"]
    assert sdk.verified(sdk.verify_certificate(permit.certificate, keys))
    bundle = call(lambda c: c.proof(permit.certificate_id))["bundle"]
    assert sdk.verified(sdk.verify_bundle(permit.certificate, bundle, keys))
    assert not sdk.verified(sdk.verify_bundle(permit.certificate, bundle, keys, origin="elsewhere/licet/x"))

    plan = call(lambda c: c.verify_plan([{"action": TRANSFER[0], "resource": TRANSFER[1],
                                          "args": {"amount": 10, "currency": "EUR"}}]))
    assert isinstance(plan, sdk.PlanResult) and plan.safe
    with pytest.raises(sdk.ApiError) as bad:
        call(lambda c: c.decide("payments.transfer", "/a/../../x"))
    assert bad.value.status == 422 and bad.value.code == "invalid_request"

    author = tenant.key("policy_author", "user:author")
    with tenant.server.client(author) as listing:
        policy_id = listing.get("/v1/policies").json()["policies"][0]["id"]
    compared = call(lambda c: c.diff(policy_id), author)
    assert compared["new"]["number"] == compared["old"]["number"] == 1  # the newest version is the active one

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scope = [{"id": "small", "effect": "permit", "action": ["payments.transfer"], "resource": ["/accounts/*"],
              "when": "args.amount <= 100"}]
    grant = call(lambda c: c.delegate(f"agent:{flavour}-helper", scope, later))["grant"]["id"]
    assert grant in [g["id"] for g in call(lambda c: c.delegations())["grants"]]
    helper = tenant.key(principal_id=f"agent:{flavour}-helper", roles=[])
    assert call(lambda c: c.decide(*TRANSFER, {"amount": 50, "currency": "EUR"}, delegation=grant), helper).permitted
    assert call(lambda c: c.revoke_delegation(grant))["revoked"] == [grant]

    asked = call(lambda c: c.decide(*TRANSFER, {"amount": 2000, "currency": "EUR"}))
    assert asked.decision == "require_approval" and asked.approval_id is not None
    assert call(lambda c: c.approval(asked.approval_id))["state"] == "pending"
    assert asked.approval_id in [a["id"] for a in call(lambda c: c.approvals())["approvals"]]
    with pytest.raises(TimeoutError):
        call(lambda c: c.wait_for_approval(asked.approval_id, timeout=0.2, interval=0.05))
    assert call(lambda c: c.cancel_approval(asked.approval_id))["state"] == "cancelled"
    assert call(lambda c: c.wait_for_approval(asked.approval_id))["state"] == "cancelled"
    size = int(call(lambda c: c.checkpoint())["size"])
    assert size >= 4 and call(lambda c: c.consistency(1, size))["proof"] is not None


def test_an_approval_waited_for_then_presented(tenant: Tenant, flavour: str) -> None:
    key = tenant.key(principal_id=f"agent:{flavour}")
    approvers = [tenant.person("approver"), tenant.person("approver")]
    transfer = {"amount": 2000, "currency": "EUR"}
    asked = through(flavour, tenant.server.url, key, lambda c: c.decide(*TRANSFER, transfer))
    assert asked.decision == "require_approval" and asked.approval_id is not None

    def vote() -> None:
        for person in approvers:
            with person.client() as client:
                voted = client.post(f"/v1/approvals/{asked.approval_id}/approve", json={"reason": "ok"})
                assert voted.status_code == 200, voted.text

    voting = threading.Thread(target=vote)
    voting.start()
    decided = through(flavour, tenant.server.url, key,
                      lambda c: c.wait_for_approval(asked.approval_id, timeout=60, interval=0.1))
    voting.join()
    assert decided["state"] == "granted"
    ran: list[int] = []

    def present(client: Any) -> Any:
        agent = sdk.Agent(client)

        @agent.tool(action="payments.transfer", resource="/accounts/{account}", args=lambda account, **rest: rest)
        async def send(account: str, amount: int, currency: str) -> str:
            ran.append(amount)
            return f"sent {amount}"

        async def run() -> tuple[Any, ...]:
            assert asked.approval_id is not None
            with agent.approved(asked.approval_id):
                sent = await send("a", **transfer)
                permit = agent.last_certificate
                with pytest.raises(sdk.ApprovalRefused) as again:  # an approval is used once
                    await send("a", **transfer)
            with pytest.raises(sdk.ApprovalRequired):  # outside the block nothing is presented
                await send("a", **transfer)
            return sent, permit, again.value.code

        return run()

    sent, permit, refused = through(flavour, tenant.server.url, key, present)
    assert sent == "sent 2000" and ran == [2000] and refused == "approval_used"
    assert permit["decision"] == "permit" and permit["approval"]["id"] == asked.approval_id


def test_the_agent_with_either_client(tenant: Tenant, flavour: str) -> None:
    key = tenant.key(principal_id=f"agent:{flavour}")
    calls = [(*TRANSFER, {"amount": 10, "currency": "EUR"})]
    ran: list[int] = []

    def guarded_async(client: Any) -> Any:
        agent = sdk.Agent(client)

        @agent.tool(action="payments.transfer", resource="/accounts/{account}")
        async def transfer(account: str, amount: int, currency: str = "EUR") -> str:
            ran.append(amount)
            return f"sent {amount}"

        async def run() -> tuple[Any, ...]:
            sent = await transfer("a", 10)
            with pytest.raises(sdk.ApprovalRequired) as asked:
                await transfer("a", 2000)
            return sent, agent.last_certificate, asked.value.approval_id, await agent.preflight_async(calls)

        return run()

    sent, certificate, approval_id, plan = through(flavour, tenant.server.url, key, guarded_async)
    assert sent == "sent 10" and ran == [10] and certificate["decision"] == "require_approval"
    assert approval_id is not None and plan.safe

    def guarded_sync(client: Any) -> Any:
        agent = sdk.Agent(client)

        @agent.tool(action="payments.transfer", resource="/accounts/{account}")
        def transfer(account: str, amount: int, currency: str = "EUR") -> str:
            ran.append(amount)
            return f"sent {amount}"

        return transfer("a", 20), agent.preflight(calls)

    if flavour == "sync":
        sent, plan = through(flavour, tenant.server.url, key, guarded_sync)
        assert sent == "sent 20" and plan.safe and ran == [10, 20]
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match="async def"):
            through(flavour, tenant.server.url, key, guarded_sync)
        with pytest.raises(TypeError, match=r"await agent\.preflight_async"):
            through(flavour, tenant.server.url, key, lambda c: sdk.Agent(c).preflight(calls))
        gc.collect()
    assert ran == [10] and not [w for w in caught if "never awaited" in str(w.message)]


def test_a_decider_that_returns_an_awaitable_unannounced_fails_closed() -> None:
    class Sneaky:
        def decide(self, action: str, resource: str, args: dict[str, Any] | None = None) -> Any:
            return asyncio.sleep(0)

        def verify_plan(self, steps: list[dict[str, Any]]) -> Any:
            return asyncio.sleep(0)

    agent, ran = sdk.Agent(Sneaky()), []

    @agent.tool
    def tool() -> None:
        ran.append(1)

    with pytest.raises(TypeError):
        tool()
    with pytest.raises(TypeError, match="preflight_async"):
        agent.preflight([("a", "/b", {})])
    assert ran == [] and agent.last_certificate is None


def test_unreachable_server_fails_closed(flavour: str) -> None:
    ran: list[Any] = []

    def use(client: Any) -> Any:
        agent = sdk.Agent(client)

        @agent.tool(action="payments.transfer")
        async def transfer(amount: int) -> None:
            ran.append(amount)

        async def run() -> Any:
            with pytest.raises(sdk.LicetUnavailable):
                await transfer(1)
            return agent.last_certificate

        return run()

    assert through(flavour, f"http://127.0.0.1:{free_port()}", "licet_x", use, retries=1, timeout=1) is None
    assert ran == []


def test_retries_repeat_the_same_idempotency_key_then_fail_closed(flavour: str) -> None:
    seen: list[str] = []
    answers = [503, 502, 200]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        status = answers[len(seen) - 1] if len(seen) <= len(answers) else 503
        return httpx.Response(status, json={"decision": "permit", "certificate": {"id": "c"}, "certificate_id": "c"})

    result = through(flavour, "http://licet.test", "k", lambda c: c.decide(*TRANSFER), retries=3,
                     transport=httpx.MockTransport(answer))
    assert result.permitted and len(seen) == 3 and len(set(seen)) == 1
    seen.clear()
    answers[:] = [503, 503]
    with pytest.raises(sdk.LicetUnavailable, match="503"):
        through(flavour, "http://licet.test", "k", lambda c: c.decide(*TRANSFER), retries=1,
                transport=httpx.MockTransport(answer))
    assert len(seen) == 2


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
        awaited = asyncio.run(agent.preflight_async([("payments.transfer", "/accounts/a",
                                                      {"amount": 1000, "currency": "EUR"})] * 5))
        assert (awaited.verdict, awaited.counterexample) == (plan.verdict, plan.counterexample)
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


def _local(log_dir: Path, seed: bytes, principal: str = "agent:local") -> Any:
    return sdk.LocalLicet(kernel.load_policy(PAYMENTS), kernel.Signer(seed), log_dir,
                          principal={"id": principal, "role": "ops"}, context={"mfa": True})


def test_local_mode_keeps_the_budget_across_restarts(tmp_path: Path) -> None:
    seed = os.urandom(32)
    first = _local(tmp_path / "log", seed)
    try:
        assert [first.decide(*TRANSFER, {"amount": 1000, "currency": "EUR"}).decision for _ in range(4)] == ["permit"] * 4
    finally:
        first.close()
    again = _local(tmp_path / "log", seed)
    try:
        plan = again.verify_plan([{"action": TRANSFER[0], "resource": TRANSFER[1],
                                   "args": {"amount": 600, "currency": "EUR"}}] * 2)
        assert plan.verdict == "unsafe" and plan.counterexample is not None and plan.counterexample["step"] == 1
        assert again.decide(*TRANSFER, {"amount": 1000, "currency": "EUR"}).permitted  # exactly the last 1000
        over = again.decide(*TRANSFER, {"amount": 1, "currency": "EUR"})
        assert over.decision == "forbid" and over.rules == ("daily-budget",)
        assert over.certificate["session"]["daily-budget"]["spent"] == 5000
    finally:
        again.close()
    other = _local(tmp_path / "log", seed, "agent:other")  # another principal's budget is its own
    try:
        assert other.decide(*TRANSFER, {"amount": 1000, "currency": "EUR"}).permitted
    finally:
        other.close()
    # A new policy version reads the same history, counted under its own rules.
    raised = sdk.LocalLicet(kernel.load_policy(PAYMENTS.replace("limit: 5000", "limit: 6000")), kernel.Signer(seed),
                            tmp_path / "log", principal={"id": "agent:local", "role": "ops"}, context={"mfa": True})
    try:
        assert raised.decide(*TRANSFER, {"amount": 1000, "currency": "EUR"}).permitted
        assert raised.decide(*TRANSFER, {"amount": 1, "currency": "EUR"}).decision == "forbid"
    finally:
        raised.close()


SPENDER = """
import os, sys
from pathlib import Path
from licet import kernel, sdk
from tests.conftest import PAYMENTS

log_dir, seed = sys.argv[1], bytes.fromhex(sys.argv[2])
local = sdk.LocalLicet(kernel.load_policy(PAYMENTS), kernel.Signer(seed), log_dir,
                       principal={"id": "agent:shared", "role": "ops"}, context={"mfa": True})
print("ready", flush=True)
sys.stdin.readline()
for _ in range(4):
    print(local.decide("payments.transfer", "/accounts/a", {"amount": 1000, "currency": "EUR"}).decision, flush=True)
local.close()
"""


def test_two_processes_sharing_a_local_log_cannot_both_spend_the_last_of_a_budget(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    seed = os.urandom(32).hex()
    _local(tmp_path / "log", bytes.fromhex(seed)).close()  # the log exists before both open it
    spenders = [subprocess.Popen([sys.executable, "-c", SPENDER, str(tmp_path / "log"), seed], cwd=root, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]
    for spender in spenders:
        assert spender.stdout is not None and spender.stdout.readline() == "ready\n"
    for spender in spenders:  # both start deciding at once
        assert spender.stdin is not None
        spender.stdin.write("go\n")
        spender.stdin.flush()
    outcomes = []
    for spender in spenders:
        out, err = spender.communicate(timeout=120)
        assert spender.returncode == 0, err
        outcomes += out.split()
    assert sorted(outcomes) == ["forbid"] * 3 + ["permit"] * 5  # 8 asks of 1000 against a budget of 5000
    local = _local(tmp_path / "log", bytes.fromhex(seed))
    try:
        assert local.log.size == 8
    finally:
        local.close()


def test_local_mode_without_the_solver_names_the_extra() -> None:
    import subprocess
    import sys

    script = ("import sys; sys.modules['z3'] = None\n"  # as if z3 were not installed
              "from licet.sdk import LicetClient, verify_certificate\n"
              "try:\n    from licet.sdk import LocalLicet\nexcept ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'licet-sdk[local]'" in done.stdout and "z3" in done.stdout


def _published(signer: kernel.Signer) -> dict[str, Any]:
    from licet.kernel.note import NoteSigner

    note = NoteSigner("licet.localhost/licet/t", signer)
    return {"certificate_keys": [signer.public_key.to_json()],
            "log": {"origin": "licet.localhost/licet/t", "verifier_key": note.verifier.vkey()}}


def test_trusted_keys_name_the_field_that_is_wrong() -> None:
    published = _published(kernel.Signer(os.urandom(32)))
    keys = sdk.TrustedKeys.from_json(published)
    assert [k.to_json() for k in keys.certificate_keys] == published["certificate_keys"]
    assert keys.log_origin == "licet.localhost/licet/t" and keys.log_key.vkey() == published["log"]["verifier_key"]
    broken = [({**published, "certificate_keys": []}, "certificate_keys"),
              ({**published, "certificate_keys": [{"type": "rsa"}]}, r"certificate_keys\[0\]"),
              ({**published, "log": {**published["log"], "origin": ""}}, "log.origin"),
              ({**published, "log": {"origin": "o"}}, "log.verifier_key"),
              ({**published, "log": {**published["log"], "verifier_key": "x+y+z"}}, "log.verifier_key"),
              ({"certificate_keys": published["certificate_keys"]}, "log"), ([], "body")]
    for body, field in broken:
        with pytest.raises(sdk.LicetError, match=f"evidence keys: {field}"):
            sdk.TrustedKeys.from_json(body)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
                    max_leaves=8)


@given(st.fixed_dictionaries({}, optional={"certificate_keys": JSON, "log": JSON}) | JSON)
def test_trusted_keys_refuse_any_malformed_document_with_a_licet_error(body: Any) -> None:
    try:
        sdk.TrustedKeys.from_json(body)
    except sdk.LicetError as exc:
        assert str(exc).startswith("evidence keys: ")
