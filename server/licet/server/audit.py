"""The administrative audit trail: who changed which policy, key, user or grant, and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server.identity import Caller
from licet.server.models import AuditEvent
from licet.server.time import utcnow


async def record(session: AsyncSession, caller: Caller, action: str, target: str, **details: Any) -> None:
    """Add an event to the caller's tenant's trail, in the caller's transaction."""
    await session.execute(insert(AuditEvent).values(
        tenant_id=caller.tenant_id, at=utcnow(), actor=caller.principal_id, action=action, target=target,
        details={"role": caller.role, "key_id": caller.key_id, "session_id": caller.session_id, **details}))
