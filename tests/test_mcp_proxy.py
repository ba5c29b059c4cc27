"""The governance proxy (`licet mcp proxy`), driven by the official MCP client over stdio, in front of a
small real MCP server (tests/mcp_upstream_fixture.py, which logs every call it receives to a file)
and a real Licet server: filtered listings, decided calls, fail-closed paths; and the
`POST /v1/decide/capabilities` route the listing relies on."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from licet.sdk import LicetClient
from tests.server_harness import Server, Tenant, free_port, mcp_http_process

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "mcp_upstream_fixture.py"
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

POLICY = """\
id: proxy-test
version: 1
rules:
  - {id: read-data, effect: permit, action: [mcp.files.read_file], resource: ["/data/**"]}
  - {id: no-secrets, effect: forbid, action: [mcp.files.read_file], resource: ["/data/secret/**"]}
  - {id: echo, effect: permit, action: [mcp.files.echo]}
  - {id: transfer, effect: permit, action: [mcp.files.transfer], when: 'args.amount <= 1000'}
  - {id: large-transfer, effect: require_approval, action: [mcp.files.transfer], when: 'args.amount > 100'}
  - {id: no-deletes, effect: forbid, action: [mcp.files.delete_file]}
  - {id: admins, effect: permit, action: [mcp.files.admin_reset], when: '"admin" in principal.roles'}
"""
VISIBLE = {"read_file", "echo", "transfer"}  # delete_file: always forbidden; shutdown: no rule; admin_reset: admins


def _upstream(log: Path) -> str:
    return shlex.join([sys.executable, str(FIXTURE), "--log", str(log)])


@asynccontextmanager
async def proxy_session(url: str, key: str | None, *args: str) -> AsyncIterator[ClientSession]:
    """An MCP client session with `licet mcp proxy <args>`, started as an agent would start it."""
    env = {"LICET_URL": url, "PYTHONPATH": str(ROOT)}
    if key is not None:
        env["LICET_API_KEY"] = key
    params = StdioServerParameters(command=sys.executable, args=["-m", "licet", "mcp", "proxy", *args],
                                   env=env, cwd=str(ROOT))
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def files_proxy(url: str, key: str | None, log: Path) -> Any:
    """The proxy over the fixture named `files`, resources from the `path` argument."""
    return proxy_session(url, key, "--name", "files", "--upstream", _upstream(log), "--resource-arg", "path")


def calls(log: Path) -> list[dict[str, Any]]:
    """What reached the upstream."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def licet(result: CallToolResult) -> dict[str, Any]:
    """Licet's facts about a refused call: `_meta` keys under `licet/`, and never `structuredContent` (it
    would be checked against the upstream tool's output schema)."""
    assert result.is_error and result.structured_content is None, result
    assert result.meta is not None
    return {key.removeprefix("licet/"): value for key, value in result.meta.items() if key.startswith("licet/")}


def certificate(tenant: Tenant, certificate_id: str) -> dict[str, Any]:
    with tenant.owner() as owner:
        reply = owner.get(f"/v1/certificates/{certificate_id}")
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["certificate"])


def decisions(tenant: Tenant) -> int:
    with tenant.owner() as owner:
        reply = owner.get("/v1/certificates", params={"limit": 500})
    assert reply.status_code == 200, reply.text
    return len(reply.json()["certificates"])


@pytest.fixture
def governed(server: Server) -> Tenant:
    """A tenant with the proxy test policy active."""
    made = server.new_tenant()
    made.activate(POLICY)
    return made


def test_listing_shows_only_tools_that_could_be_permitted(governed: Tenant, tmp_path: Path) -> None:
    agent, admin = governed.key(roles=["ops"]), governed.key(principal_id="agent:root", roles=["admin"])
    log = tmp_path / "calls.jsonl"

    async def run() -> None:
        async with files_proxy(governed.server.url, agent, log) as session:
            listed = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(listed) == VISIBLE
            # the upstream's own schemas and descriptions pass through unchanged
            assert listed["read_file"].input_schema["required"] == ["path"]
            assert listed["read_file"].description == "Read a file."
        async with files_proxy(governed.server.url, admin, log) as session:
            assert {t.name for t in (await session.list_tools()).tools} == VISIBLE | {"admin_reset"}
        # a new active version is what the listing reads from then on
        governed.activate(POLICY + "  - {id: stop, effect: permit, action: [mcp.files.shutdown]}\n")
        async with files_proxy(governed.server.url, agent, log) as session:
            assert {t.name for t in (await session.list_tools()).tools} == VISIBLE | {"shutdown"}

    asyncio.run(run())
    assert calls(log) == []  # listing never calls a tool


def test_calls_are_decided_and_only_permits_forwarded(governed: Tenant, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    approver = governed.person("approver")

    async def run() -> None:
        async with files_proxy(governed.server.url, governed.key(), log) as session:
            await session.list_tools()
            # permitted: forwarded, the upstream's answer returned, the certificate id attached
            read = await session.call_tool("read_file", {"path": "/data/report.txt"})
            assert not read.is_error and text(read) == "contents of /data/report.txt"
            assert read.meta is not None
            permit = certificate(governed, read.meta["licet/certificate_id"])
            assert permit["decision"] == "permit" and permit["rules"] == ["read-data"]
            assert permit["request"]["action"] == "mcp.files.read_file"
            assert permit["request"]["resource"] == "/data/report.txt"
            assert permit["request"]["args"] == {"path": "/data/report.txt"}
            assert calls(log) == [{"tool": "read_file", "arguments": {"path": "/data/report.txt"}}]

            # forbidden: a tool error naming the rule and the certificate, nothing forwarded
            secret = await session.call_tool("read_file", {"path": "/data/secret/key.pem"})
            assert secret.is_error
            facts = licet(secret)
            assert facts["status"] == "forbidden" and facts["forwarded"] is False
            assert facts["rules"] == ["no-secrets"] and facts["decision"] == "forbid"
            assert "no-secrets" in text(secret) and facts["certificate_id"] in text(secret)
            assert certificate(governed, facts["certificate_id"])["decision"] == "forbid"

            # a hidden tool is still decided (and refused) if called anyway
            delete = await session.call_tool("delete_file", {"path": "/data/report.txt"})
            assert delete.is_error and licet(delete)["rules"] == ["no-deletes"]
            denied = await session.call_tool("shutdown", {})
            assert denied.is_error and licet(denied)["status"] == "denied"
            assert "default deny" in text(denied) and licet(denied)["certificate_id"] in text(denied)

            # approval required: a pending result carrying the approval (id when the server opened one)
            pending = await session.call_tool("transfer", {"amount": 500, "currency": "EUR"})
            assert pending.is_error
            facts = licet(pending)
            assert facts["status"] == "pending_approval" and facts["decision"] == "require_approval"
            assert facts["rules"] == ["large-transfer"] and "approval_id" in facts
            assert "approval" in text(pending).lower() and facts["certificate_id"] in text(pending)
            assert facts["approval_id"] is not None and facts["approval_id"] in text(pending)
            again = await session.call_tool("transfer", {"amount": 500, "currency": "EUR"})
            assert licet(again)["approval_id"] == facts["approval_id"]  # one approval per request
            with approver.client() as person:
                voted = person.post(f"/v1/approvals/{facts['approval_id']}/approve", json={})
                assert voted.status_code == 200 and voted.json()["state"] == "granted", voted.text
            approved = await session.call_tool("transfer", {"amount": 500, "currency": "EUR"})
            assert not approved.is_error, text(approved)  # the granted approval, presented: forwarded once
            used = await session.call_tool("transfer", {"amount": 500, "currency": "EUR"})
            assert licet(used)["status"] == "pending_approval"  # used once: a new approval
            assert licet(used)["approval_id"] != facts["approval_id"]

            small = await session.call_tool("transfer", {"amount": 50, "currency": "EUR"})
            assert not small.is_error and small.structured_content == {"sent": 50.0, "currency": "EUR"}
            # a tool without the resource argument is decided on /mcp/<name>/<tool>
            echo = await session.call_tool("echo", {"text": "hi"})
            assert not echo.is_error and text(echo) == "hi"
            assert echo.meta is not None
            assert certificate(governed, echo.meta["licet/certificate_id"])["request"]["resource"] == "/mcp/files/echo"

            # bad arguments are refused before any decision, and never forwarded
            before = decisions(governed)
            for name, arguments in [("read_file", {"path": 123}), ("read_file", {}),
                                    ("transfer", {"amount": "lots", "currency": "EUR"}),
                                    ("read_file", {"path": ""}), ("no_such_tool", {})]:
                refused = await session.call_tool(name, arguments)
                assert refused.is_error and licet(refused)["status"] == "refused", (name, arguments)
                assert "not forwarded" in text(refused)
            assert decisions(governed) == before
            # a resource Licet rejects as invalid input is a refusal too
            escape = await session.call_tool("read_file", {"path": "/../../etc/passwd"})
            assert escape.is_error and licet(escape)["status"] == "refused"

    asyncio.run(run())
    assert calls(log) == [{"tool": "read_file", "arguments": {"path": "/data/report.txt"}},
                          {"tool": "transfer", "arguments": {"amount": 500.0, "currency": "EUR"}},
                          {"tool": "transfer", "arguments": {"amount": 50.0, "currency": "EUR"}},
                          {"tool": "echo", "arguments": {"text": "hi"}}]


def test_a_granted_approval_is_presented_by_a_new_proxy(governed: Tenant, tmp_path: Path) -> None:
    """Approvals live in Licet, not in the proxy: a client that starts one proxy per call can finish an
    approved call, and the next identical call needs a new approval."""
    log = tmp_path / "calls.jsonl"
    key, approver = governed.key(), governed.person("approver")
    transfer = {"amount": 700, "currency": "EUR"}

    async def call() -> CallToolResult:
        async with files_proxy(governed.server.url, key, log) as session:
            return await session.call_tool("transfer", transfer)

    pending = licet(asyncio.run(call()))
    assert pending["status"] == "pending_approval" and pending["approval_state"] == "pending"
    assert licet(asyncio.run(call()))["approval_id"] == pending["approval_id"]  # still pending, same approval
    assert calls(log) == []
    with approver.client() as person:
        voted = person.post(f"/v1/approvals/{pending['approval_id']}/approve", json={})
        assert voted.status_code == 200 and voted.json()["state"] == "granted", voted.text
    approved = asyncio.run(call())
    assert not approved.is_error and approved.meta is not None, text(approved)
    permit = certificate(governed, approved.meta["licet/certificate_id"])
    assert permit["decision"] == "permit" and permit["proof"]["approval"]["id"] == pending["approval_id"]
    assert calls(log) == [{"tool": "transfer", "arguments": {"amount": 700.0, "currency": "EUR"}}]
    again = licet(asyncio.run(call()))  # used once: the same call waits for a new approval
    assert again["status"] == "pending_approval" and again["approval_id"] != pending["approval_id"]
    assert len(calls(log)) == 1


def test_licet_unreachable_fails_closed(server: Server, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    nowhere = f"http://127.0.0.1:{free_port()}"

    async def run() -> None:
        async with files_proxy(nowhere, "licet_some-key", log) as session:
            with pytest.raises(MCPError, match="none are listed"):
                await session.list_tools()
            result = await session.call_tool("read_file", {"path": "/data/report.txt"})
            assert result.is_error and licet(result)["status"] == "unavailable"
            assert "not forwarded" in text(result) and "nothing is permitted" in text(result)

    asyncio.run(run())
    assert calls(log) == []


def test_invalid_key_is_refused_and_nothing_forwarded(governed: Tenant, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"

    async def run() -> None:
        async with files_proxy(governed.server.url, "licet_not-a-real-key", log) as session:
            with pytest.raises(MCPError, match="401"):
                await session.list_tools()
            result = await session.call_tool("echo", {"text": "hi"})
            assert result.is_error and "refused the API key (401" in text(result)

    asyncio.run(run())
    assert calls(log) == []


def test_command_line_refuses_to_start_without_what_it_needs(server: Server, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    base = [sys.executable, "-m", "licet", "mcp", "proxy", "--name", "files"]
    env = {**os.environ, "LICET_URL": server.url, "LICET_API_KEY": "", "PYTHONPATH": str(ROOT)}

    def run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], cwd=ROOT, input="", env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)

    missing = run(["--upstream", _upstream(log)])
    assert missing.returncode != 0 and "LICET_API_KEY is not set" in missing.stderr
    neither = run([], LICET_API_KEY="licet_x")
    assert neither.returncode != 0 and "exactly one" in neither.stderr
    both = run(["--upstream", "x", "--upstream-url", "http://127.0.0.1:1/mcp"], LICET_API_KEY="licet_x")
    assert both.returncode != 0 and "exactly one" in both.stderr
    bad_name = subprocess.run([sys.executable, "-m", "licet", "mcp", "proxy", "--name", "a.b", "--upstream", "x"],
                              cwd=ROOT, input="", env={**env, "LICET_API_KEY": "licet_x"}, capture_output=True,
                              text=True, timeout=60)
    assert bad_name.returncode != 0 and "upstream name" in bad_name.stderr
    assert calls(log) == []


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The fixture upstream serving streamable HTTP; its endpoint and call log."""
    log, port = tmp_path / "http-calls.jsonl", free_port()
    with mcp_http_process([sys.executable, str(FIXTURE), "--log", str(log), "--http", "--port", str(port)], port,
                          "the HTTP upstream fixture") as url:
        yield url, log


def test_http_upstream(governed: Tenant, http_upstream: tuple[str, Path]) -> None:
    url, log = http_upstream

    async def run() -> None:
        async with proxy_session(governed.server.url, governed.key(), "--name", "files", "--upstream-url", url,
                                 "--resource-arg", "path") as session:
            assert {t.name for t in (await session.list_tools()).tools} == VISIBLE
            read = await session.call_tool("read_file", {"path": "/data/a"})
            assert not read.is_error and text(read) == "contents of /data/a"
            secret = await session.call_tool("read_file", {"path": "/data/secret/b"})
            assert secret.is_error and licet(secret)["rules"] == ["no-secrets"]

    asyncio.run(run())
    assert calls(log) == [{"tool": "read_file", "arguments": {"path": "/data/a"}}]


def test_action_prefix_option(server: Server, tmp_path: Path) -> None:
    tenant = server.new_tenant()
    tenant.activate("id: bare\nrules:\n  - {id: echo, effect: permit, action: [tools.echo]}\n")
    log = tmp_path / "calls.jsonl"

    async def run() -> None:
        async with proxy_session(server.url, tenant.key(), "--name", "files", "--upstream", _upstream(log),
                                 "--action-prefix", "tools.") as session:
            assert {t.name for t in (await session.list_tools()).tools} == {"echo"}
            echo = await session.call_tool("echo", {"text": "x"})
            assert not echo.is_error and echo.meta is not None
            assert certificate(tenant, echo.meta["licet/certificate_id"])["request"]["action"] == "tools.echo"

    asyncio.run(run())


def test_capabilities_route(server: Server) -> None:
    tenant = server.new_tenant()
    agent = tenant.key(roles=["ops"])
    asked = ["mcp.files.read_file", "mcp.files.transfer", "mcp.files.delete_file", "mcp.files.admin_reset",
             "not/an action", "mcp.*"]
    with LicetClient(server.url, agent) as client:
        empty = client.capabilities(asked)  # no active policy: nothing is possible
        assert empty["policy"] is None
        assert not any(a["permit"] or a["approval"] for a in empty["actions"].values())
        version = tenant.activate(POLICY)["version"]
        answer = client.capabilities(asked)
    assert answer["policy"]["version_id"] == version["id"]
    got = {name: (a["valid"], a["permit"], a["approval"]) for name, a in answer["actions"].items()}
    assert got == {"mcp.files.read_file": (True, True, False), "mcp.files.transfer": (True, True, True),
                   "mcp.files.delete_file": (True, False, False), "mcp.files.admin_reset": (True, False, False),
                   "not/an action": (False, False, False), "mcp.*": (False, False, False)}
    with server.client(tenant.key(roles=["admin"])) as admin_client:
        reply = admin_client.post("/v1/decide/capabilities", json={"actions": ["mcp.files.admin_reset"]})
    assert reply.status_code == 200 and reply.json()["actions"]["mcp.files.admin_reset"]["permit"] is True
    with server.client(tenant.key("auditor", "person:audit")) as auditor:
        assert auditor.post("/v1/decide/capabilities", json={"actions": ["a"]}).status_code == 403
    with server.client() as anonymous:
        assert anonymous.post("/v1/decide/capabilities", json={"actions": ["a"]}).status_code == 401
    with server.client(agent) as client:
        bodies: list[dict[str, Any]] = [{"actions": []}, {"actions": "a"}, {}, {"actions": ["a"], "principal": {"id": "x"}},
                                        {"actions": ["a" * 201]}]
        for body in bodies:
            assert client.post("/v1/decide/capabilities", json=body).status_code == 422, body
