"""The governance proxy: any MCP server behind Licet's decisions (`licet mcp proxy`).

The proxy speaks MCP over stdio to the agent (the MCP client) and is itself a client of the upstream
server, started as a command (stdio) or reached at a streamable HTTP URL. Only tools pass through;
the upstream's resources and prompts are not exposed, since they would bypass every decision.

Mapping of a tool call to a Licet request (one fixed rule, so a policy author can write it down):
- action   = `<action prefix><tool name>`; the default prefix is `mcp.<name>.` where `<name>` is the
             operator's `--name` for the upstream (never the name the upstream reports about itself: an
             untrusted server must not choose which rules apply to it). `mcp.files.read_file`.
- resource = the string value of the `--resource-arg` argument when the tool's input schema declares
             that argument (then it is required: a call without it is refused, never decided on a
             fallback); otherwise `/mcp/<name>/<tool name>`. With `--resolve-paths` (the default for a
             local command upstream), an absolute path is also resolved to the real path the upstream
             will open (mcp_server/paths.py); when that differs from the path as written, each is
             decided, the real one first, and the call goes ahead only if every one is a permit.
- args     = the call's arguments, as sent (so the certificate on a real path also records the path
             as written).
A tool name that is not dot-separated segments of `[A-Za-z0-9_-]` cannot be an action: such a tool is
hidden and its calls refused.

- `tools/list` shows the upstream tools some request of this agent could ever be permitted or need
  approval for, under the tenant's active policy (`POST /v1/decide/capabilities`, proved by Z3 with the
  agent's principal fixed and resource and arguments free). Licet unreachable: a JSON-RPC error.
- `tools/call` first checks the arguments against the tool's input schema (no decision on malformed
  input), then decides (`POST /v1/decide`). Only a permit is forwarded; the upstream result comes back
  as is, with `_meta["licet/certificate_id"]` (and `licet/certificate_ids`, `licet/resolved_paths`).
  Anything else is a result with `isError: true`, a text naming the rules, certificate and approval,
  and Licet's facts in `_meta` under `licet/`: `status` (`forbidden`, `denied`, `pending_approval`,
  `refused`, `unavailable`), `forwarded: false`, `decision`, `rules`, `certificate_id`, `log_index`,
  `approval_id`, `approval_state`, `action`, `resource`. Never `structuredContent`: official clients
  check it against the upstream tool's output schema even on errors, and would show a schema error
  instead of the refusal. A pending approval is an error result too (the tool did not run).
- Approvals live in Licet: when a decision needs approval and Licet answers that the caller's approval
  for this exact request is already granted, the proxy presents it at once and the call goes ahead
  (once), whichever proxy process opened it. Licet unreachable or failing: an error result, never
  forwarded (fail closed).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import jsonschema
import mcp_types as types

from licet.mcp.paths import Unresolvable, as_resource, real_paths
from licet.sdk.client import AsyncLicetClient, decide_call
from licet.sdk.errors import ApiError, LicetUnavailable
from licet.sdk.types import DecisionResult
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

ACTION = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
META = "licet/"
META_CERTIFICATE = META + "certificate_id"


class Refused(Exception):
    """A call refused before any decision (bad arguments, unknown tool); the message says why."""


@dataclass(frozen=True)
class ToolMapping:
    """How a tool call becomes Licet requests (see the module docstring)."""

    name: str
    action_prefix: str | None = None
    resource_arg: str | None = None
    resolve_paths: bool = False

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"upstream name {self.name!r}: use letters, digits, '_' and '-' only")

    def action(self, tool: str) -> str | None:
        """The action a tool's calls are decided as; None if the tool name cannot be one."""
        prefix = f"mcp.{self.name}." if self.action_prefix is None else self.action_prefix
        action = prefix + tool
        return action if ACTION.match(tool) and ACTION.match(action) else None

    def resource(self, tool: types.Tool, arguments: dict[str, Any]) -> str:
        """The resource of one call as written; `Refused` if the resource argument is declared but unusable."""
        if not self.names_resource(tool):
            return f"/mcp/{self.name}/{tool.name}"
        value = arguments.get(str(self.resource_arg))
        if not isinstance(value, str) or not value:
            raise Refused(f"argument {self.resource_arg!r} names the resource Licet decides on: it must be a "
                          "non-empty string")
        return value

    def names_resource(self, tool: types.Tool) -> bool:
        """Whether `tool` declares the resource argument."""
        declared = (tool.input_schema.get("properties") or {}) if isinstance(tool.input_schema, dict) else {}
        return self.resource_arg is not None and self.resource_arg in declared

    def real_paths(self, tool: types.Tool, resource: str) -> list[str]:
        """With `resolve_paths`, the real paths (symbolic links followed, NFC) a path resource opens that
        differ from how it is written; `Refused` when it cannot be resolved. Otherwise none."""
        if not (self.resolve_paths and self.names_resource(tool) and resource.startswith("/")):
            return []
        try:
            found = real_paths(resource)
        except Unresolvable as exc:
            raise Refused(f"Licet could not resolve the path {resource!r} to the file it names, so it cannot "
                          f"decide on it: {exc}") from exc
        as_written = posixpath.normpath("/" + resource.lstrip("/"))
        return [path for path in found if path != as_written]


class ProxyClient(AsyncLicetClient):
    """The SDK's async client, keeping the decide response whole (it may carry an approval)."""

    async def decide_raw(self, action: str, resource: str, args: dict[str, Any],
                         approval: str | None = None) -> dict[str, Any]:
        """`POST /v1/decide` (presenting `approval` if given), the response body as sent."""
        body = await self._send(decide_call(action, resource, args, approval=approval))
        if not isinstance(body, dict):
            raise LicetUnavailable("Licet answered a decide with something that is not a JSON object")
        return body

    async def decide_presenting(self, action: str, resource: str, args: dict[str, Any]) -> dict[str, Any]:
        """Decide; when Licet answers that a person already granted the approval this exact request waits
        for (it names the caller's open approval), present it at once: the call goes ahead."""
        body = await self.decide_raw(action, resource, args)
        approval = body.get("approval")
        if (body.get("decision") == "require_approval" and isinstance(approval, dict)
                and approval.get("state") == "granted" and isinstance(approval.get("id"), str)):
            body = await self.decide_raw(action, resource, args, approval=approval["id"])
        return body


def approval_of(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """The approval a decide response names (id, state), under either shape it may use."""
    nested = body.get("approval")
    if isinstance(nested, dict) and isinstance(nested.get("id"), str) and nested["id"]:
        state = nested.get("state")
        return str(nested["id"]), state if isinstance(state, str) else None
    direct = body.get("approval_id")
    return (direct, None) if isinstance(direct, str) and direct else (None, None)


def _error(text: str, status: str, **facts: Any) -> types.CallToolResult:
    """A tool error: the text for the model, Licet's facts in `_meta` under `licet/`. Never
    `structuredContent`: it would be checked against the upstream tool's output schema, and fail."""
    meta = {META + "status": status, META + "forwarded": False, **{META + k: v for k, v in facts.items()}}
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True,
                                _meta=meta)


def _not_permitted(decision: DecisionResult, body: dict[str, Any], action: str, resource: str,
                   upstream: str, written: str | None) -> types.CallToolResult:
    """The tool error for a decision that is not a permit (a pending approval included: the tool did
    not run)."""
    rules = ", ".join(decision.rules)
    approval, state = approval_of(body)
    certificate = f"certificate {decision.certificate_id}"
    via = f" ({written!r} resolves to it)" if written is not None else ""
    facts = {"decision": decision.decision, "rules": list(decision.rules),
             "certificate_id": decision.certificate_id, "log_index": decision.log_index,
             "approval_id": approval, "approval_state": state, "action": action, "resource": resource}
    if decision.decision == "require_approval":
        waiting = (f"approval {approval} must be granted" if approval
                   else "a person must approve this exact request (no approval id was returned)")
        return _error(f"Pending approval: Licet requires approval for {action} on {resource}{via} (rule {rules}); "
                      f"{waiting}, then call the tool again with the same arguments. Not forwarded to "
                      f"{upstream}; {certificate}.", "pending_approval", **facts)
    if decision.decision == "forbid":
        return _error(f"Forbidden by Licet: {action} on {resource}{via} is forbidden by rule {rules}; "
                      f"{certificate}. The call was not forwarded to {upstream}.", "forbidden", **facts)
    refusal = body.get("approval_refused")
    because = (f"the approval presented was refused ({refusal.get('reason')})" if isinstance(refusal, dict)
               else f"rule {rules}" if rules else "no permit rule applies (default deny)")
    return _error(f"Denied by Licet: {action} on {resource}{via}: {because}; {certificate}. The call was not "
                  f"forwarded to {upstream}.", "denied", **facts)


def _licet_failure(exc: Exception, action: str, resource: str) -> types.CallToolResult:
    """The tool error for a decide that did not produce a decision: fail closed."""
    where = {"action": action, "resource": resource}
    if isinstance(exc, ApiError):
        if exc.status == 401:
            text = f"Licet refused the API key (401 {exc.code}): {exc.message}. Check LICET_API_KEY."
        else:
            text = f"Licet refused the request ({exc.status} {exc.code}): {exc.message}"
        return _error(f"{text}. The call was not forwarded.", "refused", **where)
    return _error(f"Licet is unavailable, so nothing is permitted ({exc}). The call was not forwarded.",
                  "unavailable", **where)


def argument_checker(tool: types.Tool) -> Callable[[dict[str, Any]], None]:
    """A check raising `Refused` unless arguments satisfy the tool's input schema (built once per tool:
    checking the schema itself costs more than validating a call)."""
    schema = tool.input_schema
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        problem = exc.message

        def refuse(_: dict[str, Any]) -> None:
            raise Refused(f"the upstream's input schema for {tool.name!r} is invalid: {problem}")

        return refuse
    validator = validator_class(schema)

    def check(arguments: dict[str, Any]) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            raise Refused(f"invalid arguments for {tool.name!r} ({where}): {error.message}")

    return check


@dataclass
class GovernanceProxy:
    """The proxy's two handlers over one upstream session and one Licet client."""

    upstream: ClientSession
    licet: ProxyClient
    mapping: ToolMapping
    tools: dict[str, types.Tool] = field(default_factory=dict)
    checkers: dict[str, tuple[types.Tool, Callable[[dict[str, Any]], None]]] = field(default_factory=dict)

    async def upstream_tools(self) -> dict[str, types.Tool]:
        """Every tool of the upstream (all pages), remembered for schema checks."""
        found: dict[str, types.Tool] = {}
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await self.upstream.list_tools(params=params)
            found.update((tool.name, tool) for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = found
        return found

    def checker(self, tool: types.Tool) -> Callable[[dict[str, Any]], None]:
        """The argument check of `tool`, rebuilt when the upstream lists a changed tool."""
        known = self.checkers.get(tool.name)
        if known is None or known[0] is not tool:
            known = self.checkers[tool.name] = (tool, argument_checker(tool))
        return known[1]

    async def list_tools(self, ctx: ServerRequestContext[Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """The upstream tools this agent could ever be permitted (or need approval) to use."""
        tools = await self.upstream_tools()
        actions = {name: self.mapping.action(name) for name in tools}
        asked = sorted({a for a in actions.values() if a is not None})
        if not asked:
            return types.ListToolsResult(tools=[])
        try:
            answer = await self.licet.capabilities(asked)
            verdicts = answer["actions"]
        except (ApiError, LicetUnavailable, KeyError, TypeError) as exc:
            # Fail closed, and say so: an empty list would look like an upstream without tools.
            raise MCPError(types.INTERNAL_ERROR, f"Licet could not say which tools are permitted, so none "
                                                 f"are listed: {exc}") from exc
        shown = []
        for name, tool in tools.items():
            verdict = verdicts.get(actions[name]) if actions[name] else None
            if isinstance(verdict, dict) and (verdict.get("permit") is True or verdict.get("approval") is True):
                shown.append(tool)
        return types.ListToolsResult(tools=shown)

    async def call_tool(self, ctx: ServerRequestContext[Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        """Decide the call with its arguments, on every path it names; forward it only if all are permits."""
        arguments = dict(params.arguments or {})
        try:
            tool = self.tools.get(params.name) or (await self.upstream_tools()).get(params.name)
            if tool is None:
                raise Refused(f"unknown tool {params.name!r}")
            action = self.mapping.action(tool.name)
            if action is None:
                raise Refused(f"tool name {tool.name!r} is not a valid Licet action name, so its calls "
                              "cannot be decided")
            self.checker(tool)(arguments)
            written = self.mapping.resource(tool, arguments)
            real = self.mapping.real_paths(tool, written)
        except Refused as exc:
            return _error(f"{exc}. The call was not forwarded.", "refused")
        # The real paths first (what the upstream opens), then the path as written: a forbid on either wins.
        resources = [as_resource(path) for path in real] + [written]
        extra: dict[str, Any] = {"resolved_paths": real} if real else {}
        certificates: list[str] = []
        for resource in resources:
            try:
                body = await self.licet.decide_presenting(action, resource, arguments)
                decision = DecisionResult.from_json(body)
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, nothing was permitted
                return _licet_failure(exc, action, resource)
            if not decision.permitted:
                refusal = _not_permitted(decision, body, action, resource, self.mapping.name,
                                         written if resource != written else None)
                refusal.meta = {**(refusal.meta or {}), **{META + k: v for k, v in extra.items()}}
                return refusal
            certificates.append(decision.certificate_id)
        facts = {META_CERTIFICATE: certificates[0], META + "certificate_ids": certificates, META + "forwarded": True,
                 **{META + k: v for k, v in extra.items()}}
        try:
            result = await self.upstream.call_tool(tool.name, arguments)
        except Exception as exc:  # noqa: BLE001 - the upstream's failure is the tool's error
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"Permitted by Licet (certificate "
                                           f"{certificates[0]}), but the upstream failed: {exc}")],
                is_error=True, _meta=facts)
        return result.model_copy(update={"meta": {**(result.meta or {}), **facts}})

    def server(self, instructions: str | None = None) -> Server[Any]:
        """The MCP server the agent talks to."""
        note = (f"Tools of the MCP server '{self.mapping.name}', governed by Licet: each call is decided "
                "against your organisation's policy before it runs; a refusal names the rule and the "
                "signed certificate.")
        return Server(f"licet-proxy-{self.mapping.name}", instructions="\n\n".join(filter(None, [note, instructions])),
                      on_list_tools=self.list_tools, on_call_tool=self.call_tool)


def upstream_env() -> dict[str, str]:
    """The environment the upstream command runs with: ours, minus Licet's (the agent's key stays here)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LICET_")}


@asynccontextmanager
async def connect(command: str | None = None, url: str | None = None,
                  headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """An initialised client session with the upstream: a command (stdio) or a streamable HTTP URL."""
    async with AsyncExitStack() as stack:
        if command is not None:
            argv = shlex.split(command)
            if not argv:
                raise ValueError("the upstream command is empty")
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=upstream_env())
            read, write = await stack.enter_async_context(stdio_client(params))
        elif url is not None:
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers or {}))
            read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        else:
            raise ValueError("give an upstream command or URL")
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def serve(mapping: ToolMapping, licet_url: str, api_key: str, *, command: str | None = None,
                url: str | None = None, headers: dict[str, str] | None = None) -> None:
    """Connect to the upstream, then serve the governed tools over stdin/stdout until the agent leaves."""
    licet = ProxyClient(licet_url.rstrip("/"), api_key, timeout=10.0, retries=2)
    try:
        async with connect(command, url, headers) as upstream:
            proxy = GovernanceProxy(upstream, licet, mapping)
            server = proxy.server(upstream.instructions)
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
    finally:
        await licet.aclose()


def run(mapping: ToolMapping, licet_url: str, api_key: str, *, command: str | None = None, url: str | None = None,
        headers: dict[str, str] | None = None) -> None:
    """`serve` on a fresh event loop (the CLI's entry point)."""
    anyio.run(lambda: serve(mapping, licet_url, api_key, command=command, url=url, headers=headers))
