"""Shared fixtures: a fixed clock, fresh signing keys, and a small payments policy."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from licet import kernel

pytest_plugins = ["tests.server_harness"]

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

PAYMENTS = """\
id: payments-agent
version: 1
rules:
  - id: read-api
    effect: permit
    action: [api.read, api.list]
    resource: ["/api/**"]
    when: 'principal.role in ["ops", "analyst"] && context.mfa'
  - id: transfer
    effect: permit
    action: [payments.transfer]
    resource: ["/accounts/*"]
    when: 'args.amount <= 10000 && args.currency in ["EUR", "USD"]'
  - id: large-transfer
    effect: require_approval
    action: [payments.transfer]
    when: 'args.amount > 1000'
    approval: {quorum: 2, role: approver, ttl: 15m}
  - id: no-prod-delete
    effect: forbid
    action: ["*.delete"]
    resource: ["/prod/**"]
  - id: delete-scratch
    effect: permit
    action: ["*.delete"]
    resource: ["/scratch/**"]
invariants:
  - {id: daily-budget, kind: budget, action: [payments.transfer], sum: args.amount, limit: 5000, window: 24h}
  - {id: max-deletes, kind: count, action: ["*.delete"], limit: 3, window: 1h}
  - id: no-exfiltration
    kind: flow
    source: {action: [db.read], resource: ["/pii/**"]}
    sink: {action: [http.post, email.send], when: '!args.url.startsWith("https://intranet.example/")'}
"""


# The Certificate Transparency test leaves whose tree roots RFC 6962 implementations publish.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]


def issue(policy: kernel.Policy, signer: kernel.Signer, tenant: str, amount: int) -> dict[str, Any]:
    """A real signed certificate: an agent's transfer of `amount`, decided under `policy`."""
    body = {
        "principal": {"id": "agent-1", "role": "ops"},
        "action": "payments.transfer",
        "resource": "/accounts/1",
        "args": {"amount": amount, "currency": "EUR"},
    }
    decision = kernel.decide(policy, body, now=NOW)
    return kernel.issue_certificate(
        decision, signer=signer, tenant=tenant, issued_at=NOW, certificate_id=kernel.uuid7(NOW, os.urandom(10))
    )


@pytest.fixture
def payments() -> kernel.Policy:
    return kernel.load_policy(PAYMENTS, "payments.yaml")


@pytest.fixture
def signer() -> kernel.Signer:
    return kernel.Signer(os.urandom(32))
