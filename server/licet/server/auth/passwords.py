"""Password hashing (argon2id through passlib) and the strength rule for new passwords."""

from __future__ import annotations

import asyncio

import zxcvbn
from passlib.context import CryptContext

# argon2id, 64 MiB, 2 passes, one lane: ~0.1 s on one core. One lane, and at most one hash at a time
# per process (below), so a burst of sign-ins queues instead of taking every core from decisions.
CONTEXT = CryptContext(schemes=["argon2"], argon2__memory_cost=65536, argon2__rounds=2, argon2__parallelism=1)
_HASHING = asyncio.Semaphore(1)
# Verified against when the account does not exist, so an unknown email costs the same time.
_DUMMY = CONTEXT.hash("licet: no such account")


class WeakPassword(ValueError):
    """The password fails the strength rule; the message says why."""


def check_strength(password: str, min_length: int, *, user_inputs: tuple[str, ...] = ()) -> None:
    """Refuse short passwords and those zxcvbn guesses easily (its common-password lists included)."""
    if len(password) < min_length:
        raise WeakPassword(f"at least {min_length} characters")
    if len(password) > 1024:
        raise WeakPassword("at most 1024 characters")
    # zxcvbn is quadratic in length; beyond 100 characters only the prefix matters for guessability.
    verdict = zxcvbn.zxcvbn(password[:100], user_inputs=list(user_inputs))
    if verdict["score"] < 3:
        advice = verdict["feedback"].get("warning") or " ".join(verdict["feedback"].get("suggestions", []))
        raise WeakPassword(f"too easy to guess{': ' + advice if advice else ''}")


async def hash_password(password: str) -> str:
    """An argon2id hash of `password`, computed off the event loop."""
    async with _HASHING:
        return await asyncio.to_thread(CONTEXT.hash, password)


async def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches `stored` (None: no password set, same cost), and a new hash when the
    stored one uses outdated parameters."""
    async with _HASHING:
        if stored is None:
            await asyncio.to_thread(CONTEXT.verify, password, _DUMMY)
            return False, None
        return await asyncio.to_thread(CONTEXT.verify_and_update, password, stored)
