"""Ed25519 signing keys and their ids, and the periods in which a deployment's keys sign (its key
history). Keys come from random seeds supplied by the caller."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from licet.kernel.errors import LicetError

PRIVATE_KEY_TYPE = "licet-ed25519-private-key"
PUBLIC_KEY_TYPE = "licet-ed25519-public-key"


def key_id_for(public_key: bytes) -> str:
    """Stable id of a public key: `ed25519:` and the first 16 hex digits of its SHA-256."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A raw 32-byte Ed25519 public key and its id."""

    raw: bytes

    @property
    def key_id(self) -> str:
        """The key's id (see `key_id_for`)."""
        return key_id_for(self.raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True iff `signature` is this key's Ed25519 signature of `message`."""
        try:
            VerifyKey(self.raw).verify(message, signature)
        except (BadSignatureError, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, str]:
        """The public key file's content."""
        return {
            "type": PUBLIC_KEY_TYPE,
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.raw).decode(),
        }


class Signer:
    """An Ed25519 private key. Built only from a 32-byte seed the caller drew from a CSPRNG."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise LicetError("an Ed25519 seed is 32 bytes")
        self._key = SigningKey(seed)
        self.public_key = PublicKey(bytes(self._key.verify_key))

    @property
    def key_id(self) -> str:
        """Id of the matching public key."""
        return self.public_key.key_id

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return self._key.sign(message).signature

    def to_json(self) -> dict[str, str]:
        """The private key file's content (keep it 0600)."""
        return {
            "type": PRIVATE_KEY_TYPE,
            "key_id": self.key_id,
            "seed": base64.b64encode(bytes(self._key)).decode(),
        }


def _decode_b64(text: str, what: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise LicetError(f"{what}: not valid base64") from exc
    if len(raw) != size:
        raise LicetError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def parse_signer(text: str) -> Signer:
    """Read a private key file's content (JSON written by `Signer.to_json`)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LicetError("private key file: not JSON") from exc
    if not isinstance(data, dict) or data.get("type") != PRIVATE_KEY_TYPE:
        raise LicetError(f"private key file: type must be {PRIVATE_KEY_TYPE!r}")
    return Signer(_decode_b64(str(data.get("seed", "")), "private key file: seed", 32))


def parse_public_key(text: str) -> PublicKey:
    """Read a public key: a public key file's JSON, or the bare base64 of the 32 raw bytes."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise LicetError("public key file: not JSON") from exc
        if not isinstance(data, dict) or data.get("type") != PUBLIC_KEY_TYPE:
            raise LicetError(f"public key file: type must be {PUBLIC_KEY_TYPE!r}")
        key = PublicKey(_decode_b64(str(data.get("public_key", "")), "public key", 32))
        if data.get("key_id") not in (None, key.key_id):
            raise LicetError("public key file: key_id does not match the key")
        return key
    return PublicKey(_decode_b64(stripped, "public key", 32))


def rfc3339(moment: datetime) -> str:
    """`moment` as certificates write times: UTC, microseconds, `Z` (`2026-01-01T00:00:00.000000Z`)."""
    if moment.tzinfo is None:
        raise ValueError("a time must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_rfc3339(text: object, what: str) -> datetime:
    """A timezone-aware time from RFC 3339 text; `LicetError` naming `what` otherwise."""
    if not isinstance(text, str):
        raise LicetError(f"{what}: not a time string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LicetError(f"{what}: {text[:40]!r} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise LicetError(f"{what}: {text[:40]!r} has no time zone")
    return moment


@dataclass(frozen=True)
class KeyPeriod:
    """A public key and the half-open interval `[not_before, not_after)` in which it signs. `None`
    leaves that side open: no `not_before` for a key that signed before any history was kept, no
    `not_after` for the key that signs now. A retired key still verifies what it signed inside its
    period, and nothing it signed outside it."""

    public_key: PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        if self.not_before is not None and self.not_after is not None and self.not_after <= self.not_before:
            raise LicetError(f"key {self.key_id}: not_after must be later than not_before")

    @property
    def key_id(self) -> str:
        """The key's id."""
        return self.public_key.key_id

    def covers(self, moment: datetime) -> bool:
        """Whether the key may sign at `moment` (`not_before` included, `not_after` excluded)."""
        return (self.not_before is None or self.not_before <= moment) and (
            self.not_after is None or moment < self.not_after)

    def describe(self) -> str:
        """The period as `[start, end)`, `…` for an open side."""
        start = rfc3339(self.not_before) if self.not_before else "…"
        end = rfc3339(self.not_after) if self.not_after else "…"
        return f"[{start}, {end})"

    def to_json(self) -> dict[str, str | None]:
        """The public key file's fields, with `not_before` and `not_after` (RFC 3339 or null)."""
        return {**self.public_key.to_json(),
                "not_before": rfc3339(self.not_before) if self.not_before else None,
                "not_after": rfc3339(self.not_after) if self.not_after else None}


def _optional_time(entry: Mapping[str, Any], name: str, where: str) -> datetime | None:
    value = entry.get(name)
    return None if value is None else parse_rfc3339(value, f"{where}.{name}")


def parse_key_period(entry: Any, where: str = "key") -> KeyPeriod:
    """A `KeyPeriod` from its JSON (`KeyPeriod.to_json`: `public_key`, optional `key_id`, which must
    match, and `not_before`/`not_after`, RFC 3339 or null); `LicetError` naming the field."""
    if not isinstance(entry, Mapping):
        raise LicetError(f"{where}: not a JSON object")
    key = PublicKey(_decode_b64(str(entry.get("public_key", "")), f"{where}.public_key", 32))
    if entry.get("key_id") not in (None, key.key_id):
        raise LicetError(f"{where}.key_id: {str(entry.get('key_id'))[:40]!r} is not the id of its public key")
    try:
        return KeyPeriod(key, _optional_time(entry, "not_before", where), _optional_time(entry, "not_after", where))
    except LicetError as exc:
        raise LicetError(f"{where}: {exc}") from exc


def parse_key_history(entries: Any, where: str = "history") -> tuple[KeyPeriod, ...]:
    """Every `KeyPeriod` of a published key history (a JSON list); a key listed twice is refused,
    since two periods of one key would leave which one applies to the verifier's guess."""
    if not isinstance(entries, list):
        raise LicetError(f"{where}: not a JSON list")
    periods = tuple(parse_key_period(entry, f"{where}[{i}]") for i, entry in enumerate(entries))
    seen: set[str] = set()
    for i, period in enumerate(periods):
        if period.key_id in seen:
            raise LicetError(f"{where}[{i}]: key {period.key_id} is listed twice")
        seen.add(period.key_id)
    return periods
