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
TEST_EVENT = "test"  # a delivery a person asked for (`POST /v1/webhooks/{id}/test`), of no approval


def event_name(event: str) -> str:
    """How receivers see a delivery's event (`X-Licet-Event`, the body's `event`)."""
    return "webhook.test" if event == TEST_EVENT else f"approval.{event}"


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


# IPv6 prefixes whose packets are delivered to the IPv4 address in their low 32 bits: NAT64's
# well-known prefix (RFC 6052), IPv4-compatible (RFC 4291, deprecated) and IPv4-translated (RFC 2765)
# addresses. IPv4-mapped, 6to4 and Teredo have their own properties in `ipaddress`.
_LOW_32_BITS_IPV4 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
# Internal by definition whatever they embed: local-use NAT64 (RFC 8215, where the IPv4 address sits
# depends on a prefix length only the operator knows) and the deprecated site-local range.
_INTERNAL_IPV6 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet sent to `ip` can be translated or tunnelled to."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]  # Teredo: the server and the client
    if any(ip in network for network in _LOW_32_BITS_IPV4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in found if address is not None]


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip`, or an IPv4 address it embeds, is loopback, private, link-local, multicast or
    reserved."""
    if not ip.is_global or ip.is_multicast:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        return any(ip in network for network in _INTERNAL_IPV6) or any(map(_internal, _embedded_ipv4(ip)))
    return False


@dataclass(frozen=True)
class Target:
    """Where a webhook URL's host resolved to, once."""

    url: httpx.URL
    host: str  # the host name as sent (IDNA), for TLS
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]  # in the resolver's order


def resolve(url: str) -> Target | str:
    """`url`'s host resolved once (a literal address is its own answer), or why it cannot be."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"the URL does not parse: {exc}"
    host = parsed.raw_host.decode("ascii")  # what httpx would look up
    if not host:
        return "the URL has no host"
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        return f"the host {host!r} does not resolve: {exc}"
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
    return Target(parsed, host, list(dict.fromkeys(addresses)))


def refusal(target: Target) -> str | None:
    """Why `target` must not receive webhooks (one of its addresses is, or embeds, a loopback, private,
    link-local, multicast or reserved address: server-side request forgery), or None."""
    for address in target.addresses:
        if _internal(address):
            return f"the host {target.host!r} is {address}, not a public address"
    return None


def not_public(url: str) -> str | None:
    """Why `url` must not receive webhooks (it does not resolve, or `refusal`), or None."""
    target = resolve(url)
    return target if isinstance(target, str) else refusal(target)


def send(attempt: Attempt, timeout: float, *, private_targets: bool = False) -> tuple[int | None, str | None]:
    """POST the signed body; (status, error). Checked again here, not only when the webhook was
    added, as a name can resolve elsewhere by now; and the connection goes to the address checked,
    so a name that resolves elsewhere a moment later (DNS rebinding) cannot redirect it."""
    target = resolve(attempt.url)
    if isinstance(target, str):
        return None, f"not sent: {target}"
    why = None if private_targets else refusal(target)
    if why is not None:
        return None, f"not sent: {why}"
    stamp = str(int(time.time()))
    headers = {"Host": target.url.netloc.decode("ascii"), "Content-Type": "application/json",
               "User-Agent": "Licet-Webhooks/1", SIGNATURE_HEADER: signature(attempt.secret, stamp, attempt.body),
               TIMESTAMP_HEADER: stamp, DELIVERY_HEADER: attempt.delivery_id,
               EVENT_HEADER: event_name(attempt.event)}
    try:
        reply = _post_pinned(target, headers, attempt.body, timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to send is a failed attempt, retried, never a lost job
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    if 200 <= reply.status_code < 300:
        return reply.status_code, None
    # The status only: a receiver's body is not ours to keep (it can echo what it should not).
    return reply.status_code, f"HTTP {reply.status_code} {reply.reason_phrase}"[:200]


def _post_pinned(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> httpx.Response:
    """POST `body` to the first of the target's addresses (in the resolver's order, as a connection by
    name tries them) that accepts a connection, all within `timeout` (the delivery's lease allows that
    much).

    The URL's host is replaced by the address, so nothing looks the name up again; the Host header (in
    `headers`) and the TLS server name (SNI, and the name the certificate is verified against) stay the
    URL's. httpx documents the `sni_hostname` extension for exactly this; pinning inside a custom
    network backend instead would need httpx's private transport internals."""
    deadline = time.monotonic() + timeout
    refused: list[httpx.ConnectError] = []
    with httpx.Client(follow_redirects=False) as client:
        for address in target.addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return client.post(target.url.copy_with(host=str(address)), content=body, headers=headers,
                                   timeout=left, extensions={"sni_hostname": target.host})
            except httpx.ConnectError as exc:  # nothing was sent: the next address may answer
                refused.append(exc)
    raise refused[-1] if refused else httpx.ConnectTimeout(f"no address of {target.host!r} answered in time")


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
