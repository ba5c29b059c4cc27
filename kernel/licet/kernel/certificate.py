"""Decision certificates: canonical JSON (RFC 8785) signed with Ed25519, and their verification."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from licet.kernel.canonical import canonical_json
from licet.kernel.errors import LicetError
from licet.kernel.keys import KeyPeriod, PublicKey, Signer, parse_rfc3339, rfc3339
from licet.kernel.report import Check

if TYPE_CHECKING:  # verifying needs no solver: deciding (and Z3) is imported only by those who decide
    from licet.kernel.decision import Decision

CERTIFICATE_VERSION = "licet.certificate/1"


def theorem_hash(policy_hash: str, request_hash: str, decision: str, proof: Any) -> str:
    """The hash binding what was decided: policy, request, outcome and proof."""
    body = canonical_json([policy_hash, request_hash, decision, proof])
    return "sha256:" + hashlib.sha256(body).hexdigest()


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
        "issued_at": rfc3339(issued_at),
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


def _named_key(certificate: Mapping[str, Any], public_keys: Iterable[PublicKey | KeyPeriod],
               ) -> PublicKey | KeyPeriod | None:
    """The key the certificate's `key_id` names; a period given for it wins over the bare key, so a
    bound supplied anywhere is applied (fail closed)."""
    named = [key for key in public_keys if key.key_id == str(certificate["key_id"])]
    return next((key for key in named if isinstance(key, KeyPeriod)), named[0] if named else None)


def _check_key_period(certificate: Mapping[str, Any], period: KeyPeriod) -> Check:
    """Whether the certificate's `issued_at` lies inside the period of the key that signed it."""
    try:
        issued = parse_rfc3339(certificate.get("issued_at"), "issued_at")
    except LicetError as exc:
        return Check("key-period", False, f"cannot place the certificate in its key's period: {exc}")
    where = f"key {period.key_id} signs in {period.describe()}"
    if period.covers(issued):
        return Check("key-period", True, f"issued {rfc3339(issued)}; {where}")
    late = period.not_after is not None and issued >= period.not_after
    return Check("key-period", False, f"issued {rfc3339(issued)}, " + (
        "after the key was retired" if late else "before the key began to sign") + f"; {where}")


def certificate_leaf(certificate: Mapping[str, Any]) -> bytes:
    """The bytes a certificate contributes to the evidence log: its canonical JSON."""
    return canonical_json(dict(certificate))


def verify_certificate(certificate: Mapping[str, Any],
                       public_keys: Iterable[PublicKey | KeyPeriod]) -> list[Check]:
    """Check a certificate's signature (by the key its `key_id` names among `public_keys`) and its
    theorem and request hashes. A key given as a `KeyPeriod` also checks that the certificate was
    issued inside the key's period (`key-period`): what a retired key signs later is refused."""
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

    period = _named_key(certificate, public_keys)
    body = {k: v for k, v in certificate.items() if k != "signature"}
    if period is None:
        checks.append(Check("signature", False,
                            f"no public key with id {certificate['key_id']!r} was supplied"))
    else:
        key = period.public_key if isinstance(period, KeyPeriod) else period
        try:
            signature = base64.b64decode(str(certificate["signature"]), validate=True)
            ok = key.verify(canonical_json(body), signature)
        except ValueError:
            ok = False
        checks.append(Check("signature", ok, f"Ed25519 by {key.key_id}" if ok else
                            "the signature does not match the certificate's content"))
        if isinstance(period, KeyPeriod):
            checks.append(_check_key_period(certificate, period))

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
