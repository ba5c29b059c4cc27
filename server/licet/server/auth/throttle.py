"""Sign-in throttling: attempts are counted before they are checked, slow down, then lock, per
subject (an account, or a person's second factor) and per source address.

An attempt is counted (under a row lock) before the password or code is verified and cleared only by
a success, so neither a burst of parallel guesses nor a password sign-in between guesses at a second
factor escapes the count. The account key is the tenant and the email as typed, whether or not such an
account exists, so the answers never tell an attacker which accounts are real. Counts live in the
database: every worker process sees the same ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server.models import LoginThrottle
from licet.server.settings import Settings


class Locked(Exception):
    """The subject or the source is locked until `until`."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until.isoformat())
        self.until = until


@dataclass(frozen=True)
class Subject:
    """Whom an attempt counts against: its subject row and its source address."""

    scope: str  # account | mfa | passkey
    key: str
    source: str

    def rows(self) -> tuple[tuple[str, str], ...]:
        """The (scope, key) rows of this attempt."""
        return ((self.scope, self.key), ("source", self.source))


def source_of(address: str) -> str:
    """The throttle key of a client address: IPv6 by /64 (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:400] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def account(tenant: str, email: str, source: str) -> Subject:
    """A password attempt by `source` on `email` in `tenant`."""
    return Subject("account", f"{tenant}\n{email.strip().lower()}"[:400], source_of(source))


def second_factor(user_id: str, source: str) -> Subject:
    """A second-factor attempt (TOTP or backup code) for a person."""
    return Subject("mfa", user_id, source_of(source))


def passkey(tenant: str, credential_id: str, source: str) -> Subject:
    """A passkey sign-in by `source` presenting the credential `credential_id` of `tenant`."""
    return Subject("passkey", f"{tenant}\n{credential_id}"[:400], source_of(source))


def _insert_missing(db: AsyncSession, values: dict[str, Any]) -> Any:
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(LoginThrottle).values(**values).on_conflict_do_nothing()


async def attempt(db: AsyncSession, who: Subject, settings: Settings, now: datetime) -> int:
    """Count an attempt before it is checked; its number within the window. Raises `Locked` (counting
    nothing) while the subject or the source is locked; the attempt that reaches a limit locks the
    next ones."""
    window = timedelta(seconds=settings.login_lock_seconds)
    limits = {"account": settings.login_lock_failures, "mfa": settings.login_lock_failures,
              "passkey": settings.login_lock_failures, "source": settings.source_lock_failures}
    rows = []
    for scope, key in who.rows():
        await db.execute(_insert_missing(db, {"scope": scope, "key": key, "failures": 0, "window_start": now}))
        row = await db.get(LoginThrottle, (scope, key), with_for_update=True, populate_existing=True)
        if row is None:  # inserted just above, in this transaction: a broken database, so refuse
            raise RuntimeError("throttle row vanished")
        if row.locked_until is not None and row.locked_until > now:
            raise Locked(row.locked_until)
        if now - row.window_start > window:
            row.failures, row.window_start, row.locked_until = 0, now, None
        rows.append(row)
    for row in rows:
        row.failures += 1
        if row.failures >= limits[row.scope]:
            row.locked_until = now + window
    return rows[0].failures


def delay(settings: Settings, attempts: int) -> float:
    """How long a failed attempt's answer waits: 0.1 s, doubling per attempt, up to the cap."""
    return float(min(settings.login_delay_cap_seconds, 0.1 * 2 ** (attempts - 1)))


def locks(settings: Settings, attempts: int) -> bool:
    """Whether the attempt numbered `attempts` locked its subject."""
    return attempts >= settings.login_lock_failures


async def succeeded(db: AsyncSession, who: Subject) -> None:
    """A success clears its subject's count and takes its own attempt off the source's (the failed
    guesses from that address still count)."""
    await db.execute(delete(LoginThrottle).where(LoginThrottle.scope == who.scope, LoginThrottle.key == who.key))
    await db.execute(update(LoginThrottle).where(
        LoginThrottle.scope == "source", LoginThrottle.key == who.source, LoginThrottle.failures > 0).values(
        failures=LoginThrottle.failures - 1))
