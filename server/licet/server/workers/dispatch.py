"""Handing jobs to workers after a transaction commits: to Celery when a broker is configured, else
to an in-process worker (the embedded `licet serve` needs nothing else running)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from licet.server.approvals import Job
from licet.server.services import Services
from licet.server.time import utcnow
from licet.server.workers import TASKS, make_celery
from licet.server.workers.jobs import run_job, sweep

log = logging.getLogger("licet.workers")


class Dispatcher(Protocol):
    """Where committed transactions' jobs go."""

    async def start(self) -> None:
        """Begin (the in-process worker starts its sweep)."""

    async def stop(self) -> None:
        """Stop; jobs not run yet are found again by the next sweep."""

    async def submit(self, jobs: Sequence[Job]) -> None:
        """Enqueue `jobs`; never raises (a lost job is found by the sweep)."""


def celery_send(app: Any, queue: str, jobs: Sequence[Job], horizon: timedelta) -> None:
    """Send `jobs` as Celery tasks. A timer further away than `horizon` is left to the sweep: a
    Redis broker hands a task held longer than its visibility timeout to a second worker."""
    now = utcnow()
    for job in jobs:
        if job.at is not None and job.at - now > horizon:
            continue
        eta = job.at if job.at is not None and job.at > now else None
        app.send_task(TASKS[job.kind], args=[job.id], eta=eta, queue=queue)


class CeleryDispatcher:
    """Jobs become Celery tasks on the configured broker."""

    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.app = make_celery(services.settings)
        self.horizon = timedelta(seconds=self.settings.broker_visibility_timeout / 2)

    async def start(self) -> None:
        """Nothing to start: workers and beat run apart."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def submit(self, jobs: Sequence[Job]) -> None:
        """Send the tasks off the event loop; a broker failure is logged, the sweep recovers."""
        if not jobs:
            return
        try:
            await asyncio.to_thread(celery_send, self.app, self.settings.task_queue, jobs, self.horizon)
        except Exception:  # the broker being down must not fail a committed request
            log.warning("could not enqueue %d approval jobs; the sweep will pick them up", len(jobs), exc_info=True)


class LocalDispatcher:
    """An in-process worker: timers on the server's event loop and a periodic sweep."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._timers: dict[tuple[str, str, datetime | None], asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the periodic sweep (which also catches up on what happened while the server was down)."""
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Cancel timers and running jobs (their leases run out; the next sweep redoes them)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [*self._running, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submit(self, jobs: Sequence[Job]) -> None:
        """Run each job when it is due."""
        loop = asyncio.get_running_loop()
        for job in jobs:
            key = (job.kind, job.id, job.at)
            if key in self._timers:
                continue
            delay = 0.0 if job.at is None else max(0.0, (job.at - utcnow()).total_seconds())
            self._timers[key] = loop.call_later(delay, self._spawn, key, job)

    def _spawn(self, key: tuple[str, str, datetime | None], job: Job) -> None:
        self._timers.pop(key, None)
        task = asyncio.create_task(self._run(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, job: Job) -> None:
        try:
            await self.submit(await run_job(self.services, job))
        except Exception:  # one failed job must not stop the worker; the sweep retries it
            log.exception("approval job %s %s failed", job.kind, job.id)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.submit(await sweep(self.services))
            except Exception:  # e.g. the database briefly unreachable: try at the next sweep
                log.exception("approval sweep failed")
            await asyncio.sleep(self.services.settings.sweep_seconds)


def make_dispatcher(services: Services) -> Dispatcher:
    """Celery when a broker is configured, else the in-process worker."""
    return CeleryDispatcher(services) if services.settings.broker_url else LocalDispatcher(services)
