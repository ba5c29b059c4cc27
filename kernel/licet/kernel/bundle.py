"""Evidence bundles: offline proof that a certificate is in its tenant's log.

A bundle is a C2SP `tlog-proof` (c2sp.org/tlog-proof@v1) text:

    c2sp.org/tlog-proof@v1
    extra <base64 of the certificate's RFC 8785 canonical JSON>
    index <leaf index>
    <inclusion proof hashes, base64, one per line, leaf's sibling first>
    <empty line>
    <the signed checkpoint, verbatim>

The log leaf of a certificate is exactly its canonical JSON (the whole signed certificate), so the
`extra` line is the leaf itself. It is carried for convenience (a bundle is self-contained) and is
never trusted: verification recomputes the leaf from the certificate it is given and only checks
that the `extra` copy, when present, is the same certificate.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from licet.kernel.certificate import certificate_leaf
from licet.kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    LogKey,
    origin_matches_tenant,
    parse_checkpoint,
    verify_checkpoint,
)
from licet.kernel.errors import LicetError
from licet.kernel.merkle import HASH_SIZE, InclusionProof, ProofError, leaf_hash, verify_inclusion
from licet.kernel.note import NoteError, decode_base64, parse_note
from licet.kernel.report import Check

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]*)")


class BundleError(LicetError):
    """An evidence bundle is malformed (truncated, altered, or not a tlog-proof)."""


@dataclass(frozen=True)
class EvidenceBundle:
    """A parsed tlog-proof: leaf index, inclusion proof, checkpoint note and optional extra data."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def render(self) -> str:
        """The tlog-proof text."""
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint the proof is against (signature NOT checked)."""
        return parse_checkpoint(self.checkpoint_note)

    def certificate(self) -> dict[str, Any] | None:
        """The certificate carried in the `extra` line, if any (untrusted until verified)."""
        if self.extra is None:
            return None
        try:
            value = json.loads(self.extra)
        except ValueError as exc:
            raise BundleError("bundle extra data is not a JSON certificate") from exc
        if not isinstance(value, dict):
            raise BundleError("bundle extra data is not a JSON object")
        return value


def make_bundle(certificate: Mapping[str, Any] | bytes, proof: InclusionProof, checkpoint_note: str) -> str:
    """The tlog-proof bundle of a certificate (or its stored leaf bytes) proven by `proof` against a
    signed checkpoint; refuses to build one that does not verify."""
    checkpoint = parse_checkpoint(checkpoint_note)
    if checkpoint.size != proof.size:
        raise BundleError(f"proof is for tree size {proof.size} but the checkpoint is for {checkpoint.size}")
    leaf = certificate if isinstance(certificate, bytes) else certificate_leaf(certificate)
    try:
        verify_inclusion(proof.index, proof.size, leaf_hash(leaf), proof.hashes, checkpoint.root_hash)
    except ProofError as exc:
        raise BundleError(f"refusing to build a bundle that does not verify: {exc}") from exc
    return EvidenceBundle(proof.index, proof.hashes, checkpoint_note, leaf).render()


def parse_bundle(data: str | bytes) -> EvidenceBundle:
    """Parse a tlog-proof bundle strictly; raises `BundleError` saying what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"bundle is not valid UTF-8 (byte {exc.start})") from exc
    head, sep, note = data.partition("\n\n")
    if not sep:
        raise BundleError("bundle has no empty line before its checkpoint (truncated?)")
    lines = head.split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise BundleError(f"bundle does not start with {TLOG_PROOF_HEADER!r}")
    at = 1
    extra: bytes | None = None
    if at < len(lines) and lines[at].startswith("extra "):
        try:
            extra = decode_base64(lines[at][len("extra ") :], "bundle extra data")
        except NoteError as exc:
            raise BundleError(str(exc)) from exc
        at += 1
    if at >= len(lines):
        raise BundleError("bundle has no 'index' line")
    match = _INDEX.fullmatch(lines[at])
    if match is None:
        raise BundleError(f"bundle line {at + 1} is not 'index <decimal>': {lines[at][:40]!r}")
    index = int(match.group(1))
    proof: list[bytes] = []
    for number, line in enumerate(lines[at + 1 :], at + 2):
        try:
            value = decode_base64(line, f"bundle line {number} (proof hash)")
        except NoteError as exc:
            raise BundleError(str(exc)) from exc
        if len(value) != HASH_SIZE:
            raise BundleError(f"bundle line {number}: proof hash is {len(value)} bytes")
        proof.append(value)
    try:
        parse_note(note)
    except NoteError as exc:
        raise BundleError(f"bundle checkpoint: {exc}") from exc
    return EvidenceBundle(index, tuple(proof), note, extra)


def verify_bundle(
    certificate: Mapping[str, Any],
    bundle: str | bytes,
    log_keys: Sequence[LogKey],
    *,
    origin: str | None = None,
) -> list[Check]:
    """Check that `certificate` is in its tenant's log: one `Check` per step.

    Checks: `bundle` (well-formed tlog-proof), `leaf` (the bundle is about this certificate),
    `checkpoint-signature` (signed by one of `log_keys`), `checkpoint-origin` (the log is this
    tenant's: exactly `origin` if given, else `<deployment>/licet/<certificate tenant>`), and
    `inclusion` (the certificate's leaf is at the bundle's index under the checkpoint's root).
    """
    try:
        parsed = parse_bundle(bundle)
    except BundleError as exc:
        return [Check("bundle", False, str(exc))]
    checks = [Check("bundle", True, f"tlog-proof for leaf {parsed.index}")]

    leaf: bytes | None
    try:
        leaf = certificate_leaf(certificate)
    except ValueError as exc:  # not canonicalisable (NaN, huge integers, non-string keys)
        leaf = None
        checks.append(Check("leaf", False, f"certificate has no canonical JSON form: {exc}"))
    if leaf is not None:
        if parsed.extra is not None and parsed.extra != leaf:
            checks.append(Check("leaf", False, _describe_leaf_mismatch(certificate, parsed)))
        else:
            cert_id = certificate.get("id", "?")
            checks.append(Check("leaf", True, f"certificate {cert_id}: leaf hash {leaf_hash(leaf).hex()}"))

    checkpoint: Checkpoint | None = None
    try:
        signed = verify_checkpoint(parsed.checkpoint_note, log_keys)
        checkpoint = signed.checkpoint
        keys = ", ".join(v.vkey() for v in signed.verified_by)
        checks.append(Check("checkpoint-signature", True, f"signed by {keys}"))
    except CheckpointError as exc:
        checks.append(Check("checkpoint-signature", False, str(exc)))
        try:
            checkpoint = parsed.checkpoint  # still report origin and inclusion, unsigned
        except CheckpointError as parse_exc:
            checks.append(Check("checkpoint-origin", False, f"unreadable checkpoint: {parse_exc}"))
            checks.append(Check("inclusion", False, "no checkpoint to prove inclusion against"))
            return checks

    checks.append(_check_origin(certificate, checkpoint, origin))

    if leaf is None:
        checks.append(Check("inclusion", False, "no leaf to prove: the certificate is unusable"))
    else:
        try:
            verify_inclusion(parsed.index, checkpoint.size, leaf_hash(leaf), parsed.proof, checkpoint.root_hash)
            checks.append(
                Check(
                    "inclusion",
                    True,
                    f"leaf {parsed.index} of {checkpoint.size} under root {checkpoint.root_hash.hex()}",
                )
            )
        except ProofError as exc:
            checks.append(Check("inclusion", False, str(exc)))
    return checks


def _check_origin(certificate: Mapping[str, Any], checkpoint: Checkpoint, origin: str | None) -> Check:
    if origin is not None:
        ok = checkpoint.origin == origin
        detail = f"log {checkpoint.origin}" + ("" if ok else f", expected {origin}")
        return Check("checkpoint-origin", ok, detail)
    tenant = certificate.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        return Check("checkpoint-origin", False, "certificate names no tenant")
    if origin_matches_tenant(checkpoint.origin, tenant):
        return Check("checkpoint-origin", True, f"log {checkpoint.origin} of tenant {tenant}")
    return Check(
        "checkpoint-origin",
        False,
        f"checkpoint is of log {checkpoint.origin}, not of tenant {tenant!r}'s log (<deployment>/licet/<tenant>)",
    )


def _describe_leaf_mismatch(certificate: Mapping[str, Any], parsed: EvidenceBundle) -> str:
    try:
        carried = parsed.certificate()
    except BundleError:
        carried = None
    carried_id = carried.get("id", "?") if carried else "?"
    return (
        f"the bundle is for certificate {carried_id}, not for the certificate being verified "
        f"({certificate.get('id', '?')})"
    )
