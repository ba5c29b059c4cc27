"""Who is calling: API keys (agents and automation) resolved to a tenant-scoped caller.

A key is `licet_<43 characters of base64url>` (256 random bits); only its SHA-256 is stored, which is
enough for a secret of that entropy (a slow password hash buys nothing here and costs every request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import bindparam, select

from server.errors import ApiError
from server.models import ApiKey
from server.roles import allowed
from server.time import utcnow

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
    mfa: bool = False

    def principal(self) -> dict[str, Any]:
        """The request's `principal` part as policies see it."""
        return {**self.attributes, "id": self.principal_id, "tenant": self.tenant_id,
                "roles": list(self.principal_roles)}


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


async def authenticate(request: Request) -> Caller:
    """The caller of this request, from its bearer API key; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        raise _unauthenticated("an API key is required: Authorization: Bearer licet_…")
    services = request.app.state.services
    async with services.db.reader.connect() as connection:
        key = (await connection.execute(_KEY_BY_HASH, {"hash": key_hash(token.strip())})).first()
    now = utcnow()
    if key is None or (key.revoked_at is not None and key.revoked_at <= now):
        raise _unauthenticated("unknown or revoked API key")
    if key.expires_at is not None and key.expires_at <= now:
        raise _unauthenticated("expired API key")
    return Caller(key.tenant_id, key.role, key.principal_id, tuple(key.principal_roles), dict(key.attributes),
                  key.id)


def require(permission: str) -> Any:
    """A dependency: the caller, if its role holds `permission`; 403 otherwise."""

    async def check(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if not allowed(caller.role, permission):
            raise ApiError(403, "forbidden", f"the {caller.role} role may not {permission}")
        return caller

    return Depends(check)
