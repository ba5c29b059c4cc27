"""The append-only evidence log of one tenant, over a small storage interface.

`TransparencyLog` appends leaves (amortised one node hash each), serves inclusion and consistency
proofs from O(log n) stored hashes, signs checkpoints and audits the whole log. Storage is the
`LogStore` protocol: `MemoryLogStore` here, the SQLite one in `licet.logstore`, a PostgreSQL one in
the server. A store keeps the leaves, every complete-subtree hash (`(level, index)`, level 0 being
the leaf hashes) and the signed checkpoints; an append is one atomic batch that only succeeds at
the size the appender started from, which serialises concurrent appenders of the same log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_origin,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from kernel.errors import LicetError
from kernel.merkle import (
    HASH_SIZE,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    NodeId,
    consistency_proof,
    inclusion_proof,
    root_at,
    subtree_ids,
)
from kernel.note import NoteSigner, NoteVerifier

CompletedNode = tuple[int, int, bytes]
"""`(level, index, hash)` of a complete subtree, as an append hands it to the store."""


class LogError(LicetError):
    """The log cannot do what was asked (bad index, inconsistent state)."""


class LogConflict(LogError):
    """Another appender changed the log first; re-read its size and try again."""


class LogStore(Protocol):
    """Storage of one log. Implementations: `MemoryLogStore`, `licet.logstore.SQLiteLogStore`."""

    def size(self) -> int:
        """Number of leaves stored."""
        ...

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Atomically store `leaves` at indices `start...` and the subtree hashes they complete
        (level 0 included); raise `LogConflict` unless the log's size is exactly `start`."""
        ...

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """The hashes of these complete subtrees, in order; raise `LogError` if one is missing."""
        ...

    def read_level(self, level: int, start: int, end: int) -> list[bytes]:
        """The stored hashes of nodes `start..end-1` of one level (a contiguous run)."""
        ...

    def read_leaves(self, start: int, end: int) -> list[bytes]:
        """The leaves `start..end-1` (fewer if the log is shorter)."""
        ...

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint (replacing one of the same size)."""
        ...

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint as `(size, note)`, smallest size first."""
        ...


class MemoryLogStore:
    """A `LogStore` in memory: one bytearray of packed 32-byte hashes per level."""

    def __init__(self) -> None:
        self._leaves: list[bytes] = []
        self._levels: list[bytearray] = []
        self._checkpoints: dict[int, str] = {}

    def size(self) -> int:
        """Number of leaves stored."""
        return len(self._leaves)

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[CompletedNode]) -> None:
        """Store a batch (see `LogStore.append`); nodes must arrive in index order per level."""
        if start != len(self._leaves):
            raise LogConflict(f"append at {start} but the log has {len(self._leaves)} entries")
        levels = self._levels
        # Validate fully before mutating anything, so a bad batch leaves the store unchanged.
        expected = [len(level) // HASH_SIZE for level in levels]
        for level, index, value in nodes:
            while len(expected) <= level:
                expected.append(0)
            if index != expected[level] or len(value) != HASH_SIZE:
                raise LogError(f"node ({level}, {index}) out of order or malformed")
            expected[level] += 1
        for level, _index, value in nodes:
            while len(levels) <= level:
                levels.append(bytearray())
            levels[level] += value
        self._leaves.extend(leaves)

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """The hashes of these complete subtrees, in order."""
        out = []
        for level, index in ids:
            offset = index * HASH_SIZE
            if level >= len(self._levels) or offset + HASH_SIZE > len(self._levels[level]):
                raise LogError(f"node ({level}, {index}) is not stored")
            out.append(bytes(self._levels[level][offset : offset + HASH_SIZE]))
        return out

    def read_level(self, level: int, start: int, end: int) -> list[bytes]:
        """The stored hashes of nodes `start..end-1` of one level."""
        if level >= len(self._levels):
            return []
        data = self._levels[level]
        stop = min(end * HASH_SIZE, len(data))
        return [bytes(data[i : i + HASH_SIZE]) for i in range(start * HASH_SIZE, stop, HASH_SIZE)]

    def read_leaves(self, start: int, end: int) -> list[bytes]:
        """The leaves `start..end-1`."""
        return self._leaves[start:end]

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint."""
        self._checkpoints[size] = note

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint, smallest size first."""
        return sorted(self._checkpoints.items())


class TransparencyLog:
    """One tenant's append-only Merkle log (RFC 6962) with C2SP checkpoints, over a `LogStore`."""

    def __init__(self, store: LogStore, origin: str) -> None:
        check_origin(origin)
        self.store = store
        self.origin = origin
        self._frontier = CompactRange()
        self._frontier_loaded = False

    @property
    def size(self) -> int:
        """Number of entries."""
        return self.store.size()

    def _load_frontier(self, size: int) -> CompactRange:
        if not self._frontier_loaded or self._frontier.size != size:
            ids = subtree_ids(0, size)
            self._frontier = CompactRange(size, self.store.read_nodes(ids) if ids else [])
            self._frontier_loaded = True
        return self._frontier

    def append(self, leaf: bytes) -> int:
        """Append one entry; returns its index."""
        return self.append_many([leaf]).start

    def append_many(self, leaves: Sequence[bytes]) -> range:
        """Append entries in one atomic batch; returns their indices."""
        for attempt in range(3):
            start = self.store.size()
            frontier = self._load_frontier(start)
            # Work on a copy: if the store refuses the batch the cached border stays valid.
            grown = CompactRange(frontier.size, frontier.hashes)
            completed: list[CompletedNode] = []
            grown.extend((hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves), completed)
            try:
                self.store.append(start, leaves, completed)
            except LogConflict:
                if attempt == 2:
                    raise
                continue
            self._frontier = grown
            return range(start, start + len(leaves))
        raise LogConflict("unreachable")  # pragma: no cover

    def leaf(self, index: int) -> bytes:
        """The entry at `index`."""
        found = self.store.read_leaves(index, index + 1) if index >= 0 else []
        if not found:
            raise LogError(f"no entry {index} in a log of {self.size}")
        return found[0]

    def root(self, size: int | None = None) -> bytes:
        """The tree hash at `size` (default: now), from O(log n) stored hashes."""
        size = self._size_or_current(size)
        return root_at(size, self.store.read_nodes)

    def _size_or_current(self, size: int | None) -> int:
        current = self.store.size()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise LogError(f"tree size {size} is not between 0 and the log's {current}")
        return size

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """The inclusion proof of entry `index` in the tree of `size` entries (default: now)."""
        size = self._size_or_current(size)
        if not 0 <= index < size:
            raise LogError(f"no entry {index} in a tree of size {size}")
        return inclusion_proof(index, size, self.store.read_nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """The proof that the tree of `old_size` entries is a prefix of that of `new_size`."""
        new_size = self._size_or_current(new_size)
        if not 0 <= old_size <= new_size:
            raise LogError(f"no consistency proof from size {old_size} to size {new_size}")
        return consistency_proof(old_size, new_size, self.store.read_nodes)

    def checkpoint(self) -> Checkpoint:
        """The unsigned tree head at the current size."""
        size = self.store.size()
        return Checkpoint(self.origin, size, self.root(size))

    def latest_checkpoint(self) -> str | None:
        """The newest kept signed checkpoint note, if any."""
        kept = self.store.checkpoints()
        return kept[-1][1] if kept else None

    def sign_checkpoint(self, signer: NoteSigner) -> str:
        """Sign, keep and return a checkpoint of the current tree.

        Refuses when the stored tree no longer extends the newest kept checkpoint (entries dropped
        or rewritten): a log must never sign two inconsistent tree heads.
        """
        current = self.checkpoint()
        latest = self.latest_checkpoint()
        if latest is not None:
            previous = parse_checkpoint(latest)
            if previous.origin != self.origin:
                raise LogError(
                    f"kept checkpoint is for log {previous.origin!r}, not {self.origin!r}"
                )
            if previous.size > current.size:
                raise LogError(
                    f"a checkpoint was signed at size {previous.size} but the log has only "
                    f"{current.size} entries: entries were dropped"
                )
            if self.root(previous.size) != previous.root_hash:
                raise LogError(
                    f"the stored tree at size {previous.size} no longer matches the checkpoint "
                    "signed then: the log was rewritten"
                )
        note = sign_checkpoint(current, signer)
        self.store.save_checkpoint(current.size, note)
        return note


# --- audit ---------------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """What an audit of a whole log found."""

    size: int = 0
    root_hash: bytes = b""
    checkpoints_checked: int = 0
    first_bad_index: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was wrong."""
        return not self.problems


EntryCheck = Callable[[int, bytes], "str | None"]
"""Called with each entry's index and bytes; returns what is wrong with it, or None."""


def audit_log(
    store: LogStore,
    *,
    origin: str | None = None,
    verifiers: Sequence[NoteVerifier] = (),
    trusted: Sequence[Checkpoint] = (),
    check_entry: EntryCheck | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 8192,
) -> AuditReport:
    """Recompute every leaf hash, every stored subtree hash and the root from the stored entries,
    streaming, and compare them with the store and with every kept (and every `trusted`)
    checkpoint. Kept checkpoints' signatures are checked when `verifiers` are given."""
    report = AuditReport()
    size = store.size()
    report.size = size
    heads = _audit_heads(store, origin, verifiers, trusted, size, report)

    frontier = CompactRange()
    last_good_head = 0
    stops = sorted({s for s in heads if 0 < s <= size} | {size})
    position = 0
    sha = hashlib.sha256
    bad_leaves: list[int] = []
    bad_nodes: list[NodeId] = []
    for stop in stops:
        while position < stop:
            end = min(stop, (position // chunk + 1) * chunk)
            leaves = store.read_leaves(position, end)
            if len(leaves) != end - position:
                missing = position + len(leaves)
                report.problems.append(f"entries {missing}..{end - 1} are missing from the store")
                report.first_bad_index = _first(report.first_bad_index, missing)
                report.root_hash = frontier.root()
                return report
            hashes = [sha(b"\x00" + leaf).digest() for leaf in leaves]
            stored = store.read_level(0, position, end)
            if hashes != stored:
                stored += [b""] * (len(hashes) - len(stored))
                bad_leaves.extend(position + i for i, h in enumerate(hashes) if h != stored[i])
            if check_entry is not None:
                for i, leaf in enumerate(leaves):
                    problem = check_entry(position + i, leaf)
                    if problem is not None:
                        report.problems.append(f"entry {position + i}: {problem}")
                        report.first_bad_index = _first(report.first_bad_index, position + i)
            completed: list[CompletedNode] = []
            frontier.extend(hashes, completed)
            bad_nodes.extend(_mismatched_interior(store, completed))
            position = end
            if progress is not None:
                progress(position)
        expected = heads.get(stop)
        if expected is not None:
            report.checkpoints_checked += 1
            root = frontier.root()
            if root != expected:
                report.problems.append(
                    f"the tree of the first {stop} entries has root {root.hex()}, but the "
                    f"checkpoint signed at size {stop} says {expected.hex()}: an entry in "
                    f"{last_good_head}..{stop - 1} was rewritten after it was signed"
                )
                report.first_bad_index = _first(report.first_bad_index, last_good_head)
            elif not report.problems and not bad_leaves:
                last_good_head = stop
    if bad_leaves:
        report.problems.insert(
            0,
            f"entry {bad_leaves[0]}: the stored entry does not hash to its stored leaf hash "
            f"(the entry or its hash was changed; {len(bad_leaves)} such entries)",
        )
        report.first_bad_index = _first(report.first_bad_index, bad_leaves[0])
    if bad_nodes:
        level, index = bad_nodes[0]
        report.problems.append(
            f"stored subtree hash ({level}, {index}) over entries {index << level}.."
            f"{((index + 1) << level) - 1} does not match the entries ({len(bad_nodes)} such "
            "hashes): proofs served from them would fail"
        )
    report.root_hash = frontier.root()
    return report


def _first(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)


def _audit_heads(
    store: LogStore,
    origin: str | None,
    verifiers: Sequence[NoteVerifier],
    trusted: Sequence[Checkpoint],
    size: int,
    report: AuditReport,
) -> dict[int, bytes]:
    """The roots the audit must reproduce, by tree size; records unusable checkpoints."""
    heads: dict[int, bytes] = {}
    candidates: list[tuple[str, Checkpoint]] = []
    for kept_size, note in store.checkpoints():
        try:
            if verifiers:
                checkpoint = verify_checkpoint(note, verifiers).checkpoint
            else:
                checkpoint = parse_checkpoint(note)
        except CheckpointError as exc:
            report.problems.append(f"kept checkpoint at size {kept_size}: {exc}")
            continue
        if checkpoint.size != kept_size:
            report.problems.append(
                f"kept checkpoint filed under size {kept_size} is for size {checkpoint.size}"
            )
        candidates.append(("kept", checkpoint))
    candidates.extend(("trusted", checkpoint) for checkpoint in trusted)
    for kind, checkpoint in candidates:
        if origin is not None and checkpoint.origin != origin:
            report.problems.append(
                f"{kind} checkpoint at size {checkpoint.size} is for log {checkpoint.origin!r}, "
                f"not {origin!r}"
            )
            continue
        if checkpoint.size > size:
            report.problems.append(
                f"a checkpoint was signed at size {checkpoint.size} but the log has only {size} "
                f"entries: entries {size}..{checkpoint.size - 1} were dropped"
            )
            report.first_bad_index = _first(report.first_bad_index, size)
            continue
        if heads.setdefault(checkpoint.size, checkpoint.root_hash) != checkpoint.root_hash:
            report.problems.append(
                f"two different roots were signed for size {checkpoint.size}: the log forked"
            )
    return heads


def _mismatched_interior(store: LogStore, completed: list[CompletedNode]) -> list[NodeId]:
    """The recomputed subtree hashes above the leaves that differ from the stored ones."""
    runs: dict[int, tuple[int, list[bytes]]] = {}
    for level, index, value in completed:
        if level:
            run = runs.get(level)
            if run is None:
                runs[level] = (index, [value])
            else:
                run[1].append(value)
    bad: list[NodeId] = []
    for level, (start, values) in sorted(runs.items()):
        stored = store.read_level(level, start, start + len(values))
        if stored != values:
            stored += [b""] * (len(values) - len(stored))
            bad.extend((level, start + i) for i, v in enumerate(values) if v != stored[i])
    return bad
