"""Webhook deliveries of approval events: claimed under a lease, sent signed, settled with backoff.

The outbox row is written in the transaction that changed the approval (`server.approvals.record`);
a worker then claims it (a lease, so two workers handed the same task never send it at once), posts
it, and records the outcome. A worker killed mid-send leaves the lease to run out; the task comes
back (acks_late) or the sweep finds the row, and the same delivery id is sent again: receivers that
keep the ids they processed see each approval event exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from licet.server.approvals import Job
from licet.server.models import AuditEvent, Webhook, WebhookDelivery
from licet.server.services import Services
from licet.server.time import utcnow

SIGNATURE_HEADER = "X-Licet-Signature"  # sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
TIMESTAMP_HEADER = "X-Licet-Timestamp"  # Unix seconds when this attempt was signed
DELIVERY_HEADER = "X-Licet-Delivery"  # the same on every attempt of one delivery
EVENT_HEADER = "X-Licet-Event"
MAX_BACKOFF_SECONDS = 3600.0
EARLY = timedelta(milliseconds=50)  # a timer firing this much early still sends


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """Whether a received webhook is authentic and fresh (what a receiver checks)."""
    try:
        age = (time.time() if now is None else now) - float(timestamp)
    except ValueError:
        return False
    return abs(age) <= tolerance and hmac.compare_digest(signature(secret, timestamp, body), header)


def backoff(settings_base: float, attempt: int) -> float:
    """Seconds before retry number `attempt` (1 after the first failure): doubling, capped."""
    return float(min(settings_base * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS))


@dataclass(frozen=True)
class Attempt:
    """One claimed send of a delivery."""

    delivery_id: str
    tenant_id: str
    webhook_id: str
    url: str
    secret: str
    event: str
    body: bytes
    number: int


def claim(session: Session, services: Services, delivery_id: str) -> Attempt | Job | None:
    """Lease a pending delivery for one attempt; a `Job` for later if another worker holds it, None if
    there is nothing (left) to send."""
    now = utcnow()
    found = session.execute(select(WebhookDelivery, Webhook).join(
        Webhook, Webhook.id == WebhookDelivery.webhook_id).where(WebhookDelivery.id == delivery_id)).first()
    if found is None or found[0].state != "pending":
        return None
    delivery, hook = found
    if hook.disabled_at is not None:
        _close(session, delivery, "failed", now, None, "the webhook was removed")
        return None
    if delivery.next_attempt_at > now + EARLY:  # a duplicate task (the sweep, a redelivery): keep the backoff
        return Job("deliver", delivery_id, delivery.next_attempt_at)
    lease = timedelta(seconds=services.settings.webhook_timeout_seconds + 5)
    leased = session.connection().execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
        (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now),
    ).values(lease_until=now + lease, attempts=WebhookDelivery.attempts + 1))
    if leased.rowcount != 1:
        return Job("deliver", delivery_id, delivery.lease_until)
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    return Attempt(delivery.id, delivery.tenant_id, hook.id, hook.url, hook.secret, delivery.event, body,
                   delivery.attempts + 1)


def not_public(url: str) -> str | None:
    """Why `url` must not receive webhooks (its host is or resolves to a loopback, private,
    link-local, multicast or reserved address: server-side request forgery), or None."""
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        return f"the URL does not parse: {exc}"
    if not host:
        return "the URL has no host"
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError) as exc:
        return f"the host {host!r} does not resolve: {exc}"
    for address in sorted(found):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return f"the host {host!r} is {address}, not a public address"
    return None


def send(attempt: Attempt, timeout: float, *, private_targets: bool = False) -> tuple[int | None, str | None]:
    """POST the signed body; (status, error). Checked again here, not only when the webhook was
    added, as a name can resolve elsewhere by now."""
    refusal = None if private_targets else not_public(attempt.url)
    if refusal is not None:
        return None, f"not sent: {refusal}"
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "Licet-Webhooks/1",
               SIGNATURE_HEADER: signature(attempt.secret, stamp, attempt.body), TIMESTAMP_HEADER: stamp,
               DELIVERY_HEADER: attempt.delivery_id, EVENT_HEADER: f"approval.{attempt.event}"}
    try:
        reply = httpx.post(attempt.url, content=attempt.body, headers=headers, timeout=timeout,
                           follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 - any failure to send is a failed attempt, retried, never a lost job
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    if 200 <= reply.status_code < 300:
        return reply.status_code, None
    # The status only: a receiver's body is not ours to keep (it can echo what it should not).
    return reply.status_code, f"HTTP {reply.status_code} {reply.reason_phrase}"[:200]


def settle(session: Session, services: Services, attempt: Attempt, status: int | None,
           error: str | None) -> list[Job]:
    """Record an attempt's outcome: delivered, retried after a backoff, or failed for good."""
    now = utcnow()
    delivery = session.execute(select(WebhookDelivery).where(WebhookDelivery.id == attempt.delivery_id)).scalar()
    if delivery is None or delivery.state != "pending":
        return []
    if error is None:
        _close(session, delivery, "delivered", now, status, None)
        return []
    settings = services.settings
    if attempt.number >= settings.webhook_max_attempts:
        _close(session, delivery, "failed", now, status, error)
        session.execute(insert(AuditEvent).values(
            tenant_id=attempt.tenant_id, at=now, actor="licet", action="webhook.failed",
            target=f"webhook:{attempt.webhook_id}", details={"delivery": attempt.delivery_id,
                                                              "event": attempt.event, "attempts": attempt.number,
                                                              "error": error}))
        return []
    later = now + timedelta(seconds=backoff(settings.webhook_backoff_seconds, attempt.number))
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(
        next_attempt_at=later, lease_until=None, last_status=status, last_error=error))
    return [Job("deliver", delivery.id, later)]


def _close(session: Session, delivery: WebhookDelivery, state: str, now: object, status: int | None,
           error: str | None) -> None:
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(
        state=state, delivered_at=now if state == "delivered" else None, lease_until=None, last_status=status,
        last_error=error))
