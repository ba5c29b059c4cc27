"""Passkeys against WebAuthn §7.1-7.2 with an authenticator the project did not write, and a relying
party that follows the deployment (issue 25).

The authenticator's structures (client data, authenticator data, attested credential data, the COSE
key, the `none` attestation object) come from the `fido2` package and its keys and signatures from
`cryptography`; nothing here uses the project's own test authenticator (tests/authenticator.py). The
`soft-webauthn` package was the first choice, but its last release (0.1.4) requires fido2 < 2, whose
cryptography < 45 would downgrade the server's own `webauthn` (3.0.1 to 2.7.1) and `cryptography`
in the lock; it also sets only the user-present flag, and Licet requires user verification.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.utils import sha256
from fido2.webauthn import Aaguid, AttestationObject, AttestedCredentialData, AuthenticatorData, CollectedClientData
from hypothesis import example, given, settings
from hypothesis import strategies as st

from licet.server.auth import passkeys
from licet.server.settings import Settings
from tests.server_harness import ORIGIN, RP_ID, Person, Server, Tenant, free_port, launch
from tests.test_deployment import SHELL_VARIABLES, cli_env, environment, interpolate, load_compose

ROOT = Path(__file__).resolve().parent.parent
FOREIGN = "https://evil.example"
PORTAL = "https://portal.example"  # a page the derived server lets frame its ceremonies
_VERIFIED = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV
_OMIT = object()  # leave a field out of the response


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Passkey:
    """One passkey (a P-256 key, a credential id, the user handle it was created for, a counter),
    answering ceremonies as a browser hands them over (the JSON of `PublicKeyCredential.toJSON()`)."""

    def __init__(self, origin: str, *, credential_bytes: int = 32, flags: AuthenticatorData.FLAG = _VERIFIED) -> None:
        self.origin = origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.raw_id = os.urandom(credential_bytes)
        self.flags = flags
        self.rp_id = ""
        self.user_handle = b""
        self.sign_count = 0

    @property
    def credential_id(self) -> str:
        return b64(self.raw_id)

    def _client_data(self, kind: str, challenge: str, origin: str | None, cross_origin: bool,
                     top_origin: str | None) -> CollectedClientData:
        extra = {"topOrigin": top_origin} if top_origin is not None else {}
        return CollectedClientData.create(type=kind, challenge=unb64(challenge), origin=origin or self.origin,
                                          cross_origin=cross_origin, **extra)

    def create(self, options: dict[str, Any], *, origin: str | None = None, cross_origin: bool = False,
               top_origin: str | None = None) -> dict[str, Any]:
        """The answer to `navigator.credentials.create(options)`."""
        self.rp_id, self.user_handle = options["rp"]["id"], unb64(options["user"]["id"])
        client_data = self._client_data("webauthn.create", options["challenge"], origin, cross_origin, top_origin)
        # fido2 leaves this constructor untyped
        cose_key = ES256.from_cryptography_key(self.key.public_key())  # type: ignore[no-untyped-call]
        attested = AttestedCredentialData.create(Aaguid.NONE, self.raw_id, cose_key)
        auth_data = AuthenticatorData.create(sha256(self.rp_id.encode()), self.flags | AuthenticatorData.FLAG.AT,
                                             self.sign_count, attested)
        attestation = AttestationObject.create("none", auth_data, {})
        return {"id": self.credential_id, "rawId": self.credential_id, "type": "public-key",
                "response": {"clientDataJSON": b64(client_data), "attestationObject": b64(bytes(attestation)),
                             "transports": ["internal"]},
                "clientExtensionResults": {}}

    def get(self, options: dict[str, Any], *, origin: str | None = None, user_handle: Any = None,
            cross_origin: bool = False, top_origin: str | None = None) -> dict[str, Any]:
        """The answer to `navigator.credentials.get(options)`, signed with the passkey's key. The user
        handle is the one it was created for unless `user_handle` says otherwise (bytes, a raw JSON
        value, or _OMIT)."""
        self.sign_count += 1
        client_data = self._client_data("webauthn.get", options["challenge"], origin, cross_origin, top_origin)
        auth_data = AuthenticatorData.create(sha256(self.rp_id.encode()), self.flags, self.sign_count)
        signature = self.key.sign(bytes(auth_data) + client_data.hash, ec.ECDSA(hashes.SHA256()))
        response: dict[str, Any] = {"clientDataJSON": b64(client_data), "authenticatorData": b64(bytes(auth_data)),
                                    "signature": b64(signature)}
        handle = self.user_handle if user_handle is None else user_handle
        if handle is not _OMIT:
            response["userHandle"] = b64(handle) if isinstance(handle, bytes) else handle
        return {"id": self.credential_id, "rawId": self.credential_id, "type": "public-key", "response": response,
                "clientExtensionResults": {}}


def register(who: Person, key: Passkey, **client: Any) -> httpx.Response:
    with who.client() as session:
        options = session.post("/v1/auth/passkeys/options")
        assert options.status_code == 200, options.text
        return session.post("/v1/auth/passkeys", json={
            "challenge_id": options.json()["challenge_id"], "credential": key.create(options.json()["options"], **client),
            "name": "soft"})


def sign_in(server: Server, tenant: Tenant, key: Passkey, **client: Any) -> httpx.Response:
    with server.client() as anonymous:
        options = anonymous.post("/v1/auth/passkey/options", json={"tenant": tenant.id}).json()
        return anonymous.post("/v1/auth/passkey", json={
            "tenant": tenant.id, "challenge_id": options["challenge_id"],
            "credential": key.get(options["options"], **client)})


def step_up_options(token: str, server: Server) -> dict[str, Any]:
    with server.client(token) as session:
        options = session.post("/v1/auth/mfa/passkey/options")
        assert options.status_code == 200, options.text
        return dict(options.json())


def step_up(server: Server, token: str, key: Passkey, **client: Any) -> httpx.Response:
    options = step_up_options(token, server)
    with server.client(token) as session:
        return session.post("/v1/auth/mfa/passkey", json={
            "challenge_id": options["challenge_id"], "credential": key.get(options["options"], **client)})


def audit_events(tenant: Tenant) -> list[dict[str, Any]]:
    with tenant.owner() as owner:
        return list(owner.get("/v1/audit", params={"limit": 500}).json()["events"])


def refused(reply: httpx.Response, status: int, code: str, field: str | None = None) -> bool:
    error = reply.json().get("error") or {}
    return reply.status_code == status and error.get("code") == code and (field is None or error.get("field") == field)


def person_with_passkey(tenant: Tenant, origin: str = ORIGIN) -> tuple[Person, Passkey]:
    who = tenant.person("approver")
    key = Passkey(origin)
    registered = register(who, key)
    assert registered.status_code == 201, registered.text
    return who, key


# --- the relying party follows the deployment ----------------------------------------------------


@pytest.fixture(scope="module")
def derived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`licet serve` on a free port with no relying party configured (SQLite), allowing PORTAL to frame
    its ceremonies."""
    tmp = tmp_path_factory.mktemp("derived")
    data_dir = tmp / "data"
    database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
    process, url = launch(database_url, data_dir, tmp / "server.log", {
        "LICET_RP_ID": "", "LICET_RP_ORIGINS": "[]", "LICET_RP_TOP_ORIGINS": json.dumps([PORTAL])})
    yield Server("sqlite", url, database_url, data_dir, process)
    process.terminate()
    process.wait(10)


def test_a_server_on_another_port_takes_passkeys_for_that_port(derived: Server) -> None:
    """Nothing configured: the relying party is `localhost` and the origins are this port's, so a
    passkey registers and signs in from http://localhost:PORT (and 127.0.0.1), not from :8000."""
    port = int(derived.url.rsplit(":", 1)[1])
    assert port != 8000
    tenant = derived.new_tenant()
    who = tenant.person("owner")
    with who.client() as session:
        options = session.post("/v1/auth/passkeys/options").json()["options"]
    assert options["rp"]["id"] == "localhost"
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
        key = Passkey(origin)
        assert register(who, key).status_code == 201, origin
        reply = sign_in(derived, tenant, key)
        assert reply.status_code == 200, reply.text
        assert reply.json()["session"]["method"] == "passkey" and reply.json()["session"]["mfa_at"] is not None
    elsewhere = register(who, Passkey("http://localhost:8000"))
    assert refused(elsewhere, 400, "invalid_credential") and "origin" in elsewhere.json()["error"]["message"]


def test_a_listed_top_origin_may_frame_a_ceremony(derived: Server) -> None:
    port = int(derived.url.rsplit(":", 1)[1])
    tenant = derived.new_tenant()
    who, key = person_with_passkey(tenant, f"http://localhost:{port}")
    assert sign_in(derived, tenant, key, cross_origin=True, top_origin=PORTAL).status_code == 200
    assert refused(sign_in(derived, tenant, key, cross_origin=True, top_origin=FOREIGN), 401, "invalid_credential")
    framed = Passkey(f"http://localhost:{port}")
    assert register(who, framed, cross_origin=True, top_origin=PORTAL).status_code == 201


def test_production_refuses_to_start_without_a_relying_party(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    made = subprocess.run([sys.executable, "-m", "licet", "keygen", "--out", str(key)], capture_output=True,
                          text=True, env=cli_env(), timeout=120)
    assert made.returncode == 0, made.stderr
    for configured, missing in (({}, ["LICET_RP_ID", "LICET_RP_ORIGINS"]),
                                ({"LICET_RP_ID": "licet.example.com"}, ["LICET_RP_ORIGINS"])):
        env = cli_env(LICET_MODE="production", LICET_SIGNING_KEY_FILE=str(key),
                      LICET_SECRETS_KEY=base64.b64encode(os.urandom(32)).decode(), **configured)
        try:
            result = subprocess.run([sys.executable, "-m", "licet", "serve", "--port", str(free_port()), "--data-dir",
                                     str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"production started without {missing}")
        output = " ".join((result.stdout + result.stderr).split())  # undo the console's line wrapping
        assert result.returncode != 0 and f"set {' and '.join(missing)} (" in output, output


def test_the_compose_file_sets_the_relying_party_people_open() -> None:
    """The api service's relying party is the documented public name over HTTPS, and production takes it."""
    env = {k: interpolate(v, SHELL_VARIABLES) for k, v in environment(load_compose()["services"]["api"]).items()}
    configured = Settings(mode="production", rp_id=env["LICET_RP_ID"],
                          rp_origins=json.loads(env["LICET_RP_ORIGINS"])).listening_on("0.0.0.0", 8000)
    host = SHELL_VARIABLES["PUBLIC_HOST"]
    assert (configured.rp_id, configured.rp_origins) == (host, [f"https://{host}"])
    assert "export PUBLIC_HOST=" in (ROOT / "docs" / "production.md").read_text()


# --- userHandle (§7.2 step 6) --------------------------------------------------------------------------


def test_a_sign_in_must_name_the_passkeys_owner(server: Server, tenant: Tenant) -> None:
    """Another person's handle, none, or a malformed one: refused, and nobody is signed in."""
    ana, key = person_with_passkey(tenant)
    bo, _ = person_with_passkey(tenant)
    for handle in (bo.user_id.encode(), _OMIT, "", "%%not base64%%", 42):
        reply = sign_in(server, tenant, key, user_handle=handle)
        assert reply.status_code in (400, 401) and reply.json()["error"]["code"] == "invalid_credential", (handle,
                                                                                                        reply.text)
        assert "token" not in reply.json()
    named = sign_in(server, tenant, key)
    assert named.status_code == 200, named.text
    with server.client(named.json()["token"]) as session:
        assert session.get("/v1/auth/me").json()["user"]["email"] == ana.email


def test_a_step_up_checks_the_user_handle_when_present(server: Server, tenant: Tenant) -> None:
    ana, key = person_with_passkey(tenant)
    bo, _ = person_with_passkey(tenant)
    wrong = step_up(server, ana.token, key, user_handle=bo.user_id.encode())
    assert refused(wrong, 401, "invalid_credential", "credential.response.userHandle"), wrong.text
    assert step_up(server, ana.token, key, user_handle=_OMIT).status_code == 200  # optional here
    assert step_up(server, ana.token, key).status_code == 200


@settings(max_examples=40, deadline=None)
@given(handle=st.binary(max_size=64), required=st.booleans())
@example(handle=b"owner-id", required=True)
@example(handle=b"owner-id", required=False)
@example(handle=b"", required=True)
def test_only_the_owners_handle_verifies(handle: bytes, required: bool) -> None:
    """Property, at the verifier: an assertion verifies iff its handle is the owner's (or, on a
    step-up, absent)."""
    config = Settings(rp_id=RP_ID, rp_origins=[ORIGIN])
    key = Passkey(ORIGIN)
    options, made = passkeys.registration_options(config, user_id="owner-id", email="o@example.com",
                                                  display_name="o", existing=[])
    stored = passkeys.verify_registration(config, key.create(options), made)
    request, challenge = passkeys.authentication_options(config, [])
    assertion = key.get(request, user_handle=handle if handle else _OMIT)
    accepted = handle == passkeys.user_handle("owner-id") or (not handle and not required)
    try:
        passkeys.verify_authentication(config, assertion, challenge, public_key=stored.public_key,
                                       sign_count=stored.sign_count, owner_handle=passkeys.user_handle("owner-id"),
                                       handle_required=required)
    except passkeys.CeremonyFailed as exc:
        assert not accepted and exc.field == "credential.response.userHandle", exc
    else:
        assert accepted


# --- challenges bound to their ceremony and person ------------------------------------------------


def test_a_step_up_challenge_cannot_sign_anyone_in(server: Server, tenant: Tenant) -> None:
    ana, ana_key = person_with_passkey(tenant)
    _, bo_key = person_with_passkey(tenant)
    for key in (ana_key, bo_key):  # the challenge's person, and another
        options = step_up_options(ana.token, server)
        with server.client() as anonymous:
            reply = anonymous.post("/v1/auth/passkey", json={
                "tenant": tenant.id, "challenge_id": options["challenge_id"],
                "credential": key.get(options["options"])})
        assert refused(reply, 400, "invalid_challenge", "challenge_id"), reply.text
    with server.client() as anonymous:  # nor is a sign-in challenge a step-up
        options = anonymous.post("/v1/auth/passkey/options", json={"tenant": tenant.id}).json()
    with server.client(ana.token) as session:
        reply = session.post("/v1/auth/mfa/passkey", json={"challenge_id": options["challenge_id"],
                                                           "credential": ana_key.get(options["options"])})
    assert refused(reply, 400, "invalid_challenge"), reply.text


# --- framing (§7.1 step 10, §7.2 step 13) ---------------------------------------------------------


def test_a_ceremony_framed_by_another_site_is_refused(server: Server, tenant: Tenant) -> None:
    who = tenant.person("approver")
    for frame in ({"cross_origin": True, "top_origin": FOREIGN}, {"cross_origin": True},
                  {"cross_origin": False, "top_origin": FOREIGN}):
        reply = register(who, Passkey(ORIGIN), **frame)
        assert refused(reply, 400, "invalid_credential", "credential.response.clientDataJSON"), (frame, reply.text)
    key = Passkey(ORIGIN)
    assert register(who, key).status_code == 201
    reply = sign_in(server, tenant, key, cross_origin=True, top_origin=FOREIGN)
    assert refused(reply, 401, "invalid_credential", "credential.response.clientDataJSON"), reply.text
    assert sign_in(server, tenant, key, cross_origin=True, top_origin=ORIGIN).status_code == 200  # our own page


# --- credential ids up to 1 023 bytes -------------------------------------------------------------


def test_an_over_long_credential_id_is_a_400_naming_the_field(server: Server, tenant: Tenant) -> None:
    """On PostgreSQL an id of 1 100 bytes was a 500 (the column is sized for 1 023)."""
    who = tenant.person("approver")
    for size in (1024, 1100, 4000):
        reply = register(who, Passkey(ORIGIN, credential_bytes=size))
        assert refused(reply, 400, "invalid_credential", "credential.rawId"), (size, reply.text)
        assert str(size) in reply.json()["error"]["message"]
    longest = Passkey(ORIGIN, credential_bytes=1023)
    assert register(who, longest).status_code == 201
    assert sign_in(server, tenant, longest).status_code == 200
    longest.raw_id += b"\x00"  # an assertion claiming a 1 024-byte id
    assert refused(sign_in(server, tenant, longest), 400, "invalid_credential", "credential.rawId")


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=2048))
def test_the_credential_id_limit_is_1023_bytes(size: int) -> None:
    raw = b64(os.urandom(size))
    assertion = {"id": raw, "rawId": raw, "type": "public-key", "response": {
        "clientDataJSON": b64(b"{}"), "authenticatorData": b64(b"\x00" * 37), "signature": b64(b"\x00")}}
    if size <= passkeys.MAX_CREDENTIAL_ID_BYTES:
        assert passkeys.credential_id_of(assertion) == raw
    else:
        with pytest.raises(passkeys.CeremonyFailed) as refusal:
            passkeys.credential_id_of(assertion)
        assert refusal.value.field == "credential.rawId"


# --- the audit trail ------------------------------------------------------------------------------


def test_unknown_credentials_and_their_lockout_are_audited(server: Server, tenant: Tenant) -> None:
    stranger = Passkey(ORIGIN)
    stranger.rp_id, stranger.user_handle = RP_ID, b"nobody"
    for _ in range(5):  # LICET_LOGIN_LOCK_FAILURES
        assert refused(sign_in(server, tenant, stranger), 401, "invalid_credential")
    assert refused(sign_in(server, tenant, stranger), 429, "too_many_attempts")
    events = audit_events(tenant)
    failed = [e for e in events if e["action"] == "auth.passkey_failed"]
    assert len(failed) == 5 and {e["actor"] for e in failed} == {"passkey:unknown"}
    assert {e["details"]["credential"] for e in failed} == {stranger.credential_id[:64]}
    lockouts = [e for e in events if e["action"] == "auth.lockout"]
    assert [e["details"]["scope"] for e in lockouts] == ["passkey"]


# --- removing a passkey -----------------------------------------------------------------------------


def test_removing_a_passkey_signs_out_the_sessions_it_opened(server: Server, tenant: Tenant) -> None:
    """Sessions that signed in with the passkey (alone, or as the second factor of a password) end;
    the one removing it and a password+TOTP one stay."""
    who, key = person_with_passkey(tenant)
    by_passkey = sign_in(server, tenant, key).json()["token"]
    with server.client() as anonymous:
        pending = anonymous.post("/v1/auth/login", json={"tenant": tenant.id, "email": who.email,
                                                         "password": who.password}).json()["token"]
    finished = step_up(server, pending, key)
    assert finished.status_code == 200, finished.text
    by_second_factor = finished.json()["token"]
    with server.client() as anonymous:
        pending = anonymous.post("/v1/auth/login", json={"tenant": tenant.id, "email": who.email,
                                                         "password": who.password}).json()["token"]
    with server.client(pending) as session:  # a backup code: this step's TOTP code is spent already
        by_totp = session.post("/v1/auth/mfa/totp", json={"code": who.backup_codes[0]})
        assert by_totp.status_code == 200, by_totp.text
    with who.client() as session:
        listed = session.get("/v1/auth/passkeys").json()["passkeys"]
        assert session.delete(f"/v1/auth/passkeys/{listed[0]['id']}").status_code == 200
    for token, alive in ((by_passkey, False), (by_second_factor, False), (by_totp.json()["token"], True),
                         (who.token, True)):
        with server.client(token) as session:
            assert (session.get("/v1/auth/me").status_code == 200) is alive
    removed = [e for e in audit_events(tenant) if e["action"] == "auth.passkey_removed"]
    assert removed[-1]["details"]["sessions_revoked"] == 2


# --- an authenticator that does not verify its user -------------------------------------------------


def test_an_authenticator_that_does_not_verify_its_user_is_refused(server: Server, tenant: Tenant) -> None:
    """§7.1 step 15, §7.2 step 16 (held before issue 25; a guard): user presence alone is not enough."""
    who, key = person_with_passkey(tenant)
    unverified = Passkey(ORIGIN, flags=AuthenticatorData.FLAG.UP)
    reply = register(who, unverified)
    assert refused(reply, 400, "invalid_credential") and "verif" in reply.json()["error"]["message"], reply.text
    key.flags = AuthenticatorData.FLAG.UP
    reply = sign_in(server, tenant, key)
    assert refused(reply, 401, "invalid_credential") and "verif" in reply.json()["error"]["message"], reply.text
