"""The SDK's async client plus the few routes the MCP tools need that the SDK does not name yet."""

from __future__ import annotations

from typing import Any

from licet.sdk.client import AsyncLicetClient, Call


class McpLicetClient(AsyncLicetClient):
    """`AsyncLicetClient` with policy queries and checkpoints by size (approvals are in the SDK)."""

    async def policy_query(self, pattern: dict[str, Any], version_id: str | None = None) -> Any:
        """`POST /v1/policies/query`: can any request matching `pattern` be permitted?"""
        body: dict[str, Any] = {"pattern": pattern}
        if version_id is not None:
            body["version_id"] = version_id
        return await self._send(Call("POST", "/v1/policies/query", body=body, retry=True))

    async def policy_diff(self, policy_id: str, version: int | None, against: int | None, max_examples: int) -> Any:
        """`POST /v1/policies/{id}/diff` with `max_examples`."""
        body = {k: v for k, v in {"version": version, "against": against}.items() if v is not None}
        body["max_examples"] = max_examples
        return await self._send(Call("POST", f"/v1/policies/{policy_id}/diff", body=body, retry=True))

    async def policies(self) -> Any:
        """`GET /v1/policies`: every policy (id, name, newest version) and the active version."""
        return await self._send(Call("GET", "/v1/policies", retry=True))

    async def checkpoint_at(self, size: int) -> Any:
        """The signed checkpoint kept for tree size `size`."""
        return await self._send(Call("GET", f"/v1/evidence/checkpoints/{size}", retry=True))
