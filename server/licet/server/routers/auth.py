"""Sign-in for people: invitations, password sign-in, TOTP, passkeys, sessions.

A person's session answers every route an API key does (the same roles apply); the routes here are
the person's own account. Failed sign-ins and second-factor codes are throttled per account and per
source address, and every authentication event is written to the tenant's audit trail.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server import audit, responses
from licet.server.auth import passkeys, passwords, sessions, throttle, totp
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, person, public
from licet.server.models import BackupCode, Invitation, Passkey, Tenant, User, UserSession, WebAuthnChallenge
from licet.server.roles import permissions_of
from licet.server.routers import JsonObject, Text
from licet.server.routers.decide import client_ip, services_of
from licet.server.sealing import SecretBox
from licet.server.services import Services
from licet.server.time import duration, utcnow

router = APIRouter(prefix="/v1/auth", tags=["sign-in"])
_log = structlog.get_logger("licet.auth")

SignedIn = sessions.SignedIn
_BAD_CREDENTIALS = "the email or the password is wrong, or the account cannot sign in"
_BAD_CODE = "the code is wrong, expired or already used"


class InvitationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Text = Field(min_length=10, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    use_cookie: bool = Field(False, description="Set the session as an HttpOnly cookie instead of returning it.")


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Text = Field(min_length=1, max_length=64, examples=["acme"])
    email: Text = Field(min_length=1, max_length=320, examples=["ana@example.com"])
    password: str = Field(min_length=1, max_length=1024)
    use_cookie: bool = Field(False, description="Set the session as an HttpOnly cookie instead of returning it.")


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Text = Field(min_length=6, max_length=40, description="A TOTP code, or one of the backup codes.")


class PasskeyLoginOptionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Text = Field(min_length=1, max_length=64)


class AssertionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    challenge_id: Text = Field(min_length=1, max_length=36)
    credential: JsonObject = Field(description="The PublicKeyCredential from navigator.credentials.get(), as JSON.")


class PasskeyLoginBody(AssertionBody):
    tenant: Text = Field(min_length=1, max_length=64)
    use_cookie: bool = False


class RegistrationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    challenge_id: Text = Field(min_length=1, max_length=36)
    credential: JsonObject = Field(description="The PublicKeyCredential from navigator.credentials.create().")
    name: Text = Field("passkey", min_length=1, max_length=100)


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=100)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


def _caller(user: User, session_id: str | None = None) -> Caller:
    """The person as the audit trail records them."""
    return Caller(user.tenant_id, user.role, sessions.principal_of(user.email), (user.role,), {},
                  user_id=user.id, session_id=session_id)


def _source(request: Request) -> str:
    return client_ip(request, services_of(request).settings.trusted_proxies) or "unknown"


def _session_json(record: UserSession, current: str | None = None) -> dict[str, Any]:
    return {"id": record.id, "stage": record.stage, "method": record.method,
            "created_at": record.created_at.isoformat(), "last_seen_at": record.last_seen_at.isoformat(),
            "expires_at": record.expires_at.isoformat(), "mfa_at": record.mfa_at.isoformat() if record.mfa_at else None,
            "source": record.source, "user_agent": record.user_agent, "current": record.id == current}


async def _methods(db: AsyncSession, user: User) -> list[str]:
    found = ["totp"] if user.totp_enabled_at is not None else []
    if (await db.execute(select(Passkey.id).where(Passkey.user_id == user.id).limit(1))).first() is not None:
        found.append("passkey")
    return found


def _signed_in(services: Services, issued: sessions.Issued, use_cookie: bool, methods: list[str],
               status: int = 200) -> JSONResponse:
    """The response that hands a new session over: as a cookie (the dashboard) or in the body (API)."""
    body: dict[str, Any] = {"session": _session_json(issued.record, issued.record.id),
                            "csrf_token": issued.csrf_token, "mfa_methods": methods}
    if not use_cookie:
        body["token"] = issued.token
    response = JSONResponse(body, status)
    if use_cookie:
        settings = services.settings
        response.set_cookie(sessions.COOKIE, issued.token, max_age=settings.session_absolute_seconds, path="/",
                            httponly=True, secure=settings.cookie_secure, samesite="strict")
        response.set_cookie(sessions.CSRF_COOKIE, issued.csrf_token, max_age=settings.session_absolute_seconds,
                            path="/", httponly=False, secure=settings.cookie_secure, samesite="strict")
    return response


async def _open(db: AsyncSession, services: Services, user: User, request: Request, *, method: str,
                mfa: bool, passkey_id: str | None = None) -> tuple[sessions.Issued, list[str]]:
    methods = await _methods(db, user)
    issued = sessions.open_session(db, user, services.settings, method=method, mfa=mfa, source=_source(request),
                                   user_agent=request.headers.get("user-agent", ""))
    issued.record.passkey_id = passkey_id
    if not mfa and "passkey" in methods and issued.record.stage == "active":
        issued.record.stage = "mfa_pending"  # a passkey is a second factor too
    await db.flush()
    return issued, methods


async def _user(db: AsyncSession, signed_in: SignedIn) -> User:
    user = (await db.execute(select(User).where(User.id == signed_in.user_id,
                                                User.tenant_id == signed_in.tenant_id))).scalar_one()
    return user


async def _count_attempt(services: Services, who: throttle.Subject) -> int:
    """Count an attempt before checking it (its number), or refuse it while its subject or source is
    locked."""
    try:
        async with services.db.write() as db:
            return await throttle.attempt(db, who, services.settings, utcnow())
    except throttle.Locked as locked:
        seconds = max(1, int((locked.until - utcnow()).total_seconds()))
        raise ApiError(429, "too_many_attempts", f"too many failed attempts: try again in {seconds} seconds",
                       detail={"retry_after": seconds}) from None


async def _failed(services: Services, who: throttle.Subject, attempts: int, actor: Caller | None, event: str,
                  **details: Any) -> None:
    """Audit a failed attempt (and the lockout it caused), then answer only after the throttle delay."""
    locked = throttle.locks(services.settings, attempts)
    wait = throttle.delay(services.settings, attempts)
    if actor is not None:
        async with services.db.write() as db:
            await audit.record(db, actor, event, actor.principal_id, source=who.source, attempt=attempts,
                               delay_seconds=wait, **details)
            if locked:
                await audit.record(db, actor, "auth.lockout", actor.principal_id, source=who.source,
                                   scope=who.scope)
    _log.warning(event, subject=who.scope, source=who.source, attempts=attempts, locked=locked, **details)
    await asyncio.sleep(wait)


@router.post("/invitations/accept", summary="Accept an invitation: set a password and sign in",
             responses=raises("invalid_invitation", "account_disabled", "weak_password"),
             response_model=responses.SignedIn)
async def accept_invitation(body: InvitationBody, request: Request, _: Annotated[None, public()]) -> JSONResponse:
    """Single use and expiring; the password must be long and hard to guess; not while the account is
    disabled."""
    services = services_of(request)
    digest = sessions.token_hash(body.token)
    async with services.db.read() as db:
        found = (await db.execute(select(Invitation, User).join(User, User.id == Invitation.user_id).where(
            Invitation.token_hash == digest))).first()
    if found is None or found[0].used_at is not None or found[0].expires_at <= utcnow():
        raise ApiError(400, "invalid_invitation", "the invitation is unknown, used or expired: ask for a new one",
                       "token")
    user: User = found[1]
    _refuse_disabled(user)
    try:
        passwords.check_strength(body.password, services.settings.password_min_length,
                                 user_inputs=(user.email, user.display_name))
    except passwords.WeakPassword as exc:
        raise ApiError(422, "weak_password", f"password: {exc}", "password") from None
    hashed = await passwords.hash_password(body.password)
    async with services.db.write() as db:
        claimed = await db.execute(update(Invitation).where(
            Invitation.id == found[0].id, Invitation.used_at.is_(None)).values(used_at=utcnow()))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent accept took it
            raise ApiError(400, "invalid_invitation", "the invitation was used already", "token")
        user = (await db.execute(select(User).where(User.id == user.id))).scalar_one()
        _refuse_disabled(user)  # disabled while the password was hashed
        user.password_hash = hashed
        # A reset by an administrator: whoever held the old password is signed out everywhere.
        revoked = (await db.execute(update(UserSession).where(
            UserSession.user_id == user.id, UserSession.revoked_at.is_(None)).values(
            revoked_at=utcnow()))).rowcount  # type: ignore[attr-defined]
        issued, methods = await _open(db, services, user, request, method="password", mfa=False)
        await audit.record(db, _caller(user, issued.record.id), "auth.invitation_accepted", user.id,
                           sessions_revoked=revoked)
    return _signed_in(services, issued, body.use_cookie, methods, 201)


def _refuse_disabled(user: User) -> None:
    # Disabling voids the invitations it finds; one issued since (an admin's reset) waits for /enable.
    if user.disabled_at is not None:
        raise ApiError(409, "account_disabled", "the account is disabled: an admin must enable it before this "
                       "invitation can be accepted", "token")


@router.post("/login", summary="Sign in with email and password",
             responses=raises("invalid_credentials", "too_many_attempts"), response_model=responses.SignedIn)
async def login(body: LoginBody, request: Request, _: Annotated[None, public()]) -> JSONResponse:
    """A session; at stage `mfa_pending` when the person has a second factor to present next. The
    answer to a wrong password, an unknown email and a disabled account is the same."""
    services = services_of(request)
    email = body.email.strip().lower()
    who = throttle.account(body.tenant, email, _source(request))
    async with services.db.read() as db:
        tenant_exists = (await db.execute(select(Tenant.id).where(Tenant.id == body.tenant))).first() is not None
        user = (await db.execute(select(User).where(User.tenant_id == body.tenant, User.email == email))).scalar()
    attempts = await _count_attempt(services, who)
    usable = user is not None and user.disabled_at is None
    ok, rehashed = await passwords.verify_password(body.password, user.password_hash if usable and user else None)
    if not tenant_exists:  # no trail and no accounts: answer as for any wrong password
        await _failed(services, who, attempts, None, "auth.login_failed", method="password", tenant=body.tenant)
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    if not ok or user is None:
        actor = _caller(user) if user else Caller(body.tenant, "unknown", sessions.principal_of(email))
        await _failed(services, who, attempts, actor, "auth.login_failed", method="password",
                      known_account=user is not None)
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    async with services.db.write() as db:
        user = (await db.execute(select(User).where(User.id == user.id))).scalar_one()
        if rehashed is not None:  # the stored hash used older parameters: upgrade it now we know the password
            user.password_hash = rehashed
        await throttle.succeeded(db, who)
        issued, methods = await _open(db, services, user, request, method="password", mfa=False)
        await audit.record(db, _caller(user, issued.record.id), "auth.login", user.id, method="password",
                           stage=issued.record.stage, source=who.source, rehashed=rehashed is not None)
    return _signed_in(services, issued, body.use_cookie, methods)


async def _pass_mfa(services: Services, request: Request, signed_in: SignedIn, method: str,
                    passkey_id: str | None = None) -> JSONResponse:
    """Mark the session as having passed MFA. Finishing a sign-in also replaces its token (and CSRF
    token): whoever saw the half-signed-in token gains nothing from it (session fixation), and a
    passkey that finished it is remembered as the one the session signed in with."""
    async with services.db.write() as db:
        record = (await db.execute(select(UserSession).where(UserSession.id == signed_in.session_id))).scalar_one()
        finishing = record.stage != "active"
        record.stage, record.mfa_at = "active", utcnow()
        if finishing and passkey_id is not None:
            record.passkey_id = passkey_id
        user = await _user(db, signed_in)
        await audit.record(db, _caller(user, record.id), "auth.mfa_passed", user.id, method=method)
        if not finishing:
            return JSONResponse({"session": _session_json(record, record.id)})
        token, csrf = sessions.new_secrets()
        record.token_hash, record.csrf_hash = sessions.token_hash(token), sessions.token_hash(csrf)
        methods = await _methods(db, user)
    return _signed_in(services, sessions.Issued(record, token, csrf), "authorization" not in request.headers, methods)


@router.post("/mfa/totp", summary="Present a TOTP or backup code: finish signing in, or step up",
             responses=raises("invalid_code", "too_many_attempts"), response_model=responses.MfaPassed)
async def mfa_totp(body: CodeBody, request: Request,
                   signed_in: Annotated[SignedIn, person(allow_pending=True)]) -> JSONResponse:
    """Each code is accepted once (±1 time step); a backup code is spent when used. Wrong codes count
    against the person's second factor, which only a right one clears (not a new password sign-in)."""
    services = services_of(request)
    who = throttle.second_factor(signed_in.user_id, _source(request))
    attempts = await _count_attempt(services, who)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        method = await _spend_code(db, user, body.code, services.secrets)
        if method is not None:
            await throttle.succeeded(db, who)
    if method is None:
        await _failed(services, who, attempts, _caller(user, signed_in.session_id), "auth.mfa_failed",
                      method="totp")
        raise ApiError(401, "invalid_code", _BAD_CODE, "code")
    return await _pass_mfa(services, request, signed_in, method)


async def _spend_code(db: AsyncSession, user: User, code: str, box: SecretBox) -> str | None:
    """Spend `code` as a TOTP code or a backup code of `user`; which it was, or None. A TOTP secret that
    does not open (`UnsealError`) fails the request: nothing is signed in."""
    if user.totp_enabled_at is not None and user.totp_secret is not None:
        secret = box.open(user.totp_secret, User.totp_secret, user.id)
        step = totp.matching_step(secret, code, utcnow(), user.totp_last_step)
        if step is not None:
            spent = await db.execute(update(User).where(
                User.id == user.id, (User.totp_last_step.is_(None)) | (User.totp_last_step < step)).values(
                totp_last_step=step))
            return "totp" if spent.rowcount == 1 else None  # type: ignore[attr-defined]
    spent = await db.execute(update(BackupCode).where(
        BackupCode.user_id == user.id, BackupCode.code_hash == totp.backup_code_hash(code),
        BackupCode.used_at.is_(None)).values(used_at=utcnow()))
    return "backup_code" if spent.rowcount == 1 else None  # type: ignore[attr-defined]


async def _new_challenge(services: Services, tenant_id: str, user_id: str | None, purpose: str,
                         challenge: bytes) -> str:
    async with services.db.write() as db:
        record = WebAuthnChallenge(id=str(uuid.uuid4()), tenant_id=tenant_id, user_id=user_id, purpose=purpose,
                                   challenge=challenge,
                                   expires_at=utcnow() + timedelta(seconds=passkeys.CHALLENGE_SECONDS))
        db.add(record)
    return record.id


async def _take_challenge(db: AsyncSession, challenge_id: str, tenant_id: str, ceremony: str,
                          user_id: str | None) -> bytes:
    """The stored challenge, consumed. Refused: a second use, an expired one, and one made for another
    ceremony or another person (a sign-in challenge belongs to nobody, a step-up one to its person)."""
    now = utcnow()
    record = (await db.execute(select(WebAuthnChallenge).where(
        WebAuthnChallenge.id == challenge_id, WebAuthnChallenge.tenant_id == tenant_id,
        WebAuthnChallenge.purpose == ceremony))).scalar()
    if record is None or record.user_id != user_id:
        raise ApiError(400, "invalid_challenge", "unknown challenge: ask for new options", "challenge_id")
    taken = await db.execute(update(WebAuthnChallenge).where(
        WebAuthnChallenge.id == record.id, WebAuthnChallenge.used_at.is_(None),
        WebAuthnChallenge.expires_at > now).values(used_at=now))
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise ApiError(400, "invalid_challenge", "the challenge was used already or has expired: ask for new options",
                       "challenge_id")
    return record.challenge


class PasskeyRefused(ApiError):
    """A refused assertion, with the passkey it presented and its owner when the tenant has that passkey
    (for the audit trail)."""

    def __init__(self, error: ApiError, found: tuple[Passkey, User] | None) -> None:
        super().__init__(error.status, error.code, error.message, error.field, error.detail)
        self.found = found


async def _passkey_of(db: AsyncSession, tenant_id: str, credential_id: str) -> tuple[Passkey, User] | None:
    row = (await db.execute(select(Passkey, User).join(User, User.id == Passkey.user_id).where(
        Passkey.tenant_id == tenant_id, Passkey.credential_id == credential_id))).first()
    return None if row is None else (row[0], row[1])


def _refused_credential(exc: passkeys.CeremonyFailed, status: int = 400) -> ApiError:
    return ApiError(status, "invalid_credential", str(exc), exc.field)


async def _assert_passkey(services: Services, tenant_id: str, body: AssertionBody, ceremony: str,
                          user_id: str | None) -> tuple[User, Passkey]:
    """Verify an assertion and advance the passkey's sign count; the person it authenticates and the
    passkey. `user_id`: the person the ceremony is for (step-up), None for a sign-in, whose assertion
    must then name its user (userHandle). Refusals are PasskeyRefused."""
    try:
        credential_id = passkeys.credential_id_of(body.credential)
    except passkeys.CeremonyFailed as exc:
        raise PasskeyRefused(_refused_credential(exc), None) from None
    try:
        async with services.db.write() as db:
            challenge = await _take_challenge(db, body.challenge_id, tenant_id, ceremony, user_id)
    except ApiError as refused:
        async with services.db.read() as db:
            raise PasskeyRefused(refused, await _passkey_of(db, tenant_id, credential_id)) from None
    async with services.db.write() as db:
        found = await _passkey_of(db, tenant_id, credential_id)
        if found is None or (user_id is not None and found[1].id != user_id) or found[1].disabled_at is not None:
            raise PasskeyRefused(ApiError(401, "invalid_credential", "unknown passkey", "credential"), found)
        key, user = found
        try:
            count = passkeys.verify_authentication(services.settings, body.credential, challenge,
                                                   public_key=key.public_key, sign_count=key.sign_count,
                                                   owner_handle=passkeys.user_handle(user.id),
                                                   handle_required=user_id is None)
        except passkeys.CeremonyFailed as exc:
            failure = exc
        else:
            key.sign_count, key.last_used_at = count, utcnow()
            return user, key
    raise PasskeyRefused(_refused_credential(failure, 401), found)


def _refusal_details(refused: PasskeyRefused) -> dict[str, Any]:
    """What the audit trail keeps of a refused assertion."""
    return {"code": refused.code, "reason": refused.message,
            "passkey": refused.found[0].id if refused.found else None}


@router.post("/passkey/options", summary="Start a passkey sign-in (any passkey of the tenant)",
             responses=raises("not_found"), response_model=responses.WebAuthnOptions)
async def passkey_login_options(body: PasskeyLoginOptionsBody, request: Request,
                                _: Annotated[None, public()]) -> dict[str, Any]:
    """Options for navigator.credentials.get() and the challenge id to send back."""
    services = services_of(request)
    async with services.db.read() as db:
        if (await db.execute(select(Tenant.id).where(Tenant.id == body.tenant))).first() is None:
            raise not_found("tenant")
    options, challenge = passkeys.authentication_options(services.settings, [])
    return {"challenge_id": await _new_challenge(services, body.tenant, None, passkeys.SIGN_IN, challenge),
            "options": options}


@router.post("/passkey", summary="Sign in with a passkey (counts as multi-factor)",
             responses=raises("invalid_credential", "invalid_challenge", "too_many_attempts"),
             response_model=responses.SignedIn)
async def passkey_login(body: PasskeyLoginBody, request: Request, _: Annotated[None, public()]) -> JSONResponse:
    """A session that passed MFA, from a verified assertion. Failures are throttled per presented
    credential and per source address, like passwords."""
    services = services_of(request)
    try:
        claimed = passkeys.credential_id_of(body.credential)
    except passkeys.CeremonyFailed as exc:
        raise _refused_credential(exc) from None
    who = throttle.passkey(body.tenant, claimed, _source(request))
    attempts = await _count_attempt(services, who)
    try:
        user, key = await _assert_passkey(services, body.tenant, body, passkeys.SIGN_IN, None)
    except PasskeyRefused as refused:
        await _failed(services, who, attempts, await _passkey_actor(services, body.tenant, refused),
                      "auth.passkey_failed", ceremony=passkeys.SIGN_IN, credential=claimed[:64],
                      **_refusal_details(refused))
        raise
    async with services.db.write() as db:
        await throttle.succeeded(db, who)
        user = (await db.execute(select(User).where(User.id == user.id))).scalar_one()
        issued, methods = await _open(db, services, user, request, method="passkey", mfa=True, passkey_id=key.id)
        await audit.record(db, _caller(user, issued.record.id), "auth.login", user.id, method="passkey",
                           source=_source(request))
    return _signed_in(services, issued, body.use_cookie, methods)


async def _passkey_actor(services: Services, tenant_id: str, refused: PasskeyRefused) -> Caller | None:
    """Who the audit trail records for a refused passkey sign-in: the owner of the passkey presented, or
    an unknown caller (a credential the tenant does not have); None if the tenant does not exist (no
    trail: only the logs)."""
    if refused.found is not None:
        return _caller(refused.found[1])
    async with services.db.read() as db:
        if (await db.execute(select(Tenant.id).where(Tenant.id == tenant_id))).first() is None:
            return None
    return Caller(tenant_id, "unknown", "passkey:unknown")


@router.post("/mfa/passkey/options", summary="Start a passkey check: finish signing in, or step up",
             responses=raises("no_passkey"), response_model=responses.WebAuthnOptions)
async def mfa_passkey_options(request: Request,
                              signed_in: Annotated[SignedIn, person(allow_pending=True)]) -> dict[str, Any]:
    """Options listing this person's passkeys."""
    services = services_of(request)
    async with services.db.read() as db:
        keys = (await db.execute(select(Passkey.credential_id, Passkey.transports).where(
            Passkey.user_id == signed_in.user_id))).all()
    if not keys:
        raise ApiError(409, "no_passkey", "this account has no passkey")
    options, challenge = passkeys.authentication_options(services.settings, [(k[0], k[1]) for k in keys])
    return {"challenge_id": await _new_challenge(services, signed_in.tenant_id, signed_in.user_id, passkeys.STEP_UP,
                                                 challenge), "options": options}


@router.post("/mfa/passkey", summary="Present a passkey assertion: finish signing in, or step up",
             responses=raises("invalid_credential", "invalid_challenge"), response_model=responses.MfaPassed)
async def mfa_passkey(body: AssertionBody, request: Request,
                      signed_in: Annotated[SignedIn, person(allow_pending=True)]) -> JSONResponse:
    """The session passes MFA if the assertion verifies for one of this person's passkeys."""
    services = services_of(request)
    try:
        _, key = await _assert_passkey(services, signed_in.tenant_id, body, passkeys.STEP_UP, signed_in.user_id)
    except PasskeyRefused as refused:
        async with services.db.write() as db:
            await audit.record(db, _caller(await _user(db, signed_in), signed_in.session_id), "auth.passkey_failed",
                               signed_in.user_id, ceremony=passkeys.STEP_UP, source=_source(request),
                               **_refusal_details(refused))
        raise
    return await _pass_mfa(services, request, signed_in, "passkey", key.id)


def _fresh_mfa(services: Services, signed_in: SignedIn, methods: list[str], what: str) -> None:
    """Changing second factors needs a recent MFA once the person has one (a password alone must not
    replace them)."""
    window = timedelta(seconds=services.settings.step_up_seconds)
    if methods and (signed_in.mfa_at is None or utcnow() - signed_in.mfa_at > window):
        raise ApiError(403, "step_up_required", f"{what} needs multi-factor authentication within the last "
                       f"{duration(services.settings.step_up_seconds)}: POST /v1/auth/mfa/totp or /v1/auth/mfa/passkey")


@router.get("/me", summary="The signed-in person, their second factors and this session", response_model=responses.Me)
async def me(request: Request, signed_in: Annotated[SignedIn, person(allow_pending=True)]) -> dict[str, Any]:
    """Who is signed in, and how."""
    async with services_of(request).db.read() as db:
        user = await _user(db, signed_in)
        record = (await db.execute(select(UserSession).where(UserSession.id == signed_in.session_id))).scalar_one()
        backups = len((await db.execute(select(BackupCode.id).where(
            BackupCode.user_id == user.id, BackupCode.used_at.is_(None)))).all())
        return {"user": {"id": user.id, "email": user.email, "display_name": user.display_name, "role": user.role},
                "tenant": user.tenant_id, "principal_id": signed_in.principal_id,
                "mfa_methods": await _methods(db, user), "backup_codes_left": backups,
                "session": _session_json(record, record.id), "permissions": permissions_of(user.role)}


@router.post("/totp/enrol", summary="Start TOTP enrolment: a secret, its otpauth URI and QR code",
             responses=raises("step_up_required"), response_model=responses.TotpEnrolment)
async def totp_enrol(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Confirm with a first code at /v1/auth/totp/confirm; until then the old state stands."""
    services = services_of(request)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        _fresh_mfa(services, signed_in, await _methods(db, user), "replacing TOTP")
        secret = totp.new_secret()
        # The current secret (if any) keeps working until confirmation.
        user.totp_pending_secret = services.secrets.seal(secret, User.totp_pending_secret, user.id)
        await audit.record(db, _caller(user, signed_in.session_id), "auth.totp_enrol_started", user.id)
    uri = totp.provisioning_uri(secret, user.email, f"{services.settings.rp_name} ({user.tenant_id})")
    return {"secret": secret, "otpauth_uri": uri, "qr_svg": totp.qr_svg(uri)}


@router.post("/totp/confirm", summary="Confirm TOTP with a first code; returns 10 backup codes, shown once",
             responses=raises("no_enrolment", "invalid_code"), response_model=responses.BackupCodes)
async def totp_confirm(body: CodeBody, request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """TOTP is on from now with the new secret (a previous one and its backup codes stop working);
    this session counts as having passed MFA."""
    services = services_of(request)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        if user.totp_pending_secret is None:
            raise ApiError(409, "no_enrolment", "no TOTP enrolment is waiting: POST /v1/auth/totp/enrol first")
        secret = services.secrets.open(user.totp_pending_secret, User.totp_pending_secret, user.id)
        step = totp.matching_step(secret, body.code, utcnow(), None)
        if step is None:
            raise ApiError(401, "invalid_code", _BAD_CODE, "code")
        # Sealed again for its new column: a value is bound to the column it was sealed for.
        user.totp_secret = services.secrets.seal(secret, User.totp_secret, user.id)
        user.totp_pending_secret = None
        user.totp_enabled_at, user.totp_last_step = utcnow(), step
        codes = await _replace_backup_codes(db, user)
        record = (await db.execute(select(UserSession).where(UserSession.id == signed_in.session_id))).scalar_one()
        record.mfa_at = utcnow()
        await audit.record(db, _caller(user, signed_in.session_id), "auth.totp_enabled", user.id)
    return {"backup_codes": codes}


async def _void_backup_codes(db: AsyncSession, user: User) -> None:
    await db.execute(update(BackupCode).where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None)).values(
        used_at=utcnow()))


async def _replace_backup_codes(db: AsyncSession, user: User) -> list[str]:
    codes = totp.new_backup_codes()
    await _void_backup_codes(db, user)
    db.add_all([BackupCode(id=str(uuid.uuid4()), tenant_id=user.tenant_id, user_id=user.id,
                           code_hash=totp.backup_code_hash(c), created_at=utcnow()) for c in codes])
    return codes


@router.post("/backup-codes", summary="Replace the backup codes (the old ones stop working)",
             responses=raises("no_totp", "step_up_required"), response_model=responses.BackupCodes)
async def regenerate_backup_codes(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Ten new codes, shown once; needs a recent MFA."""
    services = services_of(request)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        if user.totp_enabled_at is None:
            raise ApiError(409, "no_totp", "backup codes stand in for TOTP: enable TOTP first")
        _fresh_mfa(services, signed_in, ["totp"], "replacing backup codes")
        codes = await _replace_backup_codes(db, user)
        await audit.record(db, _caller(user, signed_in.session_id), "auth.backup_codes_replaced", user.id)
    return {"backup_codes": codes}


@router.delete("/totp", responses=raises("no_totp", "step_up_required"), summary="Turn TOTP off (and its backup codes)",
               response_model=responses.MfaMethods)
async def totp_disable(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Needs a recent MFA."""
    services = services_of(request)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        if user.totp_enabled_at is None:
            raise ApiError(409, "no_totp", "TOTP is not on")
        _fresh_mfa(services, signed_in, ["totp"], "turning TOTP off")
        user.totp_secret = user.totp_pending_secret = user.totp_enabled_at = user.totp_last_step = None
        await _void_backup_codes(db, user)
        await audit.record(db, _caller(user, signed_in.session_id), "auth.totp_disabled", user.id)
        return {"mfa_methods": await _methods(db, user)}


def _passkey_json(key: Passkey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "created_at": key.created_at.isoformat(),
            "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None}


@router.post("/passkeys/options", responses=raises("step_up_required"), summary="Start registering a passkey",
             response_model=responses.WebAuthnOptions)
async def passkey_register_options(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Options for navigator.credentials.create() and the challenge id to send back."""
    services = services_of(request)
    async with services.db.read() as db:
        user = await _user(db, signed_in)
        _fresh_mfa(services, signed_in, await _methods(db, user), "adding a passkey")
        existing = (await db.execute(select(Passkey.credential_id, Passkey.transports).where(
            Passkey.user_id == user.id))).all()
    options, challenge = passkeys.registration_options(services.settings, user_id=user.id, email=user.email,
                                                       display_name=user.display_name,
                                                       existing=[(e[0], e[1]) for e in existing])
    return {"challenge_id": await _new_challenge(services, user.tenant_id, user.id, passkeys.REGISTRATION, challenge),
            "options": options}


@router.post("/passkeys", status_code=201, summary="Finish registering a passkey",
             responses=raises("invalid_challenge", "invalid_credential", "conflict"),
             response_model=responses.PasskeyView)
async def passkey_register(body: RegistrationBody, request: Request,
                           signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Stores the verified credential under the given name."""
    services = services_of(request)
    async with services.db.write() as db:
        challenge = await _take_challenge(db, body.challenge_id, signed_in.tenant_id, passkeys.REGISTRATION,
                                          signed_in.user_id)
    try:
        new = passkeys.verify_registration(services.settings, body.credential, challenge)
    except passkeys.CeremonyFailed as exc:
        raise _refused_credential(exc) from None
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        taken = (await db.execute(select(Passkey.id).where(Passkey.tenant_id == user.tenant_id,
                                                           Passkey.credential_id == new.credential_id))).first()
        if taken is not None:
            raise ApiError(409, "conflict", "this passkey is registered already", "credential")
        key = Passkey(id=str(uuid.uuid4()), tenant_id=user.tenant_id, user_id=user.id,
                      credential_id=new.credential_id, public_key=new.public_key, sign_count=new.sign_count,
                      transports=new.transports,
                      name=body.name, created_at=utcnow())
        db.add(key)
        await audit.record(db, _caller(user, signed_in.session_id), "auth.passkey_added", user.id, passkey=key.id,
                           name=key.name)
        return {"passkey": _passkey_json(key)}


@router.get("/passkeys", summary="This person's passkeys", response_model=responses.PasskeyList)
async def passkey_list(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Names and dates (never key material)."""
    async with services_of(request).db.read() as db:
        keys = (await db.execute(select(Passkey).where(Passkey.user_id == signed_in.user_id).order_by(
            Passkey.created_at))).scalars()
        return {"passkeys": [_passkey_json(k) for k in keys]}


async def _own_passkey(db: AsyncSession, signed_in: SignedIn, passkey_id: str) -> Passkey:
    key = (await db.execute(select(Passkey).where(Passkey.id == passkey_id,
                                                  Passkey.user_id == signed_in.user_id))).scalar()
    if key is None:
        raise not_found("passkey")
    return key


@router.patch("/passkeys/{passkey_id}", responses=raises("not_found"), summary="Rename a passkey",
              response_model=responses.PasskeyView)
async def passkey_rename(passkey_id: Text, body: RenameBody, request: Request,
                         signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Only the name changes."""
    async with services_of(request).db.write() as db:
        key = await _own_passkey(db, signed_in, passkey_id)
        key.name = body.name
        return {"passkey": _passkey_json(key)}


@router.delete("/passkeys/{passkey_id}", responses=raises("not_found", "step_up_required"), summary="Remove a passkey",
               response_model=responses.Removed)
async def passkey_remove(passkey_id: Text, request: Request,
                         signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Needs a recent MFA. The person's other sessions that signed in with this passkey are revoked
    (whoever holds the passkey being removed, a lost device say, is signed out with it)."""
    services = services_of(request)
    async with services.db.write() as db:
        key = await _own_passkey(db, signed_in, passkey_id)
        user = await _user(db, signed_in)
        _fresh_mfa(services, signed_in, ["passkey"], "removing a passkey")
        await db.delete(key)
        revoked = (await db.execute(update(UserSession).where(
            UserSession.user_id == user.id, UserSession.passkey_id == key.id, UserSession.id != signed_in.session_id,
            UserSession.revoked_at.is_(None)).values(revoked_at=utcnow()))).rowcount  # type: ignore[attr-defined]
        await audit.record(db, _caller(user, signed_in.session_id), "auth.passkey_removed", user.id,
                           passkey=key.id, name=key.name, sessions_revoked=revoked)
        return {"removed": key.id}


@router.get("/sessions", summary="This person's live sessions", response_model=responses.SessionList)
async def session_list(request: Request, signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Where and when each signed in; `current` marks this one."""
    now = utcnow()
    async with services_of(request).db.read() as db:
        records = (await db.execute(select(UserSession).where(
            UserSession.user_id == signed_in.user_id, UserSession.revoked_at.is_(None),
            UserSession.expires_at > now).order_by(UserSession.created_at.desc()))).scalars()
        return {"sessions": [_session_json(r, signed_in.session_id) for r in records]}


async def _revoke(services: Services, signed_in: SignedIn, *, only: str | None) -> int:
    async with services.db.write() as db:
        query = update(UserSession).where(UserSession.user_id == signed_in.user_id,
                                          UserSession.revoked_at.is_(None)).values(revoked_at=utcnow())
        if only is not None:
            query = query.where(UserSession.id == only)
        revoked = int((await db.execute(query)).rowcount)  # type: ignore[attr-defined]
        if only is not None and revoked == 0:
            raise not_found("session")
        user = await _user(db, signed_in)
        await audit.record(db, _caller(user, signed_in.session_id), "auth.session_revoked", only or "all",
                           count=revoked)
        return revoked


def _cleared(body: dict[str, Any]) -> JSONResponse:
    response = JSONResponse(body)
    response.delete_cookie(sessions.COOKIE, path="/")
    response.delete_cookie(sessions.CSRF_COOKIE, path="/")
    return response


@router.delete("/sessions/{session_id}", responses=raises("not_found"), summary="Revoke one of this person's sessions",
               response_model=responses.RevokedSessions)
async def session_revoke(session_id: Text, request: Request,
                         signed_in: Annotated[SignedIn, person()]) -> JSONResponse:
    """It stops working at once."""
    await _revoke(services_of(request), signed_in, only=session_id)
    return _cleared({"revoked": 1}) if session_id == signed_in.session_id else JSONResponse({"revoked": 1})


@router.post("/logout", summary="Sign out (revoke this session)", response_model=responses.RevokedSessions,
             responses=raises("not_found"))
async def logout(request: Request, signed_in: Annotated[SignedIn, person(allow_pending=True)]) -> JSONResponse:
    """This session stops working at once."""
    return _cleared({"revoked": await _revoke(services_of(request), signed_in, only=signed_in.session_id)})


@router.post("/logout-everywhere", summary="Sign out everywhere (revoke every session of this person)",
             response_model=responses.RevokedSessions, responses=raises("not_found"))
async def logout_everywhere(request: Request, signed_in: Annotated[SignedIn, person()]) -> JSONResponse:
    """Every session of this person, this one included, stops working at once."""
    return _cleared({"revoked": await _revoke(services_of(request), signed_in, only=None)})


@router.post("/password", summary="Change the password (other sessions are signed out)",
             responses=raises("invalid_credentials", "too_many_attempts", "weak_password"),
             response_model=responses.PasswordChanged)
async def change_password(body: PasswordBody, request: Request,
                          signed_in: Annotated[SignedIn, person()]) -> dict[str, Any]:
    """Needs the current password; every other session of this person is revoked."""
    services = services_of(request)
    who = throttle.account(signed_in.tenant_id, signed_in.email, _source(request))
    attempts = await _count_attempt(services, who)
    async with services.db.read() as db:
        user = await _user(db, signed_in)
    ok, _ = await passwords.verify_password(body.current_password, user.password_hash)
    if not ok:
        await _failed(services, who, attempts, _caller(user, signed_in.session_id), "auth.login_failed",
                      method="password_change")
        raise ApiError(401, "invalid_credentials", "the current password is wrong", "current_password")
    async with services.db.write() as db:
        await throttle.succeeded(db, who)
    try:
        passwords.check_strength(body.new_password, services.settings.password_min_length,
                                 user_inputs=(user.email, user.display_name))
    except passwords.WeakPassword as exc:
        raise ApiError(422, "weak_password", f"new_password: {exc}", "new_password") from None
    hashed = await passwords.hash_password(body.new_password)
    async with services.db.write() as db:
        user = await _user(db, signed_in)
        user.password_hash = hashed
        revoked = (await db.execute(update(UserSession).where(
            UserSession.user_id == user.id, UserSession.id != signed_in.session_id,
            UserSession.revoked_at.is_(None)).values(revoked_at=utcnow()))).rowcount  # type: ignore[attr-defined]
        await audit.record(db, _caller(user, signed_in.session_id), "auth.password_changed", user.id,
                           sessions_revoked=revoked)
    return {"sessions_revoked": revoked}
