"""`LicetClient` and `AsyncLicetClient`: the REST API over httpx, with typed results.

Both clients share the route descriptions below and differ only in how they send them. A decide is
retried (same Idempotency-Key, so a retry can never decide twice) on transport errors and 502/503/504;
when the server cannot be reached at all the call raises `LicetUnavailable` — failing closed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from licet.sdk.errors import ApiError, LicetUnavailable
from licet.sdk.types import DecisionResult, PlanResult, TrustedKeys

RETRYABLE = {502, 503, 504}


@dataclass(frozen=True)
class Call:
    """One API request: method, path, query, JSON body, headers; `retry` if repeating it is safe."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry: bool = False


def decide_call(action: str, resource: str, args: dict[str, Any] | None, *, delegation: str | None = None,
                idempotency_key: str | None = None, approval: str | None = None) -> Call:
    """`POST /v1/decide` (a fresh idempotency key unless given, so retries are safe); `approval`: a
    granted approval for this exact request, used once."""
    body: dict[str, Any] = {"action": action, "resource": resource, "args": args or {}}
    if delegation is not None:
        body["delegation"] = delegation
    if approval is not None:
        body["approval"] = approval
    return Call("POST", "/v1/decide", body=body, retry=True,
                headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})


def plan_call(steps: list[dict[str, Any]]) -> Call:
    """`POST /v1/plans/verify` (read-only, safe to retry)."""
    return Call("POST", "/v1/plans/verify", body={"steps": steps}, retry=True)


KEYS_CALL = Call("GET", "/v1/evidence/keys", retry=True)


def _parse(reply: httpx.Response) -> Any:
    if reply.status_code >= 500:
        raise LicetUnavailable(f"Licet answered {reply.status_code}: nothing is permitted")
    try:
        body = reply.json()
    except ValueError as exc:
        raise LicetUnavailable(f"Licet answered {reply.status_code} with a body that is not JSON") from exc
    if reply.status_code >= 400:
        raise ApiError(reply.status_code, body.get("error", {}) if isinstance(body, dict) else {})
    return body


_RETRY = object()


def _segment(value: str) -> str:
    """An id as one URL path segment (a `/` or `..` in it can never reach another route)."""
    return quote(str(value), safe="")


def _settle(call: Call, attempt: int, retries: int, reply: httpx.Response | None,
            error: httpx.TransportError | None) -> Any:
    """The result of one attempt, or `_RETRY`; the same rule for both clients."""
    last = attempt >= retries or not call.retry
    if error is not None:
        if last:
            raise LicetUnavailable(f"Licet unreachable: {error}") from error
        return _RETRY
    assert reply is not None
    if reply.status_code in RETRYABLE and not last:
        return _RETRY
    return _parse(reply)


def _backoff(attempt: int) -> float:
    return 0.05 * 2.0**attempt


class _Routes:
    """The API's calls by name over `_send`, the transport. With the async client each method
    returns an awaitable (its `_send` is a coroutine function), so one list serves both."""

    def _send(self, call: Call) -> Any:
        raise NotImplementedError

    def capabilities(self, actions: list[str]) -> Any:
        """`{policy, actions: {name: {valid, permit, approval}}}`: could this key ever be permitted each
        action (or need approval for it), for some resource and arguments? Advice, not a decision."""
        return self._send(Call("POST", "/v1/decide/capabilities", body={"actions": actions}, retry=True))

    def certificate(self, certificate_id: str) -> Any:
        """`{certificate, log_index}` of a certificate."""
        return self._send(Call("GET", f"/v1/certificates/{_segment(certificate_id)}", retry=True))

    def proof(self, certificate_id: str) -> Any:
        """The evidence bundle (`bundle`, `checkpoint`, `proof`) of a certificate."""
        return self._send(Call("GET", f"/v1/certificates/{_segment(certificate_id)}/proof", retry=True))

    def checkpoint(self) -> Any:
        """The newest signed checkpoint of the tenant's log."""
        return self._send(Call("GET", "/v1/evidence/checkpoint", retry=True))

    def consistency(self, first: int, second: int) -> Any:
        """A consistency proof between two sizes of the tenant's log."""
        return self._send(Call("GET", "/v1/evidence/consistency", {"first": first, "second": second}, retry=True))

    def evidence_keys(self) -> Any:
        """The public keys that verify certificates and checkpoints, as JSON (`trusted_keys` reads them)."""
        return self._send(KEYS_CALL)

    def diff(self, policy_id: str, version: int | None = None, against: int | None = None) -> Any:
        """What a policy version permits that another does not, and the reverse."""
        body = {k: v for k, v in {"version": version, "against": against}.items() if v is not None}
        return self._send(Call("POST", f"/v1/policies/{_segment(policy_id)}/diff", body=body, retry=True))

    def delegate(self, delegate: str, scope: list[dict[str, Any]], expires_at: str, *, max_depth: int = 0,
                 parent: str | None = None) -> Any:
        """Issue a delegation grant (the issuer is this client's principal)."""
        body = {"delegate": delegate, "scope": scope, "expires_at": expires_at, "max_depth": max_depth,
                "parent": parent}
        return self._send(Call("POST", "/v1/delegations", body=body))

    def delegations(self) -> Any:
        """The grants this client can see."""
        return self._send(Call("GET", "/v1/delegations", retry=True))

    def revoke_delegation(self, grant_id: str) -> Any:
        """Revoke a grant and every grant issued under it."""
        return self._send(Call("POST", f"/v1/delegations/{_segment(grant_id)}/revoke"))

    def approval(self, approval_id: str) -> Any:
        """An approval (an agent sees its own): state, request, votes, deadline and history."""
        return self._send(Call("GET", f"/v1/approvals/{_segment(approval_id)}", retry=True))

    def approvals(self, state: str = "pending") -> Any:
        """`{approvals, next_before}`: approvals in `state` (pending, granted, used, denied, expired,
        cancelled, open or all), newest first."""
        return self._send(Call("GET", "/v1/approvals", {"state": state}, retry=True))

    def cancel_approval(self, approval_id: str, reason: str = "cancelled by the requester") -> Any:
        """Withdraw a pending (or granted, unused) approval this client asked for."""
        return self._send(Call("POST", f"/v1/approvals/{_segment(approval_id)}/cancel", body={"reason": reason}))


class LicetClient(_Routes):
    """A synchronous client for one tenant's API key."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})
        self.retries = retries

    def __enter__(self) -> LicetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def decide(self, action: str, resource: str, args: dict[str, Any] | None = None, *,
               delegation: str | None = None, idempotency_key: str | None = None,
               approval: str | None = None) -> DecisionResult:
        """Decide an action; the certified decision, whatever it is."""
        call = decide_call(action, resource, args, delegation=delegation, idempotency_key=idempotency_key,
                           approval=approval)
        return DecisionResult.from_json(self._send(call))

    def wait_for_approval(self, approval_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> Any:
        """Poll an approval until it is no longer pending (granted, denied, expired, cancelled); the
        approval. Raises `TimeoutError` if it is still pending after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.approval(approval_id)
            if found.get("state") != "pending":
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"approval {approval_id} still pending after {timeout} s")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def verify_plan(self, steps: list[dict[str, Any]]) -> PlanResult:
        """Pre-flight: is every step of the plan permitted, for every value of its symbolic arguments?"""
        return PlanResult.from_json(self._send(plan_call(steps)))

    def trusted_keys(self) -> TrustedKeys:
        """The tenant's published certificate keys and log key, parsed, for `verify_certificate` and
        `verify_bundle` (fetched from the server you verify: pin them for a check independent of it)."""
        return TrustedKeys.from_json(self._send(KEYS_CALL))

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            reply, error = None, None
            try:
                reply = self._http.request(call.method, call.path, params=call.params, json=call.body,
                                           headers=call.headers)
            except httpx.TransportError as exc:
                error = exc
            outcome = _settle(call, attempt, self.retries, reply, error)
            if outcome is not _RETRY:
                return outcome
            time.sleep(_backoff(attempt))
            attempt += 1


class AsyncLicetClient(_Routes):
    """An asyncio client for one tenant's API key (the same calls as `LicetClient`, awaited)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = 3,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers={"Authorization": f"Bearer {api_key}"})
        self.retries = retries

    async def __aenter__(self) -> AsyncLicetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def decide(self, action: str, resource: str, args: dict[str, Any] | None = None, *,
                     delegation: str | None = None, idempotency_key: str | None = None,
                     approval: str | None = None) -> DecisionResult:
        """Decide an action; the certified decision, whatever it is."""
        call = decide_call(action, resource, args, delegation=delegation, idempotency_key=idempotency_key,
                           approval=approval)
        return DecisionResult.from_json(await self._send(call))

    async def wait_for_approval(self, approval_id: str, *, timeout: float = 600.0, interval: float = 2.0) -> Any:
        """Poll an approval until it is no longer pending; the approval (`TimeoutError` after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.approval(approval_id)
            if found.get("state") != "pending":
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"approval {approval_id} still pending after {timeout} s")
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    async def verify_plan(self, steps: list[dict[str, Any]]) -> PlanResult:
        """Pre-flight check of a plan."""
        return PlanResult.from_json(await self._send(plan_call(steps)))

    async def trusted_keys(self) -> TrustedKeys:
        """The tenant's published certificate keys and log key, parsed (see `LicetClient.trusted_keys`)."""
        return TrustedKeys.from_json(await self._send(KEYS_CALL))

    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            reply, error = None, None
            try:
                reply = await self._http.request(call.method, call.path, params=call.params, json=call.body,
                                                 headers=call.headers)
            except httpx.TransportError as exc:
                error = exc
            outcome = _settle(call, attempt, self.retries, reply, error)
            if outcome is not _RETRY:
                return outcome
            await asyncio.sleep(_backoff(attempt))
            attempt += 1
