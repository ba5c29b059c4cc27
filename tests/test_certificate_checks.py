"""The certificate viewer's checks (licet/dashboard/pages/certificate.py `offline_checks`), without a browser:
every check passes for a genuine certificate in a signed log, and an altered field, a wrong key, an
unknown policy version or a missing proof fails the check that names it. A check that cannot run fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from licet import kernel
from licet.dashboard.pages.certificate import offline_checks, redecide_check, verdict_text
from licet.kernel.bundle import make_bundle
from licet.kernel.certificate import certificate_leaf
from licet.kernel.decision import PresentedApproval
from licet.kernel.log import MemoryLogStore, TransparencyLog
from licet.kernel.note import NoteSigner

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
ORIGIN = "licet.test/licet/t"
SOURCE = (EXAMPLES / "payments-agent.yaml").read_text()


def _request(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / "requests" / "payments-agent" / name).read_text()))


class World:
    """A certificate key, a log with its note key, and the `/v1/evidence/keys` answer that publishes them."""

    def __init__(self) -> None:
        self.signer = kernel.Signer(bytes(range(32)))
        self.log_signer = NoteSigner(ORIGIN, kernel.Signer(bytes(range(1, 33))))
        self.log = TransparencyLog(MemoryLogStore(), ORIGIN)
        self.keys = {"certificate_keys": [self.signer.public_key.to_json()],
                     "log": {"origin": ORIGIN, "verifier_key": self.log_signer.verifier.vkey()}}

    def issue(self, request: dict[str, Any], approval: PresentedApproval | None = None) -> tuple[dict[str, Any], str]:
        decision = kernel.decide(kernel.load_policy(SOURCE, "p"), request, now=NOW, approval=approval)
        certificate = kernel.issue_certificate(decision, signer=self.signer, tenant="t", issued_at=NOW,
                                               certificate_id=f"c-{self.log.size}")
        index = self.log.append(certificate_leaf(certificate))
        note = self.log.sign_checkpoint(self.log_signer)
        return certificate, make_bundle(certificate, self.log.inclusion_proof(index), note)


@pytest.fixture
def world() -> World:
    return World()


def _failed(checks: list[kernel.Check]) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_a_genuine_certificate_passes_every_check(world: World) -> None:
    certificate, bundle = world.issue(_request("02-transfer-small.json"))
    world.issue(_request("01-read-statement.json"))  # the log grows; the bundle's checkpoint still verifies
    checks = offline_checks(certificate, 0, world.keys, bundle, "", SOURCE, "payments-agent version 1")
    names = [c.name for c in checks]
    assert not _failed(checks), checks
    for name in ("signature", "theorem_hash", "request_hash", "redecide", "checkpoint-signature", "inclusion",
                 "log-index"):
        assert name in names
    assert verdict_text(checks).startswith("Verified: all")


def test_an_altered_amount_fails_the_signature_request_hash_and_inclusion(world: World) -> None:
    certificate, bundle = world.issue(_request("02-transfer-small.json"))
    altered = json.loads(json.dumps(certificate))
    altered["request"]["args"]["amount"] = 1250
    failed = _failed(offline_checks(altered, 0, world.keys, bundle, "", SOURCE, "v1"))
    assert {"signature", "request_hash", "redecide", "leaf", "inclusion"} <= failed
    assert "theorem_hash" not in failed


def test_a_key_that_did_not_sign_it_fails_the_signature(world: World) -> None:
    certificate, bundle = world.issue(_request("02-transfer-small.json"))
    other = {**world.keys, "certificate_keys": [kernel.Signer(bytes(32)).public_key.to_json()]}
    assert _failed(offline_checks(certificate, 0, other, bundle, "", SOURCE, "v1")) == {"signature"}


def test_checks_that_cannot_run_fail_saying_why(world: World) -> None:
    certificate, bundle = world.issue(_request("02-transfer-small.json"))
    checks = offline_checks(certificate, 0, None, None, "HTTP 500", None, "no stored version hashes to it")
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert "published-keys" in failed and "signature" in failed
    assert "no stored version hashes to it" in failed["redecide"]
    assert "HTTP 500" in failed["inclusion"]
    assert offline_checks("not a certificate", 0, world.keys, bundle, "", SOURCE, "v1")[0].ok is False
    assert verdict_text([]) == "Verification failed: no check could be run."


def test_the_wrong_log_index_or_log_key_fails(world: World) -> None:
    certificate, bundle = world.issue(_request("02-transfer-small.json"))
    assert _failed(offline_checks(certificate, 7, world.keys, bundle, "", SOURCE, "v1")) == {"log-index"}
    stranger = NoteSigner(ORIGIN, kernel.Signer(bytes(range(2, 34)))).verifier.vkey()
    keys = {**world.keys, "log": {"origin": ORIGIN, "verifier_key": stranger}}
    assert "checkpoint-signature" in _failed(offline_checks(certificate, 0, keys, bundle, "", SOURCE, "v1"))


def test_a_permit_granted_by_approval_is_redecided_without_it(world: World) -> None:
    request = _request("03-transfer-large-needs-approval.json")
    asked, _ = world.issue(request)
    granted = PresentedApproval("ap-1", asked["request_hash"], ("user:ana", "user:ben"))
    certificate, _ = world.issue(request, granted)
    assert certificate["decision"] == "permit" and certificate["approval"]["id"] == "ap-1"
    check = redecide_check(certificate, SOURCE, "v1")
    assert check.ok and "approval ap-1 granted by user:ana, user:ben" in check.detail
    # A certificate claiming an approval for a request the policy permits outright is not consistent.
    small, _ = world.issue(_request("02-transfer-small.json"))
    assert not redecide_check({**small, "approval": {"id": "ap-2", "approvers": []}}, SOURCE, "v1").ok
    assert not redecide_check(certificate, "id: [not a policy", "v1").ok
