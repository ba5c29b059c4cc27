"""Identifiers: UUIDv7 (RFC 9562) from a caller-supplied time and randomness."""

from __future__ import annotations

import uuid
from datetime import datetime


def uuid7(now: datetime | float, random: bytes) -> str:
    """A UUIDv7 string: 48-bit Unix milliseconds, then 74 bits taken from `random` (≥ 10 bytes)."""
    if len(random) < 10:
        raise ValueError("uuid7 needs at least 10 random bytes")
    millis = int((now.timestamp() if isinstance(now, datetime) else now) * 1000)
    rand = int.from_bytes(random[:10], "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # variant
    value |= rand & (2**62 - 1)  # rand_b (62 bits)
    return str(uuid.UUID(int=value))
