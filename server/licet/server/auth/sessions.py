"""People's sessions: opaque random tokens, stored as SHA-256, with idle and absolute expiry.

A session is `lcs_<43 characters of base64url>` (256 bits), sent as a bearer token by API clients or
as the HttpOnly cookie `licet_session` by the dashboard. A session whose person has a second factor
starts at stage `mfa_pending` and can only finish MFA until it does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server.errors import ApiError
from licet.server.models import User, UserSession
from licet.server.settings import Settings
from licet.server.time import utcnow

TOKEN_PREFIX = "lcs_"
COOKIE = "licet_session"
CSRF_HEADER = "x-csrf-token"
# The CSRF token as a cookie scripts of the dashboard's own origin can read and echo in CSRF_HEADER
# (double submit): another site can neither read it nor set the header.
CSRF_COOKIE = "licet_csrf"
_TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often (reads stay reads)

_sessions = UserSession.__table__.c
_users = User.__table__.c
_BY_HASH = select(_sessions.id, _sessions.tenant_id, _sessions.user_id, _sessions.stage, _sessions.csrf_hash,
                  _sessions.created_at,
                  _sessions.last_seen_at, _sessions.expires_at, _sessions.mfa_at, _sessions.revoked_at,
                  _users.role, _users.email, _users.disabled_at).join(
    User.__table__, _users.id == _sessions.user_id).where(_sessions.token_hash == bindparam("hash"))


@dataclass(frozen=True)
class SignedIn:
    """A live session and the person it belongs to."""

    session_id: str
    tenant_id: str
    user_id: str
    role: str
    email: str
    stage: str
    mfa_at: datetime | None
    csrf_hash: str

    @property
    def principal_id(self) -> str:
        """The principal id policies and the audit trail see for this person."""
        return principal_of(self.email)


def principal_of(email: str) -> str:
    """A person's principal id."""
    return f"user:{email}"


def token_hash(token: str) -> str:
    """What is stored of a session or CSRF token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    """A freshly opened session: its row and the two secrets shown once."""

    record: UserSession
    token: str
    csrf_token: str


def new_secrets() -> tuple[str, str]:
    """A fresh session token and CSRF token (256 random bits each)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def open_session(db: AsyncSession, user: User, settings: Settings, *, method: str, mfa: bool,
                 source: str, user_agent: str) -> Issued:
    """Add a session for `user` to the transaction; `mfa_pending` if the person has a second factor
    that this sign-in has not passed yet."""
    now = utcnow()
    token, csrf = new_secrets()
    pending = not mfa and has_second_factor(user)
    record = UserSession(id=str(uuid.uuid4()), tenant_id=user.tenant_id, user_id=user.id, token_hash=token_hash(token),
                         csrf_hash=token_hash(csrf), stage="mfa_pending" if pending else "active", method=method,
                         created_at=now, last_seen_at=now,
                         expires_at=now + timedelta(seconds=settings.session_absolute_seconds),
                         mfa_at=now if mfa else None, source=source[:64], user_agent=user_agent[:300])
    db.add(record)
    return Issued(record, token, csrf)


def has_second_factor(user: User) -> bool:
    """Whether the person has confirmed TOTP (passkeys are checked by the caller, which loads them)."""
    return user.totp_enabled_at is not None


async def resolve(services: Any, token: str, *, allow_pending: bool = False) -> SignedIn:
    """The live session behind `token`; 401 if unknown, revoked, expired or (unless allowed) awaiting MFA."""
    if not token.startswith(TOKEN_PREFIX):
        raise ApiError(401, "unauthenticated", "not a session token")
    row = await services.db.first(_BY_HASH, {"hash": token_hash(token)})
    now = utcnow()
    settings: Settings = services.settings
    if row is None or row.revoked_at is not None or row.disabled_at is not None:
        raise ApiError(401, "unauthenticated", "unknown or revoked session")
    if row.expires_at <= now or row.last_seen_at + timedelta(seconds=settings.session_idle_seconds) <= now or (
            row.stage != "active" and row.created_at + timedelta(seconds=settings.mfa_pending_seconds) <= now):
        raise ApiError(401, "session_expired", "the session has expired: sign in again")
    if row.stage != "active" and not allow_pending:
        raise ApiError(401, "mfa_required", "finish signing in with your second factor: POST /v1/auth/mfa/totp "
                       "or /v1/auth/mfa/passkey")
    if now - row.last_seen_at >= _TOUCH_EVERY:
        async with services.db.write() as db:
            await db.execute(update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now))
    return SignedIn(row.id, row.tenant_id, row.user_id, row.role, row.email, row.stage, row.mfa_at, row.csrf_hash)


def check_csrf(signed_in: SignedIn, presented: str) -> None:
    """A cookie-authenticated write must echo the session's CSRF token (a cross-site form cannot)."""
    if not presented or not hmac.compare_digest(token_hash(presented), signed_in.csrf_hash):
        raise ApiError(403, "csrf_failed", f"a cookie-authenticated write needs the session's CSRF token in "
                       f"the {CSRF_HEADER} header")
