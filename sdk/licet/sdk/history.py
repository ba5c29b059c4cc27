"""Local mode's session history: the permitted requests that invariants (budgets, counts, flows)
read, kept in a SQLite file beside the local evidence log, so a restarted agent, or another process
deciding with the same log directory, counts what was already spent.

The shape is the server's (`server/licet/server/history.py`): each permitted request, normalised as
decided, with its principal and time (`events`); and per policy version what each event adds to the
invariants it matches (`contributions`, from `kernel.event_contributions`), computed once, so a
decision aggregates stored numbers instead of re-evaluating the history. `coverage` remembers, per
principal and policy version, the last event whose contributions are stored.

A decision is one `BEGIN IMMEDIATE` transaction (`SessionHistory.transaction`) that reads the state,
in which the caller decides and logs, and that records the permitted event before it commits:
deciders sharing the file, threads or processes, take turns, so two of them cannot both spend the
last of a budget.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from licet import kernel

HISTORY_FILE = "session.sqlite3"
SCHEMA_VERSION = "1"
# A decider holds the file while Z3 decides; others wait rather than fail.
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, principal TEXT NOT NULL, time REAL NOT NULL, event TEXT NOT NULL,
    log_index INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_principal ON events (principal, id);
CREATE TABLE IF NOT EXISTS contributions (
    event_id INTEGER NOT NULL REFERENCES events (id), policy_hash TEXT NOT NULL, principal TEXT NOT NULL,
    time REAL NOT NULL, contributions TEXT NOT NULL, relevant INTEGER NOT NULL,
    PRIMARY KEY (event_id, policy_hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS contributions_in_window ON contributions (principal, policy_hash, relevant, time);
CREATE TABLE IF NOT EXISTS coverage (
    principal TEXT NOT NULL, policy_hash TEXT NOT NULL, through INTEGER NOT NULL,
    PRIMARY KEY (principal, policy_hash)
) WITHOUT ROWID;
"""


class HistoryError(Exception):
    """The history file cannot be used (another schema, or used outside a transaction)."""


class SessionHistory:
    """The permitted requests of local mode's principals, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One connection shared under a lock: a `LocalLicet` may be used from several threads.
        self._lock = threading.RLock()
        self._holder: int | None = None  # the thread inside `transaction()`
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded spend survives a power cut
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.executescript(_SCHEMA)  # idempotent; outside a transaction, which executescript would end
        with self.transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: history schema {row[0]}, this Licet reads {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the file (every other decider waits) until the block ends; commit what it recorded,
        or nothing if it raised."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._holder = threading.get_ident()
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._holder = None
            self._db.execute("COMMIT")

    def state(self, principal: str, policy: kernel.Policy, at: float) -> dict[str, Any]:
        """The principal's session state for `policy` at `at`, as a kernel summary (in a transaction:
        contributions not yet stored for this policy version are computed and stored)."""
        self._check_open()
        if not policy.invariants:
            return {"summary": {}}
        db = self._db
        covered = db.execute("SELECT through FROM coverage WHERE principal = ? AND policy_hash = ?",
                             (principal, policy.hash)).fetchone()
        unseen = db.execute(
            "SELECT id, time, event FROM events e WHERE principal = ? AND id > ? AND NOT EXISTS "
            "(SELECT 1 FROM contributions c WHERE c.event_id = e.id AND c.policy_hash = ?) ORDER BY id",
            (principal, covered[0] if covered else 0, policy.hash)).fetchall()
        for event_id, time, event in unseen:
            self._contribute(policy, principal, event_id, time, kernel.recorded_request(json.loads(event)))
        last = db.execute("SELECT MAX(id) FROM events WHERE principal = ?", (principal,)).fetchone()[0]
        if last is not None:
            db.execute("INSERT OR REPLACE INTO coverage (principal, policy_hash, through) VALUES (?, ?, ?)",
                       (principal, policy.hash, last))
        windows = [inv.window_seconds for inv in policy.invariants]
        since = at - max(w for w in windows if w is not None) if None not in windows else -1.0
        rows = db.execute("SELECT time, contributions FROM contributions WHERE principal = ? AND policy_hash = ? "
                          "AND relevant AND time > ?", (principal, policy.hash, since))
        return {"summary": kernel.summary_from_contributions(policy, ((t, json.loads(c)) for t, c in rows), at)}

    def record(self, principal: str, at: float, event: kernel.NormalisedRequest, policy: kernel.Policy,
               log_index: int) -> None:
        """Keep a permitted request (normalised, as decided) with its contributions under `policy` (in a
        transaction: it commits with the decision)."""
        self._check_open()
        event_id = self._db.execute(
            "INSERT INTO events (principal, time, event, log_index) VALUES (?, ?, ?, ?) RETURNING id",
            (principal, at, json.dumps(event.to_json(), sort_keys=True), log_index)).fetchone()[0]
        if policy.invariants:
            self._contribute(policy, principal, event_id, at, event)

    def _contribute(self, policy: kernel.Policy, principal: str, event_id: int, time: float,
                    event: kernel.NormalisedRequest) -> None:
        found = kernel.event_contributions(policy, event)
        self._db.execute(
            "INSERT INTO contributions (event_id, policy_hash, principal, time, contributions, relevant) "
            "VALUES (?, ?, ?, ?, ?, ?)", (event_id, policy.hash, principal, time, json.dumps(found), bool(found)))

    def _check_open(self) -> None:
        if self._holder != threading.get_ident():
            raise HistoryError("the session history is read and written only inside `transaction()`")
