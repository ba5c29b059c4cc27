"""Golden vectors: the kernel's hashes, certificate leaves and checkpoints, byte for byte.

Every request hash, theorem hash, approval binding, certificate signature and log entry depends on
these exact bytes: renaming a key of `NormalisedRequest.to_json`, reordering the theorem hash's
inputs or changing a checkpoint line would silently change all of them, breaking every certificate
and checkpoint already issued. Each case in `tests/vectors/kernel.json` holds its inputs and the
outputs the kernel must reproduce.

The outputs are regenerated ONLY deliberately, for a format change that is meant (and then comes
with a version change and a migration note), with

    .venv/bin/python -m tests.test_kernel_vectors --write

which recomputes the outputs from the inputs in the file; review the diff before committing it.
"""

from __future__ import annotations

import argparse
import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from licet.kernel.canonical import canonical_json
from licet.kernel.certificate import certificate_leaf, issue_certificate, theorem_hash, verify_certificate
from licet.kernel.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from licet.kernel.decision import Decision, PresentedApproval
from licet.kernel.keys import Signer
from licet.kernel.merkle import CompactRange, leaf_hash, leaf_hashes, tree_hash
from licet.kernel.note import parse_signer_key
from licet.kernel.report import all_ok
from licet.kernel.requests import normalise_request, request_hash

VECTORS = Path(__file__).parent / "vectors" / "kernel.json"


def _request_outputs(case: dict[str, Any]) -> dict[str, Any]:
    request = normalise_request(case["raw"], fold_case=case["fold_case"])
    return {"canonical": canonical_json(request.to_json()).decode(), "hash": request_hash(request)}


def _theorem_outputs(case: dict[str, Any]) -> dict[str, Any]:
    return {"hash": theorem_hash(case["policy_hash"], case["request_hash"], case["decision"], case["proof"])}


def _certificate_outputs(case: dict[str, Any]) -> dict[str, Any]:
    d = case["decision"]
    request = normalise_request(d["request"])
    used = d.get("approval_used")
    decision = Decision(
        outcome=d["outcome"],
        rules=tuple(d["rules"]),
        proof=d["proof"],
        request=request,
        request_hash=request_hash(request),
        policy_id=d["policy_id"],
        policy_version=d["policy_version"],
        policy_hash=d["policy_hash"],
        diagnostics=tuple(d["diagnostics"]),
        approval_used=None
        if used is None
        else PresentedApproval(used["id"], request_hash(request), tuple(used["approvers"])),
        session=d["session"],
        delegation=tuple(d["delegation"]),
    )
    certificate = issue_certificate(
        decision,
        signer=Signer(bytes.fromhex(case["seed"])),
        tenant=case["tenant"],
        issued_at=datetime.fromisoformat(case["issued_at"]),
        certificate_id=case["id"],
    )
    leaf = certificate_leaf(certificate)
    return {"leaf": leaf.decode(), "leaf_hash": leaf_hash(leaf).hex()}


def _merkle_outputs(case: dict[str, Any]) -> dict[str, Any]:
    leaves = [bytes.fromhex(x) for x in case["leaves"]]
    frontier = CompactRange()
    completed: list[tuple[int, int, bytes]] = []
    frontier.extend(leaf_hashes(leaves), completed)
    return {
        "root": tree_hash(leaves).hex(),
        "nodes": [f"{level} {index} {value.hex()}" for level, index, value in completed],
    }


def _checkpoint_outputs(case: dict[str, Any]) -> dict[str, Any]:
    signer = parse_signer_key(case["signer_key"])
    leaves = [x.encode() for x in case["leaves"]]
    note = sign_checkpoint(Checkpoint(case["origin"], len(leaves), tree_hash(leaves)), signer)
    return {"verifier_key": signer.verifier.vkey(), "note": note}


COMPUTE = {
    "request_hashes": _request_outputs,
    "theorem_hashes": _theorem_outputs,
    "certificates": _certificate_outputs,
    "merkle_trees": _merkle_outputs,
    "checkpoints": _checkpoint_outputs,
}
"""For each kind of vector: its outputs, computed from a case's inputs."""


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return data


def _cases() -> list[Any]:
    data = _load()
    return [pytest.param(kind, case, id=f"{kind}-{case['name']}") for kind in COMPUTE for case in data[kind]]


def test_every_kind_has_vectors() -> None:
    data = _load()
    assert {kind for kind in data if not kind.startswith("_")} == set(COMPUTE)
    assert all(len(data[kind]) >= 2 for kind in COMPUTE)


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_vector(kind: str, case: dict[str, Any]) -> None:
    outputs = COMPUTE[kind](case)
    for key, value in outputs.items():
        assert value == case[key], f"{kind} {case['name']}: {key} changed"


def test_certificate_vectors_verify() -> None:
    for case in _load()["certificates"]:
        certificate = json.loads(case["leaf"])
        public = Signer(bytes.fromhex(case["seed"])).public_key
        checks = verify_certificate(certificate, [public])
        assert all_ok(checks) and len(checks) == 4, checks
        # The leaf is the canonical JSON: re-serialising the parsed certificate gives the same bytes.
        assert certificate_leaf(certificate).decode() == case["leaf"]


def test_checkpoint_vectors_verify() -> None:
    for case in _load()["checkpoints"]:
        signed = verify_checkpoint(case["note"], [case["verifier_key"]], origin=case["origin"])
        assert signed.checkpoint.size == len(case["leaves"])
        assert signed.checkpoint.root_hash == tree_hash([x.encode() for x in case["leaves"]])
        root_line = case["note"].split("\n")[2]
        assert base64.b64decode(root_line) == signed.checkpoint.root_hash


def _write() -> None:
    data = _load()
    for kind, compute in COMPUTE.items():
        for case in data[kind]:
            case.update(compute(case))
    VECTORS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Recompute the outputs of tests/vectors/kernel.json.")
    parser.add_argument(
        "--write",
        action="store_true",
        required=True,
        help="overwrite the outputs (only for a deliberate format change)",
    )
    parser.parse_args()
    _write()
