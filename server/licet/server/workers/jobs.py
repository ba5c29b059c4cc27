"""What each job does, on the process's `Services`: the same code runs in a Celery worker and in the
embedded server's in-process worker."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from licet.server import approvals
from licet.server.approvals import Job, webhooks
from licet.server.auth import housekeeping
from licet.server.models import Webhook
from licet.server.sealing import UnsealError
from licet.server.services import Services
from licet.server.time import utcnow


async def run_job(services: Services, job: Job) -> list[Job]:
    """Run one job; the jobs it leaves for later (a retry, a timer that fired early)."""
    if job.kind == "expire":
        return await services.db.run_write(approvals.expire, services, job.id)
    if job.kind == "escalate":
        return await services.db.run_write(approvals.escalate, services, job.id)
    claimed = await services.db.run_write(webhooks.claim, services, job.id)
    if claimed is None:
        return []
    if isinstance(claimed, Job):
        return [claimed]
    # The secret is stored sealed (server/sealing.py) and opened only here, for this send. One that does
    # not open is a failed attempt, retried and then audited: nothing is ever sent unsigned.
    status: int | None
    error: str | None
    try:
        attempt = replace(claimed, secret=services.secrets.open(claimed.secret, Webhook.secret, claimed.webhook_id))
    except UnsealError as exc:
        status, error = None, f"not sent: {exc}"
    else:
        # The network call happens outside any transaction: no lock is held while a receiver is slow.
        status, error = await asyncio.to_thread(webhooks.send, attempt, services.settings.webhook_timeout_seconds,
                                                private_targets=services.settings.webhook_private_targets)
    return await services.db.run_write(webhooks.settle, services, claimed, status, error)


async def sweep(services: Services) -> list[Job]:
    """Everything due now, and the timers falling before the next sweep (scheduled precisely); and
    sign-in rows nothing can use any more are deleted."""
    now = utcnow()
    async with services.db.write() as session:
        await housekeeping.purge(session, services.settings, now)
    horizon = timedelta(seconds=2 * services.settings.sweep_seconds)
    async with services.db.read() as session:
        return await session.run_sync(approvals.due, now, horizon)
