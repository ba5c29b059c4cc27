"""Licet's proof kernel: policies, Z3 decisions with proofs, certificates, evidence-log maths.

Pure: no network, no database, and no clock or randomness except through arguments.
"""

from kernel.canonical import canonical_json
from kernel.certificate import certificate_leaf, issue_certificate, redecide, theorem_hash, verify_certificate
from kernel.decision import (
    Decision,
    PresentedApproval,
    decide,
    event_contributions,
    involved_invariants,
    summary_from_contributions,
)
from kernel.errors import InvalidRequest, KernelFault, LicetError, PolicyError
from kernel.ids import uuid7
from kernel.keys import PublicKey, Signer, parse_public_key, parse_signer
from kernel.policy import Policy, load_policy
from kernel.report import Check, all_ok
from kernel.requests import NormalisedRequest, normalise_request, recorded_request, request_hash

__all__ = [
    "Check",
    "Decision",
    "InvalidRequest",
    "KernelFault",
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
