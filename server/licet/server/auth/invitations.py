"""Invitations: single-use, expiring links with which a person sets a password, the first time or
again after an administrator's reset."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server.auth.sessions import token_hash
from licet.server.models import Invitation, User
from licet.server.time import utcnow


async def invite(db: AsyncSession, user: User, by: str, ttl_seconds: int) -> tuple[Invitation, str]:
    """A new invitation for `user` and its token (shown once; only its hash is kept). Earlier unused
    invitations of the user stop working."""
    now = utcnow()
    await void_pending(db, user.id)
    token = secrets.token_urlsafe(32)
    invitation = Invitation(id=str(uuid.uuid4()), tenant_id=user.tenant_id, user_id=user.id,
                            token_hash=token_hash(token), created_at=now, created_by=by,
                            expires_at=now + timedelta(seconds=ttl_seconds))
    db.add(invitation)
    return invitation, token


async def void_pending(db: AsyncSession, user_id: str) -> None:
    """Every unused invitation of the person stops working (marked used now): a new one replaces them,
    or the account was disabled, and a link handed out before must not set a password later."""
    await db.execute(update(Invitation).where(Invitation.user_id == user_id, Invitation.used_at.is_(None)).values(
        used_at=utcnow()))
