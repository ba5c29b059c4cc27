"""The server's clock: the one place it reads the time (the kernel only gets it as an argument)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def duration(seconds: int) -> str:
    """A span of time as people read it: "10 minutes", "1 minute", "45 seconds"."""
    amount, unit = (seconds // 60, "minute") if seconds >= 60 and seconds % 60 == 0 else (seconds, "second")
    return f"{amount} {unit}{'' if amount == 1 else 's'}"
