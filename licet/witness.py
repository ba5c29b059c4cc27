"""A C2SP transparency-log witness (c2sp.org/tlog-witness): `POST /add-checkpoint`.

For each log it is configured with (an origin and the log's note verifier keys) the witness keeps
the latest checkpoint it cosigned, in SQLite. It cosigns a new checkpoint only when the log signed
it, the client's old size is the size it holds, and the consistency proof links the checkpoint it
holds to the new one; checking and storing happen in one write transaction (`BEGIN IMMEDIATE`, so
concurrent requests, threads or processes, are serialised), and the cosignature is made only after
the commit. A witness that answered has therefore durably recorded the head it cosigned, and it
never cosigns two heads of one log that are inconsistent with each other, across restarts too.

Requests refused for a fork or a bad proof that carry a valid log signature are kept (table
`refused`): they are the log's own signed evidence of misbehaviour.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from licet.kernel.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, verify_checkpoint
from licet.kernel.cosignature import WitnessSigner
from licet.kernel.errors import LicetError
from licet.kernel.keys import parse_signer
from licet.kernel.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from licet.kernel.note import NoteError, NoteVerifier, parse_verifier_key

MAX_BODY = 64 * 1024
"""Largest request body read: a checkpoint with its signatures and 63 proof hashes is ~10 KiB."""
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]*)")


class WitnessConfigError(Exception):
    """The witness's configuration file is missing, malformed or names unusable keys."""


class Refusal(Exception):
    """An add-checkpoint request the witness refuses, with the HTTP status the spec gives it."""

    def __init__(self, status: int, message: str, *, known_size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.known_size = known_size


@dataclass(frozen=True)
class WitnessConfig:
    """What a witness runs with: its key, where it keeps state, and the logs it witnesses."""

    signer: WitnessSigner
    state: Path
    logs: dict[str, tuple[NoteVerifier, ...]]
    """Verifier keys trusted for each log origin."""


def load_config(path: Path) -> WitnessConfig:
    """Read a witness configuration (TOML; see docs/witness.md). Relative paths in it are taken
    from the file's folder."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise WitnessConfigError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WitnessConfigError(f"{path}: not valid TOML: {exc}") from exc
    name, key_file, state = (_string(data, field, path) for field in ("name", "key_file", "state"))
    key_path = path.parent / key_file
    try:
        signer = WitnessSigner(name, parse_signer(key_path.read_text()))
    except OSError as exc:
        raise WitnessConfigError(f"{path}: key_file {key_path}: {exc.strerror}") from exc
    except LicetError as exc:  # what is wrong with the key file or the name
        raise WitnessConfigError(f"{path}: key_file {key_path}: {exc}") from exc
    logs: dict[str, tuple[NoteVerifier, ...]] = {}
    entries = data.get("logs")
    if not isinstance(entries, list) or not entries:
        raise WitnessConfigError(f"{path}: `logs` must list at least one log ([[logs]] with origin and keys)")
    for n, entry in enumerate(entries, 1):
        where = f"{path}: logs entry {n}"
        origin = _string(entry, "origin", where) if isinstance(entry, dict) else ""
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise WitnessConfigError(f"{where}: `keys` must be a non-empty list of note verifier keys")
        if origin in logs:
            raise WitnessConfigError(f"{where}: origin {origin!r} is listed twice")
        try:
            logs[origin] = tuple(parse_verifier_key(k) for k in keys)
        except NoteError as exc:
            raise WitnessConfigError(f"{where}: {exc}") from exc
    return WitnessConfig(signer, path.parent / state, logs)


def _string(data: object, field: str, where: object) -> str:
    value = data.get(field) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise WitnessConfigError(f"{where}: `{field}` must be a non-empty string")
    return value


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request body: the client's old size, a consistency proof, a checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Read `old <size>\\n`, up to 63 base64 proof lines, a blank line and the signed checkpoint;
    raise a 400 `Refusal` naming what is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(400, f"request body is not UTF-8 (byte {exc.start})") from exc
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise Refusal(400, "request body has no blank line between the proof and the checkpoint")
    old_line, *proof_lines = head.split("\n")
    matched = _OLD_LINE.fullmatch(old_line)
    if matched is None:
        raise Refusal(400, f"first line must be `old <size>` in canonical decimal, not {old_line[:40]!r}")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise Refusal(400, f"{len(proof_lines)} consistency proof lines, more than {MAX_PROOF_LINES}")
    proof = tuple(_proof_hash(line, n) for n, line in enumerate(proof_lines, 1))
    return AddCheckpoint(int(matched.group(1)), proof, note)


def _proof_hash(line: str, number: int) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refusal(400, f"consistency proof line {number} is not base64") from exc
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode() != line:
        raise Refusal(400, f"consistency proof line {number} is not the canonical base64 of a {HASH_SIZE}-byte hash")
    return raw


class WitnessState:
    """The latest cosigned checkpoint of each log, in a SQLite file (durable, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connection() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS checkpoints (origin TEXT PRIMARY KEY, note TEXT NOT NULL,
                                                        updated_at INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, origin TEXT NOT NULL,
                    received_at INTEGER NOT NULL, status INTEGER NOT NULL, reason TEXT NOT NULL,
                    request TEXT NOT NULL);
                """
            )

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: transactions are opened explicitly, so `BEGIN IMMEDIATE` is ours.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def latest(self, origin: str) -> str | None:
        """The latest cosigned checkpoint note of `origin`, if any."""
        with self._connection() as db:
            row = db.execute("SELECT note FROM checkpoints WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else str(row[0])

    def advance(self, origin: str, check: Callable[[str | None], None], note: str, now: int) -> None:
        """Atomically: call `check` with the stored note (it raises to refuse), then store `note`.
        The write lock is held from before the read until after the commit."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT note FROM checkpoints WHERE origin = ?", (origin,)).fetchone()
                check(None if row is None else str(row[0]))
                db.execute(
                    "INSERT INTO checkpoints (origin, note, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET note = excluded.note, updated_at = excluded.updated_at",
                    (origin, note, now),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def keep_refused(self, origin: str, status: int, reason: str, request: str, now: int) -> None:
        """Keep a refused, log-signed request as evidence."""
        with self._connection() as db:
            db.execute(
                "INSERT INTO refused (origin, received_at, status, reason, request) VALUES (?, ?, ?, ?, ?)",
                (origin, now, status, reason, request),
            )

    def refused(self, origin: str) -> list[tuple[int, str]]:
        """The status and reason of each refused request of `origin` kept, oldest first."""
        with self._connection() as db:
            rows = db.execute("SELECT status, reason FROM refused WHERE origin = ? ORDER BY id", (origin,)).fetchall()
        return [(int(status), str(reason)) for status, reason in rows]


class Witness:
    """The add-checkpoint logic over a `WitnessState`, independent of HTTP."""

    def __init__(self, config: WitnessConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.state = WitnessState(config.state)
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> str:
        """Check and record a checkpoint; return its cosignature line, or raise a `Refusal`."""
        request = parse_add_checkpoint(body)
        try:
            claimed = parse_checkpoint(request.note)
        except CheckpointError as exc:
            raise Refusal(400, str(exc)) from exc
        keys = self.config.logs.get(claimed.origin)
        if keys is None:
            raise Refusal(404, f"this witness does not witness the log {claimed.origin!r}")
        try:
            new = verify_checkpoint(request.note, keys).checkpoint
        except CheckpointError as exc:
            raise Refusal(403, f"{exc}") from exc
        if request.old_size > new.size:
            raise Refusal(400, f"old size {request.old_size} is larger than the checkpoint's size {new.size}")
        now = int(self._clock())
        try:
            self.state.advance(new.origin, lambda stored: _check_extends(stored, request, new), request.note, now)
        except Refusal as refusal:
            if refusal.known_size is None:  # a fork or a bad proof, signed by the log
                self.state.keep_refused(new.origin, refusal.status, refusal.message, body.decode(), now)
            raise
        return self.config.signer.cosign(new, now)


def _check_extends(stored_note: str | None, request: AddCheckpoint, new: Checkpoint) -> None:
    """Raise a `Refusal` unless `new` is consistent with the stored checkpoint (none: the empty
    tree) and the client's old size is the stored size."""
    stored = Checkpoint(new.origin, 0, EMPTY_ROOT) if stored_note is None else parse_checkpoint(stored_note)
    if request.old_size != stored.size:
        raise Refusal(409, f"old size {request.old_size} is not the size this witness holds, {stored.size}",
                      known_size=stored.size)
    if new.size == stored.size:
        if new.root_hash != stored.root_hash:
            raise Refusal(409, f"a different root for size {new.size} than the one this witness cosigned: a fork")
        if request.proof:
            raise Refusal(422, "the consistency proof between two checkpoints of the same size must be empty")
        return
    if stored.size == 0:
        if request.proof:
            raise Refusal(422, "the consistency proof from size 0 must be empty")
        return
    try:
        verify_consistency(stored.size, new.size, stored.root_hash, new.root_hash, request.proof)
    except ProofError as exc:
        raise Refusal(422, f"consistency proof from {stored.size} to {new.size} does not verify: {exc}") from exc


def create_app(witness: Witness) -> Starlette:
    """The witness's ASGI app: `POST /add-checkpoint`."""

    async def add_checkpoint(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return PlainTextResponse(f"request body is larger than {MAX_BODY} bytes\n", status_code=413)
        try:
            line = await run_in_threadpool(witness.add_checkpoint, bytes(body))
        except Refusal as refusal:
            if refusal.known_size is not None:
                # Exactly the spec's type: Starlette would append a charset to a text/* media_type.
                headers = {"content-type": SIZE_CONTENT_TYPE}
                return Response(f"{refusal.known_size}\n", status_code=409, headers=headers)
            return PlainTextResponse(refusal.message + "\n", status_code=refusal.status)
        return PlainTextResponse(line)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])
