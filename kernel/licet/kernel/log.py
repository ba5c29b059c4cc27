"""The append-only evidence log of one tenant, over a small storage interface.

`TransparencyLog` appends leaves (amortised one node hash each), serves inclusion and consistency
proofs from O(log n) stored hashes, signs checkpoints and audits the whole log. Storage is the
`LogStore` protocol: `MemoryLogStore` here, the SQLite one in `licet.logstore`, a PostgreSQL one in
the server. A store keeps the leaves, every complete-subtree hash (`(level, index)`, level 0 being
the leaf hashes) and the signed checkpoints; an append is one atomic batch that only succeeds at
the size the appender started from, which serialises concurrent appenders of the same log.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from licet.kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    LogKey,
    check_origin,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from licet.kernel.errors import LicetError
from licet.kernel.merkle import (
    HASH_SIZE,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    NodeId,
    consistency_proof,
    inclusion_proof,
    leaf_hashes,
    root_at,
    subtree_ids,
)
from licet.kernel.note import NoteSigner

_sha256 = hashlib.sha256
_NODE = b"\x01"

CompletedNode = tuple[int, int, bytes]
"""`(level, index, hash)` of a complete subtree, as an append hands it to the store."""


APPEND_ATTEMPTS = 8


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

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """`(leaf hash, leaf)` of entries `start..end-1` (fewer if the log is shorter)."""
        ...

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint (replacing one of the same size)."""
        ...

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint as `(size, note)`, smallest size first."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The kept checkpoint of the largest size, if any (without reading the others)."""
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

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """`(leaf hash, leaf)` of entries `start..end-1`."""
        leaves = self._leaves[start:end]
        return list(zip(self.read_level(0, start, start + len(leaves)), leaves, strict=True))

    def save_checkpoint(self, size: int, note: str) -> None:
        """Keep a signed checkpoint."""
        self._checkpoints[size] = note

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every kept checkpoint, smallest size first."""
        return sorted(self._checkpoints.items())

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The kept checkpoint of the largest size, if any."""
        if not self._checkpoints:
            return None
        size = max(self._checkpoints)
        return size, self._checkpoints[size]


class TransparencyLog:
    """One tenant's append-only Merkle log (RFC 6962) with C2SP checkpoints, over a `LogStore`."""

    def __init__(self, store: LogStore, origin: str) -> None:
        check_origin(origin)
        self.store = store
        self.origin = origin
        self._frontier = CompactRange()  # the right border at the size last seen, kept to append

    @property
    def size(self) -> int:
        """Number of entries."""
        return self.store.size()

    def append(self, leaf: bytes) -> int:
        """Append one entry; returns its index."""
        return self.append_many([leaf]).start

    def append_many(self, leaves: Sequence[bytes]) -> range:
        """Append entries in one atomic batch; returns their indices. When another appender got
        there first the batch is recomputed on top of its entries (up to `APPEND_ATTEMPTS` times)."""
        failures = 0
        while True:
            start = self.store.size()
            if self._frontier.size != start:  # someone else appended: reload the border
                ids = subtree_ids(0, start)
                self._frontier = CompactRange(start, self.store.read_nodes(ids) if ids else [])
            # Work on a copy: if the store refuses the batch the cached border stays valid.
            grown = CompactRange(start, self._frontier.hashes)
            completed: list[CompletedNode] = []
            grown.extend(leaf_hashes(leaves), completed)
            try:
                self.store.append(start, leaves, completed)
            except LogConflict:
                failures += 1
                if failures == APPEND_ATTEMPTS:
                    raise
                continue
            self._frontier = grown
            return range(start, start + len(leaves))

    def leaf(self, index: int) -> bytes:
        """The entry at `index`."""
        found = self.store.read_entries(index, index + 1) if index >= 0 else []
        if not found:
            raise LogError(f"no entry {index} in a log of {self.size}")
        return found[0][1]

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
        kept = self.store.latest_checkpoint()
        return None if kept is None else kept[1]

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
                raise LogError(f"kept checkpoint is for log {previous.origin!r}, not {self.origin!r}")
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


@dataclass(frozen=True)
class ChunkAudit:
    """The audit of one aligned complete subtree of `2**level` entries starting at `start`."""

    start: int
    level: int
    root: bytes
    """The recomputed subtree hash (empty when entries are missing)."""
    bad_leaves: tuple[int, ...] = ()
    bad_nodes: tuple[NodeId, ...] = ()
    entry_problems: tuple[tuple[int, str], ...] = ()
    first_missing: int | None = None


ChunkMapper = Callable[[Sequence[tuple[int, int]]], Iterable[ChunkAudit]]
"""Runs `audit_chunk` over `(start, level)` pairs and yields the results in order (it may run
them in parallel, e.g. in worker processes each with their own store)."""


def audit_chunk(store: LogStore, start: int, level: int, check_entry: EntryCheck | None = None) -> ChunkAudit:
    """Recompute one aligned complete subtree from its stored entries and compare every leaf hash
    and subtree hash inside it with the store."""
    end = start + (1 << level)
    entries = store.read_entries(start, end)
    if len(entries) != end - start:
        return ChunkAudit(start, level, b"", first_missing=start + len(entries))
    stored = [entry[0] for entry in entries]
    leaves = [entry[1] for entry in entries]
    hashes = leaf_hashes(leaves)
    bad_leaves = _differences(0, start, hashes, stored) if hashes != stored else []
    problems: list[tuple[int, str]] = []
    if check_entry is not None:
        for i, leaf in enumerate(leaves):
            problem = check_entry(start + i, leaf)
            if problem is not None:
                problems.append((start + i, problem))
    # A complete subtree hashes level by level: much cheaper than leaf-by-leaf merging.
    bad_nodes: list[NodeId] = []
    level_hashes = hashes
    for height in range(1, level + 1):
        lefts, rights = level_hashes[0::2], level_hashes[1::2]
        level_hashes = [_sha256(_NODE + a + b).digest() for a, b in zip(lefts, rights, strict=True)]
        first = start >> height
        kept = store.read_level(height, first, first + len(level_hashes))
        if kept != level_hashes:
            bad_nodes.extend(_differences(height, first, level_hashes, kept))
    return ChunkAudit(
        start,
        level,
        level_hashes[0],
        tuple(index for _level, index in bad_leaves),
        tuple(bad_nodes),
        tuple(problems),
    )


def audit_log(
    store: LogStore,
    *,
    origin: str | None = None,
    log_keys: Sequence[LogKey] = (),
    trusted: Sequence[Checkpoint] = (),
    check_entry: EntryCheck | None = None,
    progress: Callable[[int], None] | None = None,
    map_chunks: ChunkMapper | None = None,
    chunk_level: int = 13,
) -> AuditReport:
    """Recompute every leaf hash, every stored subtree hash and the root from the stored entries,
    streaming, and compare them with the store and with every kept (and every `trusted`)
    checkpoint. Kept checkpoints' signatures are checked when `log_keys` are given.

    Whole aligned chunks of `2**chunk_level` entries go through `map_chunks` (default: in turn,
    here); the few partial ones (the tail, around checkpoint sizes) are done here.
    """
    report = AuditReport()
    size = store.size()
    report.size = size
    heads = _audit_heads(store, origin, log_keys, trusted, size, report)
    chunk = 1 << chunk_level

    segments: list[tuple[int, int]] = []
    position = 0
    for stop in sorted({s for s in heads if 0 < s <= size} | {size}):
        while position < stop:
            end = min(stop, (position // chunk + 1) * chunk)
            segments.append((position, end))
            position = end
    whole = [(start, chunk_level) for start, end in segments if end - start == chunk]
    if map_chunks is None:
        results: Iterable[ChunkAudit] = (audit_chunk(store, start, level, check_entry) for start, level in whole)
    else:
        results = map_chunks(whole)
    chunk_results = iter(results)

    frontier = CompactRange()
    last_good_head = 0
    bad_leaves: list[int] = []
    bad_nodes: list[NodeId] = []
    for start, end in segments:
        completed: list[CompletedNode] = []
        if end - start == chunk:
            result = next(chunk_results)
            missing = result.first_missing
            if missing is None:
                bad_leaves.extend(result.bad_leaves)
                bad_nodes.extend(result.bad_nodes)
                for index, problem in result.entry_problems:
                    report.problems.append(f"entry {index}: {problem}")
                    report.first_bad_index = _first(report.first_bad_index, index)
                frontier.push_subtree(chunk_level, result.root, completed)
        else:
            missing = _audit_partial(store, start, end, frontier, completed, check_entry, report, bad_leaves)
        if missing is not None:
            report.problems.append(f"entries {missing}..{end - 1} are missing from the store")
            report.first_bad_index = _first(report.first_bad_index, missing)
            break
        bad_nodes.extend(_mismatched_interior(store, completed))
        if progress is not None:
            progress(end)
        expected = heads.get(end)
        if expected is not None:
            report.checkpoints_checked += 1
            root = frontier.root()
            if root != expected:
                report.problems.append(
                    f"the tree of the first {end} entries has root {root.hex()}, but the "
                    f"checkpoint signed at size {end} says {expected.hex()}: an entry in "
                    f"{last_good_head}..{end - 1} was rewritten after it was signed"
                )
                # Unless a changed entry already found in that range explains it, the first bad
                # entry is only known to be at or after the last checkpoint that still matches.
                if not any(last_good_head <= bad < end for bad in bad_leaves):
                    report.first_bad_index = _first(report.first_bad_index, last_good_head)
            else:
                last_good_head = end
    if bad_leaves:
        report.problems.insert(
            0,
            f"entry {bad_leaves[0]}: the stored entry does not hash to its stored leaf hash "
            f"(the entry or its hash was changed; {len(bad_leaves)} such entries)",
        )
        report.first_bad_index = _first(report.first_bad_index, bad_leaves[0])
    # Subtree hashes over a changed entry differ because of it; only the others are corrupt.
    bad_nodes = [node for node in bad_nodes if not _covers_any(node, bad_leaves)]
    if bad_nodes:
        level, index = min(bad_nodes, key=lambda node: node[1] << node[0])
        report.problems.append(
            f"stored subtree hash ({level}, {index}) over entries {index << level}.."
            f"{((index + 1) << level) - 1} does not match the entries ({len(bad_nodes)} such "
            "hashes): proofs served from them would fail"
        )
    report.root_hash = frontier.root()
    return report


def _audit_partial(
    store: LogStore,
    start: int,
    end: int,
    frontier: CompactRange,
    completed: list[CompletedNode],
    check_entry: EntryCheck | None,
    report: AuditReport,
    bad_leaves: list[int],
) -> int | None:
    """Recompute entries `start..end-1` leaf by leaf into `frontier`, noting bad leaf hashes;
    returns the first missing index, if any."""
    entries = store.read_entries(start, end)
    if len(entries) != end - start:
        return start + len(entries)
    hashes = leaf_hashes(leaf for _stored, leaf in entries)
    for i, ((stored_hash, leaf), value) in enumerate(zip(entries, hashes, strict=True)):
        if value != stored_hash:
            bad_leaves.append(start + i)
        if check_entry is not None:
            problem = check_entry(start + i, leaf)
            if problem is not None:
                report.problems.append(f"entry {start + i}: {problem}")
                report.first_bad_index = _first(report.first_bad_index, start + i)
        frontier.append(value, completed)
    return None


def _differences(level: int, first: int, computed: list[bytes], kept: list[bytes]) -> list[NodeId]:
    kept = kept + [b""] * (len(computed) - len(kept))
    return [(level, first + i) for i, value in enumerate(computed) if value != kept[i]]


def _covers_any(node: NodeId, sorted_indices: list[int]) -> bool:
    level, index = node
    at = bisect.bisect_left(sorted_indices, index << level)
    return at < len(sorted_indices) and sorted_indices[at] < (index + 1) << level


def _first(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)


def _audit_heads(
    store: LogStore,
    origin: str | None,
    log_keys: Sequence[LogKey],
    trusted: Sequence[Checkpoint],
    size: int,
    report: AuditReport,
) -> dict[int, bytes]:
    """The roots the audit must reproduce, by tree size; records unusable checkpoints."""
    heads: dict[int, bytes] = {}
    candidates: list[tuple[str, Checkpoint]] = []
    for kept_size, note in store.checkpoints():
        try:
            checkpoint = verify_checkpoint(note, log_keys).checkpoint if log_keys else parse_checkpoint(note)
        except CheckpointError as exc:
            report.problems.append(f"kept checkpoint at size {kept_size}: {exc}")
            continue
        if checkpoint.size != kept_size:
            report.problems.append(f"kept checkpoint filed under size {kept_size} is for size {checkpoint.size}")
        candidates.append(("kept", checkpoint))
    candidates.extend(("trusted", checkpoint) for checkpoint in trusted)
    for kind, checkpoint in candidates:
        if origin is not None and checkpoint.origin != origin:
            report.problems.append(
                f"{kind} checkpoint at size {checkpoint.size} is for log {checkpoint.origin!r}, not {origin!r}"
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
            report.problems.append(f"two different roots were signed for size {checkpoint.size}: the log forked")
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
    for level, (first, values) in sorted(runs.items()):
        kept = store.read_level(level, first, first + len(values))
        if kept != values:
            bad.extend(_differences(level, first, values, kept))
    return bad
