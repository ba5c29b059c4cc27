"""C2SP transparency-log cosignatures (c2sp.org/tlog-cosignature), the Ed25519 `cosignature/v1`.

A cosignature is a witness's statement that, as of a time, the checkpoint it signs is the largest
tree it has seen of that log and that it checked it consistent with every one it saw before. It is
a note signature line `— <witness name> <base64(key ID || timestamp || signature)>`: the key ID is
`SHA-256(name || 0x0A || 0x04 || public key)[:4]` (the type byte 0x04 keeps a witness key from
being mistaken for a plain note key), the timestamp is 8 bytes big-endian (POSIX seconds) and the
64-byte Ed25519 signature covers `cosignature/v1\\ntime <timestamp>\\n` followed by the whole
checkpoint text. A witness's verifier key is written like a note verifier key, with type 0x04:
`<name>+<hex key ID>+<base64(0x04 || public key)>`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from licet.kernel.checkpoint import Checkpoint
from licet.kernel.errors import LicetError
from licet.kernel.keys import PublicKey, Signer
from licet.kernel.note import (
    NoteError,
    NoteSignature,
    check_key_name,
    key_hash,
    parse_note,
    parse_signature_line,
    read_key,
)

COSIGNATURE_TYPE = 0x04
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
"""The spec's bound on a cosignature's timestamp."""
_SIGNATURE_SIZE = 64
_TIMESTAMP_SIZE = 8


class CosignatureError(LicetError):
    """A cosignature is malformed, by an unknown witness, or does not verify."""


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a `cosignature/v1` signs: the header line, `time <timestamp>`, the checkpoint text."""
    check_timestamp(timestamp)
    return f"{HEADER}time {timestamp}\n{checkpoint.text()}".encode()


def check_timestamp(timestamp: int) -> None:
    """Raise `CosignatureError` unless `timestamp` is between 0 and 2^63 - 1."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} is not between 0 and 2^63 - 1")


@dataclass(frozen=True)
class WitnessVerifier:
    """A trusted witness: its name and Ed25519 public key."""

    name: str
    public_key: PublicKey

    def __post_init__(self) -> None:
        try:
            check_key_name(self.name)
        except NoteError as exc:
            raise CosignatureError(f"witness name: {exc}") from exc

    @property
    def key_hash(self) -> int:
        """The 32-bit key ID this witness's cosignature lines carry."""
        return key_hash(self.name, COSIGNATURE_TYPE, self.public_key.raw)

    def vkey(self) -> str:
        """The verifier key string `<name>+<hex key ID>+<base64(0x04 || public key)>`."""
        material = base64.b64encode(bytes([COSIGNATURE_TYPE]) + self.public_key.raw).decode()
        return f"{self.name}+{self.key_hash:08x}+{material}"

    def __str__(self) -> str:
        return self.vkey()


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: which witness signed which checkpoint, and when (POSIX seconds)."""

    witness: WitnessVerifier
    checkpoint: Checkpoint
    timestamp: int


class WitnessSigner:
    """A witness's signing key: its name and a `kernel.keys.Signer`."""

    def __init__(self, name: str, signer: Signer) -> None:
        self.verifier = WitnessVerifier(name, signer.public_key)
        self.name = name
        self._signer = signer

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> str:
        """The cosignature line (with its newline) of `checkpoint` as of `timestamp`."""
        signature = self._signer.sign(cosigned_message(checkpoint, timestamp))
        blob = self.verifier.key_hash.to_bytes(4, "big") + timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature
        return f"\u2014 {self.name} {base64.b64encode(blob).decode()}\n"


def parse_witness_key(text: str) -> WitnessVerifier:
    """Read a witness verifier key `<name>+<hex key ID>+<base64(0x04 || public key)>`."""
    try:
        name, hash_value, raw = read_key(text.strip(), COSIGNATURE_TYPE, "witness key")
    except NoteError as exc:
        raise CosignatureError(str(exc)) from exc
    witness = WitnessVerifier(name, PublicKey(raw))
    if witness.key_hash != hash_value:
        raise CosignatureError(f"witness key: key ID {hash_value:08x} does not match the key and name")
    return witness


def verify_cosignature(checkpoint: Checkpoint, line: str, witness: WitnessVerifier) -> Cosignature:
    """Verify one cosignature line (with or without its newline) by `witness` on `checkpoint`;
    raise `CosignatureError` saying what is wrong."""
    try:
        parsed = parse_signature_line(line.removesuffix("\n"))
    except NoteError as exc:
        raise CosignatureError(f"cosignature: {exc}") from exc
    return _verified(checkpoint, parsed, witness)


def _verified(checkpoint: Checkpoint, parsed: NoteSignature, witness: WitnessVerifier) -> Cosignature:
    if (parsed.name, parsed.key_hash) != (witness.name, witness.key_hash):
        raise CosignatureError(
            f"cosignature is by key {parsed.name}+{parsed.key_hash:08x}, not by witness {witness.name}+"
            f"{witness.key_hash:08x}"
        )
    if len(parsed.signature) != _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
        raise CosignatureError(
            f"cosignature by {witness.name} is {len(parsed.signature)} bytes after its key ID, not "
            f"{_TIMESTAMP_SIZE + _SIGNATURE_SIZE} (timestamp and Ed25519 signature)"
        )
    timestamp = int.from_bytes(parsed.signature[:_TIMESTAMP_SIZE], "big")
    check_timestamp(timestamp)
    if not witness.public_key.verify(cosigned_message(checkpoint, timestamp), parsed.signature[_TIMESTAMP_SIZE:]):
        raise CosignatureError(
            f"cosignature by witness {witness.name} does not verify for {checkpoint.origin} at size {checkpoint.size}"
        )
    return Cosignature(witness, checkpoint, timestamp)


def note_cosignatures(note: str | bytes, witnesses: Iterable[WitnessVerifier]) -> list[Cosignature]:
    """The cosignatures of the trusted `witnesses` on a checkpoint note (whose own log signature
    the caller verifies). Lines by other keys are ignored, as the spec requires; a line by a
    trusted witness that does not verify, or a witness cosigning twice, is an error."""
    try:
        parsed = parse_note(note)
    except NoteError as exc:
        raise CosignatureError(f"checkpoint note: {exc}") from exc
    checkpoint = Checkpoint.from_text(parsed.text)
    known = {(w.name, w.key_hash): w for w in witnesses}
    found: dict[WitnessVerifier, Cosignature] = {}
    for sig in parsed.signatures:
        witness = known.get((sig.name, sig.key_hash))
        if witness is None:
            continue
        if witness in found:
            raise CosignatureError(f"checkpoint is cosigned twice by witness {witness.vkey()}")
        found[witness] = _verified(checkpoint, sig, witness)
    return list(found.values())
