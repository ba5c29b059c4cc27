"""The database schema (SQLAlchemy 2). Every row belongs to a tenant; Alembic creates the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC times on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    active_version_id: Mapped[str | None] = mapped_column(String(36), default=None)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)  # argon2, via passlib
    # TOTP secrets are sealed at rest (server/sealing.py): `v1:<key id>:<base64>`, about 100 characters.
    totp_secret: Mapped[str | None] = mapped_column(String(255), default=None)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(default=None)  # None while enrolment is unconfirmed
    totp_pending_secret: Mapped[str | None] = mapped_column(String(255), default=None)  # enrolled, not yet confirmed
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)  # codes at or before are spent


class ApiKey(Base):
    """A scoped API key; only the SHA-256 of its secret is kept (the secret is 256 random bits)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    principal_id: Mapped[str] = mapped_column(String(200))
    principal_roles: Mapped[list[Any]]
    attributes: Mapped[dict[str, Any]]
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    rotated_to: Mapped[str | None] = mapped_column(String(36), default=None)


class PolicyRecord(Base):
    """A named policy of a tenant (the document's `id`); its content lives in immutable versions."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id"))
    number: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    document_hash: Mapped[str] = mapped_column(String(80))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    activated_by: Mapped[str | None] = mapped_column(String(200), default=None)


class PolicyActivation(Base):
    """Each activation of a version, in order: what rollback walks back through."""

    __tablename__ = "policy_activations"
    __table_args__ = (Index("ix_policy_activations_tenant", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    version_id: Mapped[str] = mapped_column(ForeignKey("policy_versions.id"))
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500))
    rollback: Mapped[bool] = mapped_column(default=False)


class CertificateRecord(Base):
    __tablename__ = "certificates"
    # The explorer pages newest first by log index, filtered by outcome or agent (migration 0006), or by
    # time with the page's log indexes read off the time index (migration 0008).
    __table_args__ = (UniqueConstraint("tenant_id", "log_index"),
                      Index("ix_certificates_tenant_time_index", "tenant_id", "issued_at", "log_index"),
                      Index("ix_certificates_outcome", "tenant_id", "outcome", "log_index"),
                      Index("ix_certificates_principal", "tenant_id", "principal_id", "log_index"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    log_index: Mapped[int] = mapped_column(BigInteger)
    principal_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(80))
    issued_at: Mapped[datetime]
    body: Mapped[str] = mapped_column(Text)


class CertificateRule(Base):
    """A rule a certificate names (its `rules`), so decisions can be found by rule."""

    __tablename__ = "certificate_rules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class IdempotencyRecord(Base):
    """A decision made with an Idempotency-Key, per caller: each API key and each person (whatever
    session they use) has keys of its own."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    # `key:<API key id>` or `user:<user id>` (not the policy principal, which several keys may share)
    principal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    certificate_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]


class SessionEvent(Base):
    """A permitted request (principal and context included), kept as the session history that
    invariants (budgets, counts, flows) read."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_principal", "tenant_id", "principal_id", "time"),
                      Index("ix_session_events_order", "tenant_id", "principal_id", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    principal_id: Mapped[str] = mapped_column(String(200))
    time: Mapped[float]
    event: Mapped[dict[str, Any]]


class SessionContribution(Base):
    """What an event adds to each invariant of one policy version (`kernel.event_contributions`),
    so a decision sums stored numbers instead of re-evaluating the history. The event's tenant,
    principal and time are repeated here so a decision reads its relevant rows from one index range."""

    __tablename__ = "session_contributions"
    __table_args__ = (Index("ix_session_contributions_read", "tenant_id", "principal_id", "policy_hash", "relevant",
                            "time"),)

    event_id: Mapped[int] = mapped_column(ForeignKey("session_events.id", ondelete="CASCADE"), primary_key=True)
    policy_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    principal_id: Mapped[str] = mapped_column(String(200))
    time: Mapped[float]
    contributions: Mapped[dict[str, Any]]
    relevant: Mapped[bool]  # the event matches some invariant: only these are read back


class LogHead(Base):
    """The size of a tenant's evidence log; its row lock serialises the tenant's appends."""

    __tablename__ = "log_heads"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class LogLeaf(Base):
    __tablename__ = "log_leaves"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LogNode(Base):
    __tablename__ = "log_nodes"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCheckpoint(Base):
    __tablename__ = "log_checkpoints"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class GrantRecord(Base):
    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    issuer: Mapped[str] = mapped_column(String(200))
    delegate: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[str | None] = mapped_column(String(36), default=None)
    document: Mapped[dict[str, Any]]
    expires_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    """Who did what to which object, when: the administrative audit trail."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_time", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]]


class Invitation(Base):
    """A single-use, expiring link with which a person sets their first password."""

    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class UserSession(Base):
    """A person's signed-in session; only the SHA-256 of its token (and of its CSRF token) is kept."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(16))  # "mfa_pending" (may only finish MFA) | "active"
    method: Mapped[str] = mapped_column(String(32))  # how it signed in: password | passkey
    # The passkey it signed in with (a passkey sign-in, or the second factor that finished a password
    # sign-in): removing that passkey revokes the session. No foreign key: the id outlives the passkey.
    passkey_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the absolute limit; the idle limit runs from last_seen_at
    mfa_at: Mapped[datetime | None] = mapped_column(default=None)
    source: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(300))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class BackupCode(Base):
    """A single-use TOTP backup code (80 random bits; SHA-256 stored, like API keys)."""

    __tablename__ = "backup_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class Passkey(Base):
    """A WebAuthn credential of a person."""

    __tablename__ = "passkeys"
    __table_args__ = (UniqueConstraint("tenant_id", "credential_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400))  # base64url, as WebAuthn ids go up to 1023 bytes
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger)
    transports: Mapped[list[Any]]
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class WebAuthnChallenge(Base):
    """A server-side WebAuthn challenge: single use, expiring, bound to its ceremony."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    purpose: Mapped[str] = mapped_column(String(16))  # register | sign_in | step_up (auth.passkeys)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginThrottle(Base):
    """Failed sign-ins counted per account (tenant and email, existing or not) and per source address."""

    __tablename__ = "login_throttle"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # account | source
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    locked_until: Mapped[datetime | None] = mapped_column(default=None)


# Approvals (server/approvals/): requests people must approve before they run, and their webhooks.


class ApprovalRecord(Base):
    """An approval a require_approval decision opened, bound to the exact request hash, the tenant and
    the requesting agent; its state moves pending → granted → used, or to denied, expired, cancelled."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_tenant_state", "tenant_id", "state", "created_at"),
                      Index("ix_approvals_tenant_request", "tenant_id", "request_hash"),
                      Index("ix_approvals_state_deadline", "state", "deadline"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    state: Mapped[str] = mapped_column(String(16))  # pending | granted | used | denied | expired | cancelled
    agent_id: Mapped[str] = mapped_column(String(200))  # the caller that asked (an API key's or person's principal)
    key_id: Mapped[str | None] = mapped_column(String(36), default=None)
    principal_id: Mapped[str] = mapped_column(String(200))  # the request's principal (the issuer when delegated)
    excluded: Mapped[list[Any]]  # principals that may never vote: requester, principal, delegation chain
    action: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]]  # the normalised request, exactly as hashed
    request_hash: Mapped[str] = mapped_column(String(80))
    rules: Mapped[list[Any]]
    policy_hash: Mapped[str] = mapped_column(String(80))
    quorum: Mapped[int] = mapped_column(Integer)
    deny_quorum: Mapped[int] = mapped_column(Integer)
    roles: Mapped[list[Any]]  # roles whose people may vote (each must be among the approvers)
    escalate_role: Mapped[str | None] = mapped_column(String(32), default=None)
    escalate_at: Mapped[datetime | None] = mapped_column(default=None)
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime]
    deadline: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(default=None)  # granted, denied, expired or cancelled
    reason: Mapped[str | None] = mapped_column(String(1000), default=None)  # why it was cancelled
    opened_certificate_id: Mapped[str] = mapped_column(String(36))
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_certificate_id: Mapped[str | None] = mapped_column(String(36), default=None)


class ApprovalVote(Base):
    """One person's approve or deny of an approval; each person counts once."""

    __tablename__ = "approval_votes"
    __table_args__ = (UniqueConstraint("approval_id", "user_id"),)

    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True)
    voter: Mapped[str] = mapped_column(String(200), primary_key=True)  # user:<email>
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(36))
    session_id: Mapped[str | None] = mapped_column(String(36), default=None)
    role: Mapped[str] = mapped_column(String(32))
    vote: Mapped[str] = mapped_column(String(8))  # approve | deny
    reason: Mapped[str | None] = mapped_column(String(1000), default=None)
    at: Mapped[datetime]


class ApprovalSettings(Base):
    """A tenant's approval defaults, used where a rule's `approval:` block is silent (unset: the server's)."""

    __tablename__ = "approval_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    quorum: Mapped[int | None] = mapped_column(Integer, default=None)
    role: Mapped[str | None] = mapped_column(String(32), default=None)
    ttl_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    deny_quorum: Mapped[int | None] = mapped_column(Integer, default=None)
    escalate_after_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    escalate_role: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(200))


class Webhook(Base):
    """Where a tenant's approval events are posted; the secret signs each body (HMAC-SHA256), so it is
    kept, sealed at rest (server/sealing.py), not hashed: the server needs it back to sign."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(255))
    events: Mapped[list[Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One event for one webhook (an outbox row written with the state change): sent until a 2xx,
    with backoff, at most once at a time (the lease); each event of an approval is one delivery."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "approval_id", "event"),
                      Index("ix_webhook_deliveries_due", "state", "next_attempt_at"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    approval_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(1000), default=None)
