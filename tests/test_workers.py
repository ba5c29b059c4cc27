"""Approval workers for real: a `licet serve` with a Redis broker, a `celery worker` and `celery beat`
started as processes, PostgreSQL, and a local HTTP receiver for webhooks. Signed deliveries, retries
with backoff, failures recorded, expiry at the deadline, and a worker killed mid-delivery.

Each test session uses its own Redis database number and queue, so parallel runs do not meet. Under
CI=true an unreachable Redis fails the run instead of skipping.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from licet.server.approvals import webhooks
from tests.server_harness import IN_CI, Server, Tenant, drop_pg_database, fresh_pg_database, launch
from tests.test_approvals import SHORT, _epoch, ask, vote, wait_for

REDIS_HOST = os.environ.get("LICET_TEST_REDIS", "127.0.0.1:6379")
BACKOFF = 0.25  # the first retry's delay in these tests


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: bool  # a 2xx went back to a sender that was still there

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A local webhook receiver: /ok answers 200, /flaky 500 twice per delivery then 200, /down always
    503, /hold keeps the first attempt of each delivery open until `release` is set."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def for_tenant(self, tenant: str, path: str | None = None) -> list[Received]:
        with self.changed:
            return [r for r in self.received if r.payload.get("tenant") == tenant and (path is None or r.path == path)]

    def wait(self, check: Callable[[], Any], timeout: float = 20.0, what: str = "deliveries") -> Any:
        """Block until `check()` is truthy (woken by each POST)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = check()
                if found:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}: {[(r.path, r.payload['event']) for r in self.received]}"
                self.changed.wait(min(left, 0.5))


def _start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            delivery = self.headers.get(webhooks.DELIVERY_HEADER, "")
            with receiver.changed:
                earlier = sum(r.headers.get(webhooks.DELIVERY_HEADER) == delivery for r in receiver.received)
            status = 200
            if self.path == "/flaky" and earlier < 2:
                status = 500
            elif self.path == "/down":
                status = 503
            hold = self.path == "/hold" and earlier == 0
            entry = Received(self.path, dict(self.headers.items()), body, time.time(), answered=False)
            with receiver.changed:
                receiver.received.append(entry)
                receiver.changed.notify_all()
            if hold:
                receiver.held.set()
                receiver.release.wait(60)
                return  # the sender is gone by now: nothing is acknowledged
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            entry.answered = 200 <= status < 300
            with receiver.changed:
                receiver.changed.notify_all()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return receiver, httpd


def _redis_url() -> str:
    import redis

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    number = 9 + int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 8
    url = f"redis://{REDIS_HOST}/{number % 16}"
    try:
        redis.Redis.from_url(url, socket_timeout=3).ping()
    except redis.RedisError as exc:
        if IN_CI:
            raise
        pytest.skip(f"Redis unreachable at {REDIS_HOST}: {exc}")
    return url


@dataclass
class Stack:
    """A server, a Celery worker and beat on one database and broker, and the webhook receiver."""

    server: Server
    env: dict[str, str]
    tmp: Path
    receiver: Receiver
    worker: subprocess.Popen[bytes] | None = None
    beat: subprocess.Popen[bytes] | None = None
    started: int = 0

    def start_worker(self) -> None:
        """A fresh `celery worker` (solo pool); returns once it consumes."""
        self.started += 1
        log = self.tmp / f"worker-{self.started}.log"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "licet.server.workers", "worker", "--pool=solo", "--loglevel=INFO",
             "-Q", self.env["LICET_TASK_QUEUE"], "-n", f"licet-test-{uuid.uuid4().hex[:8]}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env={**os.environ, **self.env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            assert self.worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def start_beat(self) -> None:
        """`celery beat` running the periodic sweep."""
        log = self.tmp / "beat.log"
        self.beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "licet.server.workers", "beat", "--loglevel=INFO",
             "-s", str(self.tmp / "beat-schedule")], env={**os.environ, **self.env}, stdout=log.open("wb"),
            stderr=subprocess.STDOUT)

    def new_tenant(self, source: str | None = None) -> Tenant:
        tenant = self.server.new_tenant()
        tenant.activate(*(() if source is None else (source,)))
        return tenant

    def webhook(self, tenant: Tenant, path: str, events: list[str] | None = None) -> dict[str, Any]:
        with tenant.owner_session() as owner:
            made = owner.post("/v1/webhooks", json={"url": self.receiver.url + path, "events": events or []})
        assert made.status_code == 201, made.text
        return dict(made.json())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One production-shaped deployment for this module's tests."""
    broker = _redis_url()
    worker_id = os.environ.get("PYTEST_XDIST_WORKER", "main")
    tmp = tmp_path_factory.mktemp("workers")
    name = f"licet_workers_{worker_id}"
    database_url = fresh_pg_database(name)
    data_dir = tmp / "data"
    env = {"LICET_DATABASE_URL": database_url, "LICET_DATA_DIR": str(data_dir), "LICET_BROKER_URL": broker,
           "LICET_TASK_QUEUE": f"licet-test-{uuid.uuid4().hex[:10]}", "LICET_SWEEP_SECONDS": "1",
           "LICET_BROKER_VISIBILITY_TIMEOUT": "10", "LICET_WEBHOOK_TIMEOUT_SECONDS": "5",
           "LICET_WEBHOOK_BACKOFF_SECONDS": str(BACKOFF), "LICET_WEBHOOK_MAX_ATTEMPTS": "4",
           "LICET_WEBHOOK_PRIVATE_TARGETS": "true"}  # the receiver is local
    receiver, httpd = _start_receiver()
    process, url = launch(database_url, data_dir, tmp / "server.log", env)
    running = Stack(Server("postgresql", url, database_url, data_dir, process), env, tmp, receiver)
    try:
        running.start_worker()
        running.start_beat()
        yield running
    finally:
        receiver.release.set()
        for proc in (running.worker, running.beat, process):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        httpd.shutdown()
        drop_pg_database(name)


def test_webhook_is_delivered_signed_for_each_state(stack: Stack) -> None:
    tenant = stack.new_tenant()
    hook = stack.webhook(tenant, "/ok")
    with tenant.server.client(tenant.key()) as agent:
        approval = ask(agent)["approval"]["id"]
    a, b = tenant.person("approver"), tenant.person("approver")
    vote(a, approval)
    vote(b, approval)
    got = stack.receiver.wait(lambda: [r.payload["event"] for r in stack.receiver.for_tenant(tenant.id)]
                              == ["approval.opened", "approval.granted"], what="opened and granted")
    assert got
    for entry in stack.receiver.for_tenant(tenant.id):
        headers = {k.lower(): v for k, v in entry.headers.items()}
        assert webhooks.verify(hook["secret"], headers[webhooks.TIMESTAMP_HEADER.lower()], entry.body,
                               headers[webhooks.SIGNATURE_HEADER.lower()])
        assert not webhooks.verify("whsec_wrong", headers[webhooks.TIMESTAMP_HEADER.lower()], entry.body,
                                   headers[webhooks.SIGNATURE_HEADER.lower()])
        assert not webhooks.verify(hook["secret"], headers[webhooks.TIMESTAMP_HEADER.lower()], entry.body + b" ",
                                   headers[webhooks.SIGNATURE_HEADER.lower()])
        payload = entry.payload
        assert payload["delivery"] == headers[webhooks.DELIVERY_HEADER.lower()]
        assert payload["approval"]["id"] == approval and payload["approval"]["request"]["args"]["amount"] == 2000
    granted = stack.receiver.for_tenant(tenant.id)[1].payload["approval"]
    assert granted["state"] == "granted" and sorted(v["voter"] for v in granted["votes"]) == sorted(
        [a.principal_id, b.principal_id])
    with tenant.owner() as owner:
        deliveries = owner.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["deliveries"]
    assert {(d["event"], d["state"], d["attempts"]) for d in deliveries} == {
        ("opened", "delivered", 1), ("granted", "delivered", 1)}


def test_a_failing_receiver_is_retried_with_backoff_and_failures_are_recorded(stack: Stack) -> None:
    tenant = stack.new_tenant()
    flaky = stack.webhook(tenant, "/flaky", ["opened"])
    down = stack.webhook(tenant, "/down", ["opened"])
    with tenant.server.client(tenant.key()) as agent:
        ask(agent)
    attempts = stack.receiver.wait(lambda: len(stack.receiver.for_tenant(tenant.id, "/flaky")) == 3 and len(
        stack.receiver.for_tenant(tenant.id, "/down")) == 4 and stack.receiver.for_tenant(tenant.id, "/flaky"),
        what="3 flaky and 4 failing attempts")
    assert len({r.headers[webhooks.DELIVERY_HEADER] for r in attempts}) == 1  # one delivery, retried
    assert [r.answered for r in attempts] == [False, False, True]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= BACKOFF * 0.9 and gaps[1] >= 2 * BACKOFF * 0.9, gaps  # exponential backoff
    with tenant.owner() as owner:
        def settled(hook: dict[str, Any], state: str) -> dict[str, Any] | None:
            rows = owner.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["deliveries"]
            return rows[0] if rows and rows[0]["state"] == state else None

        ok = wait_for(lambda: settled(flaky, "delivered"), what="the flaky delivery recorded")
        failed = wait_for(lambda: settled(down, "failed"), what="the failed delivery recorded")
        audit = owner.get("/v1/audit").json()["events"]
    assert ok["attempts"] == 3 and ok["last_error"] is None
    assert failed["attempts"] == 4 and failed["last_status"] == 503 and "503" in failed["last_error"]
    assert any(e["action"] == "webhook.failed" and e["target"] == f"webhook:{down['id']}" for e in audit)
    time.sleep(4 * BACKOFF)  # nothing more is sent once a delivery is settled
    assert len(stack.receiver.for_tenant(tenant.id, "/down")) == 4


def test_expiry_happens_at_the_deadline(stack: Stack) -> None:
    tenant = stack.new_tenant(SHORT)
    stack.webhook(tenant, "/ok", ["expired"])
    with tenant.server.client(tenant.key()) as agent:
        opened = ask(agent)["approval"]
    entry = stack.receiver.wait(lambda: stack.receiver.for_tenant(tenant.id), what="the expiry webhook")[0]
    deadline = datetime.fromisoformat(opened["deadline"].replace("Z", "+00:00"))
    with tenant.owner() as owner:
        final = owner.get(f"/v1/approvals/{opened['id']}").json()
    closed = datetime.fromisoformat(final["closed_at"].replace("Z", "+00:00"))
    assert final["state"] == "expired" and entry.payload["event"] == "approval.expired"
    assert 0 <= (closed - deadline).total_seconds() < 2.0, (deadline, closed)
    assert [e["event"] for e in final["events"]] == ["opened", "expired"]


def test_a_worker_killed_mid_delivery_loses_nothing_and_sends_each_event_once(stack: Stack) -> None:
    tenant = stack.new_tenant()
    stack.webhook(tenant, "/hold")
    stack.receiver.held.clear()
    stack.receiver.release.clear()
    with tenant.server.client(tenant.key()) as agent:
        approval = ask(agent)["approval"]["id"]
    assert stack.receiver.held.wait(20), "the worker never posted"
    assert stack.worker is not None
    stack.worker.send_signal(signal.SIGKILL)  # mid-task: the POST is in flight, the task not acknowledged
    stack.worker.wait(10)
    stack.receiver.release.set()
    stack.start_worker()
    a, b = tenant.person("approver"), tenant.person("approver")
    vote(a, approval)
    vote(b, approval)

    def acknowledged() -> list[tuple[str, str]]:
        return sorted((r.payload["approval"]["id"], r.payload["event"])
                      for r in stack.receiver.for_tenant(tenant.id) if r.answered)

    stack.receiver.wait(lambda: acknowledged() == sorted([(approval, "approval.opened"),
                                                          (approval, "approval.granted")]),
                        timeout=40, what="both events acknowledged after the restart")
    time.sleep(2)  # a duplicate would have arrived by now (sweep every second, leases of 10 s spent)
    posts = stack.receiver.for_tenant(tenant.id)
    assert acknowledged() == sorted([(approval, "approval.opened"), (approval, "approval.granted")])
    by_event: dict[str, set[str]] = {}
    for r in posts:
        by_event.setdefault(r.payload["event"], set()).add(r.headers[webhooks.DELIVERY_HEADER])
    assert {k: len(v) for k, v in by_event.items()} == {"approval.opened": 1, "approval.granted": 1}
    opened = [r for r in posts if r.payload["event"] == "approval.opened"]
    assert [r.answered for r in opened] == [False, True]  # the killed attempt, then its one redelivery
    with httpx.Client(base_url=tenant.server.url, headers={"Authorization": f"Bearer {tenant.owner_key}"}) as owner:
        hooks = owner.get("/v1/webhooks").json()["webhooks"]
        rows = owner.get(f"/v1/webhooks/{hooks[0]['id']}/deliveries").json()["deliveries"]
    assert {(d["event"], d["state"]) for d in rows} == {("opened", "delivered"), ("granted", "delivered")}


def test_with_no_worker_running_an_approval_past_its_deadline_is_still_refused(tmp_path: Path) -> None:
    """Correctness never depends on a worker: the broker takes the expiry task but nobody consumes the
    queue, and both a pending and a granted approval are refused as expired once their deadline passed."""
    env = {"LICET_BROKER_URL": _redis_url(), "LICET_TASK_QUEUE": f"licet-nobody-{uuid.uuid4().hex[:10]}"}
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
    process, url = launch(database_url, tmp_path / "data", tmp_path / "server.log", env)
    try:
        tenant = Server("sqlite", url, database_url, tmp_path / "data", process).new_tenant()
        tenant.activate(SHORT)
        with tenant.server.client(tenant.key()) as agent:
            pending = ask(agent)["approval"]
            granted = ask(agent, 2500)["approval"]
            assert vote(tenant.person("approver"), granted["id"]).json()["state"] == "granted"
            last = max(_epoch(pending["deadline"]), _epoch(granted["deadline"]))
            wait_for(lambda: time.time() > last + 0.05, what="the deadlines")
            with tenant.owner() as owner:  # nothing ran: still open until someone presents them
                assert owner.get(f"/v1/approvals/{pending['id']}").json()["state"] == "pending"
            for opened, amount in ((pending, 2000), (granted, 2500)):
                refusal = ask(agent, amount, approval=opened["id"])
                assert refusal["decision"] != "permit", refusal
                assert refusal["approval_refused"]["code"] == "approval_expired", refusal
    finally:
        process.terminate()
        process.wait(10)
