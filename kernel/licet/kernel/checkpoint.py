"""C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint): signed tree heads.

A checkpoint is a signed note whose text is the log's origin line, its tree size in decimal and the
base64 RFC 6962 root hash, then optional extension lines. Each Licet tenant has its own log and so
its own origin, `<deployment>/licet/<tenant>`; the log signs with a note key named after the origin,
as the spec recommends.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from licet.kernel.errors import LicetError
from licet.kernel.keys import PublicKey
from licet.kernel.merkle import HASH_SIZE, ProofError, verify_consistency
from licet.kernel.note import (
    Note,
    NoteError,
    NoteSigner,
    NoteVerifier,
    decode_base64,
    open_note,
    parse_note,
    parse_verifier_key,
    sign_note,
)
from licet.kernel.report import Check

MAX_TREE_SIZE = 2**64 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII digits, no leading zeroes
_TENANT_SEGMENT = "/licet/"


LogKey = NoteVerifier | PublicKey | str
"""A trusted log key: a `NoteVerifier`, a verifier key string `<name>+<hash>+<key>`, or a bare
Ed25519 `PublicKey`, which verifies signature lines under any key name (the name only selects the
key; the signature is still checked with the trusted key)."""


class CheckpointError(LicetError):
    """A checkpoint is malformed, not trusted, or not the one expected."""


def note_verifiers(log_keys: Iterable[LogKey], note: Note) -> list[NoteVerifier]:
    """The note verifiers that trusted `log_keys` stand for, for the signature lines of `note`."""
    names = list(dict.fromkeys(sig.name for sig in note.signatures))
    verifiers: list[NoteVerifier] = []
    for key in log_keys:
        if isinstance(key, NoteVerifier):
            verifiers.append(key)
        elif isinstance(key, PublicKey):
            verifiers.extend(NoteVerifier(name, key) for name in names)
        else:
            try:
                verifiers.append(parse_verifier_key(key))
            except NoteError as exc:
                raise CheckpointError(f"log key {key[:60]!r}: {exc}") from exc
    return verifiers


def tenant_origin(deployment: str, tenant: str) -> str:
    """The origin line of a tenant's log: `<deployment>/licet/<tenant, percent-encoded>`.

    Percent-encoding keeps the mapping one-to-one for any tenant id while keeping spaces, `+` and
    `/` (which origins should not contain or which would make the tenant ambiguous) out.
    """
    check_origin(deployment)
    if not tenant:
        raise CheckpointError("tenant id is empty")
    return f"{deployment}{_TENANT_SEGMENT}{quote(tenant, safe='')}"


def origin_matches_tenant(origin: str, tenant: str) -> bool:
    """True iff `origin` is `<some deployment>/licet/<tenant>` for exactly this tenant."""
    suffix = _TENANT_SEGMENT + quote(tenant, safe="")
    return bool(tenant) and origin.endswith(suffix) and len(origin) > len(suffix)


def check_origin(origin: str) -> None:
    """Raise `CheckpointError` unless `origin` is usable as an origin line (and note key name)."""
    if not origin:
        raise CheckpointError("origin is empty")
    for ch in origin:
        if ch.isspace() or ch == "+" or ord(ch) < 0x20 or ch == "\x7f":
            raise CheckpointError(f"origin {origin!r} contains {ch!r}")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and RFC 6962 root hash (plus rarely used extensions)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError(f"bad origin line {self.origin!r}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError(f"bad extension line {line!r}")

    def text(self) -> str:
        """The note text: origin, size and base64 root, one per line, newline-terminated."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (no signature check)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint text does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint text has {len(lines)} lines, needs at least 3")
        origin, size_line, root_line, *extensions = lines
        if not origin:
            raise CheckpointError("checkpoint origin line is empty")
        if not _DECIMAL.fullmatch(size_line):
            raise CheckpointError(f"checkpoint tree size {size_line!r} is not a canonical decimal")
        size = int(size_line)
        if size > MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint tree size {size_line} does not fit 64 bits")
        try:
            root = decode_base64(root_line, "checkpoint root hash")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
        if any(not line for line in extensions):
            raise CheckpointError("checkpoint has an empty extension line")
        return cls(origin, size, root, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint, the note it was read from, and the trusted keys that verified it."""

    checkpoint: Checkpoint
    note: str
    verified_by: tuple[NoteVerifier, ...]


def sign_checkpoint(checkpoint: Checkpoint, signers: NoteSigner | Sequence[NoteSigner]) -> str:
    """The signed note of `checkpoint` (C2SP tlog-checkpoint)."""
    signer_list = [signers] if isinstance(signers, NoteSigner) else list(signers)
    return sign_note(checkpoint.text(), signer_list)


def parse_checkpoint(note: str | bytes) -> Checkpoint:
    """Parse a signed checkpoint's structure and text WITHOUT checking any signature."""
    try:
        parsed = parse_note(note)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint note: {exc}") from exc
    return Checkpoint.from_text(parsed.text)


def verify_checkpoint(
    note: str | bytes,
    log_keys: Iterable[LogKey],
    *,
    origin: str | None = None,
    size: int | None = None,
    root_hash: bytes | None = None,
) -> SignedCheckpoint:
    """Verify a signed checkpoint against trusted keys and, if given, the expected origin, size
    and root; raise `CheckpointError` saying what does not match."""
    try:
        verifiers = note_verifiers(log_keys, parse_note(note))
        opened = open_note(note, verifiers)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint signature: {exc}") from exc
    checkpoint = Checkpoint.from_text(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, not the expected {origin!r}")
    if size is not None and checkpoint.size != size:
        raise CheckpointError(f"checkpoint is for tree size {checkpoint.size}, not {size}")
    if root_hash is not None and checkpoint.root_hash != root_hash:
        raise CheckpointError(f"checkpoint root {checkpoint.root_hash.hex()} is not the expected {root_hash.hex()}")
    text = note.decode() if isinstance(note, bytes) else note
    return SignedCheckpoint(checkpoint, text, opened.verified_by)


def verify_checkpoint_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Raise `CheckpointError` unless `new` extends `old`: same log, not smaller, and the
    consistency proof links their roots (both checkpoints should already be verified)."""
    if old.origin != new.origin:
        raise CheckpointError(f"checkpoints are of different logs: {old.origin!r} and {new.origin!r}")
    if new.size < old.size:
        raise CheckpointError(
            f"the 'new' checkpoint is for a smaller tree ({new.size} < {old.size}): "
            "it is older, or the log dropped entries"
        )
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except ProofError as exc:
        raise CheckpointError(f"log {new.origin}: {exc}") from exc


def check_consistency(
    old_note: str | bytes,
    new_note: str | bytes,
    proof: Sequence[bytes],
    log_keys: Sequence[LogKey],
    *,
    origin: str | None = None,
) -> list[Check]:
    """Check that the log behind `new_note` extends the one behind `old_note`, one `Check` per
    step: `old-checkpoint` and `new-checkpoint` (signatures, and `origin` if given), `same-log`,
    `not-smaller` and `consistency` (the proof links the two roots)."""
    checks: list[Check] = []
    heads: list[Checkpoint] = []
    for name, note in (("old-checkpoint", old_note), ("new-checkpoint", new_note)):
        try:
            signed = verify_checkpoint(note, log_keys, origin=origin)
        except CheckpointError as exc:
            checks.append(Check(name, False, str(exc)))
            continue
        head = signed.checkpoint
        heads.append(head)
        keys = ", ".join(v.vkey() for v in signed.verified_by)
        checks.append(Check(name, True, f"{head.origin} size {head.size}, signed by {keys}"))
    if len(heads) != 2:
        return checks
    old, new = heads
    same = old.origin == new.origin
    checks.append(Check("same-log", same, f"{old.origin} and {new.origin}"))
    bigger = new.size >= old.size
    checks.append(
        Check(
            "not-smaller",
            bigger,
            f"{old.size} -> {new.size}"
            if bigger
            else f"the 'new' checkpoint is for a smaller tree ({new.size} < {old.size}): "
            "it is older, or the log dropped entries",
        )
    )
    if same and bigger:
        try:
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
            checks.append(Check("consistency", True, f"{len(proof)} hashes link the two roots"))
        except ProofError as exc:
            checks.append(Check("consistency", False, str(exc)))
    return checks
