"""Ed25519 signing keys and their ids. Keys come from random seeds supplied by the caller."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

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
