"""The Licet MCP server: the platform's questions as MCP tools, a thin layer over the SDK.

Every tool acts with the caller's own agent API key. Over stdio that is `LICET_API_KEY`, fixed when
the process starts; over streamable HTTP it is the bearer token of each incoming MCP request (never a
key held by the server). What the key may do is the Licet server's decision: a tool the key's role may
not use answers with the server's refusal as a tool error.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from mcp_types import ToolAnnotations
from pydantic import Field, ValidationError

from licet import kernel, sdk
from licet.kernel.checkpoint import check_consistency
from licet.kernel.note import parse_verifier_key
from licet.mcp.client import McpLicetClient
from licet.mcp.explain import explain, proof_lines
from licet.sdk.errors import ApiError, LicetUnavailable
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

INSTRUCTIONS = """\
Licet decides, with a proof, whether an AI agent may take an action under its organisation's policy.
Call `decide` before any consequential tool call and act only when the decision is `permit`;
`require_approval` means a person must approve first. Call `verify_plan` before a multi-step task.
Every decision is a signed certificate in a transparency log: `explain_decision`, `verify_certificate`,
`get_inclusion_proof` and `verify_log_consistency` let anyone check it."""

ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}$", description="An identifier.")]
CERT_ID = Annotated[str, Field(pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}$",
                               description="A certificate id (as returned by `decide`).")]

_RO: dict[str, Any] = {"read_only_hint": True, "destructive_hint": False, "idempotent_hint": True,
                       "open_world_hint": False}
_WRITES: dict[str, Any] = {"read_only_hint": False, "destructive_hint": False, "idempotent_hint": False,
                           "open_world_hint": False}

KeySource = Callable[[Context], str]
ToolFn = Callable[..., Any]


def _refusal(exc: Exception) -> ToolError:
    """A tool error a model can act on, from an SDK error."""
    if isinstance(exc, ApiError):
        if exc.status == 401:
            return ToolError(f"Licet refused the API key (401 {exc.code}): {exc.message}. "
                             "Check LICET_API_KEY or the bearer token.")
        if exc.status == 403:
            return ToolError(f"this API key's role may not do this (403 {exc.code}): {exc.message}")
        return ToolError(f"Licet refused the request: {exc}")
    if isinstance(exc, LicetUnavailable):
        return ToolError(f"Licet is unavailable, so nothing is permitted: {exc}")
    return ToolError(str(exc))


def _checks_json(checks: list[kernel.Check]) -> list[dict[str, Any]]:
    return [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]


def _decision_json(result: sdk.DecisionResult, include_certificate: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decision": result.decision, "permitted": result.permitted, "rules": list(result.rules),
        "certificate_id": result.certificate_id, "log_index": result.log_index,
        "approval_id": result.approval_id, "diagnostics": list(result.diagnostics),
        "explanation": " ".join(proof_lines(result.decision, result.proof)),
    }
    if result.decision == "require_approval" and result.approval_id is None:
        out["note"] = "a person must approve this exact request before it is permitted"
    if include_certificate:
        out["certificate"] = result.certificate
    return out


class Backend:
    """Opens an SDK client with the caller's API key for one tool call."""

    def __init__(self, url: str, keys: KeySource, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.keys = keys
        self.timeout = timeout

    @asynccontextmanager
    async def client(self, ctx: Context) -> AsyncIterator[McpLicetClient]:
        """An SDK client for this call; SDK errors become tool errors."""
        key = self.keys(ctx)
        client = McpLicetClient(self.url, key, timeout=self.timeout, retries=2)
        try:
            yield client
        except (ApiError, LicetUnavailable) as exc:
            raise _refusal(exc) from exc
        finally:
            await client.aclose()


def env_key(api_key: str) -> KeySource:
    """The one key of a stdio server (the agent that started it)."""

    def source(_: Context) -> str:
        return api_key

    return source


def bearer_key(ctx: Context) -> str:
    """The bearer token of the MCP request being served (HTTP)."""
    headers = ctx.headers or {}
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ToolError("no API key: send 'Authorization: Bearer <Licet agent API key>' with each MCP request")
    return token.strip()


async def _published_keys(client: McpLicetClient) -> tuple[list[kernel.PublicKey], dict[str, Any]]:
    keys = await client.evidence_keys()
    return [kernel.parse_public_key(json.dumps(k)) for k in keys["certificate_keys"]], dict(keys["log"])


class LicetMCPServer(MCPServer):
    """`MCPServer` whose argument errors are one short line naming each argument, not pydantic's report."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        """Call a tool; invalid arguments become `invalid arguments for <tool>: <argument>: <problem>`."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(invalid_arguments(name, exc.__cause__)) from exc.__cause__
            raise


def invalid_arguments(tool: str, error: ValidationError) -> str:
    """`invalid arguments for <tool>: <argument>: <problem>; ...` (never the rejected values)."""
    problems = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()]
    return f"invalid arguments for {tool}: " + "; ".join(problems)


def build_server(url: str, keys: KeySource) -> MCPServer:
    """The MCP server for the Licet server at `url`, acting with the keys `keys` yields."""
    backend = Backend(url, keys)
    mcp = LicetMCPServer("licet", title="Licet", version="0.1.0", instructions=INSTRUCTIONS,
                         description="Proven, signed decisions for AI agents.")

    def tool(title: str, **hints: Any) -> Callable[[ToolFn], ToolFn]:
        """Register a tool: its title (top level and in the annotations), hints, and its docstring
        without the source's indentation as the description."""

        def register(fn: ToolFn) -> ToolFn:
            return mcp.tool(title=title, description=inspect.cleandoc(fn.__doc__ or ""),
                            annotations=ToolAnnotations(title=title, **hints))(fn)

        return register

    @tool("Decide an action", **_WRITES)
    async def decide(
        ctx: Context,
        action: Annotated[str, Field(min_length=1, max_length=200,
                                     description="Dotted action name, e.g. 'payments.transfer'.")],
        resource: Annotated[str, Field(min_length=1, max_length=2000,
                                       description="The resource acted on: a path such as '/accounts/42' or a URI.")],
        args: Annotated[dict[str, Any] | None, Field(description="The tool call's arguments.")] = None,
        delegation: Annotated[str | None, Field(description="A delegation grant id to act under.")] = None,
        include_certificate: Annotated[bool, Field(description="Return the full signed certificate too.")] = False,
        approval: Annotated[str | None, Field(max_length=36, description=(
            "A granted approval id (from a require_approval decision) for this exact request: used once."))] = None,
    ) -> dict[str, Any]:
        """May I do this? Decides one action against the tenant's active policy and returns the certified
        decision: permit, forbid, deny (no permit rule applies) or require_approval, the rules that decided
        it, a short explanation of the proof and the certificate id. Act only on `permit`. The decision is
        signed and appended to the evidence log (it also counts toward budgets and rate invariants)."""
        async with backend.client(ctx) as client:
            result = await client.decide(action, resource, args or {}, delegation=delegation, approval=approval)
        return _decision_json(result, include_certificate)

    @tool("Pre-flight a plan", read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
    async def verify_plan(
        ctx: Context,
        steps: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000, description=(
            "The intended tool calls in order, each {action, resource, args}. An argument may be symbolic: "
            "{\"symbolic\": \"int\", \"min\": 0, \"max\": 10000} stands for every value in the range."))],
    ) -> dict[str, Any]:
        """Is this whole plan safe? Checks every step, for every value of its symbolic arguments, against
        the policy and its invariants (budgets, counts, data-flow), starting from this agent's current
        state. Verdict `safe`, `unsafe` (with a counterexample: step, values, rule or invariant) or
        `needs_approval` (the steps a person must approve). Nothing is executed or logged."""
        async with backend.client(ctx) as client:
            plan = await client.verify_plan(steps)
        return {"verdict": plan.verdict, "safe": plan.safe, "steps_checked": plan.steps_checked,
                "counterexample": plan.counterexample, "approval_steps": list(plan.approval_steps),
                "proof": plan.proof}

    @tool("Explain a decision", **_RO)
    async def explain_decision(ctx: Context, certificate_id: CERT_ID) -> dict[str, Any]:
        """Why was this decided? Fetches a certificate by id and explains in words the request, the policy
        version, the decision, the rules behind it and the proof (which conditions held or failed)."""
        async with backend.client(ctx) as client:
            found = await client.certificate(certificate_id)
        certificate = found["certificate"]
        return {"certificate_id": certificate["id"], "decision": certificate["decision"],
                "rules": certificate.get("rules", []), "log_index": found.get("log_index"),
                "policy": certificate.get("policy"), "request": certificate.get("request"),
                "explanation": explain(certificate)}

    @tool("Verify a certificate offline", **_RO)
    async def verify_certificate(
        ctx: Context,
        certificate: Annotated[dict[str, Any] | None, Field(
            description="The certificate JSON to verify. Give this or certificate_id.")] = None,
        certificate_id: Annotated[str | None, Field(
            pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,199}$",
            description="Fetch the certificate with this id from the server instead.")] = None,
        public_key: Annotated[str | dict[str, Any] | None, Field(description=(
            "A trusted Ed25519 public key: the public key file's JSON object, or base64 of the 32 bytes. "
            "Default: the keys the server publishes."))] = None,
    ) -> dict[str, Any]:
        """Verify a decision certificate offline: format, Ed25519 signature, request and theorem hashes.
        Only the keys come from the server (or from `public_key`); the checks run locally with the
        kernel, so a tampered certificate fails whatever the server says."""
        if (certificate is None) == (certificate_id is None):
            raise ToolError("give exactly one of 'certificate' or 'certificate_id'")
        keys: list[kernel.PublicKey] = []
        if public_key is not None:
            try:
                text = public_key if isinstance(public_key, str) else json.dumps(public_key)
                keys = [kernel.parse_public_key(text[:10_000])]
            except kernel.LicetError as exc:
                raise ToolError(f"public_key: {exc}") from exc
        if certificate is None or not keys:
            async with backend.client(ctx) as client:
                if certificate is None:
                    certificate = (await client.certificate(str(certificate_id)))["certificate"]
                if not keys:
                    keys, _ = await _published_keys(client)
        checks = sdk.verify_certificate(certificate, keys)
        return {"verified": sdk.verified(checks), "certificate_id": certificate.get("id"),
                "decision": certificate.get("decision"), "checks": _checks_json(checks)}

    @tool("Get an inclusion proof", **_RO)
    async def get_inclusion_proof(ctx: Context, certificate_id: CERT_ID) -> dict[str, Any]:
        """Proof that a certificate is in the tenant's append-only evidence log: its index, the signed
        checkpoint (C2SP tlog-checkpoint), the RFC 9162 audit path and a tlog-proof bundle, checked here
        offline against the log key the server publishes (`verified`, `checks`)."""
        async with backend.client(ctx) as client:
            found = await client.certificate(certificate_id)
            proof = await client.proof(certificate_id)
            _, log = await _published_keys(client)
        checks = sdk.verify_bundle(found["certificate"], proof["bundle"], [parse_verifier_key(log["verifier_key"])],
                                   origin=log["origin"])
        return {"certificate_id": certificate_id, "log_index": proof["log_index"], "tree_size": proof["tree_size"],
                "proof": proof["proof"], "checkpoint": proof["checkpoint"], "bundle": proof["bundle"],
                "verified": sdk.verified(checks), "checks": _checks_json(checks)}

    @tool("Verify the log never rewrote history", **_RO)
    async def verify_log_consistency(
        ctx: Context,
        first: Annotated[int, Field(ge=0, description="An older tree size a checkpoint was signed at.")],
        second: Annotated[int | None, Field(ge=0, description=(
            "A newer tree size a checkpoint was signed at (default: the newest checkpoint)."))] = None,
    ) -> dict[str, Any]:
        """Proof that the evidence log only grew between two signed checkpoints: fetches both checkpoints
        and the RFC 9162 consistency proof, then verifies signatures, origin and the proof offline."""
        async with backend.client(ctx) as client:
            _, log = await _published_keys(client)
            try:
                old = await client.checkpoint_at(first)
            except ApiError as exc:
                if exc.status == 404:
                    raise ToolError(f"no checkpoint was signed at tree size {first}; use the tree_size of a "
                                    "checkpoint you kept (get_inclusion_proof returns one)") from exc
                raise
            new = await (client.checkpoint() if second is None else client.checkpoint_at(second))
            proof = await client.consistency(old["size"], new["size"])
        hashes = [base64.b64decode(h) for h in proof["proof"]]
        checks = check_consistency(old["note"], new["note"], hashes, [parse_verifier_key(log["verifier_key"])],
                                   origin=log["origin"])
        return {"consistent": sdk.verified(checks), "first": old["size"], "second": new["size"],
                "proof": proof["proof"], "checks": _checks_json(checks)}

    @tool("Diff two policy versions", **_RO)
    async def policy_diff(
        ctx: Context,
        policy: Annotated[str | None, Field(max_length=200, description=(
            "The policy's name (its document id, e.g. 'payments-agent') or its server id. "
            "Default: the policy of the active version."))] = None,
        version: Annotated[int | None, Field(ge=1, description="The version to compare (default: newest).")] = None,
        against: Annotated[int | None, Field(ge=1, description="The version to compare with (default: active).")
                           ] = None,
        max_examples: Annotated[int, Field(ge=1, le=50, description="Example requests per direction.")] = 5,
    ) -> dict[str, Any]:
        """What does one policy version permit that another does not, and the reverse? Proved by Z3, with
        concrete example requests, and the rules that can never apply. By default: the newest version of
        the active policy against the active version. Needs a key whose role may read policies (the agent
        role may not)."""
        async with backend.client(ctx) as client:
            listing = await client.policies()
            if policy is None:
                active = listing.get("active")
                if not active:
                    raise ToolError("no policy is active; name one in 'policy'")
                policy_id = str(active["policy_id"])
            else:
                found = [p for p in listing.get("policies", ()) if policy in (p["id"], p["name"])]
                if not found:
                    names = ", ".join(p["name"] for p in listing.get("policies", ())) or "none"
                    raise ToolError(f"no policy named {policy!r} (policies: {names})")
                policy_id = str(found[0]["id"])
            return dict(await client.policy_diff(policy_id, version, against, max_examples))

    @tool("Query the policy", **_RO)
    async def policy_query(
        ctx: Context,
        action: Annotated[str, Field(min_length=1, max_length=200,
                                     description="Action name or glob, e.g. 'payments.*'.")] = "**",
        resource: Annotated[str | None, Field(max_length=2000, description="Resource pattern, e.g. '/prod/**'.")
                            ] = None,
        when: Annotated[str | None, Field(max_length=2000, description=(
            "Extra condition in the policy language, e.g. '\"analyst\" in principal.roles'."))] = None,
        version_id: Annotated[str | None, Field(max_length=36, description="Default: the active version.")] = None,
    ) -> dict[str, Any]:
        """Can any request matching this pattern ever be permitted? Answers with an example request, or
        Z3's proof that none exists. Needs a key whose role may read policies (not the agent role)."""
        pattern: dict[str, Any] = {"action": action}
        if resource is not None:
            pattern["resource"] = resource
        if when is not None:
            pattern["when"] = when
        async with backend.client(ctx) as client:
            return dict(await client.policy_query(pattern, version_id))

    @tool("Approval status", **_RO)
    async def approval_status(ctx: Context, approval_id: ID) -> dict[str, Any]:
        """The state of an approval request (opened by a require_approval decision): pending, granted,
        used, denied, expired or cancelled, with the votes so far and the deadline. Once granted, decide
        the exact same request again with `approval` set to this id: it is used once."""
        async with backend.client(ctx) as client:
            return dict(await client.approval(approval_id))

    @tool("Issue a delegation", **_WRITES)
    async def issue_delegation(
        ctx: Context,
        delegate: Annotated[str, Field(min_length=1, max_length=200,
                                       description="The principal that may act for you, e.g. 'agent:helper'.")],
        scope: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=500, description=(
            "Rules in the policy language bounding what the delegate may do, e.g. [{\"id\": \"small\", "
            "\"effect\": \"permit\", \"action\": [\"payments.refund\"], \"when\": \"args.amount <= 100\"}]."))],
        expires_in_minutes: Annotated[int, Field(ge=1, le=525600, description="Lifetime of the grant.")] = 60,
        max_depth: Annotated[int, Field(ge=0, le=16, description="How many times it may be re-delegated.")] = 0,
        parent: Annotated[str | None, Field(description=(
            "The grant you are re-delegating (the new scope must attenuate it; Z3 proves it)."))] = None,
    ) -> dict[str, Any]:
        """Let another agent act for you within a scope, until an expiry. A delegated request must be
        permitted for you and inside every scope of the chain."""
        expires = (datetime.now(UTC) + timedelta(minutes=expires_in_minutes)).isoformat()
        async with backend.client(ctx) as client:
            return dict(await client.delegate(delegate, scope, expires, max_depth=max_depth, parent=parent))

    @tool("List delegations", **_RO)
    async def list_delegations(ctx: Context) -> dict[str, Any]:
        """The delegation grants you issued or received (with revocation times)."""
        async with backend.client(ctx) as client:
            return dict(await client.delegations())

    @tool("Revoke a delegation", **{**_WRITES, "destructive_hint": True, "idempotent_hint": True})
    async def revoke_delegation(
        ctx: Context,
        grant_id: ID,
        confirm: Annotated[bool, Field(description=(
            "Must be true: revoking is irreversible and cascades to every grant issued under this one."))] = False,
    ) -> dict[str, Any]:
        """Revoke a delegation grant you issued, and every grant issued under it, at once. Irreversible:
        refused unless `confirm` is true."""
        if confirm is not True:
            raise ToolError("refused: revoke_delegation is destructive (it cascades to every grant issued under "
                            f"{grant_id}); call it again with confirm: true if that is intended")
        async with backend.client(ctx) as client:
            return dict(await client.revoke_delegation(grant_id))

    return mcp

