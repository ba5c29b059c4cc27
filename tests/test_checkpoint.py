"""C2SP signed notes and tlog-checkpoints: interoperable, strict, and tamper-evident."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licet.kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_consistency,
    check_origin,
    origin_matches_tenant,
    parse_checkpoint,
    sign_checkpoint,
    tenant_origin,
    verify_checkpoint,
    verify_checkpoint_consistency,
)
from licet.kernel.keys import Signer
from licet.kernel.log import MemoryLogStore, TransparencyLog
from licet.kernel.note import (
    NoteError,
    NoteSigner,
    NoteVerifier,
    ed25519_key_hash,
    open_note,
    parse_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)
from licet.kernel.report import all_ok

ORIGIN = "licet.example/licet/acme"

# Published vectors of other implementations (verification only: no private key is used).
# golang.org/x/mod/sumdb/note, the package documentation's example note:
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# The Go checksum database's public key, and two tree heads it signed (C2SP checkpoints).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINTS = [
    (
        "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
        "— sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n"
    ),
    (
        "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
        "— sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8DJ87F61QqspBYwM=\n"
    ),
]


def new_signer(name: str = ORIGIN) -> NoteSigner:
    return NoteSigner(name, Signer(os.urandom(32)))


def a_checkpoint(size: int = 7) -> Checkpoint:
    return Checkpoint(ORIGIN, size, hashlib.sha256(os.urandom(8)).digest())


# --- interoperability -------------------------------------------------------------------------


def test_go_note_vector_verifies() -> None:
    verifier = parse_verifier_key(GO_VKEY)
    assert verifier.vkey() == GO_VKEY and verifier.key_hash == 0xC74F20A3
    opened = open_note(GO_NOTE, [verifier])
    assert opened.text.startswith("If you think") and opened.verified_by == (verifier,)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [verifier])


@pytest.mark.parametrize("note", SUMDB_CHECKPOINTS)
def test_real_go_checksum_database_checkpoints_verify(note: str) -> None:
    signed = verify_checkpoint(note, [SUMDB_VKEY], origin="go.sum database tree")
    assert signed.checkpoint.size > 30_000_000
    with pytest.raises(CheckpointError):
        verify_checkpoint(note.replace("\n6", "\n7", 1).replace("\n3", "\n4", 1), [SUMDB_VKEY])


def test_key_hash_is_the_spec_formula() -> None:
    signer = new_signer()
    raw = signer.verifier.public_key.raw
    expected = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    assert signer.key_hash == ed25519_key_hash(ORIGIN, raw) == int.from_bytes(expected, "big")
    vkey = signer.verifier.vkey()
    material = base64.b64encode(b"\x01" + raw).decode()
    assert vkey == f"{ORIGIN}+{expected.hex()}+{material}"
    assert parse_verifier_key(vkey) == signer.verifier


def test_signature_line_layout() -> None:
    signer = new_signer()
    note = sign_checkpoint(a_checkpoint(), signer)
    text, _, line = note.rpartition("\n\n")
    assert line.startswith(f"— {ORIGIN} ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 68 and blob[:4] == signer.key_hash.to_bytes(4, "big")
    assert signer.verifier.verify((text + "\n").encode(), blob[4:])


def test_note_signer_key_round_trip() -> None:
    seed = os.urandom(32)
    name = "log.example/x"
    key_hash = ed25519_key_hash(name, Signer(seed).public_key.raw)
    material = base64.b64encode(b"\x01" + seed).decode()
    skey = f"PRIVATE+KEY+{name}+{key_hash:08x}+{material}"
    signer = parse_signer_key(skey)
    assert signer.name == name and signer.key_hash == key_hash
    with pytest.raises(NoteError, match="key hash"):
        parse_signer_key(skey.replace(f"{key_hash:08x}", f"{key_hash ^ 1:08x}"))


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    signer = new_signer()
    head = a_checkpoint(123456)
    note = sign_checkpoint(head, signer)
    lines = note.split("\n")
    assert lines[:3] == [ORIGIN, "123456", base64.b64encode(head.root_hash).decode()] and lines[3] == ""
    signed = verify_checkpoint(note, [signer.verifier], origin=ORIGIN, size=123456, root_hash=head.root_hash)
    assert signed.checkpoint == head and signed.note == note
    assert parse_checkpoint(note) == head


def test_checkpoint_mismatches_are_named() -> None:
    signer = new_signer()
    head = a_checkpoint(10)
    note = sign_checkpoint(head, signer)
    with pytest.raises(CheckpointError, match=re.escape("not the expected 'licet.example/licet/other'")):
        verify_checkpoint(note, [signer.verifier], origin="licet.example/licet/other")
    with pytest.raises(CheckpointError, match="tree size 10, not 11"):
        verify_checkpoint(note, [signer.verifier], size=11)
    with pytest.raises(CheckpointError, match="root"):
        verify_checkpoint(note, [signer.verifier], root_hash=bytes(32))
    with pytest.raises(CheckpointError, match="not signed by any trusted key"):
        verify_checkpoint(note, [new_signer().verifier])
    # A key with the same name and a different key, or the same key under another name: unknown.
    with pytest.raises(CheckpointError, match="not signed by any trusted key"):
        verify_checkpoint(note, [NoteVerifier("other.example", signer.verifier.public_key)])


def test_trailing_garbage_and_truncation_are_rejected() -> None:
    signer = new_signer()
    note = sign_checkpoint(a_checkpoint(), signer)
    for bad, why in [
        (note + "garbage\n", "does not start with '— '"),
        (note + "\n", "no signature lines"),
        (note + "— x", "does not end with a newline"),
        (note[:-1], "does not end with a newline"),
        (note.replace("\n\n", "\n"), "no blank line"),
        (note.replace("\n", "\r\n"), "control character"),
    ]:
        with pytest.raises(CheckpointError, match=why):
            verify_checkpoint(bad, [signer.verifier])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"{ORIGIN}\n012\n{base64.b64encode(bytes(32)).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n-1\n{base64.b64encode(bytes(32)).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n１２\n{base64.b64encode(bytes(32)).decode()}\n", "canonical decimal"),
        (f"{ORIGIN}\n{2**64}\n{base64.b64encode(bytes(32)).decode()}\n", "64 bits"),
        (f"{ORIGIN}\n1\n{base64.b64encode(bytes(31)).decode()}\n", "31 bytes"),
        (f"{ORIGIN}\n1\nAAAA\n", "3 bytes"),
        (f"{ORIGIN}\n1\n{base64.b64encode(bytes(32)).decode()[:-2]}B=\n", "canonical base64"),
        (f"{ORIGIN}\n1\n", "needs at least 3"),
        (f"\n1\n{base64.b64encode(bytes(32)).decode()}\n", "origin line is empty"),
    ],
)
def test_malformed_checkpoint_text_is_rejected(text: str, why: str) -> None:
    signer = new_signer()
    with pytest.raises(CheckpointError, match=why):
        verify_checkpoint(sign_note(text, [signer]), [signer.verifier])


def test_unknown_signatures_are_ignored_known_bad_ones_are_not() -> None:
    log, witness, stranger = new_signer(), new_signer("witness.example"), new_signer("stranger.example")
    note = sign_checkpoint(a_checkpoint(), [log, stranger])
    assert verify_checkpoint(note, [log.verifier]).verified_by == (log.verifier,)
    both = sign_checkpoint(a_checkpoint(), [log, witness])
    assert len(verify_checkpoint(both, [log.verifier, witness.verifier]).verified_by) == 2
    # A forged signature line by a trusted key rejects the whole note, even beside a good one.
    forged_line = stranger.signature_line("other text\n").replace("stranger.example", ORIGIN)
    blob = bytearray(base64.b64decode(forged_line.split(" ")[2]))
    blob[:4] = log.key_hash.to_bytes(4, "big")
    forged = note + f"— {ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(CheckpointError, match=r"does not verify|signed twice"):
        verify_checkpoint(forged, [log.verifier])


def test_public_key_as_log_key_uses_the_name_in_the_note() -> None:
    signer = new_signer()
    note = sign_checkpoint(a_checkpoint(), signer)
    assert verify_checkpoint(note, [signer.verifier.public_key]).checkpoint.origin == ORIGIN
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, [new_signer().verifier.public_key])


def test_every_single_bit_flip_of_a_checkpoint_is_detected() -> None:
    signer = new_signer()
    head = a_checkpoint(42)
    data = sign_checkpoint(head, signer).encode()
    for position in range(len(data)):
        for bit in range(8):
            changed = bytearray(data)
            changed[position] ^= 1 << bit
            with pytest.raises(CheckpointError):
                verify_checkpoint(bytes(changed), [signer.verifier])


@settings(max_examples=50)
@given(st.text(min_size=1, max_size=40))
def test_tenant_origins_are_one_to_one(tenant: str) -> None:
    origin = tenant_origin("licet.example", tenant)
    assert origin_matches_tenant(origin, tenant)
    assert not origin_matches_tenant(origin, tenant + "x")
    assert " " not in origin and "+" not in origin and origin.count("/") == 2
    check_origin(origin)  # usable as an origin line and as a note key name


def test_tenant_origin_rejects_bad_deployments() -> None:
    for deployment in ["", "a b", "a+b", "a\nb"]:
        with pytest.raises(CheckpointError):
            tenant_origin(deployment, "acme")
    assert not origin_matches_tenant("/licet/acme", "acme")  # a deployment is required


# --- consistency between checkpoints ----------------------------------------------------------


def test_consistency_between_signed_checkpoints() -> None:
    signer = new_signer()
    log = TransparencyLog(MemoryLogStore(), ORIGIN)
    log.append_many([os.urandom(20) for _ in range(5)])
    old = log.sign_checkpoint(signer)
    log.append_many([os.urandom(20) for _ in range(8)])
    new = log.sign_checkpoint(signer)
    proof = log.consistency_proof(5, 13).hashes
    checks = check_consistency(old, new, proof, [signer.verifier], origin=ORIGIN)
    assert all_ok(checks) and [c.name for c in checks][-1] == "consistency"
    verify_checkpoint_consistency(parse_checkpoint(old), parse_checkpoint(new), proof)

    swapped = check_consistency(new, old, proof, [signer.verifier])
    assert not all_ok(swapped)
    assert "smaller tree (5 < 13)" in next(c.detail for c in swapped if c.name == "not-smaller")
    with pytest.raises(CheckpointError, match="smaller tree"):
        verify_checkpoint_consistency(parse_checkpoint(new), parse_checkpoint(old), proof)

    # A checkpoint of another log (another tenant) is not a continuation of this one.
    other = sign_checkpoint(Checkpoint("licet.example/licet/other", 13, parse_checkpoint(new).root_hash), signer)
    crossed = check_consistency(old, other, proof, [signer.verifier])
    assert next(c for c in crossed if c.name == "same-log").ok is False


def test_a_forked_log_is_detected() -> None:
    signer = new_signer()
    entries = [os.urandom(20) for _ in range(9)]
    honest = TransparencyLog(MemoryLogStore(), ORIGIN)
    honest.append_many(entries)
    old = honest.sign_checkpoint(signer)
    # The operator rewrites entry 2, recomputes everything after it and signs a new head.
    forked = TransparencyLog(MemoryLogStore(), ORIGIN)
    forked.append_many([*entries[:2], b"rewritten", *entries[3:], os.urandom(20)])
    new = forked.sign_checkpoint(signer)
    checks = check_consistency(old, new, forked.consistency_proof(9, 10).hashes, [signer.verifier])
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == ["consistency"]
    assert "old root" in failed[0].detail


def test_parse_note_limits_signatures() -> None:
    signer = new_signer()
    note = sign_checkpoint(a_checkpoint(), [signer] * 1)
    many = note + note.rpartition("\n\n")[2] * 70
    with pytest.raises(NoteError, match="more than"):
        parse_note(many)
