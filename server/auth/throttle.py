"""Login throttling: failed sign-ins slow down, then lock, per account and per source address.

The account key is the tenant and the email as typed, whether or not such an account exists, so the
answers never tell an attacker which accounts are real. Counts live in the database: every worker
process sees the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.models import LoginThrottle
from server.settings import Settings


@dataclass(frozen=True)
class Subject:
    """Whom a sign-in attempt counts against."""

    account: str
    source: str

    def rows(self) -> tuple[tuple[str, str], ...]:
        """The (scope, key) rows of this attempt."""
        return (("account", self.account), ("source", self.source))


def subject(tenant: str, email: str, source: str) -> Subject:
    """The throttle subject of an attempt by `source` on `email` in `tenant`."""
    return Subject(f"{tenant}\n{email.strip().lower()}"[:400], source[:400] or "unknown")


async def locked_until(db: AsyncSession, who: Subject, now: datetime) -> datetime | None:
    """When the later of the account's and the source's locks ends, if either is locked now."""
    rows = (await db.execute(select(LoginThrottle).where(
        LoginThrottle.scope.in_(("account", "source")),
        LoginThrottle.key.in_((who.account, who.source))))).scalars()
    ends = [r.locked_until for r in rows if (r.scope, r.key) in who.rows()
            and r.locked_until is not None and r.locked_until > now]
    return max(ends, default=None)


async def record_failure(db: AsyncSession, who: Subject, settings: Settings, now: datetime) -> tuple[float, bool]:
    """Count a failed attempt; returns how long to delay the answer and whether a lock began."""
    window = timedelta(seconds=settings.login_lock_seconds)
    limits = {"account": settings.login_lock_failures, "source": settings.source_lock_failures}
    delay, locked = 0.0, False
    for scope, key in who.rows():
        row = await db.get(LoginThrottle, (scope, key), with_for_update=True)
        if row is None:
            row = LoginThrottle(scope=scope, key=key, failures=0, window_start=now)
            db.add(row)
        elif now - row.window_start > window:
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= limits[scope] and (row.locked_until is None or row.locked_until <= now):
            row.locked_until, locked = now + window, True
        if scope == "account":  # 0.1 s, 0.2 s, 0.4 s, ... up to the cap
            delay = min(settings.login_delay_cap_seconds, 0.1 * 2 ** (row.failures - 1))
    return delay, locked


async def record_success(db: AsyncSession, who: Subject) -> None:
    """A successful sign-in clears its account's count (not the source's: one good password among
    many guesses from an address does not excuse the guesses)."""
    await db.execute(delete(LoginThrottle).where(LoginThrottle.scope == "account", LoginThrottle.key == who.account))
