"""The evidence log's database store: `kernel.log.LogStore` over the server's tables.

It works on a synchronous SQLAlchemy connection, inside the caller's transaction (the server reaches
it through `AsyncSession.run_sync`), so a certificate's leaf, its row and the session-state update
commit together or not at all. The caller holds the tenant's log-head lock (`lock_head`), which
serialises appends per tenant across processes.

A signed checkpoint is a promise that the log will only ever extend it, so two rules keep the store
from taking one back (docs/production.md, "Durability"): the transaction that keeps a checkpoint commits
durably, which also makes every append before it durable (`save_checkpoint`); and the newest checkpoint
signed for each tenant is also kept outside the database (`SignedHeads`), so a store that lost its tail
anyway (an older copy restored, a disk that lied about a sync) is refused at start-up instead of
re-appending at indices whose head clients already hold.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import BindParameter, Connection, Table, bindparam, func, insert, inspect, select, text, tuple_, update
from sqlalchemy.orm import Session

from licet.kernel.checkpoint import parse_checkpoint
from licet.kernel.log import CompletedNode, LogConflict, LogError, MemoryLogStore, TransparencyLog
from licet.kernel.merkle import NodeId
from licet.server.db import transaction_state
from licet.server.files import replace_durably
from licet.server.models import Base, LogCheckpoint, LogHead, LogLeaf, LogNode
from licet.server.time import utcnow

_tables = Base.metadata.tables
_leaves = _tables[LogLeaf.__tablename__]
_nodes = _tables[LogNode.__tablename__]
_heads = _tables[LogHead.__tablename__]
_checkpoints = _tables[LogCheckpoint.__tablename__]
_TENANT: BindParameter[str] = bindparam("tenant")
_HEAD_SIZE = select(_heads.c.size).where(_heads.c.tenant_id == _TENANT)
_LOCK_HEAD = _HEAD_SIZE.with_for_update()
_MOVE_HEAD = update(_heads).where(_heads.c.tenant_id == _TENANT, _heads.c.size == bindparam("start")).values(
    size=bindparam("end"))
_LEAF_HASHES = select(_leaves.c.idx, _leaves.c.hash).where(
    _leaves.c.tenant_id == _TENANT, _leaves.c.idx.in_(bindparam("ids", expanding=True)))
# PostgreSQL with synchronous_commit off acknowledges a COMMIT before its WAL is on disk; this
# transaction waits for it (and so for every earlier commit's WAL). `local` and stricter settings
# already wait, and stay as they are.
_DURABLE_COMMIT_PG = text("SELECT set_config('synchronous_commit', 'on', true) "
                          "WHERE current_setting('synchronous_commit') = 'off'")
_NEWEST_CHECKPOINTS = select(_checkpoints.c.tenant_id, _checkpoints.c.note).where(
    tuple_(_checkpoints.c.tenant_id, _checkpoints.c.size).in_(
        select(_checkpoints.c.tenant_id, func.max(_checkpoints.c.size)).group_by(_checkpoints.c.tenant_id)))
_SQLITE_SYNCED = 2  # PRAGMA synchronous: FULL (2) or EXTRA (3) sync the WAL at each COMMIT


def create_head(connection: Connection, tenant_id: str) -> None:
    """Start a tenant's (empty) log; done once, when the tenant is created."""
    connection.execute(insert(_heads).values(tenant_id=tenant_id, size=0))


def lock_head(connection: Connection, tenant_id: str) -> int:
    """Take the tenant's append lock (a row lock on PostgreSQL; SQLite's writer lock is already
    held by `BEGIN IMMEDIATE`) and return the log's size."""
    query = _HEAD_SIZE if connection.dialect.name == "sqlite" else _LOCK_HEAD
    size = connection.execute(query, {"tenant": tenant_id}).scalar()
    if size is None:
        raise LogError(f"tenant {tenant_id} has no evidence log")
    return int(size)


class PendingAppends:
    """The log appends of one write transaction, and the certificate rows that go with them, kept in
    memory and written with one statement per table just before the transaction commits
    (`db.transaction_state`): the decisions committed together (server/db.py) then cost a few statements
    per group, not several each, while the tenant's log is locked. Nothing in a write transaction reads
    these rows except through `DatabaseLogStore`, which writes them first (`write`)."""

    TABLES = (_leaves, _nodes, _tables["certificates"], _tables["certificate_rules"])  # in foreign-key order

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, int]] = {}  # tenant: (size stored, size once written)
        self.rows: dict[Table, list[dict[str, Any]]] = {table: [] for table in self.TABLES}

    def lock(self, connection: Connection, tenant_id: str) -> int:
        """`lock_head`, once per transaction; the log's size with the appends pending."""
        if tenant_id not in self.heads:
            size = lock_head(connection, tenant_id)
            self.heads[tenant_id] = (size, size)
        return self.heads[tenant_id][1]

    def append(self, tenant_id: str, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Keep leaves and the subtrees they complete; `LogConflict` unless the log (with what is
        pending) has exactly `start` leaves."""
        if tenant_id not in self.heads:
            raise LogError(f"an append to the log of tenant {tenant_id} without its lock")
        stored, size = self.heads[tenant_id]
        if size != start:
            raise LogConflict(f"append at {start} but the log has {size} entries")
        hashes = [value for level, _index, value in nodes if level == 0]
        if len(hashes) != len(leaves):
            raise LogError(f"{len(leaves)} leaves but {len(hashes)} leaf hashes")
        self.rows[_leaves].extend({"tenant_id": tenant_id, "idx": start + i, "hash": h, "data": leaf}
                                  for i, (h, leaf) in enumerate(zip(hashes, leaves, strict=True)))
        self.rows[_nodes].extend({"tenant_id": tenant_id, "level": level, "idx": index, "hash": value}
                                 for level, index, value in nodes if level)
        self.heads[tenant_id] = (stored, start + len(leaves))

    def add(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Keep rows of another of `TABLES` (a certificate and its rules)."""
        self.rows[table].extend(rows)

    def write(self, connection: Connection) -> None:
        """Move each head, checking it is where it was locked; then insert the rows kept."""
        for tenant, (stored, size) in self.heads.items():
            if size == stored:
                continue
            moved = connection.execute(_MOVE_HEAD, {"tenant": tenant, "start": stored, "end": size})
            if moved.rowcount != 1:
                raise LogConflict(f"append at {stored} but the log of tenant {tenant} has another size")
            self.heads[tenant] = (size, size)
        for table, rows in self.rows.items():
            if rows:
                connection.execute(insert(table), rows)
                rows.clear()


def pending_appends(session: Session) -> PendingAppends:
    """The appends of this write transaction (`PendingAppends`)."""
    return transaction_state(session, PendingAppends)


def locked_store(session: Session, tenant_id: str) -> DatabaseLogStore:
    """The tenant's log in this write transaction, its append lock taken (once per transaction); its
    appends are written just before the transaction commits."""
    pending = pending_appends(session)
    connection = session.connection()
    pending.lock(connection, tenant_id)
    return DatabaseLogStore(connection, tenant_id, pending=pending)


class DatabaseLogStore:
    """One tenant's log in the server database (implements `kernel.log.LogStore`): its appends go
    straight to the database, or with `pending` (`locked_store`) wait for the transaction's commit."""

    def __init__(self, connection: Connection, tenant_id: str, size: int | None = None, *,
                 pending: PendingAppends | None = None) -> None:
        self.connection = connection
        self.tenant_id = tenant_id
        self._size = size  # known when the caller holds the append lock (`lock_head`)
        self._pending = pending

    def size(self) -> int:
        """Number of leaves stored (pending appends included)."""
        if self._pending is not None and self.tenant_id in self._pending.heads:
            return self._pending.heads[self.tenant_id][1]
        if self._size is not None:
            return self._size
        found = self.connection.execute(_HEAD_SIZE, {"tenant": self.tenant_id}).scalar()
        return int(found or 0)

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Store a batch; `LogConflict` unless the log has exactly `start` leaves."""
        if self._pending is not None:
            self._pending.append(self.tenant_id, start, leaves, nodes)
            return
        now = PendingAppends()
        now.heads[self.tenant_id] = (start, start)  # `write` checks the stored head is there
        try:
            now.append(self.tenant_id, start, leaves, nodes)
            now.write(self.connection)
        except LogConflict:
            self._size = None
            raise
        if self._size is not None:
            self._size = start + len(leaves)

    def _written(self) -> None:
        # Reads see the appends pending in this transaction.
        if self._pending is not None:
            self._pending.write(self.connection)

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """The hashes of these complete subtrees, in order (two queries, whatever the count)."""
        self._written()
        found: dict[NodeId, bytes] = {}
        leaves = [index for level, index in ids if level == 0]
        if leaves:
            rows = self.connection.execute(_LEAF_HASHES, {"tenant": self.tenant_id, "ids": leaves})
            found.update(((0, int(row[0])), bytes(row[1])) for row in rows)
        upper = [(level, index) for level, index in ids if level]
        if upper:
            nodes = self.connection.execute(select(_nodes.c.level, _nodes.c.idx, _nodes.c.hash).where(
                _nodes.c.tenant_id == self.tenant_id, tuple_(_nodes.c.level, _nodes.c.idx).in_(upper)))
            found.update(((int(row[0]), int(row[1])), bytes(row[2])) for row in nodes)
        missing = [node for node in ids if node not in found]
        if missing:
            raise LogError(f"node {missing[0]} is not stored")
        return [found[node] for node in ids]

    def read_level(self, level: int, start: int, end: int) -> list[bytes]:
        """The stored hashes of nodes `start..end-1` of one level."""
        self._written()
        if level == 0:
            query = select(_leaves.c.hash).where(_leaves.c.tenant_id == self.tenant_id, _leaves.c.idx >= start,
                                                 _leaves.c.idx < end).order_by(_leaves.c.idx)
        else:
            query = select(_nodes.c.hash).where(_nodes.c.tenant_id == self.tenant_id, _nodes.c.level == level,
                                                _nodes.c.idx >= start, _nodes.c.idx < end).order_by(_nodes.c.idx)
        return [bytes(h) for h in self.connection.execute(query).scalars()]

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """`(leaf hash, leaf)` of entries `start..end-1`."""
        self._written()
        rows = self.connection.execute(select(_leaves.c.hash, _leaves.c.data).where(
            _leaves.c.tenant_id == self.tenant_id, _leaves.c.idx >= start, _leaves.c.idx < end,
        ).order_by(_leaves.c.idx))
        return [(bytes(h), bytes(d)) for h, d in rows]

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint (one per size: a second signing of a size keeps the first), in a
        transaction whose COMMIT is durable: what it signs must survive a power cut."""
        self._commit_durably()
        exists = self.connection.execute(select(_checkpoints.c.size).where(
            _checkpoints.c.tenant_id == self.tenant_id, _checkpoints.c.size == size)).first()
        if exists is None:
            self.connection.execute(insert(_checkpoints).values(
                tenant_id=self.tenant_id, size=size, note=note, created_at=utcnow()))

    def _commit_durably(self) -> None:
        if self.connection.dialect.name == "sqlite":
            level = self.connection.exec_driver_sql("PRAGMA synchronous").scalar()
            if level is None or int(level) < _SQLITE_SYNCED:
                # SQLite cannot raise it inside a transaction: signing must run on a synced connection.
                raise LogError("a checkpoint may only be signed in a transaction whose COMMIT is synced "
                               f"(PRAGMA synchronous is {level}, FULL is {_SQLITE_SYNCED})")
        else:
            self.connection.execute(_DURABLE_COMMIT_PG)

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint, smallest size first."""
        rows = self.connection.execute(select(_checkpoints.c.size, _checkpoints.c.note).where(
            _checkpoints.c.tenant_id == self.tenant_id).order_by(_checkpoints.c.size))
        return [(int(s), str(n)) for s, n in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The newest kept checkpoint, if any."""
        row = self.connection.execute(select(_checkpoints.c.size, _checkpoints.c.note).where(
            _checkpoints.c.tenant_id == self.tenant_id).order_by(_checkpoints.c.size.desc()).limit(1)).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def checkpoint_at(self, size: int) -> str | None:
        """The kept checkpoint of exactly `size` entries, if one was signed."""
        return self.connection.execute(select(_checkpoints.c.note).where(
            _checkpoints.c.tenant_id == self.tenant_id, _checkpoints.c.size == size)).scalar()


class StoreBehindSignedHead(LogError):
    """The database does not extend a checkpoint that was signed (and may have been served) from it."""


class SignedHeads:
    """The newest checkpoint signed for each tenant, kept in a small JSON file outside the database
    (next to the SQLite file, or in the data directory) and synced before the checkpoint is served.
    Records only grow: processes sharing the file update it under a lock, keeping the larger head."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def recorded(self) -> dict[str, str]:
        """The newest signed checkpoint note of each tenant recorded so far."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LogError(f"{self.path}: the record of signed checkpoints cannot be read: {exc}") from exc
        heads = data.get("heads") if isinstance(data, dict) else None
        if not isinstance(heads, dict) or not all(isinstance(n, str) for n in heads.values()):
            raise LogError(f"{self.path}: not a record of signed checkpoints ({{\"heads\": {{tenant: note}}}})")
        return heads

    def check(self, tenant: str, log: TransparencyLog, recorded: dict[str, str] | None = None) -> None:
        """`StoreBehindSignedHead` unless `log` (the tenant's log as stored) extends the newest checkpoint
        recorded for `tenant` (in `recorded`, by default read now)."""
        note = (self.recorded() if recorded is None else recorded).get(tenant)
        if note is None:
            return
        head = parse_checkpoint(note)
        size = log.size
        if size < head.size:
            problem = (f"a checkpoint of {head.size} entries was signed, but the database holds {size}: "
                       f"entries {size}..{head.size - 1} were lost")
        elif log.root(head.size) != head.root_hash:
            problem = (f"a checkpoint of {head.size} entries was signed, but the database's first {head.size} "
                       "entries have another root: the log was rewritten")
        else:
            return
        raise StoreBehindSignedHead(
            f"tenant {tenant}: {problem} (the record of signed checkpoints is {self.path}). Appending or "
            "signing now would contradict a head that clients may hold, so Licet does not serve. Restore the "
            f"database from a copy that holds at least {head.size} entries of this tenant's log (a later "
            f"backup, the lost disk); or, accepting that anyone holding the checkpoint of {head.size} entries "
            f"will see the log fork, move {self.path} aside and start again.")

    def record(self, notes: dict[str, str]) -> None:
        """Record each tenant's note (signed, committed durably) as its newest head, unless a larger one
        is recorded; synced to disk before it returns."""
        if not notes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            heads = self.recorded()
            newer = {tenant: note for tenant, note in notes.items()
                     if tenant not in heads or parse_checkpoint(heads[tenant]).size < parse_checkpoint(note).size}
            if newer:
                # 0644 as before (what the usual umask gave): a record of public checkpoints.
                replace_durably(self.path, json.dumps({"heads": {**heads, **newer}}, indent=1, sort_keys=True)
                                + "\n", mode=0o644)


def check_signed_heads(connection: Connection, heads: SignedHeads, origin: Callable[[str], str]) -> None:
    """At start-up: `StoreBehindSignedHead` for the first tenant whose stored log does not extend the
    newest checkpoint recorded for it; then record each tenant's newest kept checkpoint, so one whose
    recording a crash cut short (after its commit) is known before it is served again."""
    recorded = heads.recorded()
    migrated = inspect(connection).has_table(_checkpoints.name)  # else it holds nothing (yet)
    for tenant in sorted(recorded):
        store = DatabaseLogStore(connection, tenant) if migrated else MemoryLogStore()
        heads.check(tenant, TransparencyLog(store, origin(tenant)), recorded)
    if migrated:
        heads.record({str(tenant): str(note) for tenant, note in connection.execute(_NEWEST_CHECKPOINTS)})
