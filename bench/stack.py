"""The production stack on this machine under a bounded mixed load and injected faults, then an audit.

    scripts/stack            # the full run (a few minutes)
    scripts/stack --short    # the form the test suite runs (~60-90 s)
    scripts/stack --keep     # keep the temporary directory (logs of every process) and print where

What runs, each as its own process(es), on free ports in one temporary directory:
- a private PostgreSQL cluster (`initdb` + `pg_ctl`; the machine's shared PostgreSQL is never touched);
- a private `redis-server`;
- `licet serve --workers 2` (two uvicorn worker processes under uvicorn's supervisor) on that cluster;
- `licet worker` and `licet beat` on that Redis (the commands of docker-compose.prod.yml);
- a local webhook receiver that records every delivery with its `X-Licet-Delivery` id.

The load: agents deciding small transfers (permitted until the daily budget is spent), deletes (a
count invariant), reads, large transfers that need two approvers (people with sessions vote, the agent
uses the approval, then tries to use it again), approvals in a tenant whose approvals expire after a
few seconds (the Celery worker expires them and announces it by webhook), plan verifications, and
evidence reads (checkpoints and inclusion proofs). Every client retries 5xx answers and connection
errors with the same `Idempotency-Key`.

The faults, each recorded as a window of time: `kill -9` of an API worker in the middle of a burst
of appends (uvicorn's supervisor starts another); PostgreSQL restarted with `pg_ctl restart -m fast`
under load; the Celery worker's process group killed with SIGKILL in the middle of webhook deliveries
and approval expiries, then started again; and, on the embedded SQLite variant, its data volume (a
small tmpfs) filled up under load, then given room again.

The audit (printed as `AUDIT <check>: PASS|FAIL <detail>` lines): every certificate a client received
is the log's entry at its index; the final tree recomputed from the entries matches the final signed
checkpoint; every checkpoint ever served verifies and is consistent with the final tree (the API's
consistency proofs, checked with licet.kernel); every inclusion proof served verifies; no decision in
the log that no client received (a retry decided twice); no approval used twice; the budget and count
invariants hold per window; every approval event was delivered by webhook at least once with a
delivery id, and every delivery row is delivered; every expiring approval expired; no 5xx answer or
connection error outside the fault windows; a decision replayed with its `Idempotency-Key` gives the
same certificate. Then a `pg_dump` of the tenant's database restored into a fresh database, served by
a fresh `licet serve`, is proved to extend the checkpoint taken before the dump. Exit status 1 on any
failure, naming what was lost.
"""

# ruff: noqa: E402 - the path fix below must run before any import that reaches the stdlib's `http`

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and bench/http.py would shadow the
# standard library's `http`; the project's root comes first instead (for `tests.server_harness`).
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import base64
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from licet.kernel.bundle import verify_bundle
from licet.kernel.certificate import certificate_leaf
from licet.kernel.checkpoint import check_consistency, parse_checkpoint, verify_checkpoint
from licet.kernel.keys import parse_public_key
from licet.kernel.merkle import leaf_hash, root_from_leaf_hashes, verify_consistency
from licet.kernel.report import all_ok
from tests.server_harness import ORIGIN, RP_ID, Server, Tenant, free_port, launch, wait_until_ready

BUDGET_LIMIT, DELETE_LIMIT = 40_000, 12  # the invariants of POLICY, which the audit checks
POLICY = f"""\
id: stack-payments
version: 1
rules:
  - id: read
    effect: permit
    action: [payments.read]
    resource: ["/accounts/**"]
  - id: transfer
    effect: permit
    action: [payments.transfer]
    resource: ["/accounts/*"]
    when: 'args.amount <= 10000 && args.currency in ["EUR", "USD"]'
  - id: large-transfer
    effect: require_approval
    action: [payments.transfer]
    when: 'args.amount > 1000'
    approval: {{quorum: 2, role: approver, ttl: 15m}}
  - id: delete-scratch
    effect: permit
    action: ["*.delete"]
    resource: ["/scratch/**"]
invariants:
  - {{id: daily-budget, kind: budget, action: [payments.transfer], sum: args.amount, limit: {BUDGET_LIMIT},
     window: 24h}}
  - {{id: max-deletes, kind: count, action: ["*.delete"], limit: {DELETE_LIMIT}, window: 1h}}
"""
EXPIRY_TTL = 4  # seconds: the approvals of the expiry tenant run out while the load runs
EXPIRY_POLICY = POLICY.replace("ttl: 15m", f"ttl: {EXPIRY_TTL}")
WINDOWS = {"daily-budget": 24 * 3600.0, "max-deletes": 3600.0}
WEBHOOK_EVENTS = {"opened", "escalated", "granted", "denied", "expired", "cancelled", "used"}
GRACE = 3.0  # seconds after a fault window in which pooled connections may still meet the fault
DEADLINE = 90.0  # how long one client request keeps retrying


# ------------------------------------------------------------------------------------------ records


@dataclass
class Window:
    """A fault injected between `start` and `end` (monotonic seconds)."""

    name: str
    start: float
    end: float = float("inf")
    note: str = ""


@dataclass
class Attempt:
    """One HTTP attempt of a client: when it was sent (`at`) and answered (`end`), what, and its status
    (0 for a connection error)."""

    at: float
    end: float
    method: str
    path: str
    status: int
    detail: str = ""


@dataclass
class Received:
    """A certified decision a client received."""

    tenant: str
    key: str
    body: dict[str, Any]
    certificate: dict[str, Any]
    log_index: int
    retried: bool


@dataclass
class Journal:
    """Everything the run observed, shared by the client threads."""

    began: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    windows: list[Window] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    decisions: list[Received] = field(default_factory=list)
    checkpoints: dict[str, dict[int, str]] = field(default_factory=dict)  # tenant -> size -> note
    proofs: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)  # tenant, certificate, bundle
    lost: list[str] = field(default_factory=list)  # requests that never got an answer
    defects: list[str] = field(default_factory=list)  # wrong answers seen while loading
    approvals_used: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, approval, certificate id
    expiring: set[str] = field(default_factory=set)
    abort: threading.Event = field(default_factory=threading.Event)  # the stack is gone: stop retrying

    def add(self, what: str, item: Any) -> None:
        with self.lock:
            getattr(self, what).append(item)

    def checkpoint(self, tenant: str, note: str) -> None:
        with self.lock:
            self.checkpoints.setdefault(tenant, {})[parse_checkpoint(note).size] = note

    @contextlib.contextmanager
    def window(self, name: str, note: str = "") -> Iterator[Window]:
        """Record a fault window around the block."""
        window = Window(name, time.monotonic(), note=note)
        self.add("windows", window)
        try:
            yield window
        finally:
            window.end = time.monotonic()
            say(f"fault {name}: {window.end - window.start:.1f} s {window.note}")

    def in_window(self, attempt: Attempt) -> bool:
        """Whether the attempt was under way during a fault window (or its grace)."""
        return any(attempt.at <= w.end + GRACE and w.start <= attempt.end for w in self.windows)


def say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------ clients


RETRIED = {500, 502, 503, 504}


def call(client: httpx.Client, journal: Journal, method: str, path: str, *, body: Any = None,
         key: str | None = None, deadline: float = DEADLINE) -> tuple[httpx.Response | None, int]:
    """`method path` retried on 5xx and connection errors (with `key` as Idempotency-Key, if given)
    until an answer or `deadline` seconds; the last answer (None if none came) and the attempts made."""
    headers = {"Idempotency-Key": key} if key else {}
    stop, tries, pause = time.monotonic() + deadline, 0, 0.1
    reply: httpx.Response | None
    while True:
        tries += 1
        at = time.monotonic()
        try:
            answer = client.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            journal.add("attempts", Attempt(at, time.monotonic(), method, path, 0, type(exc).__name__))
            reply = None
        else:
            journal.add("attempts", Attempt(at, time.monotonic(), method, path, answer.status_code,
                                            answer.text[:200] if answer.status_code >= 500 else ""))
            if answer.status_code not in RETRIED:
                return answer, tries
            reply = answer
        if time.monotonic() > stop or journal.abort.is_set():
            return reply, tries
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def said(reply: httpx.Response | None) -> str:
    """What an answer was, for a report: its status and the start of its body."""
    return "no answer" if reply is None else f"{reply.status_code} {reply.text[:200]}"


@dataclass
class Actors:
    """A tenant of the run and who acts in it."""

    tenant: Tenant
    agent_key: str
    approvers: list[Any]
    webhook_id: str = ""


def decide(journal: Journal, client: httpx.Client, actors: Actors, body: dict[str, Any]) -> dict[str, Any] | None:
    """One decision with a fresh Idempotency-Key, retried; its answer recorded (None if lost)."""
    key = str(uuid.uuid4())
    reply, tries = call(client, journal, "POST", "/v1/decide", body=body, key=key)
    if reply is None or reply.status_code != 200:
        journal.add("lost", f"{actors.tenant.id} decide {body} key {key}: "
                            f"{said(reply)}")
        return None
    answer = dict(reply.json())
    journal.add("decisions", Received(actors.tenant.id, key, body, answer["certificate"], answer["log_index"],
                                      tries > 1))
    return answer


def transfer(amount: int, **extra: Any) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": f"/accounts/acc-{random.randint(1, 9)}",
            "args": {"amount": amount, "currency": "EUR", **extra}}


def approval_flow(journal: Journal, client: httpx.Client, actors: Actors) -> None:
    """A large transfer: opened, approved by two people, used once, and refused when presented again."""
    body = transfer(random.randint(1100, 3000), ref=uuid.uuid4().hex[:8])
    opened = decide(journal, client, actors, body)
    if opened is None or opened["decision"] != "require_approval":
        return
    approval = opened["approval"]["id"]
    for person in actors.approvers:
        with person.client() as voter:
            reply, _ = call(voter, journal, "POST", f"/v1/approvals/{approval}/approve", body={"reason": "load"})
        # a retried vote whose first attempt was recorded is answered already_voted
        if reply is None or (reply.status_code != 200 and "already_voted" not in reply.text):
            journal.add("lost", f"{actors.tenant.id} vote on {approval}: {said(reply)}")
            return
    used = decide(journal, client, actors, {**body, "approval": approval})
    if used is None:
        return
    if used["decision"] == "permit":
        journal.add("approvals_used", (actors.tenant.id, approval, used["certificate_id"]))
    again = decide(journal, client, actors, {**body, "approval": approval})
    if again is not None and again["decision"] == "permit":
        journal.add("defects", f"approval {approval} of {actors.tenant.id} permitted twice: "
                               f"{used['certificate_id']} and {again['certificate_id']}")


def open_expiring(journal: Journal, client: httpx.Client, actors: Actors) -> None:
    """An approval nobody votes on: the worker expires it after EXPIRY_TTL seconds."""
    opened = decide(journal, client, actors, transfer(random.randint(1100, 3000), ref=uuid.uuid4().hex[:8]))
    if opened is not None and opened.get("approval"):
        with journal.lock:
            journal.expiring.add(opened["approval"]["id"])


def read_evidence(journal: Journal, client: httpx.Client, actors: Actors) -> None:
    """The newest checkpoint, or the inclusion proof of a certificate some client received."""
    with journal.lock:
        mine = [d for d in journal.decisions[-200:] if d.tenant == actors.tenant.id]
    if mine and random.random() < 0.5:
        chosen = random.choice(mine)
        reply, _ = call(client, journal, "GET", f"/v1/certificates/{chosen.certificate['id']}/proof")
        if reply is not None and reply.status_code == 200:
            journal.checkpoint(actors.tenant.id, reply.json()["checkpoint"])
            journal.add("proofs", (actors.tenant.id, chosen.certificate, reply.json()["bundle"]))
        else:
            journal.add("lost", f"proof of {chosen.certificate['id']}: {said(reply)}")
        return
    reply, _ = call(client, journal, "GET", "/v1/evidence/checkpoint")
    if reply is not None and reply.status_code == 200:
        journal.checkpoint(actors.tenant.id, reply.json()["note"])
    else:
        journal.add("lost", f"checkpoint of {actors.tenant.id}: {said(reply)}")


def verify_plan(journal: Journal, client: httpx.Client, actors: Actors) -> None:
    steps = [{"action": "payments.transfer", "resource": "/accounts/acc-1",
              "args": {"amount": {"symbolic": "int", "min": 1, "max": random.choice([500, 5000])}, "currency": "EUR"}},
             {"action": "scratch.delete", "resource": "/scratch/tmp"}]
    reply, _ = call(client, journal, "POST", "/v1/plans/verify", body={"steps": steps})
    if reply is None or reply.status_code != 200:
        journal.add("lost", f"plan verify: {said(reply)}")


def one_operation(journal: Journal, clients: dict[str, httpx.Client], main: Actors, expiry: Actors) -> None:
    """One step of the mixed load, chosen at random (`clients`: each tenant's agent client)."""
    roll, client = random.random(), clients[main.tenant.id]
    if roll < 0.45:
        decide(journal, client, main, transfer(random.randint(1, 100)))
    elif roll < 0.52:
        decide(journal, client, main, {"action": "scratch.delete", "resource": f"/scratch/{uuid.uuid4().hex[:6]}"})
    elif roll < 0.60:
        decide(journal, client, main, {"action": "payments.read", "resource": "/accounts/acc-1/statements"})
    elif roll < 0.70:
        approval_flow(journal, client, main)
    elif roll < 0.77:
        open_expiring(journal, clients[expiry.tenant.id], expiry)
    elif roll < 0.84:
        verify_plan(journal, client, main)
    else:
        either = random.choice([main, expiry])
        read_evidence(journal, clients[either.tenant.id], either)


def load(journal: Journal, url: str, main: Actors, expiry: Actors, stop: threading.Event) -> None:
    """One agent's loop until `stop`."""
    clients = {a.tenant.id: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {a.agent_key}"},
                                         timeout=30) for a in (main, expiry)}
    try:
        while not stop.is_set():
            one_operation(journal, clients, main, expiry)
    finally:
        for client in clients.values():
            client.close()


def burst(journal: Journal, url: str, actors: Actors, count: int) -> None:
    """`count` concurrent appends from 8 clients."""
    def run(share: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {actors.agent_key}"}, timeout=30) as c:
            for _ in range(share):
                decide(journal, c, actors, transfer(random.randint(1, 50)))

    threads = [threading.Thread(target=run, args=(count // 8,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ------------------------------------------------------------------------------------------ processes


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def postgres_bin() -> Path:
    """The directory of the newest installed PostgreSQL's programs."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise SystemExit("FAIL: no PostgreSQL programs (initdb) here: apt install postgresql")
    return Path(initdb).resolve().parent


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this run only: its own directory and port."""

    home: Path
    port: int = field(default_factory=free_port)
    bin: Path = field(default_factory=postgres_bin)

    @property
    def data(self) -> Path:
        return self.home / "pgdata"

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_as_postgres(), str(self.bin / program), *args], capture_output=True, text=True,
                              check=check, cwd=self.home)

    def start(self) -> None:
        self.home.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.home / "postgres.log"), "-o",
                 f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.home} "
                 "-c max_connections=300")

    def restart_fast(self) -> None:
        # -l: a server writing to pg_ctl's output would hold the captured pipe open
        self.run("pg_ctl", "restart", "-w", "-m", "fast", "-D", str(self.data), "-l", str(self.home / "postgres.log"))

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data), check=False)

    def createdb(self, name: str) -> str:
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"


def start_redis(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of this run only (append-only, as production runs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("FAIL: no redis-server here: apt install redis-server")
    port = free_port()
    home.mkdir(parents=True)
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                                "--save", "", "--dir", str(home)], stdout=(home / "redis.log").open("wb"),
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return process, f"redis://127.0.0.1:{port}/0"
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"FAIL: redis-server did not start: {(home / 'redis.log').read_text()}")
        time.sleep(0.1)


@dataclass
class Celery:
    """`licet worker` and `licet beat`, each in a process group of its own (a kill takes its pool too)."""

    env: dict[str, str]
    home: Path
    worker: subprocess.Popen[bytes] | None = None
    beat: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "licet", *args], env={**os.environ, **self.env},
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)

    def start_worker(self) -> None:
        self.starts += 1
        log = self.home / f"worker-{self.starts}.log"
        self.worker = self._spawn(["worker", "--concurrency", "2"], log)
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"FAIL: licet worker did not start: {log.read_text()}")
            time.sleep(0.1)

    def start_beat(self) -> None:
        self.beat = self._spawn(["beat", "--schedule", str(self.home / "beat-schedule")], self.home / "beat.log")

    def kill_worker(self) -> None:
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def stop(self) -> None:
        for process in (self.worker, self.beat):
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def _pg_connection_inodes(pg_port: int) -> set[str]:
    """Socket inodes of established TCP connections to `pg_port` on this machine."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == pg_port and fields[3] == "01":
                    inodes.add(fields[9])
    return inodes


@dataclass
class Api:
    """`licet serve --workers 2` on a fixed port, restarted when it exits (as compose's `restart:
    unless-stopped` does), each exit recorded as a fault window."""

    env: dict[str, str]
    home: Path
    journal: Journal
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    exits: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers (the environment of tests/server_harness.launch)."""
        env = {**os.environ, "LICET_LOG_JSON": "true", "LICET_SOURCE_LOCK_FAILURES": "100000", "LICET_RP_ID": RP_ID,
               "LICET_RP_ORIGINS": json.dumps([ORIGIN]), "LICET_COOKIE_SECURE": "false", **self.env}
        log = self.home / "serve.log"
        self.process = subprocess.Popen([sys.executable, "-m", "licet", "serve", "--port", str(self.port), "--workers",
                                         "2"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until_ready(self.process, self.url, lambda: f"licet serve did not start: {log.read_text()[-3000:]}")

    def supervise(self) -> None:
        """Restart the server whenever it exits, until `stopping`."""
        while not self.stopping.wait(0.2):
            assert self.process is not None
            if self.process.poll() is None or self.stopping.is_set():
                continue
            with self.journal.window("api-server-exited", "(restarted as `restart: unless-stopped` would)"):
                tail = (self.home / "serve.log").read_text().splitlines()[-1:]
                self.exits.append(f"exit {self.process.returncode} at "
                                  f"{time.monotonic() - self.journal.began:.1f} s: {tail}")
                try:
                    self.start()
                except RuntimeError as exc:
                    self.exits.append(f"restart failed: {exc}")
                    self.journal.abort.set()
                    return

    def workers(self) -> set[int]:
        """The pids of uvicorn's worker processes (spawned children)."""
        assert self.process is not None
        found: set[int] = set()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                for pid in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            found.add(int(pid))
        return found

    def holds_database_connection(self, pid: int, pg_port: int) -> bool:
        """Whether worker `pid` has a connection to PostgreSQL open: its start-up is past the database."""
        inodes = _pg_connection_inodes(pg_port)
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return True
        return False

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Receiver:
    """The webhook receiver: every POST with its delivery id, event and approval (answers 200)."""

    url: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with receiver.lock:
                    receiver.got.append({"delivery": self.headers.get("X-Licet-Delivery", ""),
                                         "event": payload["event"], "tenant": payload["tenant"],
                                         "approval": payload["approval"]["id"]})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def events(self, tenant: str) -> dict[tuple[str, str], set[str]]:
        """(approval, event) -> the delivery ids it arrived with."""
        seen: dict[tuple[str, str], set[str]] = {}
        with self.lock:
            for got in self.got:
                if got["tenant"] == tenant:
                    seen.setdefault((got["approval"], got["event"].removeprefix("approval.")), set()).add(
                        got["delivery"])
        return seen


def actors_for(server: Server, policy: str, receiver: Receiver) -> Actors:
    """A tenant with `policy` active, an agent key, two approvers and a webhook for every event."""
    tenant = server.new_tenant()
    tenant.activate(policy)
    approvers = [tenant.person("approver"), tenant.person("approver")]
    with tenant.owner_session() as owner:
        made = owner.post("/v1/webhooks", json={"url": receiver.url + "/hook", "events": []})
        assert made.status_code == 201, made.text
    return Actors(tenant, tenant.key("agent", principal_id="agent:payments"), approvers, made.json()["id"])


# ------------------------------------------------------------------------------------------ faults


def kill_api_worker_in_burst(journal: Journal, api: Api, pg: PrivatePostgres, main: Actors, count: int) -> None:
    """`kill -9` of one API worker while a burst of appends runs; the window lasts until uvicorn's
    replacement holds a database connection (its start-up is past the database)."""
    before = api.workers()
    runner = threading.Thread(target=burst, args=(journal, api.url, main, count))
    runner.start()
    time.sleep(1.0)
    victim = min(before)
    with journal.window("api-worker-kill-9", f"(pid {victim} of {sorted(before)})") as window:
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        replaced: set[int] = set()
        while time.monotonic() < deadline:
            replaced = api.workers() - before
            if replaced and all(api.holds_database_connection(pid, pg.port) for pid in replaced):
                break
            with contextlib.suppress(httpx.TransportError):  # a fresh connection may reach the new worker
                httpx.get(f"{api.url}/readyz", timeout=2)
            time.sleep(0.2)
        window.note += f" replaced by {sorted(replaced) or 'nothing'}"
        if not replaced:
            journal.add("defects", "uvicorn did not replace the API worker killed with SIGKILL within 120 s")
    runner.join()


def restart_postgres(journal: Journal, pg: PrivatePostgres, url: str) -> None:
    """`pg_ctl restart -m fast` while the load runs; the window lasts until the API is ready again."""
    with journal.window("postgres-restart-fast"):
        pg.restart_fast()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)


def kill_celery_worker(journal: Journal, celery: Celery, receiver: Receiver) -> None:
    """SIGKILL the Celery worker's group right after a delivery arrived, wait, start it again."""
    with receiver.lock:
        seen = len(receiver.got)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with receiver.lock:
            if len(receiver.got) > seen:
                break
        time.sleep(0.02)
    with journal.window("celery-worker-kill-9"):
        celery.kill_worker()
        time.sleep(EXPIRY_TTL)  # approvals' deadlines pass and deliveries pile up while no worker runs
        celery.start_worker()


# ------------------------------------------------------------------------------------------ audit


@dataclass
class Audit:
    """The checks' results, printed as `AUDIT name: PASS|FAIL detail`."""

    lines: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.lines.append((name, ok, detail))
        say(f"AUDIT {name}: {'PASS' if ok else 'FAIL'} {detail}")

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.lines if not ok]


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_log(client: httpx.Client) -> list[dict[str, Any]]:
    """Every entry of the tenant's log, in order."""
    entries: list[dict[str, Any]] = []
    while True:
        reply = client.get("/v1/evidence/entries", params={"start": len(entries), "limit": 1000})
        reply.raise_for_status()
        entries += reply.json()["entries"]
        if reply.json()["next_start"] is None:
            return entries


def log_keys(client: httpx.Client) -> list[Any]:
    reply = client.get("/v1/evidence/keys")
    reply.raise_for_status()
    return [parse_public_key(json.dumps(k)) for k in reply.json()["certificate_keys"]]


def audit_log(audit: Audit, journal: Journal, actors: Actors, label: str) -> None:
    """Certificates received, checkpoints served, proofs served, against the tenant's final log."""
    tenant = actors.tenant.id
    with actors.tenant.owner_session() as owner:
        keys = log_keys(owner)
        entries = read_log(owner)
        final = owner.get("/v1/evidence/checkpoint").json()
        checked = verify_checkpoint(final["note"], keys)
        hashes = [leaf_hash(certificate_leaf(e["certificate"])) for e in entries]
        rebuilt = root_from_leaf_hashes(hashes[:final["size"]])
        audit.check(f"{label} final-tree", final["size"] == len(entries) and rebuilt == checked.checkpoint.root_hash
                    and all(_b64(e["leaf_hash"]) == h for e, h in zip(entries, hashes, strict=True)),
                    f"{len(entries)} entries; the root recomputed from them is the signed checkpoint's "
                    f"({final['size']} entries)")
        received = [d for d in journal.decisions if d.tenant == tenant]
        missing = [f"{d.certificate['id']} at {d.log_index}" for d in received
                   if d.log_index >= len(entries) or entries[d.log_index]["certificate"] != d.certificate]
        audit.check(f"{label} certificates-in-log", not missing,
                    f"{len(received) - len(missing)}/{len(received)} certificates received by clients are the "
                    f"log's entry at their index" + (f"; NOT: {missing[:10]}" if missing else ""))
        ids = {d.certificate["id"] for d in received}
        orphans = [f"{e['certificate']['id']} at {e['index']}" for e in entries
                   if "decision" in e["certificate"] and e["certificate"]["id"] not in ids]
        audit.check(f"{label} no-unanswered-decisions", not orphans,
                    f"every decision in the log was answered to a client ({len(ids)} certificates)"
                    + (f"; decided but never received (a retry decided twice?): {orphans[:10]}" if orphans else ""))
        notes = journal.checkpoints.get(tenant, {})
        bad: list[str] = []
        for size, note in sorted(notes.items()):
            try:
                old = verify_checkpoint(note, keys).checkpoint
                if size == 0:  # the empty tree is a prefix of every tree: no proof exists, its root is fixed
                    if old.root_hash != root_from_leaf_hashes([]):
                        raise ValueError("a checkpoint of the empty tree with another root than SHA-256('')")
                    continue
                proof = owner.get("/v1/evidence/consistency", params={"first": size, "second": final["size"]}).json()
                verify_consistency(size, final["size"], old.root_hash, checked.checkpoint.root_hash,
                                   [_b64(h) for h in proof["proof"]])
            except Exception as exc:  # noqa: BLE001 - each failure is reported with its reason
                bad.append(f"size {size}: {exc}")
        audit.check(f"{label} checkpoints-consistent", not bad,
                    f"{len(notes) - len(bad)}/{len(notes)} checkpoints served verify and are consistent with the "
                    f"final tree (API consistency proofs, kernel verifier)" + (f"; NOT: {bad[:5]}" if bad else ""))
        proofs = [(c, b) for t, c, b in journal.proofs if t == tenant]
        failing = [c["id"] for c, b in proofs if not all_ok(verify_bundle(c, b, keys))]
        audit.check(f"{label} inclusion-proofs", not failing,
                    f"{len(proofs) - len(failing)}/{len(proofs)} inclusion proofs served verify"
                    + (f"; NOT: {failing[:5]}" if failing else ""))
    audit_invariants(audit, label, entries)
    audit_replays(audit, journal, actors, label)


def audit_invariants(audit: Audit, label: str, entries: list[dict[str, Any]]) -> None:
    """No approval permits twice; permitted transfer amounts and deletes stay within their windows."""
    permits = [e["certificate"] for e in entries if e["certificate"].get("decision") == "permit"]
    used: dict[str, list[str]] = {}
    for cert in permits:
        if cert.get("approval"):
            used.setdefault(cert["approval"]["id"], []).append(cert["id"])
    twice = {a: c for a, c in used.items() if len(c) > 1}
    audit.check(f"{label} approvals-used-once", not twice,
                f"{len(used)} approvals permitted an action, each once" + (f"; TWICE: {twice}" if twice else ""))
    measures: dict[str, tuple[int, Callable[[dict[str, Any]], int | None]]] = {
        # what each invariant of POLICY adds up for a permitted request (None: not its action)
        "daily-budget": (BUDGET_LIMIT, lambda r: int(r["args"]["amount"]) if r["action"] == "payments.transfer"
                         else None),
        "max-deletes": (DELETE_LIMIT, lambda r: 1 if r["action"].endswith(".delete") else None)}
    for invariant, (limit, measure) in measures.items():
        counted = sorted((_epoch(c["issued_at"]), value) for c in permits
                         if (value := measure(c["request"])) is not None)
        worst = max((sum(v for t, v in counted if end - WINDOWS[invariant] < t <= end) for end, _ in counted),
                    default=0)
        audit.check(f"{label} invariant-{invariant}", worst <= limit,
                    f"largest total of the {len(counted)} permitted in any {WINDOWS[invariant] / 3600:g} h window: "
                    f"{worst} (limit {limit})")


def audit_replays(audit: Audit, journal: Journal, actors: Actors, label: str) -> None:
    """A decision sent again with its Idempotency-Key returns the same certificate: every retried one
    and a sample of the others."""
    received = [d for d in journal.decisions if d.tenant == actors.tenant.id]
    chosen = [d for d in received if d.retried] + random.sample(received, min(20, len(received)))
    differ: list[str] = []
    with httpx.Client(base_url=actors.tenant.server.url, timeout=30,
                      headers={"Authorization": f"Bearer {actors.agent_key}"}) as agent:
        for d in chosen:
            reply = agent.post("/v1/decide", json=d.body, headers={"Idempotency-Key": d.key})
            if reply.status_code != 200 or reply.json()["certificate"] != d.certificate or not reply.json()["replayed"]:
                differ.append(f"{d.key}: {reply.status_code} {reply.text[:120]}")
    retried = sum(d.retried for d in received)
    audit.check(f"{label} idempotent-retries", not differ,
                f"{len(chosen) - len(differ)}/{len(chosen)} replays with the same Idempotency-Key gave the same "
                f"certificate ({retried} decisions needed a retry)" + (f"; NOT: {differ[:5]}" if differ else ""))


def audit_approvals(audit: Audit, journal: Journal, actors: Actors, receiver: Receiver, expiring: bool) -> None:
    """Every approval event announced by webhook (with a delivery id), every delivery row delivered,
    and (for the expiry tenant) every approval expired."""
    tenant = actors.tenant.id
    with actors.tenant.owner_session() as owner:
        approvals: list[dict[str, Any]] = []
        before: str | None = None
        while True:
            page = owner.get("/v1/approvals", params={"state": "all", **({"before": before} if before else {})}).json()
            approvals += page["approvals"]
            before = page["next_before"]
            if before is None:
                break
        events = {(a["id"], e["event"]) for a in approvals
                  for e in owner.get(f"/v1/approvals/{a['id']}").json()["events"] if e["event"] in WEBHOOK_EVENTS}
        rows = f"/v1/webhooks/{actors.webhook_id}/deliveries"  # newest first, at most 500 per state
        unsettled = [d for state in ("pending", "failed")
                     for d in owner.get(rows, params={"state": state, "limit": 500}).json()["deliveries"]]
        delivered = owner.get(rows, params={"state": "delivered", "limit": 500}).json()["deliveries"]
    seen = receiver.events(tenant)
    undelivered = sorted(events - {k for k, v in seen.items() if all(v)})
    audit.check(f"{tenant} webhooks-delivered", not undelivered,
                f"{len(events) - len(undelivered)}/{len(events)} approval events arrived with a delivery id "
                f"({sum(len(v) for v in seen.values())} distinct ids)" + (f"; NEVER: {undelivered[:10]}" if undelivered
                                                                         else ""))
    with receiver.lock:
        got_ids = {g["delivery"] for g in receiver.got if g["tenant"] == tenant}
        posts = sum(g["tenant"] == tenant for g in receiver.got)
    rows_bad = [f"{d['id']} {d['event']} {d['state']}" for d in unsettled + delivered if d["id"] not in got_ids
                or d["state"] != "delivered"]
    audit.check(f"{tenant} delivery-rows", not rows_bad,
                f"no outbox row pending or failed; the newest {len(delivered)} delivered rows were all received "
                f"({posts - len(got_ids)} repeated posts a receiver drops by id)" + (f"; NOT: {rows_bad[:10]}"
                                                                                    if rows_bad else ""))
    if expiring:
        states = {a["id"]: a["state"] for a in approvals}
        stuck = sorted(a for a in journal.expiring if states.get(a) != "expired")
        audit.check(f"{tenant} approvals-expired", not stuck,
                    f"{len(journal.expiring) - len(stuck)}/{len(journal.expiring)} approvals nobody voted on expired"
                    + (f"; NOT: {[(a, states.get(a)) for a in stuck[:10]]}" if stuck else ""))


def audit_errors(audit: Audit, journal: Journal, label: str) -> None:
    """No 5xx and no connection error outside the fault windows."""
    outside = [a for a in journal.attempts if (a.status >= 500 or a.status == 0) and not journal.in_window(a)]
    inside = [a for a in journal.attempts if (a.status >= 500 or a.status == 0) and journal.in_window(a)]
    audit.check(f"{label} errors-only-in-fault-windows", not outside,
                f"{len(journal.attempts)} requests; {len(inside)} 5xx/connection errors inside the fault windows, "
                f"{len(outside)} outside" + (f"; OUTSIDE: {[(round(a.at - journal.began, 1), a.method, a.path, a.status, a.detail[:80]) for a in outside[:8]]}"
                                             if outside else ""))
    audit.check(f"{label} no-lost-requests", not journal.lost and not journal.defects,
                "every request was answered in the end" + (f"; LOST: {journal.lost[:8]}" if journal.lost else "")
                + (f"; DEFECTS: {journal.defects[:8]}" if journal.defects else ""))


def wait_settled(actors: list[Actors], journal: Journal, timeout: float) -> None:
    """Until every delivery row is delivered and every expiring approval expired (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = True
        for a in actors:
            with httpx.Client(base_url=a.tenant.server.url, timeout=30,
                              headers={"Authorization": f"Bearer {a.tenant.owner_key}"}) as owner:
                rows = owner.get(f"/v1/webhooks/{a.webhook_id}/deliveries", params={"state": "pending"})
                done &= not rows.json()["deliveries"]
                pending = owner.get("/v1/approvals", params={"state": "pending"}).json()["approvals"]
                done &= not any(p["id"] in journal.expiring for p in pending)
        if done:
            return
        time.sleep(1)


# ------------------------------------------------------------------------------------------ phases


def postgres_phase(tmp: Path, short: bool, audit: Audit) -> None:
    """The PostgreSQL stack: load, faults, audit, then backup and restore."""
    pg = PrivatePostgres(tmp / "postgres")
    pg.start()
    say(f"postgres {pg.bin} on port {pg.port}")
    redis, broker = start_redis(tmp / "redis")
    receiver = Receiver()
    httpd = receiver.start()
    database_url = pg.createdb("licet")
    data_dir = tmp / "data"
    env = {"LICET_DATABASE_URL": database_url, "LICET_DATA_DIR": str(data_dir), "LICET_BROKER_URL": broker,
           "LICET_SWEEP_SECONDS": "2", "LICET_BROKER_VISIBILITY_TIMEOUT": "15", "LICET_WEBHOOK_TIMEOUT_SECONDS": "5",
           "LICET_WEBHOOK_BACKOFF_SECONDS": "0.5", "LICET_WEBHOOK_MAX_ATTEMPTS": "10",
           "LICET_WEBHOOK_PRIVATE_TARGETS": "true", "LICET_STEP_UP_SECONDS": "3600", "LICET_LOG_JSON": "true"}
    celery = Celery(env, tmp)
    journal = Journal()
    api = Api(env, tmp, journal)
    supervisor = threading.Thread(target=api.supervise)
    try:
        api.start()
        supervisor.start()
        url = api.url
        say(f"licet serve --workers 2 at {url}: workers {sorted(api.workers())}")
        celery.start_worker()
        celery.start_beat()
        assert api.process is not None
        server = Server("postgresql", url, database_url, data_dir, api.process)
        main, expiry = actors_for(server, POLICY, receiver), actors_for(server, EXPIRY_POLICY, receiver)
        say(f"tenants {main.tenant.id} (approvals, budget) and {expiry.tenant.id} (approvals expire after "
            f"{EXPIRY_TTL} s)")
        journal.began = time.monotonic()
        stop = threading.Event()
        agents = [threading.Thread(target=load, args=(journal, url, main, expiry, stop)) for _ in range(4)]
        for agent in agents:
            agent.start()
        pause = 3 if short else 20
        time.sleep(pause)
        kill_api_worker_in_burst(journal, api, pg, main, 120 if short else 400)
        time.sleep(pause)
        restart_postgres(journal, pg, url)
        time.sleep(pause)
        kill_celery_worker(journal, celery, receiver)
        time.sleep(pause)
        stop.set()
        for agent in agents:
            agent.join()
        say(f"load done: {len(journal.attempts)} requests, {len(journal.decisions)} decisions; settling")
        wait_settled([main, expiry], journal, 60)
        for window in journal.windows:
            say(f"window {window.name}: {window.start - journal.began:.1f}-{window.end - journal.began:.1f} s "
                f"after the start {window.note}")
        audit.check("postgresql api-up", not journal.abort.is_set(),
                    f"licet serve exited {len(api.exits)} times and was restarted each time"
                    + (f": {api.exits}" if api.exits else ""))
        for actors in (main, expiry):
            audit_log(audit, journal, actors, actors.tenant.id)
            audit_approvals(audit, journal, actors, receiver, expiring=actors is expiry)
        audit_errors(audit, journal, "postgresql")
        backup_and_restore(audit, pg, main, data_dir, tmp, env)
    finally:
        celery.stop()
        api.stop()
        if supervisor.is_alive():
            supervisor.join()
        httpd.shutdown()
        redis.terminate()
        pg.stop()


def backup_and_restore(audit: Audit, pg: PrivatePostgres, main: Actors, data_dir: Path, tmp: Path,
                       env: dict[str, str]) -> None:
    """`pg_dump -Fc` after a checkpoint, restored into a fresh database and served by a fresh server:
    its log extends that checkpoint (consistency proof)."""
    with main.tenant.owner() as owner:
        before = owner.get("/v1/evidence/checkpoint").json()["note"]
        keys = log_keys(owner)
    dump = pg.home / "licet.dump"
    pg.run("pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-Fc", "-f", str(dump), "licet")
    restored_url = pg.createdb("licet_restored")
    pg.run("pg_restore", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "licet_restored", str(dump))
    restored_dir = tmp / "data-restored"  # the keys and the record of signed heads come along, as in a restore
    shutil.copytree(data_dir, restored_dir)
    restored_env = {k: v for k, v in env.items() if k != "LICET_BROKER_URL"}
    process, url = launch(restored_url, restored_dir, tmp / "serve-restored.log", restored_env)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {main.tenant.owner_key}"},
                          timeout=30) as owner:
            after = owner.get("/v1/evidence/checkpoint").json()["note"]
            old, new = parse_checkpoint(before), parse_checkpoint(after)
            proof = owner.get("/v1/evidence/consistency", params={"first": old.size, "second": new.size}).json()
        checks = check_consistency(before, after, [_b64(h) for h in proof["proof"]], keys)
        audit.check("backup-restore same-log", all_ok(checks),
                    f"pg_dump -Fc restored into a fresh database: its checkpoint ({new.size} entries) extends the one "
                    f"taken before the dump ({old.size} entries): " + ", ".join(f"{c.name} {'ok' if c.ok else c.detail}"
                                                                            for c in checks))
    finally:
        process.terminate()
        process.wait(20)


def sqlite_phase(tmp: Path, short: bool, audit: Audit) -> None:
    """The embedded SQLite server with its data on a small tmpfs that fills up under load."""
    volume = tmp / "sqlite-volume"
    volume.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(volume)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        audit.check("sqlite disk-full", False, f"cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root")
        return
    journal = Journal()
    serve = None
    try:
        data_dir = volume / "data"
        database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
        serve, url = launch(database_url, data_dir, tmp / "serve-sqlite.log", {"LICET_STEP_UP_SECONDS": "3600"})
        server = Server("sqlite", url, database_url, data_dir, serve)
        tenant = server.new_tenant()
        tenant.activate(POLICY)
        actors = Actors(tenant, tenant.key("agent", principal_id="agent:payments"), [])
        count = 40 if short else 150
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {actors.agent_key}"}, timeout=30) as agent:
            for _ in range(count):
                decide(journal, agent, actors, transfer(random.randint(1, 20), memo="x" * 200))
            read_evidence(journal, agent, actors)
            ballast = volume / "ballast"
            with journal.window("sqlite-volume-full") as window:
                fill(ballast)
                answers: list[int] = []

                def record(stop: threading.Event) -> None:
                    while not stop.is_set():
                        decide(journal, agent, actors, transfer(random.randint(1, 20), memo="y" * 4000))

                stop = threading.Event()
                loader = threading.Thread(target=record, args=(stop,))
                loader.start()
                time.sleep(3 if short else 8)
                refused = [a.status for a in journal.attempts if a.at >= window.start and a.status >= 500]
                answers += refused
                ballast.unlink()  # room again: the retries in flight go through
                time.sleep(1)
                stop.set()
                loader.join()
                window.note = f"(volume full for the first part; {len(refused)} answers 5xx: {sorted(set(refused))})"
            for _ in range(count):
                decide(journal, agent, actors, transfer(random.randint(1, 20)))
            read_evidence(journal, agent, actors)
        audit.check("sqlite disk-full-refused", bool(answers),
                    f"{len(answers)} decisions refused with {sorted(set(answers))} while the volume was full "
                    "(none answered 200 without being stored: see certificates-in-log)")
        audit_log(audit, journal, actors, "sqlite")
        audit_errors(audit, journal, "sqlite")
    finally:
        if serve is not None:
            serve.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.wait(20)
        subprocess.run(["umount", "-l", str(volume)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the volume holding it has no room left."""
    with path.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 16))
            out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the bounded form the test suite runs (~60-90 s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and its logs")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random load")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the clean-up below still runs
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    tmp = Path(tempfile.mkdtemp(prefix="licet-stack-"))
    os.chmod(tmp, 0o755)  # PostgreSQL's own user reaches its directory inside
    began = time.monotonic()
    say(f"scripts/stack{' --short' if args.short else ''} --seed {seed}: {tmp}")
    audit = Audit()
    try:
        postgres_phase(tmp, args.short, audit)
        say(f"postgresql stack done after {time.monotonic() - began:.0f} s")
        sqlite_phase(tmp, args.short, audit)
    finally:
        if args.keep:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"\n== audit ({time.monotonic() - began:.0f} s, seed {seed}): {len(audit.lines) - len(audit.failed)} "
        f"passed, {len(audit.failed)} failed")
    for name, ok, detail in audit.lines:
        say(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    if audit.failed:
        say(f"LOST OR BROKEN: {', '.join(audit.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
