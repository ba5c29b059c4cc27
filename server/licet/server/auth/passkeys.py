"""WebAuthn passkeys (through the `webauthn` package): registration and authentication ceremonies.

Challenges are generated here and stored server-side by the caller (single use, expiring, bound to
one ceremony and, where there is one, one person). User verification is required in both ceremonies,
which is what lets a passkey sign-in count as multi-factor: something held (the authenticator) and
something known or inherent (its PIN or biometric).

The `webauthn` package checks the client data's type, challenge and origin, the RP id hash, the
flags, the signature, the attestation and the counter; this module adds what it leaves to the
relying party (WebAuthn §7.1-7.2): the client data's `crossOrigin`/`topOrigin`, the credential id's
length, and the assertion's `userHandle` against the credential's owner.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import webauthn
from webauthn.helpers import bytes_to_base64url, parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from licet.server.settings import Settings

CHALLENGE_SECONDS = 300
MAX_CREDENTIAL_ID_BYTES = 1023  # WebAuthn §5.1.3 and §7.1 step 23: longer credential ids are refused

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# The ceremonies a stored challenge is bound to: one made for one cannot be spent on another.
REGISTRATION, SIGN_IN, STEP_UP = "register", "sign_in", "step_up"


class CeremonyFailed(ValueError):
    """The authenticator's response does not verify; the message says which check failed, `field` which
    part of the request it is about (a dotted path)."""

    def __init__(self, message: str, field: str = "credential") -> None:
        super().__init__(message)
        self.field = field


class RelyingPartyUnset(RuntimeError):
    """The server was built without a relying party (`licet serve` derives one; production sets one)."""


def _relying_party(settings: Settings) -> tuple[str, list[str]]:
    if not settings.rp_id or not settings.rp_origins:
        raise RelyingPartyUnset("the WebAuthn relying party is not set: set LICET_RP_ID and LICET_RP_ORIGINS, or "
                                "start the server with `licet serve`, which derives them from its address")
    return settings.rp_id, settings.rp_origins


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
        rp_id=_relying_party(settings)[0], rp_name=settings.rp_name, user_name=email, user_id=user_handle(user_id),
        user_display_name=display_name, timeout=CHALLENGE_SECONDS * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[_descriptor(c, t) for c, t in existing])
    return json.loads(webauthn.options_to_json(options)), options.challenge


def _b64url_bytes(value: Any, field: str) -> bytes:
    """`value` as the base64url text of WebAuthn's JSON form (padding optional); anything else is
    refused (the standard library's decoder would silently skip characters outside the alphabet)."""
    text = value.rstrip("=") if isinstance(value, str) else ""
    if not isinstance(value, str) or not _BASE64URL.fullmatch(value) or len(text) % 4 == 1:
        raise CeremonyFailed(f"{field}: not base64url", field)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_credential_id(raw_id: bytes) -> None:
    if len(raw_id) > MAX_CREDENTIAL_ID_BYTES:
        raise CeremonyFailed(f"credential.rawId: the credential id is {len(raw_id)} bytes; WebAuthn allows at most "
                             f"{MAX_CREDENTIAL_ID_BYTES}", "credential.rawId")


def _check_frame(settings: Settings, credential: dict[str, Any]) -> None:
    """§7.1 steps 9-10, §7.2 steps 12-13 (Level 3): a ceremony run in an iframe of another site
    (`crossOrigin: true`) or under a named top-level page (`topOrigin`) is accepted only for a top
    origin the deployment lists (LICET_RP_TOP_ORIGINS) or is (LICET_RP_ORIGINS): otherwise any site
    could frame the sign-in."""
    response = credential.get("response")
    field = "credential.response.clientDataJSON"
    raw = _b64url_bytes(response.get("clientDataJSON") if isinstance(response, dict) else None, field)
    try:
        client_data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CeremonyFailed(f"{field}: not JSON ({exc})", field) from None
    if not isinstance(client_data, dict):
        raise CeremonyFailed(f"{field}: not a JSON object", field)
    cross_origin, top_origin = client_data.get("crossOrigin", False), client_data.get("topOrigin")
    if not isinstance(cross_origin, bool) or not (top_origin is None or isinstance(top_origin, str)):
        raise CeremonyFailed(f"{field}: crossOrigin must be a boolean and topOrigin a string", field)
    if cross_origin or top_origin is not None:
        allowed = set(settings.rp_top_origins) | set(_relying_party(settings)[1])
        if top_origin not in allowed:
            raise CeremonyFailed(f"{field}: a ceremony framed by {top_origin or 'an unnamed page'} "
                                 "(crossOrigin) is refused; allowed top origins: LICET_RP_TOP_ORIGINS", field)


def verify_registration(settings: Settings, credential: dict[str, Any], challenge: bytes) -> NewCredential:
    """Check a registration response against the stored challenge, the RP id, the origins and the
    framing page; a credential id longer than WebAuthn allows is refused."""
    rp_id, origins = _relying_party(settings)
    _check_credential_id(_b64url_bytes(credential.get("rawId"), "credential.rawId"))
    _check_frame(settings, credential)
    try:
        verified = webauthn.verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origins, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"passkey registration refused: {exc}") from None
    _check_credential_id(verified.credential_id)  # the one in the authenticator data, which is stored
    response = credential.get("response")
    return NewCredential(bytes_to_base64url(verified.credential_id), verified.credential_public_key,
                         verified.sign_count,
                         known_transports(response.get("transports") if isinstance(response, dict) else None))


def authentication_options(settings: Settings, allowed: list[tuple[str, list[Any]]]) -> tuple[dict[str, Any], bytes]:
    """The options for `navigator.credentials.get()` (empty `allowed`: any discoverable passkey)."""
    options = webauthn.generate_authentication_options(
        rp_id=_relying_party(settings)[0], timeout=CHALLENGE_SECONDS * 1000,
        allow_credentials=[_descriptor(c, t) for c, t in allowed],
        user_verification=UserVerificationRequirement.REQUIRED)
    return json.loads(webauthn.options_to_json(options)), options.challenge


def credential_id_of(credential: dict[str, Any]) -> str:
    """The credential id an assertion claims (to look the passkey up before verifying)."""
    try:
        raw_id = parse_authentication_credential_json(json.dumps(credential)).raw_id
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"not a WebAuthn assertion: {exc}") from None
    _check_credential_id(raw_id)
    return bytes_to_base64url(raw_id)


def _check_user_handle(credential: dict[str, Any], owner_handle: bytes, *, required: bool) -> None:
    """§7.2 step 6: the assertion's `userHandle` must name the credential's owner. Required when the
    person was not known before the ceremony (discoverable sign-in); checked when present otherwise."""
    response = credential.get("response")
    field = "credential.response.userHandle"
    value = response.get("userHandle") if isinstance(response, dict) else None
    if value is None or value == "":
        if required:
            raise CeremonyFailed(f"{field}: a discoverable passkey sign-in must name its user", field)
        return
    if not hmac.compare_digest(_b64url_bytes(value, field), owner_handle):
        raise CeremonyFailed(f"{field}: the assertion names another user than the passkey's owner", field)


def verify_authentication(settings: Settings, credential: dict[str, Any], challenge: bytes, *, public_key: bytes,
                          sign_count: int, owner_handle: bytes, handle_required: bool) -> int:
    """Check an assertion for a passkey whose owner's user handle is `owner_handle`; returns the
    authenticator's new sign count. A count that does not increase (when either is non-zero) is
    refused: the mark of a cloned authenticator."""
    rp_id, origins = _relying_party(settings)
    _check_user_handle(credential, owner_handle, required=handle_required)
    _check_frame(settings, credential)
    try:
        verified = webauthn.verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origins, credential_public_key=public_key,
            credential_current_sign_count=sign_count, require_user_verification=True)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise CeremonyFailed(f"passkey sign-in refused: {exc}") from None
    return int(verified.new_sign_count)


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle of a person (what registration gives the authenticator)."""
    return user_id.encode()
