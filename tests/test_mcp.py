"""The MCP server driven by the official MCP client of the same SDK, over stdio (a `licet mcp serve
--stdio` subprocess with LICET_URL/LICET_API_KEY) and over streamable HTTP (`licet mcp serve --http`,
each request's bearer token being the caller's key), against a real Licet server: tool schemas and
annotations, every tool, bad arguments, missing and invalid keys, destructive calls without
confirmation. The MCP layer does not depend on the database, so one backend (SQLite) is enough."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import PAYMENTS
from tests.server_harness import Server, Tenant, free_port, mcp_http_process

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

TOOLS = {"decide", "verify_plan", "explain_decision", "verify_certificate", "get_inclusion_proof",
         "verify_log_consistency", "policy_diff", "policy_query", "approval_status", "issue_delegation",
         "list_delegations", "revoke_delegation"}
MUTATING = {"decide", "issue_delegation", "revoke_delegation"}


def _env(url: str, key: str | None) -> dict[str, str]:
    env = {"LICET_URL": url, "PYTHONPATH": str(ROOT)}
    if key is not None:
        env["LICET_API_KEY"] = key
    return env


@asynccontextmanager
async def stdio_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "licet", "mcp", "serve", "--stdio"],
                                   env=_env(url, key), cwd=str(ROOT))
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def http_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with create_mcp_http_client(headers=headers) as client, \
            streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session: ClientSession, name: str, **arguments: Any) -> dict[str, Any]:
    """A successful tool call's structured result."""
    result = await session.call_tool(name, arguments)
    assert not result.is_error, f"{name}: {result.content}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def error(session: ClientSession, name: str, **arguments: Any) -> str:
    """A failed tool call's message."""
    result = await session.call_tool(name, arguments)
    assert result.is_error, f"{name} should have failed: {result.structured_content}"
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
def mcp_http(server: Server) -> Iterator[str]:
    """`licet mcp serve --http` in front of the test server; its MCP endpoint URL."""
    port = free_port()
    with mcp_http_process([sys.executable, "-m", "licet", "mcp", "serve", "--http", "--port", str(port),
                           "--url", server.url], port, "licet mcp serve --http") as url:
        yield url


async def _exercise(session: ClientSession, tenant: Tenant) -> None:
    """Every tool, with an agent key, through one MCP session."""
    listed = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    for name, tool in listed.items():
        assert tool.description and len(tool.description) > 40, name
        assert "\n " not in tool.description, (name, tool.description)  # no source indentation
        assert tool.title and annotations_title(tool) == tool.title, name
        assert tool.input_schema["type"] == "object"
        annotations = tool.annotations
        assert annotations is not None
        assert annotations.read_only_hint is (name not in MUTATING), name
        assert annotations.destructive_hint is (name == "revoke_delegation"), name
    decide_schema = listed["decide"].input_schema
    assert decide_schema["required"] == ["action", "resource"]
    assert decide_schema["properties"]["args"]["description"]
    assert listed["revoke_delegation"].input_schema["properties"]["confirm"]["type"] == "boolean"

    # decide: every outcome, typed and explained
    permit = await call(session, "decide", action="payments.transfer", resource="/accounts/a",
                        args={"amount": 100, "currency": "EUR"})
    assert permit["decision"] == "permit" and permit["permitted"] and permit["rules"] == ["transfer"]
    assert "Rule 'transfer' (permit) applies" in permit["explanation"] and "certificate" not in permit
    approval = await call(session, "decide", action="payments.transfer", resource="/accounts/a",
                          args={"amount": 2000, "currency": "EUR"}, include_certificate=True)
    assert approval["decision"] == "require_approval" and approval["rules"] == ["large-transfer"]
    assert approval["certificate"]["id"] == approval["certificate_id"]
    forbid = await call(session, "decide", action="files.delete", resource="/prod/db")
    assert forbid["decision"] == "forbid" and forbid["rules"] == ["no-prod-delete"]
    deny = await call(session, "decide", action="payments.transfer", resource="/accounts/a",
                      args={"amount": 5, "currency": "GBP"})
    assert deny["decision"] == "deny" and not deny["permitted"]
    assert "Permit rule 'transfer' does not apply" in deny["explanation"]
    assert "invalid_request" in await error(session, "decide", action="payments.transfer", resource="/a/../../x")

    # pre-flight
    step = {"action": "payments.transfer", "resource": "/accounts/a",
            "args": {"amount": {"symbolic": "int", "min": 1, "max": 2000}, "currency": "EUR"}}
    plan = await call(session, "verify_plan", steps=[step] * 3)
    assert plan["verdict"] in ("unsafe", "needs_approval") and plan["safe"] is False and plan["steps_checked"] >= 1
    safe = await call(session, "verify_plan", steps=[{"action": "files.delete", "resource": "/scratch/x"}])
    assert safe["verdict"] == "safe" and safe["safe"] is True

    # explain and verify
    explained = await call(session, "explain_decision", certificate_id=forbid["certificate_id"])
    assert explained["decision"] == "forbid" and "FORBIDDEN" in explained["explanation"]
    assert "'no-prod-delete'" in explained["explanation"] and "files.delete" in explained["explanation"]
    by_id = await call(session, "verify_certificate", certificate_id=permit["certificate_id"])
    assert by_id["verified"] is True and {c["name"] for c in by_id["checks"]} >= {"signature"}
    certificate = approval["certificate"]
    with tenant.server.client(tenant.owner_key) as owner:
        public_key = json.dumps(owner.get("/v1/evidence/keys").json()["certificate_keys"][0])
    offline = await call(session, "verify_certificate", certificate=certificate, public_key=public_key)
    assert offline["verified"] is True
    tampered = {**certificate, "decision": "permit"}
    broken = await call(session, "verify_certificate", certificate=tampered, public_key=public_key)
    assert broken["verified"] is False and any(not c["ok"] for c in broken["checks"])
    other_key = "A" * 43 + "="  # some other Ed25519 key: the signature must not verify
    assert (await call(session, "verify_certificate", certificate=certificate, public_key=other_key))["verified"] is False
    assert "exactly one" in await error(session, "verify_certificate")
    assert "public_key" in await error(session, "verify_certificate", certificate=certificate, public_key="nope")

    # evidence log
    inclusion = await call(session, "get_inclusion_proof", certificate_id=permit["certificate_id"])
    assert inclusion["verified"] is True and inclusion["log_index"] == permit["log_index"]
    assert inclusion["tree_size"] > inclusion["log_index"] and inclusion["bundle"]
    first = inclusion["tree_size"]
    await call(session, "decide", action="files.delete", resource="/scratch/a")
    consistency = await call(session, "verify_log_consistency", first=first)
    assert consistency["consistent"] is True and consistency["second"] > first
    assert [c["name"] for c in consistency["checks"]] == ["old-checkpoint", "new-checkpoint", "same-log",
                                                         "not-smaller", "consistency"]
    again = await call(session, "verify_log_consistency", first=first, second=consistency["second"])
    assert again["consistent"] is True
    assert "no checkpoint was signed at tree size 999999" in await error(session, "verify_log_consistency", first=999999)

    # what an agent key may not do is the server's refusal, as a tool error
    assert "403" in await error(session, "policy_query", action="files.delete", resource="/prod/**")
    assert "403" in await error(session, "policy_diff", policy="payments-agent")

    # approvals: the large transfer opened one, pending; an unknown id is the server's 404
    status = await call(session, "approval_status", approval_id=approval["approval_id"])
    assert status["state"] == "pending" and status["rules"] == ["large-transfer"], status
    assert "404" in await error(session, "approval_status", approval_id="0190-x")

    # delegations: issue, list, revoke (destructive: refused without confirm)
    scope = [{"id": "small", "effect": "permit", "action": ["payments.transfer"], "when": "args.amount <= 100"}]
    grant = (await call(session, "issue_delegation", delegate="agent:helper", scope=scope))["grant"]
    assert grant["issuer"] == "agent:bot" and grant["delegate"] == "agent:helper" and grant["revoked_at"] is None
    assert grant["id"] in {g["id"] for g in (await call(session, "list_delegations"))["grants"]}
    refused = await error(session, "revoke_delegation", grant_id=grant["id"])
    assert "refused" in refused and "confirm: true" in refused
    assert "refused" in await error(session, "revoke_delegation", grant_id=grant["id"], confirm=False)
    still = {g["id"]: g for g in (await call(session, "list_delegations"))["grants"]}
    assert still[grant["id"]]["revoked_at"] is None
    revoked = await call(session, "revoke_delegation", grant_id=grant["id"], confirm=True)
    assert revoked["revoked"] == [grant["id"]]
    assert "422" in await error(session, "issue_delegation", delegate="agent:helper",
                                scope=[{"id": "bad", "effect": "permit", "action": ["x"], "when": "args.a >"}])

    # bad arguments never reach Licet: one short line naming the tool and the argument
    for name, arguments, argument in [("decide", {"action": "payments.transfer"}, "resource"),
                                      ("decide", {"action": "a", "resource": "/b", "args": "not an object"}, "args"),
                                      ("verify_plan", {"steps": []}, "steps"),
                                      ("explain_decision", {"certificate_id": "../keys"}, "certificate_id"),
                                      ("verify_log_consistency", {"first": -1}, "first"),
                                      ("revoke_delegation", {"grant_id": "x", "confirm": "yes please"}, "confirm")]:
        message = await error(session, name, **arguments)
        assert message.startswith(f"invalid arguments for {name}: {argument}: "), (name, message)
        assert "pydantic" not in message and "\n" not in message and "yes please" not in message, message
    unknown = await session.call_tool("no_such_tool", {})
    assert unknown.is_error


def test_stdio_every_tool(tenant: Tenant) -> None:
    async def run() -> None:
        async with stdio_session(tenant.server.url, tenant.key()) as session:
            await _exercise(session, tenant)

    asyncio.run(run())


def test_stdio_without_a_key_refuses_to_start(server: Server) -> None:
    reply = subprocess.run([sys.executable, "-m", "licet", "mcp", "serve", "--stdio"], cwd=ROOT, input="",
                           env={**os.environ, "LICET_URL": server.url, "LICET_API_KEY": ""},
                           capture_output=True, text=True, timeout=60)
    assert reply.returncode != 0 and "LICET_API_KEY is not set" in reply.stderr
    both = subprocess.run([sys.executable, "-m", "licet", "mcp", "serve", "--stdio", "--http"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert both.returncode != 0 and "exactly one" in both.stderr


def test_stdio_with_an_invalid_key_fails_every_call(server: Server) -> None:
    async def run() -> None:
        async with stdio_session(server.url, "licet_not-a-real-key") as session:
            assert len((await session.list_tools()).tools) == len(TOOLS)
            message = await error(session, "decide", action="payments.transfer", resource="/accounts/a")
            assert "refused the API key (401" in message
            # offline verification with a given key needs no server at all
            assert (await call(session, "verify_certificate", certificate={"id": "x"},
                               public_key="A" * 43 + "="))["verified"] is False

    asyncio.run(run())


def test_http_bearer_key_per_request(tenant: Tenant, mcp_http: str) -> None:
    agent_key = tenant.key()
    auditor_key = tenant.key("auditor", "person:audit")
    with tenant.owner_session() as owner:  # a second version, more permissive, not activated
        created = owner.post("/v1/policies", json={"source": PAYMENTS.replace('["/scratch/**"]', '["/scratch/**", "/tmp/**"]')})
        assert created.status_code == 201, created.text

    async def run() -> None:
        async with http_session(mcp_http, agent_key) as session:
            await _exercise(session, tenant)
        async with http_session(mcp_http, auditor_key) as session:
            query = await call(session, "policy_query", action="*.delete", resource="/prod/**")
            assert query["permitted"] is False and "unsat" in query["proof"]["result"]
            possible = await call(session, "policy_query", action="files.delete", resource="/scratch/**")
            assert possible["permitted"] is True and possible["example"]
            diff = await call(session, "policy_diff", policy="payments-agent")
            assert (await call(session, "policy_diff"))["new"]["number"] == 2
            assert "no policy named" in await error(session, "policy_diff", policy="nope")
            assert diff["new"]["number"] == 2 and diff["old"]["number"] == 1
            assert diff["equivalent"] is False and diff["gained"] and not diff["lost"]
            assert "/tmp/" in json.dumps(diff["gained"])
            assert "403" in await error(session, "decide", action="payments.transfer", resource="/accounts/a")

    asyncio.run(run())


def test_http_missing_or_invalid_key_is_401(tenant: Tenant, mcp_http: str) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    missing = httpx.post(mcp_http, json=hello, headers=headers, timeout=10)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    invalid = httpx.post(mcp_http, json=hello, headers={**headers, "Authorization": "Bearer licet_wrong"}, timeout=10)
    assert invalid.status_code == 401 and invalid.json()["error"]["code"] == "unauthenticated"
    for refused in (missing, invalid):  # what a client shows says which header is needed
        assert "Authorization: Bearer <Licet agent API key>" in refused.json()["error"]["message"]
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert "resource_metadata" not in refused.headers["www-authenticate"]  # no OAuth server to look for
    # the routes where OAuth clients look answer, without a key, that there is no OAuth here
    base = mcp_http.removesuffix("/mcp")
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/register"):
        reply = httpx.request("POST" if path == "/register" else "GET", base + path, timeout=10)
        assert reply.status_code == 404, (path, reply.status_code)
        assert "does not use OAuth" in reply.json()["error_description"]
        assert "Authorization: Bearer <Licet agent API key>" in reply.json()["error_description"]
    valid = httpx.post(mcp_http, json=hello, headers={**headers, "Authorization": f"Bearer {tenant.key()}"},
                       timeout=10)
    assert valid.status_code == 200, valid.text

    async def run(key: str | None) -> None:
        async with http_session(mcp_http, key) as session:
            await session.list_tools()

    for key in (None, "licet_wrong"):
        with pytest.raises(BaseExceptionGroup) as failed:  # the client's task groups wrap the refusal
            asyncio.run(run(key))
        leaves = _leaves(failed.value)
        assert leaves and all(isinstance(e, MCPError) for e in leaves), leaves


def annotations_title(tool: Any) -> str | None:
    return tool.annotations.title if tool.annotations is not None else None


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
