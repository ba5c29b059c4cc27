"""Roles and what each may do: the one table every route's permission check reads."""

from __future__ import annotations

ROLES = ("owner", "admin", "policy_author", "approver", "auditor", "agent")

_HUMANS = {"owner", "admin", "policy_author", "approver", "auditor"}

PERMISSIONS: dict[str, frozenset[str]] = {
    "decide": frozenset({"agent", "owner", "admin"}),
    "plans.verify": frozenset(ROLES),
    "policies.read": frozenset(_HUMANS),
    "policies.write": frozenset({"owner", "admin", "policy_author"}),
    "policies.activate": frozenset({"owner", "admin", "policy_author"}),
    "keys.manage": frozenset({"owner", "admin"}),
    "users.read": frozenset({"owner", "admin", "auditor"}),
    "users.manage": frozenset({"owner", "admin"}),
    "certificates.read": frozenset(ROLES),  # agents see only their own
    "evidence.read": frozenset(ROLES),
    "evidence.entries": frozenset(_HUMANS),
    "delegations.read": frozenset(ROLES),
    "delegations.write": frozenset({"agent", "owner", "admin"}),
    "audit.read": frozenset({"owner", "admin", "auditor"}),
    "approvals.read": frozenset({"owner", "admin", "approver", "auditor"}),
    "approvals.vote": frozenset({"owner", "admin", "approver"}),
    "approvals.request": frozenset({"agent", "owner", "admin"}),  # an agent reads and cancels its own
    "approvals.status": frozenset({"owner", "admin", "approver", "auditor", "agent"}),  # agents: only their own
    "webhooks.manage": frozenset({"owner", "admin"}),
    "account": frozenset(_HUMANS),  # a person's own sessions, password, TOTP and passkeys
}


def permissions_of(role: str) -> list[str]:
    """Every permission `role` holds, sorted (what a client may offer; the routes still check)."""
    return sorted(p for p, roles in PERMISSIONS.items() if role in roles)


def allowed(role: str, permission: str) -> bool:
    """Whether `role` holds `permission` (unknown permissions are held by no one)."""
    return role in PERMISSIONS.get(permission, frozenset())
