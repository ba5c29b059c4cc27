"""Decision certificates: canonical JSON (RFC 8785) signed with Ed25519, and their verification."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kernel.canonical import canonical_json
from kernel.decision import Decision, decide
from kernel.errors import LicetError
from kernel.keys import PublicKey, Signer
from kernel.policy import Policy
from kernel.report import Check
from kernel.requests import recorded_request

CERTIFICATE_VERSION = "licet.certificate/1"


def theorem_hash(policy_hash: str, request_hash: str, decision: str, proof: Any) -> str:
    """The hash binding what was decided: policy, request, outcome and proof."""
    body = canonical_json([policy_hash, request_hash, decision, proof])
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def issue_certificate(decision: Decision, *, signer: Signer, tenant: str, issued_at: datetime,
                      certificate_id: str) -> dict[str, Any]:
    """Build and sign the certificate of a decision (DESIGN.md, "Certificates and evidence")."""
    approval: dict[str, Any] | None = None
    if decision.approval_used is not None:
        approval = {"id": decision.approval_used.id,
                    "approvers": list(decision.approval_used.approvers)}
    elif decision.approval is not None:
        approval = {"required": decision.approval.to_json()}
    body: dict[str, Any] = {
        "version": CERTIFICATE_VERSION,
        "id": certificate_id,
        "tenant": tenant,
        "issued_at": _rfc3339(issued_at),
        "key_id": signer.key_id,
        "policy": {"id": decision.policy_id, "version": decision.policy_version,
                   "hash": decision.policy_hash},
        "request": decision.request.to_json(),
        "request_hash": decision.request_hash,
        "decision": decision.outcome,
        "rules": list(decision.rules),
        "proof": decision.proof,
        "diagnostics": list(decision.diagnostics),
        "session": {k: dict(v) for k, v in decision.session.items()},
        "approval": approval,
        "delegation": [dict(link) for link in decision.delegation] or None,
        "theorem_hash": theorem_hash(decision.policy_hash, decision.request_hash,
                                     decision.outcome, decision.proof),
    }
    signature = signer.sign(canonical_json(body))
    body["signature"] = base64.b64encode(signature).decode()
    return body


def certificate_leaf(certificate: Mapping[str, Any]) -> bytes:
    """The bytes a certificate contributes to the evidence log: its canonical JSON."""
    return canonical_json(dict(certificate))


def verify_certificate(certificate: Mapping[str, Any],
                       public_keys: Iterable[PublicKey]) -> list[Check]:
    """Check a certificate's signature (by a known key id) and its theorem hash."""
    checks: list[Check] = []
    if not isinstance(certificate, Mapping):
        return [Check("format", False, "a certificate is a JSON object")]
    required = ("version", "id", "tenant", "key_id", "policy", "request_hash", "decision", "proof",
                "theorem_hash", "signature")
    missing = [name for name in required if name not in certificate]
    if missing or certificate.get("version") != CERTIFICATE_VERSION:
        detail = f"missing fields: {', '.join(missing)}" if missing else (
            f"unsupported version {certificate.get('version')!r}")
        return [Check("format", False, detail)]
    checks.append(Check("format", True, CERTIFICATE_VERSION))

    keys = {key.key_id: key for key in public_keys}
    key = keys.get(str(certificate["key_id"]))
    body = {k: v for k, v in certificate.items() if k != "signature"}
    if key is None:
        checks.append(Check("signature", False,
                            f"no public key with id {certificate['key_id']!r} was supplied"))
    else:
        try:
            signature = base64.b64decode(str(certificate["signature"]), validate=True)
            ok = key.verify(canonical_json(body), signature)
        except ValueError:
            ok = False
        checks.append(Check("signature", ok, f"Ed25519 by {key.key_id}" if ok else
                            "the signature does not match the certificate's content"))

    policy = certificate.get("policy")
    policy_hash = policy.get("hash") if isinstance(policy, Mapping) else None
    expected = theorem_hash(str(policy_hash), str(certificate["request_hash"]),
                            str(certificate["decision"]), certificate["proof"])
    checks.append(Check("theorem_hash", expected == certificate["theorem_hash"],
                        expected if expected == certificate["theorem_hash"] else
                        f"recomputed {expected}, certificate says {certificate['theorem_hash']}"))
    request = certificate.get("request")
    if isinstance(request, Mapping):
        recomputed = "sha256:" + hashlib.sha256(canonical_json(dict(request))).hexdigest()
        checks.append(Check("request_hash", recomputed == certificate["request_hash"],
                            "matches the certified request" if recomputed == certificate["request_hash"]
                            else "the request does not hash to request_hash"))
    return checks


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
