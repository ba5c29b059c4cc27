"""The Celery tasks. Each runs its job on a per-process `Services` (database engines, signing key)
whose event loop lives on a thread of its own, so the tasks work under any pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar

from licet.server.approvals import Job
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.workers import SWEEP, TASKS, celery_app
from licet.server.workers.dispatch import celery_send
from licet.server.workers.jobs import run_job, sweep

T = TypeVar("T")


class Runtime:
    """The worker process's services and the event loop their async engines run on."""

    def __init__(self) -> None:
        self.services = Services(Settings())
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="licet-worker-loop", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the runtime's loop and wait for it."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's runtime, made on first use (after a prefork worker forked)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def _run(job: Job) -> int:
    rt = runtime()
    follow = rt.run(run_job(rt.services, job))
    _send(rt, follow)
    return len(follow)


def _send(rt: Runtime, jobs: list[Job]) -> None:
    settings = rt.services.settings
    celery_send(celery_app, settings.task_queue, jobs, timedelta(seconds=settings.broker_visibility_timeout / 2))


def _deliver(delivery_id: str) -> int:
    """Send one webhook delivery (a retry is scheduled with exponential backoff on failure)."""
    return _run(Job("deliver", delivery_id))


def _expire(approval_id: str) -> int:
    """Expire an approval whose deadline has passed."""
    return _run(Job("expire", approval_id))


def _escalate(approval_id: str) -> int:
    """Open an approval still pending at its escalation time to the second role."""
    return _run(Job("escalate", approval_id))


def _sweep_task() -> int:
    """The periodic sweep (beat): whatever is due, and the timers before the next sweep."""
    rt = runtime()
    jobs = rt.run(sweep(rt.services))
    _send(rt, jobs)
    return len(jobs)


# Registered without decorator syntax: Celery's decorator is untyped.
_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}
deliver = celery_app.task(name=TASKS["deliver"], **_OPTIONS)(_deliver)
expire = celery_app.task(name=TASKS["expire"], **_OPTIONS)(_expire)
escalate = celery_app.task(name=TASKS["escalate"], **_OPTIONS)(_escalate)
sweep_task = celery_app.task(name=SWEEP, **_OPTIONS)(_sweep_task)
