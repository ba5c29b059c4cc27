"""Fixtures for server tests: real `licet serve` processes on SQLite and on PostgreSQL.

Each backend gets one server process per test session (per xdist worker), started the way an
operator starts it, with its own database (a fresh PostgreSQL database `licet_test_<worker>` on
127.0.0.1:5432, or a SQLite file) migrated by Alembic. Tests isolate themselves by working in a
tenant of their own, provisioned through the server's own library code. Under CI=true an
unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import PAYMENTS

IN_CI = os.environ.get("CI", "").lower() == "true"
# How long a server may take to answer after it is started. Starting imports the whole platform (some
# seconds on a quiet machine; a minute was seen on this 2-core machine at a load of 10).
START_SECONDS = 180
PG_ADMIN = os.environ.get("LICET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")
RP_ID, ORIGIN = "licet.localhost", "https://licet.localhost"  # the WebAuthn relying party of test servers


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_admin(statements: list[str]) -> None:
    """Run `statements` on the PostgreSQL admin database (skips, or under CI fails, if unreachable)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=10)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN}: {exc}")


# Databases are named per test run too, so two runs on one machine (and one PostgreSQL) never drop
# each other's: xdist gives its workers one id per run.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:8]


def run_sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    """One statement on a database itself, as someone with access to it would run it (not through the
    server): what an attacker or the clock would change. The rows it returns."""

    async def run() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def fresh_pg_database(name: str) -> str:
    """A new, empty PostgreSQL database for `name` in this run; its asyncpg URL."""
    pg_admin([f'DROP DATABASE IF EXISTS "{name}_{_RUN}" WITH (FORCE)', f'CREATE DATABASE "{name}_{_RUN}"'])
    host = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host}/{name}_{_RUN}"


def drop_pg_database(name: str) -> None:
    """Drop the database `fresh_pg_database(name)` made."""
    pg_admin([f'DROP DATABASE IF EXISTS "{name}_{_RUN}" WITH (FORCE)'])


@contextmanager
def pg_database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the block (its asyncpg URL), dropped afterwards."""
    url = fresh_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


@dataclass
class Server:
    """A running `licet serve` and what tests need to reach and provision it."""

    backend: str
    url: str
    database_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTP client, authenticated with `key` if given."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def new_tenant(self) -> Tenant:
        """A tenant of its own for one test, with an owner key."""
        from licet.server.services import Services
        from licet.server.settings import Settings
        from licet.server.tenants import NewTenant, create_tenant

        tenant_id = f"t-{uuid.uuid4().hex[:12]}"

        async def provision() -> NewTenant:
            services = Services(Settings(data_dir=self.data_dir, database_url=self.database_url))
            try:
                return await create_tenant(services, tenant_id, tenant_id, owner_email=f"owner@{tenant_id}.example")
            finally:
                await services.db.dispose()

        made = asyncio.run(provision())
        assert made.owner_invitation is not None
        return Tenant(self, tenant_id, made.owner_key, f"owner@{tenant_id}.example", made.owner_invitation)


@dataclass(frozen=True)
class Person:
    """A person of a tenant, signed in with a session that passed TOTP just now."""

    server: Server
    user_id: str
    email: str
    role: str
    password: str
    token: str
    totp_secret: str
    backup_codes: tuple[str, ...]

    @property
    def principal_id(self) -> str:
        return f"user:{self.email}"

    def client(self) -> httpx.Client:
        """A client holding this person's session as a bearer token."""
        return self.server.client(self.token)


@dataclass
class Tenant:
    """A tenant on a test server, with helpers that go through the public API."""

    server: Server
    id: str
    owner_key: str
    owner_email: str
    owner_invitation: str
    _owner: Person | None = None

    def owner(self) -> httpx.Client:
        """A client holding the owner key."""
        return self.server.client(self.owner_key)

    def person(self, role: str = "approver", email: str | None = None, *, mfa: bool = True) -> Person:
        """A new person of `role`, invited by the owner (a person: an API key cannot add people), who
        accepted, enrolled TOTP and (with `mfa`) holds a session that passed it just now."""
        email = email or f"{role}-{uuid.uuid4().hex[:10]}@example.com"
        with self.owner_session() as owner:
            made = owner.post("/v1/users", json={"email": email, "display_name": email.split("@")[0], "role": role})
            assert made.status_code == 201, made.text
        return self._accept(made.json()["user"]["id"], email, role, made.json()["invitation"]["token"], mfa)

    def _accept(self, user_id: str, email: str, role: str, invitation: str, mfa: bool) -> Person:
        import pyotp

        password = f"licet-{uuid.uuid4().hex}"
        with self.server.client() as anonymous:
            accepted = anonymous.post("/v1/auth/invitations/accept", json={"token": invitation, "password": password})
            assert accepted.status_code == 201, accepted.text
        token = accepted.json()["token"]
        secret, codes = "", ()
        if mfa:
            with self.server.client(token) as client:
                secret = client.post("/v1/auth/totp/enrol").json()["secret"]
                confirmed = client.post("/v1/auth/totp/confirm", json={"code": pyotp.TOTP(secret).now()})
                assert confirmed.status_code == 200, confirmed.text
                codes = tuple(confirmed.json()["backup_codes"])
        return Person(self.server, user_id, email, role, password, token, secret, codes)

    def owner_person(self) -> Person:
        """The tenant's first owner, from the invitation the tenant was created with, as a person whose
        session passed MFA: what adding people, key management and policy activation need (the owner
        key, an API key, cannot step up)."""
        if self._owner is None:
            with self.owner() as owner:
                user_id = next(u["id"] for u in owner.get("/v1/users").json()["users"]
                               if u["email"] == self.owner_email)
            self._owner = self._accept(user_id, self.owner_email, "owner", self.owner_invitation, True)
        return self._owner

    def owner_session(self) -> httpx.Client:
        """A client holding `owner_person`'s session."""
        return self.owner_person().client()

    def key(self, role: str = "agent", principal_id: str = "agent:bot", roles: list[str] | None = None,
            **attributes: Any) -> str:
        """A new API key of `role`; its secret."""
        with self.owner_session() as client:
            reply = client.post("/v1/keys", json={
                "name": f"{role} {principal_id}", "role": role, "principal_id": principal_id,
                "principal_roles": roles if roles is not None else ["ops"], "attributes": attributes})
        assert reply.status_code == 201, reply.text
        return str(reply.json()["secret"])

    def activate(self, source: str = PAYMENTS) -> dict[str, Any]:
        """Store `source` as a new version and activate it; the version record."""
        with self.owner_session() as client:
            created = client.post("/v1/policies", json={"source": source})
            assert created.status_code == 201, created.text
            body = created.json()
            reply = client.post(f"/v1/policies/{body['policy']['id']}/versions/{body['version']['number']}/activate",
                                json={"reason": "test"})
            assert reply.status_code == 200, reply.text
        return dict(body)


@contextmanager
def mcp_http_process(command: list[str], port: int, what: str) -> Iterator[str]:
    """`command`, an MCP server on streamable HTTP at `port`; its endpoint once it listens, and the
    process stopped afterwards."""
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + START_SECONDS
    try:
        while True:
            try:
                httpx.post(url, timeout=2)  # any answer (a 4xx here) means it is listening
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"{what} did not start: {process.stderr and process.stderr.read()!r}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def wait_until_ready(process: subprocess.Popen[bytes], url: str, why: Callable[[], str]) -> None:
    """Wait until the server at `url` answers `/readyz`; kill it and fail with `why()` if it exits
    first or takes longer than START_SECONDS."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(why())
        time.sleep(0.2)


def launch(database_url: str, data_dir: Path, log: Path, extra_env: dict[str, str] | None = None,
           args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """`licet serve` on a free port, as an operator starts it (`extra_env` on top of the environment
    below, `args` after the port); returns once `/readyz` answers."""
    port = free_port()
    # Every test signs in from 127.0.0.1: the per-address lock is tested on its own (test_auth.py); the
    # tests' own origin, plain-HTTP cookies and local webhook receivers are the deployment's here.
    env = {**os.environ, "LICET_DATABASE_URL": database_url, "LICET_DATA_DIR": str(data_dir),
           "LICET_LOG_JSON": "true", "LICET_SOURCE_LOCK_FAILURES": "100000", "LICET_RP_ID": RP_ID,
           "LICET_RP_ORIGINS": json.dumps([ORIGIN]), "LICET_COOKIE_SECURE": "false", **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "licet", "serve", "--port", str(port), *args], env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url, lambda: f"licet serve did not start: {log.read_text()}")
    return process, url


def _start(backend: str, tmp: Path, worker: str) -> Server:
    data_dir = tmp / f"data-{backend}"
    database_url = (fresh_pg_database(f"licet_test_{worker}") if backend == "postgresql"
                    else f"sqlite+aiosqlite:///{data_dir / 'licet.db'}")
    process, url = launch(database_url, data_dir, tmp / f"server-{backend}.log")
    return Server(backend, url, database_url, data_dir, process)


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server on each backend."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    running = _start(request.param, tmp_path_factory.mktemp(f"server-{request.param}"), worker)
    yield running
    running.process.terminate()
    running.process.wait(10)


@pytest.fixture
def tenant(server: Server) -> Tenant:
    """A fresh tenant on the server, with the payments test policy active."""
    made = server.new_tenant()
    made.activate()
    return made


def certificate_keys(client: httpx.Client) -> list[Any]:
    """The public keys the server publishes for offline verification."""
    from licet import kernel

    reply = client.get("/v1/evidence/keys")
    assert reply.status_code == 200, reply.text
    return [kernel.parse_public_key(json.dumps(k)) for k in reply.json()["certificate_keys"]]
