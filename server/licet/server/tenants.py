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

import pyotp
from sqlalchemy import func, select

from licet import kernel
from licet.server.auth.invitations import invite
from licet.server.auth.passwords import hash_password
from licet.server.identity import new_api_key
from licet.server.logstore import create_head
from licet.server.models import ApiKey, AuditEvent, PolicyActivation, PolicyRecord, PolicyVersion, Tenant, User
from licet.server.services import Services
from licet.server.time import utcnow

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DEMO_TENANT = "demo"
BOOTSTRAP = "licet tenant create"  # the actor of what creating a tenant adds
DEMO_ACTOR = "licet serve --demo"


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
                           created_at=utcnow(), created_by=DEMO_ACTOR))
    return token


async def _add_version(services: Services, tenant: str, source: str, origin: str, *, activate: bool) -> str:
    """Store `source` as the next version of its policy (creating the policy), active if asked."""
    policy = kernel.load_policy(source, origin)
    now = utcnow()
    async with services.db.write() as session:
        record = (await session.execute(select(PolicyRecord).where(
            PolicyRecord.tenant_id == tenant, PolicyRecord.name == policy.id))).scalar()
        if record is None:
            record = PolicyRecord(id=str(uuid.uuid4()), tenant_id=tenant, name=policy.id, created_at=now)
            session.add(record)
            await session.flush()
        latest = (await session.execute(select(func.max(PolicyVersion.number)).where(
            PolicyVersion.policy_id == record.id))).scalar() or 0
        version = PolicyVersion(id=str(uuid.uuid4()), tenant_id=tenant, policy_id=record.id, number=latest + 1,
                                source=source, document_hash=policy.hash, created_by=DEMO_ACTOR, created_at=now)
        session.add(version)
        await session.flush()
        if activate:
            version.activated_at, version.activated_by = now, DEMO_ACTOR
            session.add(PolicyActivation(tenant_id=tenant, version_id=version.id, at=now, by=DEMO_ACTOR,
                                         reason="demo seed"))
            tenant_row = (await session.execute(select(Tenant).where(Tenant.id == tenant))).scalar_one()
            tenant_row.active_version_id = version.id
    return policy.id


# Agent keys never pass MFA, so under the example's `money-needs-mfa` every agent transfer is forbidden.
# The demo activates a second version in which that rule binds people's sessions only, so a large
# transfer by the demo agent reaches the approvals queue (version 1, the example verbatim, stays stored).
_MFA_RULE = "    when: '!context.mfa'\n"
_MFA_RULE_FOR_PEOPLE = "    when: '!context.mfa && !(\"payments-agent\" in principal.roles)'\n"

# People of the demo: (email, display name, role). Each gets a random password and TOTP secret.
DEMO_PEOPLE = (("owner@demo.licet.localhost", "Olivia Owner", "owner"),
               ("ana@demo.licet.localhost", "Ana Approver", "approver"),
               ("ben@demo.licet.localhost", "Ben Approver", "approver"),
               ("admin@demo.licet.localhost", "Demo admin", "admin"))

# The demo agent's first requests (action, resource, args): a permit, a forbid, a deny, and a large
# transfer that opens a 2-of-2 approval for the approvers.
DEMO_TRAFFIC: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("payments.read", "/accounts/acc-001/statements/2025-05", {}),
    ("payments.transfer", "/accounts/acc-001", {"amount": 250, "currency": "EUR", "country": "DE",
                                                 "beneficiary_iban": "DE89370400440532013000"}),
    ("payments.transfer", "/accounts/acc-001", {"amount": 90, "currency": "EUR", "country": "KP",
                                                 "beneficiary_iban": "DE89370400440532013000"}),
    ("payments.close", "/accounts/acc-001", {}),
    ("payments.transfer", "/accounts/acc-001", {"amount": 4200, "currency": "EUR", "country": "DE",
                                                 "beneficiary_iban": "DE89370400440532013000",
                                                 "reference": "INV-2025-0419"}),
)


async def _ensure_person(services: Services, tenant: str, email: str, name: str, role: str) -> dict[str, str]:
    """The demo person `email` with a new random password and TOTP secret (created if missing)."""
    password, secret = secrets.token_urlsafe(12), pyotp.random_base32()
    hashed = await hash_password(password)
    async with services.db.write() as session:
        user = (await session.execute(select(User).where(User.tenant_id == tenant, User.email == email))).scalar()
        if user is None:
            user = User(id=str(uuid.uuid4()), tenant_id=tenant, email=email, display_name=name, role=role,
                        created_at=utcnow())
            session.add(user)
        user.password_hash, user.totp_enabled_at, user.totp_last_step = hashed, utcnow(), None
        user.totp_secret = services.secrets.seal(secret, User.totp_secret, user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=f"Licet ({tenant})")
    return {"email": email, "role": role, "password": password, "totp_secret": secret, "otpauth_uri": uri}


async def _demo_traffic(services: Services, agent_key: str) -> None:
    """The demo agent's first requests, through the API as any agent would make them."""
    import httpx

    from licet.server.app import create_app

    app = create_app(services.settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://demo.internal",
            headers={"authorization": f"Bearer {agent_key}"}) as client:
        for action, resource, args in DEMO_TRAFFIC:
            answer = await client.post("/v1/decide", json={"action": action, "resource": resource, "args": args})
            if answer.status_code != 200:
                raise RuntimeError(f"demo request {action} {resource}: HTTP {answer.status_code} {answer.text}")


async def seed_demo(services: Services, examples: Path) -> dict[str, Any]:
    """The demo tenant: people who can sign in (password and TOTP), agent and admin keys, the example
    policies (a demo version of payments active), some decisions and a pending approval. Seeded once;
    what it hands out is kept 0600 in the data directory so later runs can show it again. A seed that
    stopped half way is finished on the next start (existing rows are reused, secrets made anew). The
    policies are read from `examples` (the command line ships them)."""
    keep = services.settings.data_dir / "demo-keys.json"
    if keep.exists():
        seeded: dict[str, Any] = json.loads(keep.read_text())
        return seeded
    try:
        owner = (await create_tenant(services, DEMO_TENANT, "Demo tenant")).owner_key
    except TenantExists:
        owner = await _add_key(services, DEMO_TENANT, "owner", "owner", ["owner"])
    people = [await _ensure_person(services, DEMO_TENANT, *person) for person in DEMO_PEOPLE]
    admin = await _add_key(services, DEMO_TENANT, "admin", "user:admin@demo.licet.localhost", ["admin"])
    agent = await _add_key(services, DEMO_TENANT, "agent", "agent:payments-bot", ["payments-agent"])
    async with services.db.read() as session:
        stored = set((await session.execute(select(PolicyRecord.name).where(
            PolicyRecord.tenant_id == DEMO_TENANT))).scalars())
    for name in ("payments-agent", "devops-agent", "support-agent"):
        path = examples / f"{name}.yaml"
        if name not in stored:
            await _add_version(services, DEMO_TENANT, path.read_text(), str(path), activate=False)
    payments = (examples / "payments-agent.yaml").read_text()
    if _MFA_RULE not in payments:
        raise RuntimeError("examples/payments-agent.yaml changed: the demo cannot adapt its money-needs-mfa rule")
    await _add_version(services, DEMO_TENANT, payments.replace(_MFA_RULE, _MFA_RULE_FOR_PEOPLE),
                       "demo: payments-agent for agent keys", activate=True)
    await _demo_traffic(services, agent)
    seeded = {"tenant": DEMO_TENANT, "owner_key": owner, "admin_key": admin, "agent_key": agent,
              "people": people, "policies": ["payments-agent", "devops-agent", "support-agent"],
              "active": "payments-agent (demo version)"}
    fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(seeded, handle, indent=2)
    return seeded
