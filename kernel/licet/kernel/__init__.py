"""Licet's proof kernel: policies, Z3 decisions with proofs, certificates, evidence-log maths.

Pure: no network, no database, and no clock or randomness except through arguments.

The names below load their module on first use, so verifying certificates and logs (what the light
SDK does) never imports the solver, the parser or YAML: those come with the `decide` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from licet.kernel.canonical import canonical_json
    from licet.kernel.certificate import certificate_leaf, issue_certificate, theorem_hash, verify_certificate
    from licet.kernel.decision import (
        Decision,
        PresentedApproval,
        decide,
        event_contributions,
        involved_invariants,
        summary_from_contributions,
    )
    from licet.kernel.errors import InvalidRequest, KernelFault, LicetError, PolicyError
    from licet.kernel.ids import uuid7
    from licet.kernel.keys import KeyPeriod, PublicKey, Signer, parse_key_history, parse_public_key, parse_signer
    from licet.kernel.policy import Policy, load_policy
    from licet.kernel.redecision import redecide
    from licet.kernel.report import Check, all_ok
    from licet.kernel.requests import NormalisedRequest, normalise_request, recorded_request, request_hash

# Where each public name lives (the names imported above for type checkers).
_HOME = {
    "Check": "licet.kernel.report",
    "Decision": "licet.kernel.decision",
    "InvalidRequest": "licet.kernel.errors",
    "KernelFault": "licet.kernel.errors",
    "KeyPeriod": "licet.kernel.keys",
    "LicetError": "licet.kernel.errors",
    "NormalisedRequest": "licet.kernel.requests",
    "Policy": "licet.kernel.policy",
    "PolicyError": "licet.kernel.errors",
    "PresentedApproval": "licet.kernel.decision",
    "PublicKey": "licet.kernel.keys",
    "Signer": "licet.kernel.keys",
    "all_ok": "licet.kernel.report",
    "canonical_json": "licet.kernel.canonical",
    "certificate_leaf": "licet.kernel.certificate",
    "decide": "licet.kernel.decision",
    "event_contributions": "licet.kernel.decision",
    "involved_invariants": "licet.kernel.decision",
    "issue_certificate": "licet.kernel.certificate",
    "load_policy": "licet.kernel.policy",
    "normalise_request": "licet.kernel.requests",
    "parse_key_history": "licet.kernel.keys",
    "parse_public_key": "licet.kernel.keys",
    "parse_signer": "licet.kernel.keys",
    "recorded_request": "licet.kernel.requests",
    "request_hash": "licet.kernel.requests",
    "summary_from_contributions": "licet.kernel.decision",
    "theorem_hash": "licet.kernel.certificate",
    "uuid7": "licet.kernel.ids",
    "verify_certificate": "licet.kernel.certificate",
    "redecide": "licet.kernel.redecision",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when first used (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module 'licet.kernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "Check",
    "Decision",
    "InvalidRequest",
    "KernelFault",
    "KeyPeriod",
    "LicetError",
    "NormalisedRequest",
    "Policy",
    "PolicyError",
    "PresentedApproval",
    "PublicKey",
    "Signer",
    "all_ok",
    "canonical_json",
    "certificate_leaf",
    "decide",
    "event_contributions",
    "involved_invariants",
    "issue_certificate",
    "load_policy",
    "normalise_request",
    "parse_key_history",
    "parse_public_key",
    "parse_signer",
    "recorded_request",
    "redecide",
    "request_hash",
    "summary_from_contributions",
    "theorem_hash",
    "uuid7",
    "verify_certificate",
]
