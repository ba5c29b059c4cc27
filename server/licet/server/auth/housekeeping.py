"""Forgetting what sign-in no longer needs: spent or expired passkey challenges, finished sessions and
throttle counts whose window is over. Run by the periodic sweep, so that unauthenticated requests
(which create challenges and throttle rows) cannot grow the database without bound."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server.models import LoginThrottle, UserSession, WebAuthnChallenge
from licet.server.settings import Settings

GRACE = timedelta(hours=1)  # a row is kept this long past its use, never deleted under a request reading it


async def purge(db: AsyncSession, settings: Settings, now: datetime) -> dict[str, int]:
    """Delete the rows no request can use any more; how many of each."""
    cutoff = now - GRACE
    idle = timedelta(seconds=settings.session_idle_seconds)
    deleted = {
        "challenges": await db.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < cutoff)),
        "sessions": await db.execute(delete(UserSession).where(or_(
            UserSession.expires_at < cutoff, UserSession.revoked_at < cutoff,
            UserSession.last_seen_at < cutoff - idle))),
        "throttle": await db.execute(delete(LoginThrottle).where(
            LoginThrottle.window_start < cutoff - timedelta(seconds=settings.login_lock_seconds),
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < cutoff))),
    }
    return {name: int(result.rowcount) for name, result in deleted.items()}  # type: ignore[attr-defined]
