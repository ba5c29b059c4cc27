"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures (signature type 0x01).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <key name> <base64(key hash || signature)>`. The key hash is the first four bytes of
`SHA-256(key name || 0x0A || 0x01 || public key)`; a verifier key is written
`<name>+<hex key hash>+<base64(0x01 || public key)>`, as in golang.org/x/mod/sumdb/note, so the
checkpoints Licet signs can be checked by any tool of that ecosystem and the other way round.

Parsing is strict: a note that is not exactly text, blank line and well-formed signature lines (for
example one with trailing garbage) is rejected, and so is every base64 spelling but the canonical
one, so that no byte of a note can change without the change being detected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from licet.kernel.errors import LicetError
from licet.kernel.keys import PublicKey, Signer

ED25519_TYPE = 0x01
MAX_SIGNATURES = 64
"""Notes with more signature lines are refused (the spec requires accepting at least 16)."""

_DASH = "\u2014"  # the em dash that starts every signature line
_SIGNATURE_PREFIX = _DASH + " "
_SIGNER_PREFIX = "PRIVATE+KEY+"


class NoteError(LicetError):
    """A signed note is malformed, or is not signed by a trusted key."""


def decode_base64(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4), accepted only in its canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what}: not valid base64") from exc
    # Unused low bits of the last character could otherwise change without changing the bytes.
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what}: not canonical base64")
    return raw


def check_key_name(name: str) -> None:
    """Raise `NoteError` unless `name` is a valid note key name (non-empty, no spaces, no '+')."""
    if not name:
        raise NoteError("key name is empty")
    for ch in name:
        if ch.isspace() or ch == "+" or ord(ch) < 0x20 or ch == "\x7f":
            raise NoteError(f"key name {name!r} contains {ch!r}")


def key_hash(name: str, key_type: int, public_key: bytes) -> int:
    """The note key hash (key ID): SHA-256(name || 0x0A || key type || key)[:4]. The type byte
    says what a signature by the key means (0x01 a plain note signature, 0x04 a cosignature)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def ed25519_key_hash(name: str, public_key: bytes) -> int:
    """The note key hash (key ID) of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return key_hash(name, ED25519_TYPE, public_key)


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name and public key."""

    name: str
    public_key: PublicKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def key_hash(self) -> int:
        """The 32-bit key ID that signature lines by this key carry."""
        return ed25519_key_hash(self.name, self.public_key.raw)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True iff `signature` (without the key ID) is this key's signature of `text`."""
        return self.public_key.verify(text, signature)

    def vkey(self) -> str:
        """The verifier key string `<name>+<hex key hash>+<base64(0x01 || public key)>`."""
        material = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key.raw).decode()
        return f"{self.name}+{self.key_hash:08x}+{material}"

    def __str__(self) -> str:
        return self.vkey()


class NoteSigner:
    """An Ed25519 note signing key: a key name and a `kernel.keys.Signer`."""

    def __init__(self, name: str, signer: Signer) -> None:
        check_key_name(name)
        self.name = name
        self._signer = signer
        self.verifier = NoteVerifier(name, signer.public_key)

    @property
    def key_hash(self) -> int:
        """The 32-bit key ID this key's signature lines carry."""
        return self.verifier.key_hash

    def signature_line(self, text: str) -> str:
        """The line `— <name> <base64(key hash || signature)>` (with newline) signing `text`."""
        signature = self._signer.sign(text.encode())
        blob = self.key_hash.to_bytes(4, "big") + signature
        return f"{_SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


def read_key(text: str, key_type: int, what: str) -> tuple[str, int, bytes]:
    """Split a key string `<name>+<hex key hash>+<base64(key type || 32-byte key)>` into its name,
    key hash and key bytes, checking each part's spelling and the type byte. Whether the key hash
    matches the key is the caller's check: only it knows what the key bytes are."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"{what}: expected <name>+<hex key hash>+<base64 key>")
    name, hash_hex, material = parts
    check_key_name(name)
    if len(hash_hex) != 8 or hash_hex != hash_hex.lower() or not _is_hex(hash_hex):
        raise NoteError(f"{what}: key hash must be 8 lower-case hex digits")
    raw = decode_base64(material, what)
    if len(raw) != 33 or raw[0] != key_type:
        raise NoteError(f"{what}: only Ed25519 keys (type 0x{key_type:02x}, 32 bytes) are supported")
    return name, int(hash_hex, 16), raw[1:]


def parse_verifier_key(text: str) -> NoteVerifier:
    """Read a verifier key string `<name>+<hex key hash>+<base64(0x01 || public key)>`."""
    name, hash_value, raw = read_key(text.strip(), ED25519_TYPE, "verifier key")
    verifier = NoteVerifier(name, PublicKey(raw))
    if verifier.key_hash != hash_value:
        raise NoteError(f"verifier key: key hash {hash_value:08x} does not match the key and name")
    return verifier


def parse_signer_key(text: str) -> NoteSigner:
    """Read a note signer key `PRIVATE+KEY+<name>+<hex key hash>+<base64(0x01 || seed)>`."""
    stripped = text.strip()
    if not stripped.startswith(_SIGNER_PREFIX):
        raise NoteError("signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>")
    parts = stripped[len(_SIGNER_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise NoteError("signer key: expected PRIVATE+KEY+<name>+<hex key hash>+<base64 seed>")
    name, hash_hex, material = parts
    raw = decode_base64(material, "signer key")
    if len(raw) != 33 or raw[0] != ED25519_TYPE:
        raise NoteError("signer key: only Ed25519 keys (type 0x01, 32-byte seed) are supported")
    signer = NoteSigner(name, Signer(raw[1:]))
    if f"{signer.key_hash:08x}" != hash_hex:
        raise NoteError(f"signer key: key hash {hash_hex} does not match the key and name")
    return signer


def _is_hex(text: str) -> bool:
    return all(ch in "0123456789abcdef" for ch in text)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key hash and the signature bytes after the key hash."""

    name: str
    key_hash: int
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note and the trusted keys whose signatures on it verified."""

    text: str
    signatures: tuple[NoteSignature, ...]
    verified_by: tuple[NoteVerifier, ...]


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signature lines, enforcing the format strictly."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"note is not valid UTF-8 (byte {exc.start})") from exc
    for i, ch in enumerate(data):
        if ch < " " and ch != "\n":
            raise NoteError(f"note contains control character {ch!r} at offset {i}")
    if not data.endswith("\n"):
        raise NoteError("note does not end with a newline (truncated?)")
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures (truncated?)")
    text, block = data[: split + 1], data[split + 2 :]
    lines = block.split("\n")[:-1]  # `block` ends with the note's final newline
    if not lines:
        raise NoteError("note has no signature lines (truncated, or trailing blank line)")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    signatures = tuple(parse_signature_line(line, n) for n, line in enumerate(lines, 1))
    return Note(text, signatures)


def parse_signature_line(line: str, number: int = 1) -> NoteSignature:
    """Read one signature line `— <name> <base64(key hash || signature)>` (without its newline);
    `number` names the line in errors."""
    where = f"signature line {number}"
    if not line.startswith(_SIGNATURE_PREFIX):
        raise NoteError(f"{where} does not start with '— ' (trailing garbage?): {line[:40]!r}")
    name, sep, blob = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not sep:
        raise NoteError(f"{where} has no signature after the key name")
    try:
        check_key_name(name)
    except NoteError as exc:
        raise NoteError(f"{where}: {exc}") from exc
    raw = decode_base64(blob, where)
    if len(raw) < 5:
        raise NoteError(f"{where}: signature is too short ({len(raw)} bytes)")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note of `text` (which must end in a newline) with one line per signer."""
    if not signers:
        raise NoteError("a note needs at least one signer")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    note = text + "\n" + "".join(s.signature_line(text) for s in signers)
    parse_note(note)  # the result must read back exactly (no control characters, bad names)
    return note


def open_note(data: str | bytes, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Parse a note and verify it: every signature by a known key must verify, and at least one
    must exist. Signatures by unknown keys are ignored, as the spec requires."""
    note = parse_note(data)
    known = {(v.name, v.key_hash): v for v in verifiers}
    text = note.text.encode()
    verified: list[NoteVerifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_hash))
        if verifier is None:
            continue
        if verifier in verified:
            raise NoteError(f"note is signed twice by key {sig.name}+{sig.key_hash:08x}")
        if not verifier.verify(text, sig.signature):
            raise NoteError(f"signature by key {sig.name}+{sig.key_hash:08x} does not verify")
        verified.append(verifier)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in note.signatures)
        raise NoteError(f"note is not signed by any trusted key (signed by: {names})")
    return VerifiedNote(note.text, note.signatures, tuple(verified))
