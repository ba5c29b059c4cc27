"""Alembic migrations on SQLite and PostgreSQL: up to head, the schema equals the models, data
survives nothing it should not, down to base leaves no tables, and up again works.

PostgreSQL: a fresh database `licet_mig_<xdist worker>` on 127.0.0.1:5432 (or `LICET_TEST_PG`);
unreachable, it skips locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, delete, event, func, insert, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from licet.server import migrations
from licet.server.models import Base, LogHead, SessionContribution, SessionEvent, Tenant
from tests.server_harness import pg_database

BOOKKEEPING = {"alembic_version"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, worker_id: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
        return
    with pg_database(f"licet_mig_{worker_id}") as url:
        yield url


def on_database(url: str, fn: Callable[[Connection], Any], *, commit: bool = False) -> Any:
    """`fn(connection)` on a synchronous view of the database at `url`."""

    async def run() -> Any:
        engine = create_async_engine(url)
        if url.startswith("sqlite"):  # as the server's own connections do
            event.listen(engine.sync_engine, "connect",
                         lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA foreign_keys=ON"))
        try:
            async with engine.connect() as conn:
                result = await conn.run_sync(fn)
                if commit:
                    await conn.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def table_names(url: str) -> set[str]:
    return set(on_database(url, lambda conn: inspect(conn).get_table_names()))


def schema_diff(url: str) -> list[Any]:
    """What alembic autogenerate would add to a migration to bring the database to the models."""
    return list(on_database(url, lambda conn: compare_metadata(
        MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)))


def revision_chain() -> list[tuple[str, str]]:
    """(revision, down revision or "base") from the first migration to head."""
    script = ScriptDirectory.from_config(migrations.alembic_config("sqlite://"))
    chain = [(rev.revision, str(rev.down_revision or "base")) for rev in script.walk_revisions("base", "heads")]
    assert len(script.get_heads()) == 1, f"several migration heads: {script.get_heads()}"
    return list(reversed(chain))


def insert_rows(conn: Connection) -> None:
    now = datetime.now(UTC)
    conn.execute(insert(Tenant).values(id="acme", name="Acme", created_at=now))
    conn.execute(insert(LogHead).values(tenant_id="acme", size=0))
    event_id = conn.execute(insert(SessionEvent).values(
        tenant_id="acme", principal_id="agent:bot", time=1.5, event={"action": "payments.transfer"},
    ).returning(SessionEvent.id)).scalar_one()
    conn.execute(insert(SessionContribution).values(
        event_id=event_id, policy_hash="sha256:00", tenant_id="acme", principal_id="agent:bot", time=1.5,
        contributions={"daily-budget": 10}, relevant=True))


def read_rows(conn: Connection) -> dict[str, Any]:
    return {"tenant": conn.execute(select(Tenant.name, Tenant.created_at)).one(),
            "events": conn.execute(select(func.count()).select_from(SessionEvent)).scalar_one(),
            "contributions": conn.execute(select(SessionContribution.contributions)).scalars().all()}


def test_migrations_up_match_models_and_down_to_nothing(database_url: str) -> None:
    model_tables = set(Base.metadata.tables)

    migrations.upgrade(database_url)
    assert table_names(database_url) - BOOKKEEPING == model_tables
    diff = schema_diff(database_url)
    assert diff == [], f"the models and the migrated schema differ (a model change needs a migration): {diff}"

    on_database(database_url, insert_rows, commit=True)
    rows = on_database(database_url, read_rows)
    assert rows["tenant"].name == "Acme" and rows["tenant"].created_at.tzinfo is not None
    assert rows["events"] == 1 and rows["contributions"] == [{"daily-budget": 10}]
    # the cascade the models declare is in the schema: deleting the event removes its contributions
    on_database(database_url, lambda conn: conn.execute(delete(SessionEvent)), commit=True)
    assert on_database(database_url, read_rows)["contributions"] == []
    on_database(database_url, lambda conn: conn.execute(insert(SessionEvent).values(
        tenant_id="acme", principal_id="agent:bot", time=2.0, event={})), commit=True)

    migrations.downgrade(database_url)  # with rows in the tables
    assert table_names(database_url) - BOOKKEEPING == set()

    migrations.upgrade(database_url)
    assert table_names(database_url) - BOOKKEEPING == model_tables
    assert schema_diff(database_url) == []
    on_database(database_url, insert_rows, commit=True)  # the same ids again: the old rows are gone
    assert on_database(database_url, read_rows)["events"] == 1


def test_session_contributions_get_their_events_tenant_principal_and_time(database_url: str) -> None:
    # Rows stored before 0005 are filled from their events, so budgets read them from the new index.
    migrations.upgrade(database_url, "0004")

    def old_rows(conn: Connection) -> None:
        now = datetime.now(UTC)
        conn.exec_driver_sql("INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', ?)"
                             if database_url.startswith("sqlite") else
                             "INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', $1)", (now,))
        for event_id, (principal, time) in enumerate([("agent:a", 1.5), ("agent:b", 7.25)], start=1):
            conn.exec_driver_sql(f"INSERT INTO session_events (id, tenant_id, principal_id, time, event) "
                                 f"VALUES ({event_id}, 'acme', '{principal}', {time}, '{{}}')")
            conn.exec_driver_sql(f"INSERT INTO session_contributions (event_id, policy_hash, contributions, "
                                 f"relevant) VALUES ({event_id}, 'sha256:00', '{{}}', true)")

    on_database(database_url, old_rows, commit=True)
    migrations.upgrade(database_url)
    rows = on_database(database_url, lambda conn: conn.execute(select(
        SessionContribution.event_id, SessionContribution.tenant_id, SessionContribution.principal_id,
        SessionContribution.time).order_by(SessionContribution.event_id)).all())
    assert [tuple(r) for r in rows] == [(1, "acme", "agent:a", 1.5), (2, "acme", "agent:b", 7.25)]
    migrations.downgrade(database_url, "0004")
    assert on_database(database_url, lambda conn: conn.exec_driver_sql(
        "SELECT count(*) FROM session_contributions").scalar()) == 2


def test_each_migration_steps_up_and_down(database_url: str) -> None:
    """Every revision upgrades from its predecessor and downgrades back to it, in order."""
    chain = revision_chain()
    assert chain, "no migrations"
    for revision, _down in chain:
        migrations.upgrade(database_url, revision)
        assert on_database(database_url, lambda conn: MigrationContext.configure(conn).get_current_revision()) \
            == revision
    for revision, down in reversed(chain):
        assert on_database(database_url, lambda conn: MigrationContext.configure(conn).get_current_revision()) \
            == revision
        migrations.downgrade(database_url, down)
    assert table_names(database_url) - BOOKKEEPING == set()


def licet(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "licet", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def test_licet_migrate_cli_on_sqlite(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # an environment without LICET_* settings, run from elsewhere: the CLI finds its migrations itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICET_")}
    result = licet("migrate", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
    assert table_names(url) - BOOKKEEPING == set(Base.metadata.tables)
    assert schema_diff(url) == []

    again = licet("migrate", "--data-dir", str(data_dir), env=env, cwd=tmp_path)  # idempotent at head
    assert again.returncode == 0, again.stdout + again.stderr

    down = licet("migrate", "--data-dir", str(data_dir), "--revision", "base", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert table_names(url) - BOOKKEEPING == set()
