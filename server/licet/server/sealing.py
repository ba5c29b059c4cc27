"""Secrets at rest: TOTP secrets and webhook signing secrets are sealed in the database with AES-256-GCM
under the deployment's key-encryption key, which never lives in the database (docs/secrets.md).

A stored value reads `v1:<key id>:<base64 of nonce + ciphertext + tag>`. The associated data binds it
to its table, column and row id (and to its own header), so a value copied to another row, another
column or altered in any way does not open: the caller gets `UnsealError` and nothing is signed in or
sent. The key id (a hash of the key, not the key) tells which key sealed a value, so a server started
with the wrong key, or after a rotation it was not restarted for, says so instead of failing later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from licet.server.models import User, Webhook
from licet.server.settings import Settings

VERSION = "v1"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # random per value: at most a few values per row and rotation, far from GCM's 2^32 bound

# Every column holding a sealed secret; each table's primary key is its `id`.
SEALED_COLUMNS: tuple[InstrumentedAttribute[str | None] | InstrumentedAttribute[str], ...] = (
    User.totp_secret, User.totp_pending_secret, Webhook.secret)


class SecretsKeyError(ValueError):
    """The key-encryption key is missing, unreadable or malformed."""


class UnsealError(RuntimeError):
    """A stored secret does not open: sealed under another key, moved from another row, altered, or
    never sealed."""


def key_id(key: bytes) -> str:
    """The key's public name: 16 hex digits of a domain-separated SHA-256 (reveals nothing of the key)."""
    return hashlib.sha256(b"licet secrets key id\x00" + key).hexdigest()[:16]


def parse_key(text: str, where: str) -> bytes:
    """The 32-byte key written as base64 in `text` (from `where`, named in errors)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretsKeyError(f"{where}: not base64 ({exc}); create a key with `licet secrets keygen`") from exc
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{where}: the key is {len(key)} bytes, not {KEY_BYTES}; create one with "
                              "`licet secrets keygen`")
    return key


def write_new_key(path: Path) -> bytes:
    """Create a random key at `path` (mode 0600; never overwrites an existing file); the key."""
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())  # on disk before anything is sealed under it
    return key


def read_key_file(path: Path) -> bytes:
    """The key in the file at `path`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretsKeyError(f"secrets key file {path}: {exc.strerror or exc}") from exc
    return parse_key(text, f"secrets key file {path}")


def _column_name(column: InstrumentedAttribute[Any]) -> str:
    return f"{column.class_.__tablename__}.{column.key}"


class SecretBox:
    """Seals and opens the secrets of one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsKeyError(f"a secrets key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.kid = key_id(key)

    def seal(self, secret: str, column: InstrumentedAttribute[Any], row_id: str) -> str:
        """`secret` as stored in `column` of the row `row_id`."""
        header = f"{VERSION}:{self.kid}"
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _associated(header, column, row_id))
        return f"{header}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, column: InstrumentedAttribute[Any], row_id: str) -> str:
        """The secret `stored` in `column` of the row `row_id`; `UnsealError` if it does not open there."""
        where = f"{_column_name(column)} of row {row_id}"
        version, kid, body = _split(stored)
        if version != VERSION:
            raise UnsealError(f"{where} is not a sealed secret (plaintext or an unknown format): a server seals "
                              "legacy values at start-up, and `licet secrets rotate` does too")
        if kid != self.kid:
            raise UnsealError(f"{where} is sealed under key id {kid}, but this process holds key id {self.kid}: "
                              "the wrong LICET_SECRETS_KEY(_FILE), or a rotation this process was not restarted "
                              "for")
        try:
            raw = base64.b64decode(body, validate=True)
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                       _associated(f"{version}:{kid}", column, row_id))
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise UnsealError(f"{where} does not open under key id {self.kid}: it was altered or copied from "
                              "another row or column") from exc
        return plain.decode()


def _split(stored: str) -> tuple[str, str, str]:
    parts = stored.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", stored)


def _associated(header: str, column: InstrumentedAttribute[Any], row_id: str) -> bytes:
    # Row ids are UUIDs and table/column names identifiers: "/" cannot be part of any of them.
    return f"licet-secret/{header}/{_column_name(column)}/{row_id}".encode()


def is_sealed(stored: str) -> bool:
    """Whether `stored` is in the sealed format (not whether it opens)."""
    return _split(stored)[0] == VERSION


def load_box(settings: Settings) -> SecretBox:
    """The box of the configured key: LICET_SECRETS_KEY, else LICET_SECRETS_KEY_FILE, else (embedded
    only) `<data dir>/secrets.key`, created on first use. Production never creates a key."""
    if settings.secrets_key is not None and settings.secrets_key_file is not None:
        raise SecretsKeyError("set LICET_SECRETS_KEY or LICET_SECRETS_KEY_FILE, not both")
    if settings.secrets_key is not None:
        return SecretBox(parse_key(settings.secrets_key.get_secret_value(), "LICET_SECRETS_KEY"))
    path = settings.secrets_key_path
    if settings.secrets_key_file is None:
        if settings.mode == "production":
            raise SecretsKeyError("production needs the key that seals TOTP and webhook secrets: set "
                                  "LICET_SECRETS_KEY_FILE (create the file with `licet secrets keygen --out PATH`) "
                                  "or LICET_SECRETS_KEY; see docs/secrets.md")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return SecretBox(write_new_key(path))
            except FileExistsError:  # another process of this deployment created it just now
                pass
    return SecretBox(read_key_file(path))


def _stored(session: Session, column: InstrumentedAttribute[Any]) -> Sequence[Any]:
    table = column.class_
    return session.execute(select(table.id, column).where(column.is_not(None)).order_by(table.id)).all()


def _replace(session: Session, column: InstrumentedAttribute[Any], row_id: str, old: str, new: str) -> bool:
    """Store `new` where `old` still is; whether it was. Compare-and-set: a value another process changed
    since it was read is not overwritten with a stale one."""
    table = column.class_
    done = session.execute(update(table).where(table.id == row_id, column == old).values({column.key: new}))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def seal_legacy(session: Session, box: SecretBox) -> dict[str, int]:
    """Seal every value still stored as plaintext (written before secrets were sealed); `UnsealError` if
    a value is sealed under another key than `box`'s (the wrong key is configured). How many values each
    column had sealed now."""
    sealed: dict[str, int] = {}
    strangers: dict[str, int] = {}
    tables = inspect(session.connection())
    for column in SEALED_COLUMNS:
        if not tables.has_table(column.table.name):  # not migrated yet: it holds no secret
            continue
        for row_id, stored in _stored(session, column):
            if not is_sealed(stored):
                # Not replaced: another process starting beside this one sealed it first.
                if _replace(session, column, row_id, stored, box.seal(stored, column, row_id)):
                    sealed[_column_name(column)] = sealed.get(_column_name(column), 0) + 1
            elif _split(stored)[1] != box.kid:
                strangers[_split(stored)[1]] = strangers.get(_split(stored)[1], 0) + 1
    if strangers:
        found = ", ".join(f"{count} under key id {kid}" for kid, count in sorted(strangers.items()))
        raise UnsealError(f"secrets in the database are sealed under another key ({found}); this process holds "
                          f"key id {box.kid}: configure the key they were sealed with (LICET_SECRETS_KEY_FILE), "
                          "or the key `licet secrets rotate` moved them to")
    return sealed


def reseal(session: Session, old: SecretBox, new: SecretBox) -> dict[str, int]:
    """Open every stored secret with `old` (or take it as is if still plaintext) and seal it under `new`,
    in the caller's transaction: a value that does not open raises `UnsealError`, and the caller rolls
    everything back. Values already under `new` are checked and kept (running it again is harmless).
    How many values each column had re-sealed."""
    done: dict[str, int] = {}
    for column in SEALED_COLUMNS:
        for row_id, stored in _stored(session, column):
            if is_sealed(stored) and _split(stored)[1] == new.kid:
                new.open(stored, column, row_id)
                continue
            secret = old.open(stored, column, row_id) if is_sealed(stored) else stored
            if not _replace(session, column, row_id, stored, new.seal(secret, column, row_id)):
                raise UnsealError(f"{_column_name(column)} of row {row_id} changed during the rotation (is a "
                                  "server still running?): nothing was changed; stop the writers and run again")
            done[_column_name(column)] = done.get(_column_name(column), 0) + 1
    return done
