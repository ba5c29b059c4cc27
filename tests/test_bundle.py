"""Evidence bundles (C2SP tlog-proof) of real signed certificates, and the hostile cases: each must
be detected, with a check that says what failed."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from licet import kernel
from licet.kernel.bundle import BundleError, EvidenceBundle, make_bundle, parse_bundle, verify_bundle
from licet.kernel.certificate import certificate_leaf
from licet.kernel.checkpoint import Checkpoint, check_consistency, parse_checkpoint, sign_checkpoint, tenant_origin
from licet.kernel.keys import Signer
from licet.kernel.log import MemoryLogStore, TransparencyLog
from licet.kernel.merkle import leaf_hash
from licet.kernel.note import NoteSigner
from licet.kernel.report import Check, all_ok
from tests.conftest import issue

DEPLOYMENT = "licet.example"


class Deployment:
    """One deployment key signing certificates and every tenant's checkpoints."""

    def __init__(self, policy: kernel.Policy) -> None:
        self.policy = policy
        self.signer = Signer(os.urandom(32))
        self.logs: dict[str, TransparencyLog] = {}

    def log(self, tenant: str) -> TransparencyLog:
        origin = tenant_origin(DEPLOYMENT, tenant)
        return self.logs.setdefault(tenant, TransparencyLog(MemoryLogStore(), origin))

    def note_signer(self, tenant: str) -> NoteSigner:
        return NoteSigner(self.log(tenant).origin, self.signer)

    def append(self, tenant: str, count: int) -> list[dict[str, Any]]:
        certs = [issue(self.policy, self.signer, tenant, 100 + i) for i in range(count)]
        self.log(tenant).append_many([certificate_leaf(c) for c in certs])
        return certs

    def bundle(self, tenant: str, index: int, cert: dict[str, Any]) -> str:
        log = self.log(tenant)
        note = log.sign_checkpoint(self.note_signer(tenant))
        return make_bundle(cert, log.inclusion_proof(index, log.size), note)


@pytest.fixture
def world(payments: kernel.Policy) -> Deployment:
    return Deployment(payments)


def failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.ok}


def test_a_real_certificate_bundle_verifies(world: Deployment) -> None:
    certs = world.append("acme", 11)
    bundle = world.bundle("acme", 6, certs[6])
    checks = verify_bundle(certs[6], bundle, [world.note_signer("acme").verifier])
    assert all_ok(checks), checks
    assert [c.name for c in checks] == ["bundle", "leaf", "checkpoint-signature", "checkpoint-origin", "inclusion"]
    # The same bundle also verifies with the bare deployment public key, and as bytes.
    assert all_ok(verify_bundle(certs[6], bundle.encode(), [world.signer.public_key]))
    assert all_ok(verify_bundle(certs[6], bundle, [world.note_signer("acme").verifier.vkey()]))
    assert kernel.all_ok(kernel.verify_certificate(certs[6], [world.signer.public_key]))


def test_bundle_is_a_c2sp_tlog_proof(world: Deployment) -> None:
    certs = world.append("acme", 5)
    text = world.bundle("acme", 4, certs[4])
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert base64.b64decode(lines[1].removeprefix("extra ")) == certificate_leaf(certs[4])
    assert lines[2] == "index 4"
    parsed = parse_bundle(text)
    assert parsed.render() == text and parsed.certificate() == certs[4]
    assert text.endswith(parsed.checkpoint_note) and parsed.checkpoint.size == 5
    assert len(parsed.proof) == 1  # leaf 4 of 5: its sibling is the subtree of the first four


def test_bundle_without_extra_line_verifies(world: Deployment) -> None:
    certs = world.append("acme", 3)
    parsed = parse_bundle(world.bundle("acme", 1, certs[1]))
    bare = EvidenceBundle(parsed.index, parsed.proof, parsed.checkpoint_note).render()
    assert all_ok(verify_bundle(certs[1], bare, [world.signer.public_key]))


def test_rewritten_entry_with_everything_after_it_recomputed(world: Deployment) -> None:
    certs = world.append("acme", 9)
    log = world.log("acme")
    old_note = log.sign_checkpoint(world.note_signer("acme"))
    old_bundle = make_bundle(certs[3], log.inclusion_proof(3, 9), old_note)
    # The operator rewrites certificate 3 and rebuilds the whole log after it, signing a new head.
    forged = dict(certs[3], decision="forbid")
    rebuilt = TransparencyLog(MemoryLogStore(), log.origin)
    rebuilt.append_many([certificate_leaf(c) for c in [*certs[:3], forged, *certs[4:]]])
    new_note = rebuilt.sign_checkpoint(world.note_signer("acme"))
    # The genuine certificate is not in the rewritten log...
    checks = verify_bundle(
        certs[3], make_bundle(forged, rebuilt.inclusion_proof(3, 9), new_note), [world.signer.public_key]
    )
    assert set(failed(checks)) == {"leaf", "inclusion"}
    assert "leads to root" in failed(checks)["inclusion"]
    # ...the forged one fails its own signature...
    assert not kernel.all_ok(kernel.verify_certificate(forged, [world.signer.public_key]))
    # ...and the two heads are not consistent: whoever kept the old checkpoint sees the rewrite.
    consistency = check_consistency(
        old_note, new_note, rebuilt.consistency_proof(9, 9).hashes, [world.signer.public_key]
    )
    assert set(failed(consistency)) == {"consistency"}
    assert "forked" in failed(consistency)["consistency"]
    # The old bundle stays valid against the old checkpoint: it proves what was logged then.
    assert all_ok(verify_bundle(certs[3], old_bundle, [world.signer.public_key]))


def test_dropped_entries(world: Deployment) -> None:
    certs = world.append("acme", 12)
    bundle = parse_bundle(world.bundle("acme", 10, certs[10]))
    # The log drops its last entries and signs a head for the shorter tree.
    shorter = TransparencyLog(MemoryLogStore(), world.log("acme").origin)
    shorter.append_many([certificate_leaf(c) for c in certs[:9]])
    small_note = shorter.sign_checkpoint(world.note_signer("acme"))
    swapped = EvidenceBundle(bundle.index, bundle.proof, small_note, bundle.extra).render()
    checks = verify_bundle(certs[10], swapped, [world.signer.public_key])
    assert set(failed(checks)) == {"inclusion"}
    assert "outside a tree of size 9" in failed(checks)["inclusion"]
    consistency = check_consistency(bundle.checkpoint_note, small_note, [], [world.signer.public_key])
    assert "smaller tree (9 < 12)" in failed(consistency)["not-smaller"]


def test_checkpoint_of_a_smaller_tree_presented_as_the_newer_one(world: Deployment) -> None:
    certs = world.append("acme", 6)
    log = world.log("acme")
    older = log.sign_checkpoint(world.note_signer("acme"))
    certs += world.append("acme", 6)
    newer = log.sign_checkpoint(world.note_signer("acme"))
    proof = log.inclusion_proof(2, 12)
    # A proof against the 12-entry tree with the 6-entry checkpoint swapped in.
    checks = verify_bundle(certs[2], EvidenceBundle(2, proof.hashes, older).render(), [world.signer.public_key])
    assert set(failed(checks)) == {"inclusion"}
    consistency = check_consistency(newer, older, [], [world.signer.public_key])
    assert set(failed(consistency)) == {"not-smaller"}


def test_proof_for_index_i_presented_for_index_j(world: Deployment) -> None:
    certs = world.append("acme", 10)
    bundle = world.bundle("acme", 4, certs[4])
    for j in [3, 5, 0, 9]:
        moved = bundle.replace("\nindex 4\n", f"\nindex {j}\n")
        checks = verify_bundle(certs[4], moved, [world.signer.public_key])
        assert set(failed(checks)) == {"inclusion"}, j
        assert f"leaf {j} of 10" in failed(checks)["inclusion"]
        # The certificate at j with i's bundle: wrong certificate, wrong leaf.
        assert set(failed(verify_bundle(certs[j], bundle, [world.signer.public_key]))) == {"leaf", "inclusion"}
    assert (
        "not for the certificate being verified"
        in failed(verify_bundle(certs[5], bundle, [world.signer.public_key]))["leaf"]
    )


def test_valid_certificate_with_a_proof_from_another_tenants_log(world: Deployment) -> None:
    certs = world.append("acme", 4)
    world.append("globex", 6)
    # acme's certificate smuggled into globex's log: inclusion and signature hold there, origin does not.
    globex = world.log("globex")
    index = globex.append(certificate_leaf(certs[1]))
    bundle = world.bundle("globex", index, certs[1])
    checks = verify_bundle(certs[1], bundle, [world.signer.public_key])
    assert set(failed(checks)) == {"checkpoint-origin"}
    assert "licet.example/licet/globex, not of tenant 'acme'" in failed(checks)["checkpoint-origin"]
    # With the expected origin given exactly, the same.
    exact = verify_bundle(certs[1], bundle, [world.signer.public_key], origin=world.log("acme").origin)
    assert set(failed(exact)) == {"checkpoint-origin"}


def test_checkpoint_signed_by_an_unknown_key(world: Deployment) -> None:
    certs = world.append("acme", 3)
    log = world.log("acme")
    impostor = NoteSigner(log.origin, Signer(os.urandom(32)))
    forged_note = sign_checkpoint(Checkpoint(log.origin, 3, log.root()), impostor)
    bundle = make_bundle(certs[0], log.inclusion_proof(0, 3), forged_note)
    checks = verify_bundle(certs[0], bundle, [world.signer.public_key])
    assert set(failed(checks)) == {"checkpoint-signature"}
    assert "not signed by any trusted key" in failed(checks)["checkpoint-signature"]


def test_every_truncation_of_a_bundle_is_detected(world: Deployment) -> None:
    certs = world.append("acme", 7)
    bundle = world.bundle("acme", 5, certs[5])
    key = [world.signer.public_key]
    for cut in range(len(bundle)):
        checks = verify_bundle(certs[5], bundle[:cut], key)
        assert not all_ok(checks), cut
        assert all(c.detail for c in checks if not c.ok)


def test_every_bit_flip_of_a_bundle_is_detected() -> None:
    # A small synthetic certificate keeps this exhaustive: every bit of every byte.
    signer = NoteSigner(tenant_origin(DEPLOYMENT, "acme"), Signer(os.urandom(32)))
    certs = [{"id": f"c{i}", "tenant": "acme", "signature": "sig"} for i in range(6)]
    log = TransparencyLog(MemoryLogStore(), signer.name)
    log.append_many([certificate_leaf(c) for c in certs])
    data = make_bundle(certs[2], log.inclusion_proof(2, 6), log.sign_checkpoint(signer)).encode()
    assert all_ok(verify_bundle(certs[2], data, [signer.verifier]))
    for position in range(len(data)):
        for bit in range(8):
            changed = bytearray(data)
            changed[position] ^= 1 << bit
            assert not all_ok(verify_bundle(certs[2], bytes(changed), [signer.verifier])), (position, bit)


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda b: b.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"), "does not start with"),
        (lambda b: b.replace("\nindex ", "\nindex 0"), "not 'index <decimal>'"),
        (lambda b: b.replace("\n\n", "\n", 1), "(proof hash): not valid base64"),
        (lambda b: b.split("\n\n")[0], "no empty line"),
        (lambda b: b.replace("\nindex", "\nextra !!!\nindex"), "not 'index <decimal>'"),
        (lambda b: b + "trailing\n", "trailing garbage"),
        (lambda b: "\ufeff" + b, "does not start with"),
    ],
)
def test_malformed_bundles_name_the_problem(world: Deployment, mangle: Any, why: str) -> None:
    certs = world.append("acme", 3)
    bundle = world.bundle("acme", 1, certs[1])
    checks = verify_bundle(certs[1], mangle(bundle), [world.signer.public_key])
    assert not all_ok(checks)
    assert any(why in c.detail for c in checks if not c.ok), checks


def test_make_bundle_refuses_a_proof_that_does_not_verify(world: Deployment) -> None:
    certs = world.append("acme", 4)
    log = world.log("acme")
    note = log.sign_checkpoint(world.note_signer("acme"))
    with pytest.raises(BundleError, match="does not verify"):
        make_bundle(certs[1], log.inclusion_proof(2, 4), note)
    with pytest.raises(BundleError, match="tree size"):
        make_bundle(certs[1], log.inclusion_proof(1, 3), note)


def test_unusable_certificate_is_reported_not_raised(world: Deployment) -> None:
    certs = world.append("acme", 2)
    bundle = world.bundle("acme", 0, certs[0])
    checks = verify_bundle({"id": "x", "tenant": "acme", "amount": float("nan")}, bundle, [world.signer.public_key])
    assert "no canonical JSON form" in failed(checks)["leaf"]
    assert not all_ok(verify_bundle({"id": "x"}, bundle, [world.signer.public_key]))
    assert parse_checkpoint(parse_bundle(bundle).checkpoint_note).size == 2
    assert (
        leaf_hash(certificate_leaf(certs[0])).hex()
        in verify_bundle(certs[0], bundle, [world.signer.public_key])[1].detail
    )
