"""The approvals flow in a real browser against `licet serve --demo` on PostgreSQL (a fresh database,
migrated and seeded by the server itself): the same 2-of-2 quorum flow as tests/test_dashboard.py's
SQLite run, live queue, step-up and the agent's permit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.server_harness import pg_database
from tests.test_dashboard import Demo, browser, demo_server, quorum_flow

__all__ = ["browser"]  # pytest fixture, re-exported so this module gets its own browser


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with pg_database("licet_dashboard") as url, \
            demo_server(tmp_path_factory.mktemp("dashboard-pg"), LICET_DATABASE_URL=url) as server:
        yield server


# `demo` before `browser`: the database is made and dropped (asyncio.run) outside Playwright's event loop.
def test_two_approvers_reach_the_quorum_live_on_postgresql(demo: Demo, browser: Any) -> None:
    assert not (demo.log.parent / "licet.db").exists(), "the server fell back to SQLite"
    quorum_flow(browser, demo)
