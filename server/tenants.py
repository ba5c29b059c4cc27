"""Creating tenants (with their first owner key) and the demo seed of `licet serve --demo`."""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

import kernel
from server.auth.invitations import invite
from server.auth.passwords import hash_password
from server.identity import new_api_key
from server.logstore import create_head
from server.models import ApiKey, AuditEvent, PolicyActivation, PolicyRecord, PolicyVersion, Tenant, User
from server.services import Services
from server.time import utcnow

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DEMO_TENANT = "demo"
BOOTSTRAP = "licet tenant create"  # the actor of what creating a tenant adds
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class TenantExists(ValueError):
    """A tenant with this id exists already."""


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class NewTenant:
    """What creating a tenant hands out once: the first owner API key, and the first owner person's
    invitation token when an owner email was given (people are added only by a person who passed MFA,
    so the first one comes from here)."""

    owner_key: str
    owner_invitation: str | None = None


async def create_tenant(services: Services, tenant_id: str, name: str, *,
                        owner_email: str | None = None) -> NewTenant:
    """Create a tenant, its first owner key and (with `owner_email`) its first owner's account and
    invitation."""
    if not TENANT_ID.match(tenant_id):
        raise ValueError("a tenant id is 1–64 lowercase letters, digits and dashes, starting with a letter or digit")
    if owner_email is not None and (not EMAIL.match(owner_email) or len(owner_email) > 320):
        raise ValueError(f"owner email {owner_email!r} is not an email address")
    now = utcnow()
    token, digest = new_api_key()
    async with services.db.write() as session:
        if (await session.execute(select(Tenant.id).where(Tenant.id == tenant_id))).scalar() is not None:
            raise TenantExists(tenant_id)
        session.add(Tenant(id=tenant_id, name=name, created_at=now))
        await session.flush()
        await session.run_sync(lambda s: create_head(s.connection(), tenant_id))
        session.add(ApiKey(id=str(uuid.uuid4()), tenant_id=tenant_id, name="first owner key", role="owner",
                           principal_id="owner", principal_roles=["owner"], attributes={}, secret_hash=digest,
                           created_at=now, created_by=BOOTSTRAP))
        if owner_email is None:
            return NewTenant(token)
        email = owner_email.lower()
        owner = User(id=str(uuid.uuid4()), tenant_id=tenant_id, email=email, display_name=email.split("@")[0],
                     role="owner", created_at=now)
        session.add(owner)
        await session.flush()
        invitation, invite_token = await invite(session, owner, BOOTSTRAP, services.settings.invitation_ttl_seconds)
        session.add_all([AuditEvent(tenant_id=tenant_id, at=now, actor=BOOTSTRAP, action=action, target=owner.id,
                                    details=details) for action, details in (
            ("user.create", {"role": "owner"}), ("user.invite", {"invitation": invitation.id}))])
    return NewTenant(token, invite_token)


async def _add_key(services: Services, tenant: str, role: str, principal: str, roles: list[str]) -> str:
    token, digest = new_api_key()
    async with services.db.write() as session:
        session.add(ApiKey(id=str(uuid.uuid4()), tenant_id=tenant, name=f"demo {role} key", role=role,
                           principal_id=principal, principal_roles=roles, attributes={}, secret_hash=digest,
                           created_at=utcnow(), created_by="licet serve --demo"))
    return token


async def _add_policy(services: Services, tenant: str, path: Path, *, activate: bool) -> str:
    source = path.read_text()
    policy = kernel.load_policy(source, str(path))
    now = utcnow()
    async with services.db.write() as session:
        record = PolicyRecord(id=str(uuid.uuid4()), tenant_id=tenant, name=policy.id, created_at=now)
        version = PolicyVersion(id=str(uuid.uuid4()), tenant_id=tenant, policy_id=record.id, number=1,
                                source=source, document_hash=policy.hash, created_by="licet serve --demo",
                                created_at=now)
        session.add_all([record, version])
        await session.flush()
        if activate:
            version.activated_at, version.activated_by = now, "licet serve --demo"
            session.add(PolicyActivation(tenant_id=tenant, version_id=version.id, at=now, by="licet serve --demo",
                                         reason="demo seed"))
            tenant_row = (await session.execute(select(Tenant).where(Tenant.id == tenant))).scalar_one()
            tenant_row.active_version_id = version.id
    return policy.id


async def seed_demo(services: Services) -> dict[str, Any]:
    """The demo tenant, an admin, an agent key and the example policies (payments active). Seeded
    once; the keys are kept 0600 in the data directory so later runs can show them again."""
    keep = services.settings.data_dir / "demo-keys.json"
    if keep.exists():
        seeded: dict[str, Any] = json.loads(keep.read_text())
        return seeded
    owner = (await create_tenant(services, DEMO_TENANT, "Demo tenant")).owner_key
    password = secrets.token_urlsafe(15)  # random, never a constant; kept 0600 with the keys below
    hashed = await hash_password(password)
    async with services.db.write() as session:
        session.add(User(id=str(uuid.uuid4()), tenant_id=DEMO_TENANT, email="admin@demo.licet.localhost",
                         display_name="Demo admin", role="admin", created_at=utcnow(), password_hash=hashed))
    admin = await _add_key(services, DEMO_TENANT, "admin", "user:admin@demo.licet.localhost", ["admin"])
    agent = await _add_key(services, DEMO_TENANT, "agent", "agent:payments-bot", ["payments-agent"])
    names = [await _add_policy(services, DEMO_TENANT, EXAMPLES / f"{name}.yaml", activate=name == "payments-agent")
             for name in ("payments-agent", "devops-agent", "support-agent")]
    seeded = {"tenant": DEMO_TENANT, "owner_key": owner, "admin_key": admin, "agent_key": agent,
              "admin_email": "admin@demo.licet.localhost", "admin_password": password,
              "policies": names, "active": "payments-agent"}
    fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(seeded, handle, indent=2)
    return seeded

