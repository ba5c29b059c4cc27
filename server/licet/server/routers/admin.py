"""API keys, users and the audit trail of a tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from licet.server import audit, listings, responses
from licet.server.auth import invitations
from licet.server.errors import ApiError, not_found, raises
from licet.server.identity import Caller, new_api_key, require
from licet.server.listings import glob_to_like, utc_bound
from licet.server.models import ApiKey, AuditEvent, User, UserSession
from licet.server.roles import ROLES
from licet.server.routers import INT64_MAX, DateTime, JsonObject, QueryDateTime, Text
from licet.server.routers.decide import services_of
from licet.server.time import utcnow

router = APIRouter(prefix="/v1", tags=["administration"])

_RESERVED_ATTRIBUTES = {"id", "tenant", "roles"}


def _known_role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"unknown role; one of {', '.join(ROLES)}")
    return value


Role = Annotated[str, AfterValidator(_known_role)]
PersonRole = Literal["owner", "admin", "policy_author", "approver", "auditor"]  # agents are API keys, not people


class KeyBody(BaseModel):
    """A key's scope: its API role and the principal policies see."""

    model_config = ConfigDict(extra="forbid")
    name: Text = Field(min_length=1, max_length=200, examples=["payments-bot production"])
    role: Role = Field(examples=["agent"])
    principal_id: Text = Field(min_length=1, max_length=200, examples=["agent:payments-bot"])
    principal_roles: list[Text] = Field(default_factory=list, max_length=50, examples=[["payments-agent"]])
    attributes: JsonObject = Field(default_factory=dict, description="Extra principal attributes.")
    expires_at: DateTime | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RESERVED_ATTRIBUTES & set(value))
        if clash:
            raise ValueError(f"{clash[0]!r} is not an attribute: it is set from the key itself")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00
            raise ValueError("out of range once in UTC") from None


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: int = Field(0, ge=0, le=7 * 24 * 3600, description="How long the old key keeps working.")


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Text = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    display_name: Text = Field(min_length=1, max_length=200)
    role: Role

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        lowered = value.lower()  # what is stored; lowering can lengthen it ('İ' becomes two characters)
        if len(lowered) > 320:
            raise ValueError("at most 320 characters")
        return lowered


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "role": key.role, "principal_id": key.principal_id,
            "principal_roles": key.principal_roles, "attributes": key.attributes,
            "created_at": key.created_at.isoformat(), "created_by": key.created_by,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None, "rotated_to": key.rotated_to}


async def create_key(session: AsyncSession, caller: Caller, body: KeyBody) -> tuple[ApiKey, str]:
    """Store a new key (hash only); returns it and the secret, which is never shown again."""
    if caller.role != "owner" and body.role == "owner":
        raise ApiError(403, "forbidden", "only an owner may create owner keys", "role")
    token, digest = new_api_key()
    key = ApiKey(id=str(uuid.uuid4()), tenant_id=caller.tenant_id, name=body.name, role=body.role,
                 principal_id=body.principal_id, principal_roles=body.principal_roles, attributes=body.attributes,
                 secret_hash=digest, created_at=utcnow(), created_by=caller.principal_id, expires_at=body.expires_at)
    session.add(key)
    await session.flush()
    await audit.record(session, caller, "key.create", key.id, role=key.role, principal_id=key.principal_id)
    return key, token


async def _key(session: AsyncSession, caller: Caller, key_id: str) -> ApiKey:
    found = (await session.execute(select(ApiKey).where(ApiKey.tenant_id == caller.tenant_id,
                                                        ApiKey.id == key_id))).scalar()
    if found is None:
        raise not_found("API key")
    if caller.role != "owner" and found.role == "owner":
        raise ApiError(403, "forbidden", "only an owner may manage owner keys")
    return found


@router.post("/keys", status_code=201, summary="Create an API key (the secret is shown once)",
             response_model=responses.NewApiKey)
async def post_key(body: KeyBody, request: Request, caller: Annotated[Caller, require("keys.manage", step_up=True)],
                   ) -> dict[str, Any]:
    """A key scoped to this tenant, a role and a principal."""
    async with services_of(request).db.write() as session:
        key, token = await create_key(session, caller, body)
    return {"key": _key_json(key), "secret": token}


@router.get("/keys", summary="List API keys (never their secrets)", response_model=responses.ApiKeyList)
async def list_keys(request: Request, caller: Annotated[Caller, require("keys.manage")]) -> dict[str, Any]:
    """Every key of the tenant, newest first."""
    async with services_of(request).db.read() as session:
        keys = (await session.execute(select(ApiKey).where(ApiKey.tenant_id == caller.tenant_id).order_by(
            ApiKey.created_at.desc()))).scalars()
        return {"keys": [_key_json(k) for k in keys]}


@router.post("/keys/{key_id}/revoke", responses=raises("not_found"), summary="Revoke an API key, at once",
             response_model=responses.ApiKeyView)
async def revoke_key(key_id: Text, request: Request, caller: Annotated[Caller, require("keys.manage", step_up=True)],
                     ) -> dict[str, Any]:
    """The key stops working for every request that starts after this one."""
    async with services_of(request).db.write() as session:
        key = await _key(session, caller, key_id)
        if key.revoked_at is None or key.revoked_at > utcnow():
            key.revoked_at = utcnow()
            await audit.record(session, caller, "key.revoke", key.id)
        return {"key": _key_json(key)}


@router.post("/keys/{key_id}/rotate", status_code=201, summary="Replace a key with a new secret, same scope",
             responses=raises("not_found", "key_rotated", "key_revoked"), response_model=responses.RotatedApiKey)
async def rotate_key(key_id: Text, body: RotateBody, request: Request,
                     caller: Annotated[Caller, require("keys.manage", step_up=True)]) -> dict[str, Any]:
    """The old key keeps working for `grace_seconds` (default: not at all). A key is rotated once: its
    successor is the one to rotate next."""
    async with services_of(request).db.write() as session:
        old = await _key(session, caller, key_id)
        if old.rotated_to is not None:
            raise _rotated_already(old.rotated_to)
        if old.revoked_at is not None and old.revoked_at <= utcnow():
            raise ApiError(409, "key_revoked", "a revoked key cannot be rotated")
        new, token = await create_key(session, caller, KeyBody(
            name=old.name, role=old.role, principal_id=old.principal_id, principal_roles=old.principal_roles,
            attributes=old.attributes, expires_at=old.expires_at))
        # Claimed only if still unrotated: of concurrent rotations (on PostgreSQL the row lock makes the
        # later ones re-read it), one finds it so and the others roll back with their successors.
        claimed = await session.execute(update(ApiKey).where(ApiKey.id == old.id, ApiKey.rotated_to.is_(None)).values(
            revoked_at=utcnow() + timedelta(seconds=body.grace_seconds), rotated_to=new.id))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(old, ["rotated_to"])
            raise _rotated_already(old.rotated_to)
        await audit.record(session, caller, "key.rotate", old.id, new_key=new.id, grace_seconds=body.grace_seconds)
    return {"key": _key_json(new), "secret": token, "old_key": _key_json(old)}


def _rotated_already(successor: str | None) -> ApiError:
    return ApiError(409, "key_rotated", f"this key was rotated already, to {successor}: rotate that one instead")


@router.post("/users", responses=raises("conflict"), status_code=201, summary="Add a person to the tenant",
             response_model=responses.InvitedUser)
async def post_user(body: UserBody, request: Request, caller: Annotated[Caller, require("users.manage", step_up=True)],
                    ) -> dict[str, Any]:
    """Creates the account; signing in is set up through an invitation."""
    if caller.role != "owner" and body.role == "owner":
        raise ApiError(403, "forbidden", "only an owner may create owners", "role")
    async with services_of(request).db.write() as session:
        taken = (await session.execute(select(User.id).where(User.tenant_id == caller.tenant_id,
                                                             User.email == body.email.lower()))).scalar()
        if taken is not None:
            raise ApiError(409, "conflict", "a user with this email exists", "email")
        user = User(id=str(uuid.uuid4()), tenant_id=caller.tenant_id, email=body.email.lower(),
                    display_name=body.display_name, role=body.role, created_at=utcnow())
        session.add(user)
        await session.flush()
        await audit.record(session, caller, "user.create", user.id, role=user.role)
        return {"user": _user_json(user), "invitation": await _invite(session, caller, user, request)}


async def _invite(session: AsyncSession, caller: Caller, user: User, request: Request) -> dict[str, Any]:
    """A new invitation for `user`, audited; its token shown once."""
    invitation, token = await invitations.invite(session, user, caller.principal_id,
                                                 services_of(request).settings.invitation_ttl_seconds)
    await audit.record(session, caller, "user.invite", user.id, invitation=invitation.id)
    return {"token": token, "expires_at": invitation.expires_at.isoformat(),
            "accept": "POST /v1/auth/invitations/accept {token, password}"}


@router.post("/users/{user_id}/invitation", status_code=201, summary="Invite a person again (a new link)",
             responses=raises("not_found"), response_model=responses.InvitedUser)
async def reinvite(user_id: Text, request: Request, caller: Annotated[Caller, require("users.manage", step_up=True)],
                   ) -> dict[str, Any]:
    """For a lost or expired invitation, or a password reset by an admin: the old links stop working."""
    async with services_of(request).db.write() as session:
        user = await _managed_user(session, caller, user_id)
        return {"user": _user_json(user), "invitation": await _invite(session, caller, user, request)}


async def _managed_user(session: AsyncSession, caller: Caller, user_id: str) -> User:
    """The caller's tenant's person `user_id`, if the caller may manage them (only owners manage owners)."""
    user = (await session.execute(select(User).where(User.tenant_id == caller.tenant_id,
                                                     User.id == user_id))).scalar()
    if user is None:
        raise not_found("user")
    if caller.role != "owner" and user.role == "owner":
        raise ApiError(403, "forbidden", "only an owner may manage an owner's account")
    return user


@router.post("/users/{user_id}/disable", summary="Disable a person's account (their sessions end at once)",
             responses=raises("not_found", "own_account"), response_model=responses.UserState)
async def disable_user(user_id: Text, request: Request,
                       caller: Annotated[Caller, require("users.manage", step_up=True)]) -> dict[str, Any]:
    """They can no longer sign in; every session and unused invitation of theirs is revoked. Not one's
    own account."""
    return await _set_disabled(request, caller, user_id, disabled=True)


@router.post("/users/{user_id}/enable", summary="Enable a disabled account again",
             responses=raises("not_found", "own_account"), response_model=responses.UserState)
async def enable_user(user_id: Text, request: Request,
                      caller: Annotated[Caller, require("users.manage", step_up=True)]) -> dict[str, Any]:
    """They sign in again with their password and second factor."""
    return await _set_disabled(request, caller, user_id, disabled=False)


async def _set_disabled(request: Request, caller: Caller, user_id: str, *, disabled: bool) -> dict[str, Any]:
    now = utcnow()
    async with services_of(request).db.write() as session:
        user = await _managed_user(session, caller, user_id)
        if user.id == caller.user_id:
            raise ApiError(409, "own_account", "one cannot disable or enable one's own account")
        revoked = 0
        if disabled and user.disabled_at is None:
            user.disabled_at = now
            await invitations.void_pending(session, user.id)
            revoked = (await session.execute(update(UserSession).where(
                UserSession.user_id == user.id, UserSession.revoked_at.is_(None)).values(
                revoked_at=now))).rowcount  # type: ignore[attr-defined]
            await audit.record(session, caller, "user.disable", user.id, sessions_revoked=revoked)
        elif not disabled and user.disabled_at is not None:
            user.disabled_at = None
            await audit.record(session, caller, "user.enable", user.id)
        return {"user": _user_json(user), "sessions_revoked": revoked}


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: PersonRole = Field(examples=["approver"])


@router.post("/users/{user_id}/role", summary="Change a person's role (in every session of theirs, at once)",
             responses=raises("not_found", "own_account"), response_model=responses.UserRole)
async def change_role(user_id: Text, body: RoleBody, request: Request,
                      caller: Annotated[Caller, require("users.manage", step_up=True)]) -> dict[str, Any]:
    """Sessions read the role from the account on every request, so the change holds from the next one.
    Only an owner makes or unmakes owners; nobody changes their own role (an owner cannot leave the
    tenant without one by accident, and nobody promotes themselves)."""
    if caller.role != "owner" and body.role == "owner":
        raise ApiError(403, "forbidden", "only an owner may make owners", "role")
    async with services_of(request).db.write() as session:
        user = await _managed_user(session, caller, user_id)
        if user.id == caller.user_id:
            raise ApiError(409, "own_account", "one cannot change one's own role")
        previous = user.role
        if previous != body.role:
            user.role = body.role
            await audit.record(session, caller, "user.role", user.id, previous=previous, role=body.role)
        return {"user": _user_json(user), "previous_role": previous}


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "display_name": user.display_name, "role": user.role,
            "created_at": user.created_at.isoformat(),
            "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None}


@router.get("/users", summary="List the tenant's people", response_model=responses.UserList)
async def list_users(request: Request, caller: Annotated[Caller, require("users.read")]) -> dict[str, Any]:
    """Every account of the tenant."""
    async with services_of(request).db.read() as session:
        users = (await session.execute(select(User).where(User.tenant_id == caller.tenant_id).order_by(
            User.email))).scalars()
        return {"users": [_user_json(u) for u in users]}


def audit_filter(
        actor: Annotated[str | None, Query(max_length=200, description="Who (principal id)")] = None,
        action: Annotated[str | None, Query(max_length=200, description="An event or a glob: `auth.*`")] = None,
        target: Annotated[str | None, Query(max_length=200, description="The object (e.g. `approval:<id>`)")] = None,
        since: Annotated[QueryDateTime | None, Query(description="At or after (RFC 3339)")] = None,
        until: Annotated[QueryDateTime | None, Query(description="Before (RFC 3339)")] = None) -> dict[str, Any]:
    """The audit filter of a request's query string."""
    return {"actor": actor, "action": action, "target": target, "since": utc_bound(since), "until": utc_bound(until)}


def _audit_query(caller: Caller, matching: dict[str, Any]) -> Any:
    query = select(AuditEvent).where(AuditEvent.tenant_id == caller.tenant_id)
    if matching["actor"]:
        query = query.where(AuditEvent.actor == matching["actor"])
    if matching["action"]:
        query = query.where(AuditEvent.action.like(glob_to_like(matching["action"]), escape="\\"))
    if matching["target"]:
        query = query.where(AuditEvent.target == matching["target"])
    if matching["since"]:
        query = query.where(AuditEvent.at >= matching["since"])
    if matching["until"]:
        query = query.where(AuditEvent.at < matching["until"])
    return query.order_by(AuditEvent.id.desc())


def _event_json(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action, "target": e.target,
            "details": e.details}


@router.get("/audit", summary="The administrative audit trail, newest first", response_model=responses.AuditPage)
async def list_audit(request: Request, caller: Annotated[Caller, require("audit.read")],
                     matching: Annotated[dict[str, Any], Depends(audit_filter)],
                     before: Annotated[int | None, Query(ge=1, le=INT64_MAX,
                                                         description="Page: events older than this id")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """Who changed what, when, filtered; page with `before` = the last id seen."""
    query = _audit_query(caller, matching)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    async with services_of(request).db.read() as session:
        events = (await session.execute(query.limit(limit))).scalars().all()
    return {"events": [_event_json(e) for e in events],
            "next_before": events[-1].id if len(events) == limit else None}


@router.get("/audit/export", summary="Every matching audit event, streamed as CSV or JSON lines",
            response_class=StreamingResponse,
            responses={200: {"content": listings.EXPORT_CONTENT,
                             "description": "One event per line, newest first"}})
async def export_audit(request: Request, caller: Annotated[Caller, require("audit.read")],
                       matching: Annotated[dict[str, Any], Depends(audit_filter)],
                       format: Annotated[listings.Format, Query()] = "jsonl") -> StreamingResponse:
    """The filtered trail, newest first (details as JSON in CSV)."""
    services = services_of(request)

    async def fetch(before: int | None) -> Sequence[AuditEvent]:
        query = _audit_query(caller, matching)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        async with services.db.read() as session:
            return (await session.execute(query.limit(listings.PAGE))).scalars().all()

    return listings.export(fetch, lambda e: e.id, _event_json, ("id", "at", "actor", "action", "target", "details"),
                          format, "licet-audit")
