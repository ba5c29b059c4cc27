"""transparency-dev's public RFC 6962 proof suite: the verifiers must accept exactly the cases
marked `wantErr: false`, every one of them.

The suite is found through LICET_CONFORMANCE_DIR, by default `<repo>/../shared/conformance`. Under
CI=true a missing suite fails the run instead of skipping it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from licet.kernel.merkle import (
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import CT_LEAVES

ROOT = Path(__file__).resolve().parent.parent
SUITE = Path(os.environ.get("LICET_CONFORMANCE_DIR", ROOT.parent / "shared" / "conformance")) / "rfc6962-proofs"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _cases(kind: str) -> list[Path]:
    found = sorted((SUITE / kind).rglob("*.json")) if SUITE.is_dir() else []
    # Without the suite, one placeholder case that fails under CI (never an empty, skipped set).
    return found or [SUITE / kind / "missing.json"]


INCLUSION = _cases("inclusion")
CONSISTENCY = _cases("consistency")


def _missing_suite() -> None:
    message = f"conformance suite not found at {SUITE} (set LICET_CONFORMANCE_DIR)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        _missing_suite()
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _name(path: Path) -> str:
    return str(path.relative_to(SUITE))


def test_suite_is_present_and_complete() -> None:
    if not SUITE.is_dir():
        _missing_suite()
    # 196 case files at the time of writing; both sorts of case, both outcomes, must be there.
    assert len(INCLUSION) >= 90 and len(CONSISTENCY) >= 90, "the suite is incomplete"
    outcomes = {_load(p)["wantErr"] for p in INCLUSION + CONSISTENCY}
    assert outcomes == {True, False}


@pytest.mark.parametrize("path", INCLUSION, ids=_name)
def test_inclusion_case(path: Path) -> None:
    case = _load(path)
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_name)
def test_consistency_case(path: Path) -> None:
    case = _load(path)
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), proof)
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)




def _ct_nodes() -> dict[tuple[int, int], bytes]:
    completed: list[tuple[int, int, bytes]] = []
    CompactRange().extend([leaf_hash(leaf) for leaf in CT_LEAVES], completed)
    return {(level, index): value for level, index, value in completed}


HAPPY = [p for p in INCLUSION + CONSISTENCY if p.name == "happy-path.json"] or INCLUSION[:1]


@pytest.mark.parametrize("path", HAPPY, ids=_name)
def test_generated_proofs_equal_the_published_ones(path: Path) -> None:
    nodes = _ct_nodes()

    def read(ids: Any) -> list[bytes]:
        return [nodes[i] for i in ids]

    case = _load(path)
    published = [_b64(h) for h in case["proof"] or []]
    if "leafIdx" in case:
        assert _b64(case["leafHash"]) == leaf_hash(CT_LEAVES[case["leafIdx"]])
        assert list(inclusion_proof(case["leafIdx"], case["treeSize"], read).hashes) == published
    else:
        assert list(consistency_proof(case["size1"], case["size2"], read).hashes) == published


def test_there_are_happy_paths_to_reproduce() -> None:
    if not SUITE.is_dir():
        _missing_suite()
    assert len(HAPPY) >= 10
