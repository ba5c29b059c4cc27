"""Re-deciding a certificate: the kernel run again on the certified request and policy."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from licet.kernel.decision import decide
from licet.kernel.errors import LicetError
from licet.kernel.policy import Policy
from licet.kernel.report import Check
from licet.kernel.requests import recorded_request


def redecide(certificate: Mapping[str, Any], policy: Policy) -> Check:
    """Re-run the kernel on the certified request and compare outcome, rules and proof."""
    if certificate.get("policy", {}).get("hash") != policy.hash:
        return Check("redecide", False, f"the policy file hashes to {policy.hash}, the "
                     f"certificate was decided under {certificate.get('policy', {}).get('hash')}")
    if certificate.get("approval") and "id" in certificate["approval"]:
        return Check("redecide", False, "approval-based permits are re-decided by the server")
    try:
        issued = datetime.fromisoformat(str(certificate["issued_at"]).replace("Z", "+00:00"))
        # The certified request is already normalised: read as recorded, never decoded again.
        again = decide(policy, recorded_request(certificate["request"]), now=issued,
                       state={"summary": certificate.get("session") or {}})
    except (LicetError, KeyError, ValueError) as exc:
        return Check("redecide", False, f"could not re-decide: {exc}")
    # Cores are minimal but not unique, so the proof is compared by what it proves.
    certified = certificate.get("decision")
    proof = certificate.get("proof")
    refused = proof.get("approval_refused") if isinstance(proof, Mapping) else None
    if refused and certified == "deny":
        # The server refused a presented approval (used, expired, another request...): the policy
        # still requires approval, and the certified outcome is a deny with the refusal in the proof.
        certified = "require_approval"
    same = again.outcome == certified and list(again.rules) == certificate.get("rules")
    detail = f"kernel again says {again.outcome} {list(again.rules)}"
    if refused and same:
        detail += f"; the presented approval was refused ({refused.get('code')}), so the certificate denies"
    return Check("redecide", same, detail + ("" if same else
                 f"; certificate says {certificate.get('decision')} {certificate.get('rules')}"))
