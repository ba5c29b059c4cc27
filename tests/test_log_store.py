"""The transparency log over its stores (in memory and SQLite): appends, O(log n) proofs,
serialised concurrent appends, checkpoints, and audits that find tampering."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licet.kernel.checkpoint import parse_checkpoint
from licet.kernel.keys import Signer
from licet.kernel.log import LogConflict, LogError, LogStore, MemoryLogStore, TransparencyLog, audit_log
from licet.kernel.merkle import NodeId, leaf_hash, tree_hash, verify_consistency, verify_inclusion
from licet.kernel.note import NoteSigner
from licet.sdk.logstore import LOG_FILE, SQLiteLogStore, open_log, parallel_chunk_mapper

ORIGIN = "licet.example/licet/acme"


class CountingStore:
    """Wraps a store and counts the node hashes read, to show proofs never read the log."""

    def __init__(self, inner: LogStore) -> None:
        self.inner = inner
        self.nodes_read = 0
        self.entries_read = 0

    def size(self) -> int:
        return self.inner.size()

    def append(self, start: int, leaves: Sequence[bytes], nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.inner.append(start, leaves, nodes)

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        self.nodes_read += len(ids)
        return self.inner.read_nodes(ids)

    def read_level(self, level: int, start: int, end: int) -> list[bytes]:
        return self.inner.read_level(level, start, end)

    def read_entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        self.entries_read += end - start
        return self.inner.read_entries(start, end)

    def save_checkpoint(self, size: int, note: str) -> None:
        self.inner.save_checkpoint(size, note)

    def checkpoints(self) -> list[tuple[int, str]]:
        return self.inner.checkpoints()

    def latest_checkpoint(self) -> tuple[int, str] | None:
        return self.inner.latest_checkpoint()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogStore]:
    if request.param == "memory":
        yield MemoryLogStore()
    else:
        with SQLiteLogStore(tmp_path / LOG_FILE) as sqlite_store:
            yield sqlite_store


def entries(count: int, start: int = 0) -> list[bytes]:
    return [f'{{"id":"{i}","tenant":"acme","signature":"s"}}'.encode() for i in range(start, start + count)]


def new_signer() -> NoteSigner:
    return NoteSigner(ORIGIN, Signer(os.urandom(32)))


def test_appends_and_proofs(store: LogStore) -> None:
    log = TransparencyLog(store, ORIGIN)
    data = entries(300)
    assert log.append(data[0]) == 0
    assert log.append_many(data[1:100]) == range(1, 100)
    for leaf in data[100:]:
        log.append(leaf)
    assert log.size == 300 and log.leaf(123) == data[123]
    for n in (1, 2, 99, 100, 255, 256, 257, 300):
        root = tree_hash(data[:n])
        assert log.root(n) == root
        for i in {0, n // 2, n - 1}:
            verify_inclusion(i, n, leaf_hash(data[i]), log.inclusion_proof(i, n).hashes, root)
        for m in {1, n // 3 or 1, n}:
            verify_consistency(m, n, log.root(m), root, log.consistency_proof(m, n).hashes)
    with pytest.raises(LogError):
        log.inclusion_proof(300)
    with pytest.raises(LogError):
        log.leaf(300)
    with pytest.raises(LogError):
        log.consistency_proof(5, 301)


def test_proofs_read_o_log_n_hashes_and_no_entries(store: LogStore) -> None:
    counting = CountingStore(store)
    log = TransparencyLog(counting, ORIGIN)
    for start in range(0, 5000, 1000):
        log.append_many(entries(1000, start))
    for index in (0, 1234, 4095, 4096, 4999):
        counting.nodes_read = 0
        log.inclusion_proof(index)
        assert 0 < counting.nodes_read <= 2 * 13 + 1
        counting.nodes_read = 0
        log.consistency_proof(index + 1)
        assert counting.nodes_read <= 2 * 13 + 1
    assert counting.entries_read == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12))
def test_any_batching_gives_the_same_tree(batches: list[int]) -> None:
    log = TransparencyLog(MemoryLogStore(), ORIGIN)
    total = 0
    for count in batches:
        log.append_many(entries(count, total))
        total += count
    assert log.root() == tree_hash(entries(total))


def test_a_rejected_batch_leaves_the_store_unchanged(store: LogStore) -> None:
    log = TransparencyLog(store, ORIGIN)
    log.append_many(entries(5))
    root = log.root()
    with pytest.raises(LogConflict):
        store.append(3, [b"x"], [(0, 3, leaf_hash(b"x"))])
    assert log.size == 5 and log.root() == root
    log.append(b"after")  # and the log still appends
    assert log.root() == tree_hash([*entries(5), b"after"])


def test_concurrent_appenders_are_serialised(tmp_path: Path) -> None:
    # Two log objects (two connections) on one SQLite file, appending from several threads.
    first = open_log(tmp_path, ORIGIN)
    second = open_log(tmp_path)
    appended: list[bytes] = []
    lock = threading.Lock()

    def work(log: TransparencyLog, tag: str) -> None:
        for i in range(40):
            leaf = f"{tag}-{i}".encode()
            log.append_many([leaf])
            with lock:
                appended.append(leaf)

    threads = [threading.Thread(target=work, args=(log, tag)) for log, tag in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [first.leaf(i) for i in range(first.size)]
    assert sorted(stored) == sorted(appended) and len(stored) == 80
    assert first.root() == second.root() == tree_hash(stored)
    assert audit_log(first.store).ok


def test_stale_appender_retries_at_the_new_size() -> None:
    store = MemoryLogStore()
    one, two = TransparencyLog(store, ORIGIN), TransparencyLog(store, ORIGIN)
    one.append_many(entries(3))
    two.append_many(entries(2, 3))  # `two` never saw the first three
    one.append_many(entries(1, 5))  # `one`'s cached border is stale: it must reload it
    assert one.root() == tree_hash(entries(6))


def test_sqlite_log_persists_and_keeps_its_origin(tmp_path: Path) -> None:
    log = open_log(tmp_path, ORIGIN)
    log.append_many(entries(10))
    note = log.sign_checkpoint(new_signer())
    reopened = open_log(tmp_path)
    assert reopened.origin == ORIGIN and reopened.size == 10 and reopened.latest_checkpoint() == note
    with pytest.raises(LogError, match="holds the log"):
        open_log(tmp_path, "licet.example/licet/other")
    with pytest.raises(LogError, match="no evidence log"):
        open_log(tmp_path / "nowhere", create=False)
    with pytest.raises(LogError, match="needs an origin"):
        open_log(tmp_path / "new")


def test_checkpoints_are_signed_only_over_an_extension_of_the_last(store: LogStore) -> None:
    log = TransparencyLog(store, ORIGIN)
    signer = new_signer()
    log.append_many(entries(4))
    first = parse_checkpoint(log.sign_checkpoint(signer))
    log.append_many(entries(3, 4))
    second = parse_checkpoint(log.sign_checkpoint(signer))
    assert (first.size, second.size) == (4, 7) and [s for s, _ in store.checkpoints()] == [4, 7]
    assert second.root_hash == tree_hash(entries(7))


def _tamper(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, params)
    db.close()


def _rebuild_nodes(path: Path) -> None:
    """What an attacker with write access does: recompute every hash from the (altered) entries."""
    db = sqlite3.connect(path)
    leaves = [row[0] for row in db.execute("SELECT data FROM leaves ORDER BY idx")]
    hashes = [leaf_hash(x) for x in leaves]
    with db:
        db.executemany("UPDATE leaves SET hash = ? WHERE idx = ?", [(h, i) for i, h in enumerate(hashes)])
        db.execute("DELETE FROM nodes")
        level, rows = hashes, []
        height = 0
        while len(level) > 1:
            height += 1
            level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            rows += [(height, i, h) for i, h in enumerate(level)]
        db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", rows)
    db.close()


@pytest.fixture
def signed_log(tmp_path: Path) -> tuple[TransparencyLog, NoteSigner, Path]:
    log = open_log(tmp_path, ORIGIN)
    signer = new_signer()
    log.append_many(entries(50))
    log.sign_checkpoint(signer)
    log.append_many(entries(50, 50))
    log.sign_checkpoint(signer)
    return log, signer, tmp_path / LOG_FILE


def test_audit_of_an_untouched_log_passes(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, _ = signed_log
    report = audit_log(log.store, origin=ORIGIN, log_keys=[signer.verifier], chunk_level=4)
    assert report.ok and report.size == 100 and report.checkpoints_checked == 2
    assert report.root_hash == tree_hash(entries(100))


def test_audit_finds_a_rewritten_entry(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    _tamper(path, "UPDATE leaves SET data = ? WHERE idx = 37", b'{"id":"37","tenant":"acme","signature":"forged"}')
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=4)
    assert not report.ok and report.first_bad_index == 37
    assert report.problems[0].startswith("entry 37: the stored entry does not hash to its stored leaf hash")


def test_audit_finds_a_rewrite_with_everything_recomputed(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    _tamper(path, "UPDATE leaves SET data = ? WHERE idx = 37", b'{"id":"37","tenant":"acme","signature":"forged"}')
    _rebuild_nodes(path)
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=4)
    assert not report.ok and report.first_bad_index == 0  # entries 0..49 were all signed at size 50
    assert any("checkpoint signed at size 50" in p and "0..49 was rewritten" in p for p in report.problems)
    # The log refuses to sign a head over its own rewritten history.
    with SQLiteLogStore(path) as reopened, pytest.raises(LogError, match="the log was rewritten"):
        TransparencyLog(reopened, ORIGIN).sign_checkpoint(signer)
    # The attacker also deletes the kept checkpoints: a checkpoint the auditor held still catches it.
    held = [parse_checkpoint(note) for _, note in log.store.checkpoints()]
    _tamper(path, "DELETE FROM checkpoints")
    assert audit_log(log.store, chunk_level=4).ok  # nothing left in the store to compare with...
    report = audit_log(log.store, trusted=held, chunk_level=4)
    assert not report.ok and report.first_bad_index == 0


def test_audit_finds_dropped_entries(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    _tamper(path, "DELETE FROM leaves WHERE idx >= 90")
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=4)
    assert not report.ok and report.first_bad_index == 90
    assert any(
        "signed at size 100 but the log has only 90 entries: entries 90..99 were dropped" in p for p in report.problems
    )
    with pytest.raises(LogError, match="entries were dropped"):
        log.sign_checkpoint(signer)


def test_audit_finds_a_corrupted_subtree_hash(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    _tamper(path, "UPDATE nodes SET hash = ? WHERE level = 3 AND idx = 5", bytes(32))
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=4)
    assert not report.ok and any("stored subtree hash (3, 5) over entries 40..47" in p for p in report.problems)


def test_audit_finds_a_forged_kept_checkpoint(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    _tamper(path, "UPDATE checkpoints SET note = replace(note, '\n100\n', '\n99\n') WHERE size = 100")
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=4)
    assert any("kept checkpoint at size 100" in p and "does not verify" in p for p in report.problems)


@pytest.mark.parametrize("level", [0, 3, 13])
def test_audit_chunking_does_not_change_the_result(level: int) -> None:
    log = TransparencyLog(MemoryLogStore(), ORIGIN)
    signer = new_signer()
    for count in (5, 11, 16, 1, 40):
        log.append_many(entries(count, log.size))
        log.sign_checkpoint(signer)
    report = audit_log(log.store, log_keys=[signer.verifier], chunk_level=level)
    assert report.ok and report.checkpoints_checked == 5 and report.root_hash == log.root()


def test_parallel_audit_matches_the_serial_one(signed_log: tuple[TransparencyLog, NoteSigner, Path]) -> None:
    log, signer, path = signed_log
    serial = audit_log(log.store, log_keys=[signer.verifier], chunk_level=3)
    with parallel_chunk_mapper(path, 2) as mapper:
        parallel = audit_log(log.store, log_keys=[signer.verifier], chunk_level=3, map_chunks=mapper)
    assert parallel == serial and parallel.ok
    _tamper(path, "UPDATE leaves SET data = ? WHERE idx = 61", b"changed")
    with parallel_chunk_mapper(path, 2) as mapper:
        report = audit_log(log.store, chunk_level=3, map_chunks=mapper)
    assert report.first_bad_index == 61
