"""Running the MCP server: stdio with the agent's key from the environment, or streamable HTTP where
each MCP request carries its own agent key as a bearer token, checked with Licet before the request
reaches a tool."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from licet.mcp.server import bearer_key, build_server, env_key


def run_stdio(url: str, api_key: str) -> None:
    """Serve over stdin/stdout with one agent key (the agent that started the process)."""
    build_server(url, env_key(api_key)).run("stdio")


NEEDS_KEY = "send 'Authorization: Bearer <Licet agent API key>' with each MCP request"
NO_OAUTH = f"this MCP server does not use OAuth: {NEEDS_KEY}"
# Where MCP clients look for OAuth (RFC 9728 / RFC 8414 metadata, then the default endpoints) after a 401.
OAUTH_PATHS = ("/.well-known/", "/register", "/authorize", "/token")


class BearerKeys:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <key>` with a key Licet
    accepts (asked once per key every `ttl` seconds); otherwise 401, or 503 if Licet cannot answer.
    There is no OAuth here: the routes where clients look for it answer 404 saying so, without a key,
    so a client reports the missing key instead of a failed OAuth discovery or registration."""

    def __init__(self, app: ASGIApp, licet_url: str, *, ttl: float = 30.0, max_cached: int = 10_000) -> None:
        self.app = app
        self.licet_url = licet_url.rstrip("/")
        self.ttl = ttl
        self.max_cached = max_cached
        self._valid: dict[str, float] = {}
        self._http = httpx.AsyncClient(base_url=self.licet_url, timeout=10)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path.startswith(OAUTH_PATHS):
            await _send_json(send, 404, {"error": "invalid_request", "error_description": NO_OAUTH})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await _error(send, 401, "unauthenticated", f"no API key: {NEEDS_KEY}")
            return
        status = await self._check(token)
        if status == 200:
            await self.app(scope, receive, send)
        elif status in (401, 403):
            await _error(send, 401, "unauthenticated", f"Licet does not accept this API key: {NEEDS_KEY}")
        else:
            await _error(send, 503, "unavailable", "Licet could not check the API key; nothing is permitted")

    async def _check(self, token: str) -> int:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        if self._valid.get(digest, 0.0) > now:
            return 200
        try:
            reply = await self._http.get("/v1/evidence/keys", headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return 503
        if reply.status_code == 200:
            if len(self._valid) >= self.max_cached:
                self._valid = {k: t for k, t in self._valid.items() if t > now}
                if len(self._valid) >= self.max_cached:
                    self._valid.clear()
            self._valid[digest] = now + self.ttl
        return reply.status_code


async def _error(send: Send, status: int, code: str, message: str) -> None:
    extra: list[tuple[bytes, bytes]] = []
    if status == 401:  # RFC 6750: no resource_metadata, so clients have no OAuth server to look for
        extra.append((b"www-authenticate", f'Bearer realm="licet", error="invalid_token", '
                                           f'error_description="{NEEDS_KEY.replace(chr(39), "")}"'.encode()))
    await _send_json(send, status, {"error": {"code": code, "message": message}}, extra)


async def _send_json(send: Send, status: int, document: dict[str, Any],
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def http_app(url: str, *, host: str = "127.0.0.1", path: str = "/mcp") -> Any:
    """The streamable HTTP ASGI app (stateless: every request stands alone, with its own key)."""
    server = build_server(url, bearer_key)
    app = server.streamable_http_app(streamable_http_path=path, stateless_http=True, json_response=True, host=host)
    return BearerKeys(app, url)


def run_http(url: str, *, host: str = "127.0.0.1", port: int = 8765, path: str = "/mcp") -> None:
    """Serve streamable HTTP at `http://host:port/path`."""
    config = uvicorn.Config(http_app(url, host=host, path=path), host=host, port=port, log_level="warning")
    anyio.run(uvicorn.Server(config).serve)
