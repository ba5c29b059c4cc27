"""SQLite-backed evidence log store: one file per log, inside a log directory.

Implements `kernel.log.LogStore`. Tables:

- `leaves(idx, hash, data)`: each entry and its RFC 6962 leaf hash (the level-0 nodes);
- `nodes(level, idx, hash)`: every complete subtree above the leaves, so a proof reads O(log n)
  rows, never the log;
- `checkpoints(size, note)`: the signed checkpoints issued;
- `meta(key, value)`: the log's origin and checkpoint verifier key.

An append is one `BEGIN IMMEDIATE` transaction that first checks the log still has the size the
appender started from, so concurrent appenders (threads or processes) are serialised and never
interleave. WAL journaling; `synchronous=FULL` by default so an entry reported appended survives a
power cut (`durable=False` trades that for speed, e.g. in benchmarks of the hashing path).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from licet.kernel.log import (
    ChunkAudit,
    ChunkMapper,
    CompletedNode,
    EntryCheck,
    LogConflict,
    LogError,
    TransparencyLog,
    audit_chunk,
)
from licet.kernel.merkle import NodeId

LOG_FILE = "log.sqlite3"
SCHEMA_VERSION = "1"
READ_MMAP_BYTES = 1 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""


class SQLiteLogStore:
    """A `kernel.log.LogStore` in one SQLite file."""

    def __init__(self, path: str | Path, *, durable: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        # One connection shared under a lock: the store may be used from several threads, and
        # sqlite3 connections must not be used concurrently.
        self._lock = threading.RLock()
        if read_only:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=10000")
            # Readers (audits) stream the whole file: memory-mapped pages save a copy per page.
            # Safe here because the log file only ever grows (nothing vacuums or truncates it).
            self._db.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
            return
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._db.executescript(_SCHEMA)
            found = self.get_meta("schema")
            if found is None:
                self.set_meta("schema", SCHEMA_VERSION)
            elif found != SCHEMA_VERSION:
                raise LogError(f"{self.path}: log schema {found}, this Licet reads {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> SQLiteLogStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- LogStore ---------------------------------------------------------------------------

    def size(self) -> int:
        """Number of leaves stored."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()
        return int(row[0])

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Store a batch atomically; `LogConflict` unless the log has exactly `start` leaves."""
        leaf_hashes = [value for level, _index, value in nodes if level == 0]
        if len(leaf_hashes) != len(leaves):
            raise LogError(f"{len(leaves)} leaves but {len(leaf_hashes)} leaf hashes")
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()
                if int(row[0]) != start:
                    raise LogConflict(f"append at {start} but the log has {row[0]} entries")
                db.executemany(
                    "INSERT INTO leaves (idx, hash, data) VALUES (?, ?, ?)",
                    zip(range(start, start + len(leaves)), leaf_hashes, leaves, strict=True),
                )
                db.executemany(
                    "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                    [node for node in nodes if node[0]],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """The hashes of these complete subtrees, in order."""
        out: list[bytes] = []
        with self._lock:
            db = self._db
            for level, index in ids:
                if level == 0:
                    row = db.execute("SELECT hash FROM leaves WHERE idx = ?", (index,)).fetchone()
                else:
                    row = db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)).fetchone()
                if row is None:
                    raise LogError(f"node ({level}, {index}) is not stored")
                out.append(row[0])
        return out

    def read_level(self, level: int, start: int, end: int) -> list[bytes]:
        """The stored hashes of nodes `start..end-1` of one level."""
        with self._lock:
            if level == 0:
                cursor = self._db.execute(
                    "SELECT hash FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
                )
            else:
                cursor = self._db.execute(
                    "SELECT hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                    (level, start, end),
                )
            return [row[0] for row in cursor]

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """`(leaf hash, leaf)` of entries `start..end-1`."""
        with self._lock:
            return self._db.execute(
                "SELECT hash, data FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?, ?)", (size, note))

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint, smallest size first."""
        with self._lock:
            rows = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(size), str(note)) for size, note in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The kept checkpoint of the largest size, if any."""
        with self._lock:
            row = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    # --- log metadata ----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A metadata value (`origin`, `vkey`, `schema`)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def open_log(
    directory: str | Path, origin: str | None = None, *, create: bool = True, durable: bool = True
) -> TransparencyLog:
    """Open (or create) the log kept in `directory`; its origin is fixed at creation."""
    path = Path(directory)
    if not (path / LOG_FILE).exists():
        if not create:
            raise LogError(f"no evidence log in {path} (expected {path / LOG_FILE})")
        if origin is None:
            raise LogError(f"{path}: a new log needs an origin (e.g. example.com/licet/<tenant>)")
        path.mkdir(parents=True, exist_ok=True)
    store = SQLiteLogStore(path / LOG_FILE, durable=durable)
    try:
        stored = store.get_meta("origin")
        if stored is None:
            if origin is None:
                raise LogError(f"{path}: the log has no origin; pass one")
            log = TransparencyLog(store, origin)  # validates the origin before it is kept
            store.set_meta("origin", origin)
            return log
        if origin is not None and origin != stored:
            raise LogError(f"{path} holds the log {stored!r}, not {origin!r}")
        return TransparencyLog(store, stored)
    except BaseException:
        store.close()
        raise


# --- parallel audit ------------------------------------------------------------------------------
# Hashing dominates an audit and hashlib holds the GIL for certificate-sized inputs, so whole
# chunks are audited in worker processes, each reading the SQLite file through its own read-only
# connection; the parent only combines chunk roots and checks checkpoints.

_worker: tuple[SQLiteLogStore, EntryCheck | None] | None = None


def _start_worker(path: str, check_entry: EntryCheck | None) -> None:
    global _worker  # one store per worker process, opened once
    _worker = (SQLiteLogStore(path, read_only=True), check_entry)


def _ready() -> bool:
    return _worker is not None


def _audit_in_worker(spec: tuple[int, int]) -> ChunkAudit:
    if _worker is None:
        raise LogError("audit worker was not initialised")
    store, check_entry = _worker
    return audit_chunk(store, spec[0], spec[1], check_entry)


@contextmanager
def parallel_chunk_mapper(
    path: str | Path, processes: int, check_entry: EntryCheck | None = None
) -> Iterator[ChunkMapper]:
    """A `kernel.log.ChunkMapper` auditing chunks of the SQLite log at `path` in `processes`
    worker processes (`check_entry` must be picklable: a module-level function)."""
    # Fork is cheap (no re-import) but unsafe once the parent runs other threads (a lock held
    # at fork time stays held in the child): then spawn. Open this before any progress display.
    forkable = "fork" in multiprocessing.get_all_start_methods()
    method = "fork" if forkable and threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context(method),
        initializer=_start_worker,
        initargs=(str(path), check_entry),
    ) as pool:
        # Start every worker now, while the parent is still single-threaded.
        for future in [pool.submit(_ready) for _ in range(processes)]:
            future.result()

        def mapper(specs: Sequence[tuple[int, int]]) -> Iterable[ChunkAudit]:
            return pool.map(_audit_in_worker, specs)

        yield mapper
