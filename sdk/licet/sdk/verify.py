"""Offline verification: a certificate, and its evidence bundle against a signed checkpoint —
no server, no database, only public keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from licet import kernel
from licet.kernel.bundle import verify_bundle as _verify_bundle
from licet.kernel.checkpoint import LogKey
from licet.kernel.report import Check, all_ok
from licet.sdk.types import TrustedKeys


def verify_certificate(certificate: Mapping[str, Any],
                       public_keys: TrustedKeys | Iterable[kernel.PublicKey | kernel.KeyPeriod], *,
                       policy: kernel.Policy | None = None) -> list[Check]:
    """Each check of a certificate: format, signature (by one of `public_keys`, or of the trusted
    keys' certificate keys), with the trusted keys' history that it was issued inside its key's
    period, theorem and request hashes, and with `policy` a re-decision that must reach the same
    outcome."""
    keys = public_keys.certificate_periods if isinstance(public_keys, TrustedKeys) else public_keys
    checks = kernel.verify_certificate(certificate, keys)
    if policy is not None:
        checks.append(kernel.redecide(certificate, policy))
    return checks


def verify_bundle(certificate: Mapping[str, Any], bundle: str, log_keys: TrustedKeys | Sequence[LogKey], *,
                  origin: str | None = None) -> list[Check]:
    """Each check that `certificate` is in its tenant's log under the bundle's signed checkpoint (signed
    by one of `log_keys`, or one of the trusted keys' log keys; the log's origin is theirs unless given)."""
    if isinstance(log_keys, TrustedKeys):
        return _verify_bundle(certificate, bundle, log_keys.log_keys, origin=origin or log_keys.log_origin)
    return _verify_bundle(certificate, bundle, log_keys, origin=origin)


def verified(checks: Iterable[Check]) -> bool:
    """Whether every check passed."""
    return all_ok(list(checks))
