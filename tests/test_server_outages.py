"""Outages answered cleanly, and no signed head the disk can take back (issue 26).

- While the database fails, a real uvicorn server under concurrent load on pooled keep-alive
  connections answers every request (200, or 503 with Retry-After), resets none, and recovers by
  itself when the database does: on SQLite (a failing disk, injected at the engine) and on PostgreSQL
  (its backends terminated again and again).
- A defect's 500 leaves the keep-alive connection usable; a COMMIT whose acknowledgement is lost is
  answered "outcome unknown", and a retry with the same Idempotency-Key returns what was recorded.
- A checkpoint is signed only in a transaction whose COMMIT is durable, and the newest one signed per
  tenant is recorded outside the database: a store that lost its tail (an older copy restored) is
  refused at start-up, and a head contradicting a recorded one is never signed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from licet.kernel.checkpoint import parse_checkpoint
from licet.kernel.log import LogError
from licet.server.db import Database, OutcomeUnknown
from licet.server.errors import database_unavailable, unexpected
from licet.server.logstore import DatabaseLogStore, StoreBehindSignedHead, lock_head
from licet.server.migrations import upgrade_async
from licet.server.models import Tenant as TenantRow
from licet.server.routers.evidence import checkpoint_covering
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.time import utcnow
from tests.outage_app import disk_error
from tests.server_harness import (
    Server,
    Tenant,
    free_port,
    launch,
    pg_admin,
    pg_database,
    wait_until_ready,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 8  # concurrent requests, over as many pooled keep-alive connections


# --- the classification of failures ------------------------------------------------------------


class _PgError(Exception):
    """What asyncpg's errors carry (through SQLAlchemy's adapter): a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _sqlite_error(name: str, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name
    return error


def _wrapped(orig: BaseException) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(("error", "unavailable"), [
    (_wrapped(disk_error()), True),
    (_wrapped(_sqlite_error("SQLITE_BUSY", "database is locked")), True),
    (_wrapped(_sqlite_error("SQLITE_CANTOPEN", "unable to open database file")), True),
    (_wrapped(_sqlite_error("SQLITE_ERROR", 'near "SELEC": syntax error')), False),  # our defect
    (_wrapped(_PgError("57P01")), True),  # terminating connection due to administrator command
    (_wrapped(_PgError("08006")), True),  # connection failure
    (_wrapped(_PgError("53300")), True),  # too many connections
    (_wrapped(_PgError("42P01")), False),  # undefined table: a defect or a missing migration
    (IntegrityError("INSERT", {}, _PgError("23505")), False),
    (PoolTimeout("QueuePool limit of size 20 overflow 20 reached"), True),
    (ConnectionRefusedError(111, "Connection refused"), True),
    (RuntimeError("a defect"), False),
])
def test_what_counts_as_the_database_being_unavailable(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable
    answer = unexpected(error, committed=False)
    assert (answer.status, answer.code) == ((503, "unavailable") if unavailable else (500, "internal"))
    assert ("Retry-After" in answer.headers) is unavailable


def test_nothing_is_said_to_be_unrecorded_once_something_may_have_been() -> None:
    lost = unexpected(OutcomeUnknown(disk_error()), committed=False)
    assert (lost.status, lost.code, lost.headers) == (503, "outcome_unknown", {"Retry-After": "2"})
    assert "may have been recorded" in lost.message and "Idempotency-Key" in lost.message
    after_a_commit = unexpected(RuntimeError("a defect"), committed=True)
    assert (after_a_commit.status, after_a_commit.code) == (500, "outcome_unknown")
    assert "nothing" not in after_a_commit.message
    outage_after_a_commit = unexpected(_wrapped(disk_error()), committed=True)
    assert (outage_after_a_commit.status, outage_after_a_commit.code) == (503, "outcome_unknown")


# --- a real server under load while its database fails ------------------------------------------


@dataclass
class Tally:
    """What the clients saw, by phase: answers by (status, code) and transport failures."""

    answers: dict[str, Counter[tuple[int, str]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # answers that break the rules
    connections: set[Any] = field(default_factory=set)  # the connections used (httpcore's streams)

    def count(self, phase: str, status: int, code: str) -> None:
        self.answers.setdefault(phase, Counter())[(status, code)] += 1

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.answers.values()) + len(self.failures)


async def _load(url: str, key: str, phases: list[tuple[str, float, Any]]) -> Tally:
    """CLIENTS concurrent loops of decisions over one pooled client; each phase starts with its action
    (run in a thread) and lasts its seconds."""
    tally = Tally()
    phase = phases[0][0]
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:

        async def loop(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                seen_in = phase
                try:
                    reply = await client.post("/v1/decide", json={"action": "api.read",
                                                                  "resource": f"/api/items/{n}-{i}"})
                except httpx.TransportError as exc:
                    tally.failures.append(f"{seen_in}: {type(exc).__name__}: {exc}")
                    continue
                tally.connections.add(reply.extensions["network_stream"])
                code = reply.json()["error"]["code"] if reply.status_code != 200 else "ok"
                tally.count(seen_in, reply.status_code, code)
                if reply.status_code == 503:
                    if reply.headers.get("retry-after") != "2" or code not in ("unavailable", "outcome_unknown"):
                        tally.problems.append(f"{seen_in}: 503 {code} retry-after={reply.headers.get('retry-after')}")
                elif reply.status_code != 200:
                    tally.problems.append(f"{seen_in}: {reply.status_code} {reply.text[:200]}")

        workers = [asyncio.create_task(loop(n)) for n in range(CLIENTS)]
        for name, seconds, action in phases:
            phase = name
            if action is not None:
                await asyncio.to_thread(action)
            await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*workers)
    return tally


def _report(backend: str, tally: Tally) -> None:
    # The counts go to the test's output (pytest -s, or the report of a failure).
    summary = {phase: {f"{s} {c}": n for (s, c), n in sorted(counts.items())}
               for phase, counts in tally.answers.items()}
    print(f"\n{backend} fault test: {tally.total()} requests, {len(tally.failures)} without an HTTP answer, "
          f"{len(tally.connections)} connections: {json.dumps(summary)}")


def _assert_clean(tally: Tally, outage_phase: str, last_phase: str) -> None:
    assert not tally.failures, tally.failures[:5]
    assert not tally.problems, tally.problems[:5]
    assert tally.answers[outage_phase][(503, "unavailable")] > 0, tally.answers  # the fault did strike
    assert set(tally.answers[last_phase]) == {(200, "ok")}, tally.answers[last_phase]  # recovered by itself
    # Every connection stayed open through the errors: none was replaced after an answer.
    assert len(tally.connections) <= CLIENTS, tally.connections


@dataclass
class OutageServer:
    """tests/outage_app.py running on SQLite, with its switches."""

    server: Server
    outage: Path
    lost_ack: Path
    log: Path

    @contextmanager
    def logged(self) -> Iterator[list[str]]:
        """The lines the server logs during the block (filled when it ends)."""
        start = self.log.stat().st_size
        lines: list[str] = []
        yield lines
        lines += self.log.read_bytes()[start:].decode().splitlines()


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OutageServer]:
    tmp_path = tmp_path_factory.mktemp("outage")
    data_dir = tmp_path / "data"
    database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
    outage, lost_ack, log = tmp_path / "outage", tmp_path / "lost-ack", tmp_path / "server.log"
    port = free_port()
    env = {**os.environ, "LICET_DATABASE_URL": database_url, "LICET_DATA_DIR": str(data_dir),
           "LICET_LOG_JSON": "true", "LICET_TEST_OUTAGE": str(outage), "LICET_TEST_LOST_ACK": str(lost_ack)}
    data_dir.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "tests.outage_app", str(port)], cwd=ROOT, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, lambda: f"the outage server did not start: {log.read_text()}")
        yield OutageServer(Server("sqlite", url, database_url, data_dir, process), outage, lost_ack, log)
    finally:
        process.terminate()
        process.wait(10)


def _tenant(server: Server) -> Tenant:
    made = server.new_tenant()
    made.activate()
    return made


def test_a_failing_sqlite_disk_is_answered_503_on_live_connections(outage_server: OutageServer) -> None:
    tenant = _tenant(outage_server.server)
    key = tenant.key(principal_id="agent:load", roles=["ops"])
    switch = outage_server.outage
    with outage_server.logged() as lines:
        tally = asyncio.run(_load(outage_server.server.url, key, [
            ("before", 1.5, None), ("outage", 2.5, switch.touch), ("after", 1.0, switch.unlink),
            ("recovered", 1.5, None)]))
    _report("sqlite", tally)
    _assert_clean(tally, "outage", "recovered")
    with outage_server.server.client() as client:
        assert client.get("/readyz").status_code == 200
    # Each error was logged once, as JSON, and uvicorn never met an exception of its own.
    assert not [line for line in lines if "Exception in ASGI application" in line]
    logged = [json.loads(line) for line in lines if '"unhandled"' in line]
    assert len(logged) == sum(n for counts in tally.answers.values() for (s, _), n in counts.items() if s != 200)
    assert {entry["code"] for entry in logged} == {"unavailable"}


def test_a_defect_answers_500_on_a_connection_that_stays_usable(outage_server: OutageServer) -> None:
    with outage_server.logged() as lines, httpx.Client(base_url=outage_server.server.url,
                                                       limits=httpx.Limits(max_connections=1)) as client:
        failed = client.get("/test/defect")
        after = client.get("/healthz")
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal"
    assert "connection" not in failed.headers  # no `Connection: close`: the server keeps it open
    assert after.status_code == 200
    assert failed.extensions["network_stream"] is after.extensions["network_stream"]  # one connection served both
    logged = [json.loads(line) for line in lines if '"unhandled"' in line]
    assert [(e["route"], e["status"], e["error"]) for e in logged] == [("/test/defect", 500, "RuntimeError")]
    assert "a defect no handler takes" in logged[0]["exception"]  # a defect's traceback is kept


def test_a_lost_commit_acknowledgement_is_answered_outcome_unknown(outage_server: OutageServer) -> None:
    tenant = _tenant(outage_server.server)
    key = tenant.key(principal_id="agent:ack", roles=["ops"])
    request = {"action": "api.read", "resource": "/api/items/1"}
    headers = {"Idempotency-Key": f"ack-{uuid.uuid4().hex}"}
    with outage_server.server.client(key) as client:
        outage_server.lost_ack.touch()
        try:
            lost = client.post("/v1/decide", json=request, headers=headers)
        finally:
            outage_server.lost_ack.unlink()
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"]["code"] == "outcome_unknown"
        assert lost.headers["retry-after"] == "2"
        assert "nothing" not in lost.json()["error"]["message"]
        retried = client.post("/v1/decide", json=request, headers=headers)
        assert retried.status_code == 200, retried.text
        # The COMMIT had happened: the retry returns that decision, it does not make a second one.
        assert retried.json()["replayed"] is True
        assert retried.json()["log_index"] == 0


@pytest.mark.usefixtures("pg_up")
def test_terminated_postgresql_backends_are_answered_503_on_live_connections(tmp_path: Path) -> None:
    with pg_database(f"licet_outage_{os.getpid()}") as database_url:
        name = database_url.rsplit("/", 1)[1]
        data_dir = tmp_path / "data"
        process, url = launch(database_url, data_dir, tmp_path / "server.log")
        try:
            tenant = _tenant(Server("postgresql", url, database_url, data_dir, process))
            key = tenant.key(principal_id="agent:load", roles=["ops"])
            def terminate_for(seconds: float) -> None:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    pg_admin([f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                              "AND pid <> pg_backend_pid()"])
                    time.sleep(0.05)

            tally = asyncio.run(_load(url, key, [
                ("before", 1.5, None), ("outage", 0.5, lambda: terminate_for(2.5)), ("recovered", 1.5, None)]))
            _report("postgresql", tally)
            _assert_clean(tally, "outage", "recovered")
            assert not [line for line in (tmp_path / "server.log").read_text().splitlines()
                        if "Exception in ASGI application" in line]
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture
def pg_up() -> None:
    pg_admin(["SELECT 1"])  # skips (or under CI fails) without PostgreSQL


# --- durable heads -------------------------------------------------------------------------------


def _decide(client: httpx.Client, count: int) -> None:
    for _ in range(count):
        reply = client.post("/v1/decide", json={"action": "api.read", "resource": f"/api/items/{uuid.uuid4().hex}"})
        assert reply.status_code == 200, reply.text


def test_a_store_that_lost_signed_entries_is_refused_and_never_signs_over_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / "licet.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    process, url = launch(database_url, data_dir, tmp_path / "first.log")
    try:
        tenant = _tenant(Server("sqlite", url, database_url, data_dir, process))
        key = tenant.key(principal_id="agent:tail", roles=["ops"])
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            _decide(client, 3)
            assert client.get("/v1/evidence/checkpoint").json()["size"] == 3
            with sqlite3.connect(database) as live, sqlite3.connect(tmp_path / "older.db") as older:
                live.backup(older)  # a consistent copy, as `sqlite3 licet.db .backup` makes
            _decide(client, 3)
            served = client.get("/v1/evidence/checkpoint").json()
        assert served["size"] == 6
    finally:
        process.terminate()
        process.wait(10)
    record = Settings(database_url=database_url).signed_heads_path
    assert parse_checkpoint(json.loads(record.read_text())["heads"][tenant.id]).size == 6

    # The disk gives back an older state: the older copy, without the WAL it never had.
    for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copy(tmp_path / "older.db", database)
    with pytest.raises(RuntimeError) as refused:
        launch(database_url, data_dir, tmp_path / "second.log")
    said = str(refused.value)
    assert f"tenant {tenant.id}: a checkpoint of 6 entries was signed, but the database holds 3" in said
    assert str(record) in said and "Restore the database" in said

    # Nor does anything that reaches the store behind the server's back sign over the lost entries.
    async def append_and_sign() -> None:
        services = Services(Settings(data_dir=data_dir, database_url=database_url))
        try:
            def append(session: Session) -> None:
                connection = session.connection()
                store = DatabaseLogStore(connection, tenant.id, lock_head(connection, tenant.id))
                for n in range(3):
                    services.transparency_log(store).append(f"another entry {n}".encode())

            await services.db.run_write(append)
            with pytest.raises(StoreBehindSignedHead, match="another root: the log was rewritten"):
                await checkpoint_covering(services, tenant.id, 6)
        finally:
            await services.db.dispose()

    asyncio.run(append_and_sign())

    # The operator's way out, as the message says: move the record aside, knowingly.
    record.rename(tmp_path / "signed-heads.moved")
    process, url = launch(database_url, data_dir, tmp_path / "third.log")
    process.terminate()
    process.wait(10)


def _keep_a_checkpoint(session: Session) -> None:
    session.add(TenantRow(id="acme", name="acme", created_at=utcnow()))
    session.flush()
    DatabaseLogStore(session.connection(), "acme").save_checkpoint(0, "a note")


def test_a_checkpoint_is_signed_only_in_a_durable_transaction_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"

    async def run() -> None:
        await upgrade_async(url)
        database = Database(url, sqlite_synchronous="NORMAL")
        try:
            # Decisions' transactions (NORMAL) cannot keep a checkpoint...
            with pytest.raises(LogError, match="COMMIT is synced"):
                await database.run_write(_keep_a_checkpoint)
            # ...the transactions that sign them (`write`, FULL) can.
            async with database.write() as session:
                await session.run_sync(_keep_a_checkpoint)
        finally:
            await database.dispose()

    asyncio.run(run())


@pytest.mark.usefixtures("pg_up")
def test_a_checkpoint_commit_waits_for_the_wal_on_postgresql_with_synchronous_commit_off() -> None:
    with pg_database(f"licet_durable_{os.getpid()}") as url:
        name = url.rsplit("/", 1)[1]
        pg_admin([f'ALTER DATABASE "{name}" SET synchronous_commit = off'])

        async def run() -> tuple[str, str]:
            await upgrade_async(url)
            database = Database(url)
            try:
                async with database.write() as session:
                    before = (await session.execute(text("SHOW synchronous_commit"))).scalar_one()
                    await session.run_sync(_keep_a_checkpoint)
                    after = (await session.execute(text("SHOW synchronous_commit"))).scalar_one()
                async with database.read() as session:  # SET LOCAL: the next transaction is as configured
                    later = (await session.execute(text("SHOW synchronous_commit"))).scalar_one()
                assert later == "off"
                return before, after
            finally:
                await database.dispose()

        assert asyncio.run(run()) == ("off", "on")


class _LatePostgres:
    """A port that refuses connections until `open()`, then forwards them to the test PostgreSQL: a
    database that is down while a server starts, and comes back."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                try:
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                finally:
                    sink.close()

            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer),
                                 return_exceptions=True)

        self._server = await asyncio.start_server(forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_a_server_starting_while_postgresql_is_down_waits_for_it(tmp_path: Path) -> None:
    # scripts/stack found it: a worker uvicorn restarted while PostgreSQL was down failed its start-up
    # at once, and uvicorn's parent then stopped the healthy workers too.
    from licet.server.app import create_app

    with pg_database("licet_late_start") as url:
        asyncio.run(upgrade_async(url))
        real = make_url(url)
        late = _LatePostgres(real.host or "127.0.0.1", real.port or 5432)
        app = create_app(Settings(data_dir=tmp_path, startup_database_wait_seconds=30, database_url=real.set(
            host="127.0.0.1", port=late.port).render_as_string(hide_password=False)))

        async def start() -> float:
            started = time.monotonic()
            async with app.router.lifespan_context(app):
                return time.monotonic() - started

        async def scenario() -> float:
            starting = asyncio.ensure_future(start())
            await asyncio.sleep(2)
            assert not starting.done(), starting.exception() if starting.done() else None
            await late.open()
            try:
                return await asyncio.wait_for(starting, 60)
            finally:
                await late.close()

        assert asyncio.run(scenario()) >= 2
