"""Celery workers for approvals: webhook deliveries, expiry at the deadline, escalation, and a
periodic sweep (beat) that catches up whatever a timer missed.

`celery -A server.workers worker` / `licet worker` runs them against `LICET_BROKER_URL` (Redis in
production). Without a broker (`licet serve`, embedded) the same jobs run inside the server process
(`server.workers.dispatch.LocalDispatcher`). Correctness never depends on either: an approval past
its deadline is refused when presented, and every task is idempotent and acknowledged late.
"""

from __future__ import annotations

from celery import Celery

from licet.server.settings import Settings

TASKS = {"deliver": "licet.deliver", "expire": "licet.expire", "escalate": "licet.escalate"}
SWEEP = "licet.sweep"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from `settings` (the broker, its queue, late acknowledgement)."""
    app = Celery("licet", broker=settings.broker_url or "memory://",
                 backend=settings.result_backend or settings.broker_url or None,
                 include=["licet.server.workers.tasks"], set_as_current=False)
    transport = {"visibility_timeout": settings.broker_visibility_timeout}
    app.conf.update(
        # A task is acknowledged once it finished: a worker killed mid-task leaves it to another.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=settings.task_queue, task_serializer="json", accept_content=["json"],
        result_serializer="json", result_expires=3600, broker_transport_options=transport,
        result_backend_transport_options=transport, broker_connection_retry_on_startup=True,
        timezone="UTC", enable_utc=True, worker_hijack_root_logger=False,
        beat_schedule={"licet-sweep": {"task": SWEEP, "schedule": settings.sweep_seconds,
                                       "options": {"queue": settings.task_queue,
                                                   "expires": settings.sweep_seconds}}})
    return app


celery_app = make_celery(Settings())
app = celery_app  # `celery -A server.workers` looks for `app` or `celery`
