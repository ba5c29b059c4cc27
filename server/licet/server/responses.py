"""What each route answers, as pydantic models: the OpenAPI document's success schemas.

They describe the dictionaries the routes build, exactly: unknown keys are refused (`extra="forbid"`),
so a route that starts returning something its model does not say fails its tests instead of drifting
from the document. Times are the RFC 3339 strings the routes already send. Certificates keep their
signed fields as they are (a later certificate version may add some).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Outcome = Literal["permit", "forbid", "require_approval", "deny"]
Json = dict[str, Any]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------ operations


class Health(Model):
    status: Literal["ok"]


class Ready(Model):
    status: Literal["ready"]


# ---------------------------------------------------------------------------- certificates, evidence


CERTIFICATE_EXAMPLE: Json = {
    "version": "licet.certificate/1", "id": "01a20237-2476-730b-9fd7-db12d7908b3d", "tenant": "acme",
    "issued_at": "2026-01-01T00:00:00.000000Z", "key_id": "k1",
    "policy": {"id": "payments", "version": "1", "hash": "sha256:…"},
    "request": {"principal": {"id": "agent:payments-bot"}, "action": "payments.transfer",
                "resource": "/accounts/acc-001", "args": {"amount": 120}, "context": {}},
    "request_hash": "sha256:…", "decision": "permit", "rules": ["transfer"], "proof": {"kind": "witness"},
    "diagnostics": [], "session": {}, "approval": None, "delegation": None, "theorem_hash": "sha256:…",
    "signature": "…"}


class PolicyRef(Model):
    id: str
    version: str | None
    hash: str


class Certificate(BaseModel):
    """A signed decision certificate (docs/evidence.md): verify it offline with `GET /v1/evidence/keys`."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [CERTIFICATE_EXAMPLE]})
    version: str
    id: str
    tenant: str
    issued_at: Timestamp
    key_id: str
    policy: PolicyRef
    request: Json = Field(description="The normalised request exactly as decided and hashed.")
    request_hash: str
    decision: Outcome
    rules: list[str]
    proof: Json = Field(description="The proof of the decision (docs/evidence.md).")
    diagnostics: list[Any]
    session: dict[str, Json] = Field(description="The session state the invariants read, per invariant.")
    approval: Json | None
    delegation: list[Json] | None
    theorem_hash: str
    signature: str = Field(description="Ed25519 over the RFC 8785 canonical JSON of the other fields, base64.")


class ApprovalOpened(Model):
    """The approval a require_approval decision opened (or reused), or the one it used."""

    id: str
    state: str
    deadline: Timestamp | None = None
    quorum: int | None = None
    roles: list[str] | None = None
    reused: bool | None = None
    approvers: list[str] | None = None


class Decision(Model):
    """A certified decision: the outcome, its proof, the signed certificate and its log index."""

    decision: Outcome
    rules: list[str]
    proof: Json
    diagnostics: list[Any]
    certificate_id: str
    log_index: int
    replayed: bool = Field(description="True when an Idempotency-Key replayed an earlier decision.")
    approval: ApprovalOpened | None = Field(None, description="Only when an approval was opened, reused or used.")
    approval_refused: Json | None = Field(None, description="Only when a presented approval was not accepted.")
    certificate: Certificate


class Counterexample(Model):
    step: int
    values: Json
    rule: str | None
    invariant: str | None
    reason: str


class PlanVerdict(Model):
    verdict: Literal["safe", "unsafe", "needs_approval"]
    steps_checked: int
    proof: Json
    counterexample: Counterexample | None = Field(None, description="Only when unsafe.")
    approval_steps: list[int] | None = Field(None, description="Only when needs_approval.")


class Capability(Model):
    valid: bool = Field(description="The action name is well formed.")
    permit: bool = Field(description="Some request of the caller for this action could be permitted.")
    approval: bool = Field(description="Some request of the caller for this action could need approval.")


class ActivePolicy(Model):
    version_id: str
    hash: str


class Capabilities(Model):
    policy: ActivePolicy | None = Field(description="The active policy proved against; null: none is active.")
    actions: dict[str, Capability]


class ListedDecision(Model):
    id: str
    log_index: int
    principal_id: str
    action: str
    decision: Outcome
    rules: list[str]
    resource: str | None
    request_hash: str | None
    issued_at: Timestamp


class CertificatePage(Model):
    certificates: list[ListedDecision]
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last.")


class OutcomeCounts(Model):
    permit: int
    forbid: int
    deny: int
    require_approval: int


class SeriesPoint(OutcomeCounts):
    at: str = Field(description="The bucket: `YYYY-MM-DD HH:MM`, `YYYY-MM-DD HH` or `YYYY-MM-DD` (UTC).")


class NamedCount(Model):
    name: str
    count: int


class DecisionSummary(Model):
    window: Literal["hour", "day", "week"]
    bucket: Literal["minute", "hour", "day"]
    since: Timestamp
    series: list[SeriesPoint]
    totals: OutcomeCounts
    most_refused_actions: list[NamedCount]
    most_refused_agents: list[NamedCount]


class CertificateView(Model):
    certificate: Certificate
    log_index: int


class CertificateProof(Model):
    log_index: int
    tree_size: int
    proof: list[str] = Field(description="The inclusion proof's hashes, base64.")
    checkpoint: str = Field(description="The signed checkpoint (C2SP signed note) the proof is against.")
    bundle: str = Field(description="The C2SP tlog-proof bundle that `licet verify --bundle` checks.")


class Checkpoint(Model):
    origin: str
    size: int
    root_hash: str = Field(description="base64")
    note: str = Field(description="The signed note, as signed.")


class KeptCheckpoint(Model):
    size: int = Field(description="The tree size it was signed at (its note: /v1/evidence/checkpoints/{size}).")
    signed_at: str


class CheckpointsPage(Model):
    checkpoints: list[KeptCheckpoint]
    next_before: int | None


class ConsistencyProof(Model):
    first: int
    second: int
    proof: list[str] = Field(description="RFC 9162 consistency proof hashes, base64.")


class LogEntry(Model):
    index: int
    leaf_hash: str = Field(description="base64")
    certificate: Certificate | Json = Field(description="The logged document: a decision certificate, or a "
                                            "signed approval event (`version` licet.approval-event/1)")


class EntriesPage(Model):
    start: int
    entries: list[LogEntry]
    next_start: int | None


class PublicKey(Model):
    type: str = Field(examples=["licet.ed25519.public/1"])
    key_id: str
    public_key: str = Field(description="The raw 32-byte Ed25519 public key, base64.")


class LogKey(Model):
    origin: str = Field(description="The tenant's log origin (the first line of its checkpoints).")
    verifier_key: str = Field(description="The C2SP note verifier key `<name>+<hex key hash>+<base64 key>`.")


class KeyPeriod(PublicKey):
    not_before: Timestamp | None = Field(description="When the key starts signing (null: since before key "
                                                     "history was kept).")
    not_after: Timestamp | None = Field(description="When the key stopped (or stops) signing, excluded "
                                                    "(null: it signs until a rotation).")
    status: Literal["pending", "current", "retired"] = Field(
        description="Relative to now: published ahead of its period, signing, or retired (verifies only what "
                    "was issued inside its period).")
    log_verifier_key: str = Field(description="The same key as the tenant log's C2SP note verifier key: "
                                              "it signed the log's checkpoints in its period.")


class EvidenceKeys(Model):
    """What an offline verifier trusts: the keys that sign certificates, and the tenant log's checkpoint key."""

    certificate_keys: list[PublicKey] = Field(description="Every key that signs, signed or will sign certificates "
                                                          "(the one signing now first); `history` gives their periods.")
    log: LogKey = Field(description="The tenant log's origin and the verifier key of the key signing now.")
    history: list[KeyPeriod] = Field(description="Every key of the deployment, oldest first, with the period in "
                                                 "which it signs certificates and checkpoints (a verifier "
                                                 "refuses a certificate issued outside its key's period).")


# ------------------------------------------------------------------------------------------ policies


class NeverApplying(Model):
    policy: str
    rule: str
    reason: str


class Validated(Model):
    valid: Literal[True]
    id: str
    version: str | None
    hash: str
    rules: int
    invariants: int
    analysed: bool = Field(description="Whether the analysis ran (`never_applying` is empty when it did not).")
    never_applying: list[NeverApplying]


class PolicyVersion(Model):
    id: str
    policy_id: str
    number: int
    hash: str
    created_by: str
    created_at: Timestamp
    activated_at: Timestamp | None
    activated_by: str | None
    active: bool


class PolicyVersionSource(PolicyVersion):
    source: str = Field(description="The document exactly as uploaded.")


class PolicyName(Model):
    id: str
    name: str


class CreatedVersion(Model):
    policy: PolicyName
    version: PolicyVersion


class PolicyListed(PolicyName):
    latest: int


class PolicyList(Model):
    policies: list[PolicyListed]
    active: PolicyVersion | None
    rollback_to: PolicyVersion | None = Field(description="What `POST /v1/policies/rollback` would activate.")


class PolicyDetail(PolicyName):
    versions: list[PolicyVersion]


class VersionNumber(Model):
    id: str
    number: int


class Example(Model):
    """A request confirmed by construction: valid, normalised, matching the question, with a session
    state a real history produces, and decided as claimed."""

    request: Json
    state: Json = Field(description="The session state (a history of events) the example is decided from.")
    now: float = Field(description="The decision time, seconds since 1970.")
    session: Json
    outcomes: dict[str, str]
    rules: dict[str, list[str]]
    confirmed: bool


class PolicyDiff(Model):
    old: VersionNumber
    new: VersionNumber
    answer: Literal["equivalent", "differs", "unknown"] = Field(
        description="equivalent only with a proof, differs only with a confirmed example, else unknown")
    reason: str | None = Field(description="Why the answer is unknown (a budget ran out, an undecided construct)")
    equivalent: bool
    gained: list[Example]
    lost: list[Example]
    never_applies: list[NeverApplying]
    proof: Json


class QueryAnswer(Model):
    version_id: str
    answer: Literal["yes", "no", "unknown"] = Field(
        description="yes only with a confirmed example, no only with a proof, else unknown")
    reason: str | None = Field(description="Why the answer is unknown")
    permitted: bool
    example: Example | None
    proof: Json


class Activation(Model):
    active: PolicyVersion
    activated_at: Timestamp
    activated_by: str


# --------------------------------------------------------------------------------------- delegations


class Grant(Model):
    id: str
    issuer: str
    delegate: str
    parent: str | None
    scope: list[Json]
    expires_at: Timestamp
    max_depth: int
    created_by: str
    created_at: Timestamp
    revoked_at: Timestamp | None


class Attenuation(Model):
    """The kernel's check that a re-delegation attenuates its parent (`licet delegation check --json`)."""

    answer: Literal["attenuates", "widens", "unknown"]
    ok: bool
    reasons: list[str]
    counterexample: Example | None = Field(description="A confirmed request the child allows and the parent not.")


class GrantView(Model):
    grant: Grant
    attenuation: Attenuation | None = Field(description="Null for a grant with no parent (nothing to attenuate).")
    dry_run: bool = Field(description="True: checked only, nothing stored.")


class GrantList(Model):
    grants: list[Grant]


class RevokedGrants(Model):
    revoked: list[str] = Field(description="The grant and every grant issued under it.")
    dry_run: bool = Field(description="True: what the revocation would cascade to; nothing was revoked.")


# ------------------------------------------------------------------------------------ administration


class ApiKey(Model):
    id: str
    name: str
    role: str
    principal_id: str
    principal_roles: list[str]
    attributes: Json
    created_at: Timestamp
    created_by: str
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    rotated_to: str | None


class NewApiKey(Model):
    key: ApiKey
    secret: str = Field(description="The key itself (`licet_…`): shown this once.")


class RotatedApiKey(NewApiKey):
    old_key: ApiKey


class ApiKeyView(Model):
    key: ApiKey


class ApiKeyList(Model):
    keys: list[ApiKey]


class UserView(Model):
    id: str
    email: str
    display_name: str
    role: str
    created_at: Timestamp
    disabled_at: Timestamp | None


class InvitationLink(Model):
    token: str = Field(description="Shown this once.")
    expires_at: Timestamp
    accept: str


class InvitedUser(Model):
    user: UserView
    invitation: InvitationLink


class UserState(Model):
    user: UserView
    sessions_revoked: int


class UserRole(Model):
    user: UserView
    previous_role: str


class UserList(Model):
    users: list[UserView]


class AuditEvent(Model):
    id: int
    at: Timestamp
    actor: str
    action: str
    target: str
    details: Json


class AuditPage(Model):
    events: list[AuditEvent]
    next_before: int | None


# ----------------------------------------------------------------------------------------- approvals


class Vote(Model):
    voter: str
    role: str
    vote: Literal["approve", "deny"]
    reason: str | None
    at: Timestamp


class Escalation(Model):
    role: str | None
    at: Timestamp | None
    escalated_at: Timestamp | None


class PolicyVersionRef(Model):
    policy_id: str
    name: str = Field(description="The policy's name (the document's `id`).")
    number: int


class YourVote(Model):
    allowed: bool
    code: str | None = Field(description="Why not: the error code a vote would get.")
    reason: str | None


class Approval(Model):
    id: str
    state: Literal["pending", "granted", "used", "denied", "expired", "cancelled"]
    action: str
    resource: str
    request: Json
    request_hash: str
    rules: list[str]
    policy_hash: str
    requested_by: str
    principal: str
    quorum: int
    deny_quorum: int
    roles: list[str]
    escalation: Escalation
    created_at: Timestamp
    deadline: Timestamp
    closed_at: Timestamp | None
    reason: str | None
    approvals: int
    denials: int
    votes: list[Vote]
    opened_certificate_id: str
    used_at: Timestamp | None
    used_certificate_id: str | None
    your_vote: YourVote | None = Field(None, description="Whether the caller may vote now (listings and reads).")
    policy_version: PolicyVersionRef | None = Field(
        None, description="The stored policy version whose hash is `policy_hash` (listings and reads).")


class ApprovalPage(Model):
    approvals: list[Approval]
    next_before: str | None


class ApprovalEvent(Model):
    event: str
    at: Timestamp
    actor: str
    log_index: int | None
    details: Json


class ApprovalDetail(Approval):
    events: list[ApprovalEvent]


class ApprovalDefaults(Model):
    quorum: int
    role: str
    ttl_seconds: int
    deny_quorum: int
    escalate_after_seconds: int
    escalate_role: str | None


class Webhook(Model):
    id: str
    url: str
    events: list[str]
    created_at: Timestamp
    created_by: str
    disabled_at: Timestamp | None


class NewWebhook(Webhook):
    secret: str = Field(description="Signs each delivery (HMAC-SHA256): shown this once.")


class WebhookList(Model):
    webhooks: list[Webhook]


class Delivery(Model):
    id: str
    approval_id: str | None = Field(description="None for a test event (`POST /v1/webhooks/{id}/test`).")
    event: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: Timestamp
    next_attempt_at: Timestamp
    delivered_at: Timestamp | None
    last_status: int | None
    last_error: str | None


class DeliveryList(Model):
    deliveries: list[Delivery]


# ----------------------------------------------------------------------------------------- sign-in


class Session(Model):
    id: str
    stage: Literal["mfa_pending", "active"]
    method: str
    created_at: Timestamp
    last_seen_at: Timestamp
    expires_at: Timestamp
    mfa_at: Timestamp | None
    source: str
    user_agent: str
    current: bool


class SignedIn(Model):
    """A new session; its token in the body, or (with `use_cookie`) as the HttpOnly `licet_session` cookie."""

    session: Session
    csrf_token: str = Field(description="Send as X-CSRF-Token with the cookie on every write.")
    mfa_methods: list[str]
    token: str | None = Field(None, description="`lcs_…`: absent when the session was set as a cookie.")


class MfaPassed(Model):
    """A step-up: the session; finishing a sign-in: a new token (and CSRF token) too."""

    session: Session
    csrf_token: str | None = None
    mfa_methods: list[str] | None = None
    token: str | None = None


class Person(Model):
    id: str
    email: str
    display_name: str
    role: str


class Me(Model):
    user: Person
    tenant: str
    principal_id: str
    mfa_methods: list[str]
    backup_codes_left: int
    session: Session
    permissions: list[str] = Field(description="What the person's role may do (docs/roles.md): a client "
                                   "shows only these actions; every route checks again.")


class TotpEnrolment(Model):
    secret: str
    otpauth_uri: str
    qr_svg: str


class BackupCodes(Model):
    backup_codes: list[str] = Field(description="Each usable once: shown this once.")


class MfaMethods(Model):
    mfa_methods: list[str]


class WebAuthnOptions(Model):
    challenge_id: str
    options: Json = Field(description="For navigator.credentials.create() or .get() (WebAuthn JSON).")


class Passkey(Model):
    id: str
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None


class PasskeyView(Model):
    passkey: Passkey


class PasskeyList(Model):
    passkeys: list[Passkey]


class Removed(Model):
    removed: str


class SessionList(Model):
    sessions: list[Session]


class RevokedSessions(Model):
    revoked: int


class PasswordChanged(Model):
    sessions_revoked: int
