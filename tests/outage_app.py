"""A Licet API server process (uvicorn, the real app) with test-only switches, for
tests/test_server_outages.py; run as `python -m tests.outage_app PORT` with the server's `LICET_*`
environment, plus:

- `LICET_TEST_OUTAGE`: a path; while a file exists there, every SQL statement fails as a failing disk
  makes SQLite fail (`disk I/O error`, SQLITE_IOERR), on every engine of the server;
- `LICET_TEST_LOST_ACK`: a path; while a file exists there, each COMMIT is carried out and then reported
  as failed, as when the acknowledgement of a COMMIT is lost;
- `GET /test/defect` raises an exception no handler takes (a defect).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import Engine, event

from licet.server.app import create_app
from licet.server.migrations import upgrade
from licet.server.settings import Settings


def disk_error() -> sqlite3.OperationalError:
    """The error SQLite raises when its disk fails."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 10
    error.sqlite_errorname = "SQLITE_IOERR"
    return error


def inject(engine: Engine, outage: Path, lost_ack: Path) -> None:
    """Install both switches on `engine`."""

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*_: Any) -> None:
        if outage.exists():
            raise disk_error()

    @event.listens_for(engine, "commit")
    def _commit(connection: Any) -> None:
        if lost_ack.exists():
            connection.connection.dbapi_connection.commit()  # it happens...
            raise disk_error()  # ...and the caller hears it failed


def main() -> None:
    settings = Settings()
    upgrade(settings.url)
    app = create_app(settings)
    database = app.state.services.db
    for engine in {database.writer.sync_engine, database.reader.sync_engine, *database._plain_engines}:
        inject(engine, Path(os.environ["LICET_TEST_OUTAGE"]), Path(os.environ["LICET_TEST_LOST_ACK"]))

    @app.get("/test/defect")
    async def defect() -> None:
        raise RuntimeError("a defect no handler takes")

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
