"""Who is calling: an API key (agents and automation) or a person's session, resolved to a
tenant-scoped caller.

A key is `licet_<43 characters of base64url>` (256 random bits); only its SHA-256 is stored, which is
enough for a secret of that entropy (a slow password hash buys nothing here and costs every request).
Sessions (server/auth/sessions.py) arrive as `Authorization: Bearer lcs_…` or as the dashboard's
cookie; a cookie-authenticated write must also carry the session's CSRF token.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import ColumnElement, Connection, bindparam, or_, select

from licet.server.auth import sessions
from licet.server.errors import ApiError
from licet.server.models import ApiKey
from licet.server.roles import allowed
from licet.server.time import duration, utcnow

KEY_PREFIX = "licet_"
_keys = ApiKey.__table__.c
_KEY_BY_HASH = select(_keys.id, _keys.tenant_id, _keys.role, _keys.principal_id, _keys.principal_roles,
                      _keys.attributes, _keys.revoked_at, _keys.expires_at).where(
    _keys.secret_hash == bindparam("hash"))


def new_api_key() -> tuple[str, str]:
    """A fresh key and the hash to store."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    return token, key_hash(token)


def key_hash(token: str) -> str:
    """What is stored of a key."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """The authenticated identity of a request; the server alone fills it in."""

    tenant_id: str
    role: str
    principal_id: str
    principal_roles: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    key_id: str | None = None
    user_id: str | None = None  # a person signed in with a session (None for API keys)
    session_id: str | None = None
    mfa_at: datetime | None = None  # when this session last passed a second factor

    @property
    def mfa(self) -> bool:
        """Whether the caller passed multi-factor authentication in this session."""
        return self.mfa_at is not None

    def principal(self) -> dict[str, Any]:
        """The request's `principal` part as policies see it."""
        return {**self.attributes, "id": self.principal_id, "tenant": self.tenant_id,
                "roles": list(self.principal_roles)}


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


async def authenticate(request: Request) -> Caller:
    """The caller of this request, from its API key or session; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
        return await _key_caller(request.app.state.services, token.strip())
    return _session_caller(await session_of(request))


async def session_of(request: Request, *, allow_pending: bool = False) -> sessions.SignedIn:
    """The person's session of this request: `Bearer lcs_…`, or the cookie plus, for a write, the
    CSRF header; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    services = request.app.state.services
    if scheme.lower() == "bearer" and token.strip().startswith(sessions.TOKEN_PREFIX):
        return await sessions.resolve(services, token.strip(), allow_pending=allow_pending)
    if header:
        raise _unauthenticated("unknown credentials: send Authorization: Bearer licet_… (API key) or lcs_… (session)")
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        raise _unauthenticated("an API key or a session is required: Authorization: Bearer licet_… or lcs_…")
    signed_in = await sessions.resolve(services, cookie, allow_pending=allow_pending)
    if request.method not in _SAFE_METHODS:
        sessions.check_csrf(signed_in, request.headers.get(sessions.CSRF_HEADER, ""))
    return signed_in


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _key_caller(services: Any, token: str) -> Caller:
    return _key_row_caller(await services.db.first(_KEY_BY_HASH, {"hash": key_hash(token)}))


def live_key(now: datetime) -> ColumnElement[bool]:
    """The API keys that authenticate at `now` (the SQL form of `_key_row_caller`'s checks): not
    revoked (or still in a rotation's grace period) and not expired."""
    return (or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now)
            & or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def _key_row_caller(key: Any) -> Caller:
    now = utcnow()
    if key is None or (key.revoked_at is not None and key.revoked_at <= now):
        raise _unauthenticated("unknown or revoked API key")
    if key.expires_at is not None and key.expires_at <= now:
        raise _unauthenticated("expired API key")
    return Caller(key.tenant_id, key.role, key.principal_id, tuple(key.principal_roles), dict(key.attributes),
                  key.id)


@dataclass(frozen=True)
class KeyCredential:
    """An API key presented to a route that looks it up inside its own write transaction."""

    digest: str  # the key's hash, as stored
    permission: str

    def row(self, connection: Connection) -> Any:
        """The key's row as the transaction sees it (None if there is none), for `admitted`."""
        return connection.execute(_KEY_BY_HASH, {"hash": self.digest}).first()

    async def check(self, services: Any) -> Caller:
        """The caller outside any transaction (for a request that never reaches one)."""
        return self.admitted(await services.db.first(_KEY_BY_HASH, {"hash": self.digest}))

    def admitted(self, row: Any) -> Caller:
        """The caller of the key's `row`; 401 or 403 as `require` would answer."""
        caller = _key_row_caller(row)
        _check_role(caller, self.permission)
        return caller


def _check_role(caller: Caller, permission: str) -> None:
    if not allowed(caller.role, permission):
        raise ApiError(403, "forbidden", f"the {caller.role} role may not {permission}")


def _session_caller(signed_in: sessions.SignedIn) -> Caller:
    return Caller(signed_in.tenant_id, signed_in.role, signed_in.principal_id, (signed_in.role,), {},
                  user_id=signed_in.user_id, session_id=signed_in.session_id, mfa_at=signed_in.mfa_at)


def require(permission: str, *, step_up: bool = False) -> Any:
    """A dependency: the caller, if its role holds `permission` (403 otherwise); with `step_up`, only a
    person's session that passed MFA within the configured window."""

    async def check(request: Request, caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        _check_role(caller, permission)
        if step_up:
            window = request.app.state.services.settings.step_up_seconds
            if caller.user_id is None:
                raise ApiError(403, "step_up_required", f"{permission} needs a person signed in with "
                               "multi-factor authentication; API keys cannot do it")
            if caller.mfa_at is None or utcnow() - caller.mfa_at > timedelta(seconds=window):
                raise ApiError(403, "step_up_required", f"{permission} needs multi-factor authentication within "
                               f"the last {duration(window)}: POST /v1/auth/mfa/totp or /v1/auth/mfa/passkey")
        return caller

    check.permission = permission  # type: ignore[attr-defined]  # read by the role-table test and docs
    check.step_up = step_up  # type: ignore[attr-defined]
    return Depends(check)


def require_in_write(permission: str) -> Any:
    """A dependency like `require(permission)` for a route whose write transaction authenticates
    an API key itself (`KeyCredential.caller`): the key is then checked by the transaction that
    records the effect (on SQLite, whose writes are serial, no revocation can commit in between), and
    the request saves a database round trip. A person's session is resolved and checked here, as by
    `require`."""

    async def check(request: Request) -> Caller | KeyCredential:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
            credential = KeyCredential(key_hash(token.strip()), permission)
            # For an invalid body, the error handler checks the key before answering (server/errors.py).
            request.state.check_credential = functools.partial(credential.check, request.app.state.services)
            return credential
        caller = _session_caller(await session_of(request))
        _check_role(caller, permission)
        return caller

    check.permission = permission  # type: ignore[attr-defined]
    check.step_up = False  # type: ignore[attr-defined]
    return Depends(check)


def public() -> Any:
    """A dependency marking a route anyone may call (signing in): the role table lists it as such."""

    async def anyone() -> None:
        return None

    anyone.permission = "public"  # type: ignore[attr-defined]
    return Depends(anyone)


def person(*, allow_pending: bool = False) -> Any:
    """A dependency: the signed-in person's session (a person's own account routes); with
    `allow_pending`, also a session still waiting for its second factor."""

    async def signed_in(request: Request) -> sessions.SignedIn:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
            caller = await _key_caller(request.app.state.services, token.strip())  # 401 for a bad key
            raise ApiError(403, "forbidden", f"the {caller.role} role may not account: these routes are a "
                           "person's own, signed in with a session")
        return await session_of(request, allow_pending=allow_pending)

    signed_in.permission = "account"  # type: ignore[attr-defined]
    return Depends(signed_in)
