"""The evidence log's database store: `kernel.log.LogStore` over the server's tables.

It works on a synchronous SQLAlchemy connection, inside the caller's transaction (the server reaches
it through `AsyncSession.run_sync`), so a certificate's leaf, its row and the session-state update
commit together or not at all. The caller holds the tenant's log-head lock (`lock_head`), which
serialises appends per tenant across processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BindParameter, Connection, bindparam, insert, select, tuple_, update

from licet.kernel.log import CompletedNode, LogConflict, LogError
from licet.kernel.merkle import NodeId
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
_INSERT_LEAVES, _INSERT_NODES = insert(_leaves), insert(_nodes)


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


class DatabaseLogStore:
    """One tenant's log in the server database (implements `kernel.log.LogStore`)."""

    def __init__(self, connection: Connection, tenant_id: str, size: int | None = None) -> None:
        self.connection = connection
        self.tenant_id = tenant_id
        self._size = size  # known when the caller holds the append lock (`lock_head`)

    def size(self) -> int:
        """Number of leaves stored."""
        if self._size is not None:
            return self._size
        found = self.connection.execute(_HEAD_SIZE, {"tenant": self.tenant_id}).scalar()
        return int(found or 0)

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Store a batch; `LogConflict` unless the log has exactly `start` leaves."""
        hashes = [value for level, _index, value in nodes if level == 0]
        if len(hashes) != len(leaves):
            raise LogError(f"{len(leaves)} leaves but {len(hashes)} leaf hashes")
        moved = self.connection.execute(_MOVE_HEAD, {"tenant": self.tenant_id, "start": start,
                                                     "end": start + len(leaves)})
        if moved.rowcount != 1:
            self._size = None
            raise LogConflict(f"append at {start} but the log has {self.size()} entries")
        if self._size is not None:
            self._size = start + len(leaves)
        tenant = self.tenant_id
        self.connection.execute(_INSERT_LEAVES, [
            {"tenant_id": tenant, "idx": start + i, "hash": h, "data": leaf}
            for i, (h, leaf) in enumerate(zip(hashes, leaves, strict=True))])
        upper = [{"tenant_id": tenant, "level": level, "idx": index, "hash": value}
                 for level, index, value in nodes if level]
        if upper:
            self.connection.execute(_INSERT_NODES, upper)

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """The hashes of these complete subtrees, in order (two queries, whatever the count)."""
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
        if level == 0:
            query = select(_leaves.c.hash).where(_leaves.c.tenant_id == self.tenant_id, _leaves.c.idx >= start,
                                                 _leaves.c.idx < end).order_by(_leaves.c.idx)
        else:
            query = select(_nodes.c.hash).where(_nodes.c.tenant_id == self.tenant_id, _nodes.c.level == level,
                                                _nodes.c.idx >= start, _nodes.c.idx < end).order_by(_nodes.c.idx)
        return [bytes(h) for h in self.connection.execute(query).scalars()]

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """`(leaf hash, leaf)` of entries `start..end-1`."""
        rows = self.connection.execute(select(_leaves.c.hash, _leaves.c.data).where(
            _leaves.c.tenant_id == self.tenant_id, _leaves.c.idx >= start, _leaves.c.idx < end,
        ).order_by(_leaves.c.idx))
        return [(bytes(h), bytes(d)) for h, d in rows]

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint (one per size: a second signing of a size keeps the first)."""
        exists = self.connection.execute(select(_checkpoints.c.size).where(
            _checkpoints.c.tenant_id == self.tenant_id, _checkpoints.c.size == size)).first()
        if exists is None:
            self.connection.execute(insert(_checkpoints).values(
                tenant_id=self.tenant_id, size=size, note=note, created_at=utcnow()))

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
