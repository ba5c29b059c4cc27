"""The dashboard's only way to data: the `/v1` API, called in process with the person's own session.

Every read and every action goes through the same routes, roles, step-up checks and audit trail as
any API client: the request carries the browser's session cookie (and, for a write, its CSRF token,
read from the cookie the API set for exactly that) and the browser's address. Whatever the API
refuses, the dashboard cannot do.
"""

from __future__ import annotations

import http.cookies
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp

from licet.server.auth.sessions import COOKIE, CSRF_COOKIE, CSRF_HEADER

_bound: list[ASGIApp] = []  # the API app this process serves (set once by `bind`)


def bind(api: ASGIApp) -> None:
    """Make `api` the app the dashboard's calls go to (the one `licet serve` serves)."""
    _bound[:] = [api]


@dataclass(frozen=True)
class Reply:
    """An API answer: the status and the decoded JSON body."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str:
        """The API's stable error code (`step_up_required`, `forbidden`, ...), or "" on success."""
        if self.ok or not isinstance(self.body, dict):
            return ""
        return str(self.body.get("error", {}).get("code", ""))

    @property
    def message(self) -> str:
        """What the API said went wrong, in its own words."""
        if self.ok:
            return ""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", ""))
        return f"HTTP {self.status}"


def session_cookies(cookie_header: str) -> tuple[str, str]:
    """The session token and CSRF token in a Cookie header ("" when absent)."""
    jar = http.cookies.SimpleCookie()
    try:
        jar.load(cookie_header)
    except http.cookies.CookieError:
        return "", ""
    session = jar[COOKIE].value if COOKIE in jar else ""
    csrf = jar[CSRF_COOKIE].value if CSRF_COOKIE in jar else ""
    return session, csrf


@dataclass(frozen=True)
class Api:
    """`/v1` as one signed-in person sees it (their cookie, CSRF token and address)."""

    session: str
    csrf: str
    client_ip: str = ""
    user_agent: str = ""

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        if not _bound:
            raise RuntimeError("the dashboard is not bound to an API app (dashboard.api.bind)")
        # raise_app_exceptions=False: an error inside the API reaches the page as the 500 a browser would get.
        transport = httpx.ASGITransport(app=_bound[0], raise_app_exceptions=False,
                                        client=(self.client_ip or "127.0.0.1", 0))
        headers = {"user-agent": self.user_agent or "licet-dashboard", CSRF_HEADER: self.csrf}
        cookies = {COOKIE: self.session} if self.session else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard.internal", headers=headers,
                                     cookies=cookies) as client:
            yield client

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: Any = None) -> Reply:
        """One API call; the answer whatever its status."""
        async with self._client() as client:
            response = await client.request(method, path, params=params, json=json)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Reply(response.status_code, body)

    async def get(self, path: str, **params: Any) -> Reply:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.call("POST", path, json=json if json is not None else {})

    async def stream(self, path: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        """The body of a streamed GET (exports), chunk by chunk."""
        async with self._client() as client, client.stream("GET", path, params=params) as response:
            async for chunk in response.aiter_bytes():
                yield chunk
