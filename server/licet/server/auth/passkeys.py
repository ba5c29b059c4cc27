"""WebAuthn passkeys (through the `webauthn` package): registration and authentication ceremonies.

Challenges are generated here and stored server-side by the caller (single use, expiring). User
verification is required in both ceremonies, which is what lets a passkey sign-in count as
multi-factor: something held (the authenticator) and something known or inherent (its PIN or biometric).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import webauthn
from webauthn.helpers import bytes_to_base64url, parse_authentication_credential_json
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidJSONStructure, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from licet.server.settings import Settings

CHALLENGE_SECONDS = 300


class CeremonyFailed(ValueError):
    """The authenticator's response does not verify; the message says which check failed."""


@dataclass(frozen=True)
class NewCredential:
    """A verified registration, ready to store."""

    credential_id: str  # base64url
    public_key: bytes
    sign_count: int
    transports: list[str]  # hints for later ceremonies, only WebAuthn's own values


_TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)


def known_transports(values: Any) -> list[str]:
    """The transport hints among `values` that WebAuthn defines (a browser's report is untrusted input:
    anything else is dropped)."""
    if not isinstance(values, list):
        return []
    return sorted({v for v in values if isinstance(v, str) and v in _TRANSPORTS})


def _descriptor(credential_id: str, transports: list[Any]) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(id=webauthn.base64url_to_bytes(credential_id),
                                         transports=[AuthenticatorTransport(t) for t in known_transports(transports)])


def registration_options(settings: Settings, *, user_id: str, email: str, display_name: str,
                         existing: list[tuple[str, list[Any]]]) -> tuple[dict[str, Any], bytes]:
    """The options for `navigator.credentials.create()` and their challenge."""
    options = webauthn.generate_registration_options(
        rp_id=settings.rp_id, rp_name=settings.rp_name, user_name=email, user_id=user_id.encode(),
        user_display_name=display_name, timeout=CHALLENGE_SECONDS * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(c, t) for c, t in existing])
    return json.loads(webauthn.options_to_json(options)), options.challenge


def verify_registration(settings: Settings, credential: dict[str, Any], challenge: bytes) -> NewCredential:
    """Check a registration response against the stored challenge, the RP id and the origins."""
    try:
        verified = webauthn.verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=settings.rp_id,
            expected_origin=settings.rp_origins, require_user_verification=True)
    except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"passkey registration refused: {exc}") from None
    response = credential.get("response")
    return NewCredential(bytes_to_base64url(verified.credential_id), verified.credential_public_key,
                         verified.sign_count,
                         known_transports(response.get("transports") if isinstance(response, dict) else None))


def authentication_options(settings: Settings, allowed: list[tuple[str, list[Any]]]) -> tuple[dict[str, Any], bytes]:
    """The options for `navigator.credentials.get()` (empty `allowed`: any discoverable passkey)."""
    options = webauthn.generate_authentication_options(
        rp_id=settings.rp_id, timeout=CHALLENGE_SECONDS * 1000,
        allow_credentials=[_descriptor(c, t) for c, t in allowed],
        user_verification=UserVerificationRequirement.REQUIRED)
    return json.loads(webauthn.options_to_json(options)), options.challenge


def credential_id_of(credential: dict[str, Any]) -> str:
    """The credential id an assertion claims (to look the passkey up before verifying)."""
    try:
        return bytes_to_base64url(parse_authentication_credential_json(json.dumps(credential)).raw_id)
    except (InvalidJSONStructure, InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"not a WebAuthn assertion: {exc}") from None


def verify_authentication(settings: Settings, credential: dict[str, Any], challenge: bytes, *, public_key: bytes,
                          sign_count: int) -> int:
    """Check an assertion; returns the authenticator's new sign count. A count that does not increase
    (when either is non-zero) is refused: the mark of a cloned authenticator."""
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=settings.rp_id,
            expected_origin=settings.rp_origins, credential_public_key=public_key,
            credential_current_sign_count=sign_count, require_user_verification=True)
    except (InvalidAuthenticationResponse, InvalidJSONStructure, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"passkey sign-in refused: {exc}") from None
    return int(verified.new_sign_count)
