"""The deployment's signing keys over time: which key signs certificates and checkpoints at a given
moment, which keys signed before, and the rotation that `licet keys rotate` performs.

The keyring lives in the signing key file itself (`Settings.key_file`, by default
`<data dir>/signing.key`). A file written by `licet keygen` holds one private key, which signs at
every moment and has no history. The first rotation turns the file into a keyring: JSON of type
`licet-keyring/1`, a list of keys in the order they sign, each with its period `[not_before,
not_after)` (RFC 3339, null for an open side). The periods follow each other without gap or overlap.
A key's private seed is kept only while the key signs or is about to: a rotation drops the seeds of
keys retired by then (`Keyring.pruned`). Public parts are kept forever, so every certificate and
checkpoint the deployment ever signed stays verifiable from what it publishes.

Rotation with an overlap publishes the new key `overlap` before it starts signing: verifiers can
fetch it first, and every server process switches at the same instant, since the switch is a time
written in the file, not the moment a process reads it. The file is replaced atomically (a 0600
temporary file in the same directory, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from threading import Lock
from typing import Any, Literal

from licet import kernel
from licet.kernel.keys import PRIVATE_KEY_TYPE, KeyPeriod, parse_key_period, rfc3339
from licet.server.files import replace_durably

KEYRING_TYPE = "licet-keyring/1"

KeyStatus = Literal["pending", "current", "retired"]


class KeyringError(RuntimeError):
    """A keyring is unreadable or inconsistent, or no key may sign at the moment asked."""


@dataclass(frozen=True)
class KeyringEntry:
    """One key of the keyring: its period, and its private part while it signs or will sign."""

    period: KeyPeriod
    signer: kernel.Signer | None = None

    def status(self, now: datetime) -> KeyStatus:
        """`pending` before its period, `current` inside it, `retired` after it."""
        if self.period.not_before is not None and now < self.period.not_before:
            return "pending"
        return "current" if self.period.covers(now) else "retired"

    def to_json(self) -> dict[str, Any]:
        """The entry in the keyring file: the period's fields and, while kept, the seed."""
        seed = self.signer.to_json()["seed"] if self.signer is not None else None
        return {**self.period.to_json(), **({"seed": seed} if seed is not None else {})}


@dataclass(frozen=True)
class Keyring:
    """Every key the deployment signed with, or will sign with, in signing order."""

    entries: tuple[KeyringEntry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise KeyringError("a keyring holds at least one key")
        for earlier, later in zip(self.entries, self.entries[1:], strict=False):
            if earlier.period.not_after is None or earlier.period.not_after != later.period.not_before:
                raise KeyringError(f"key {later.period.key_id} must start signing exactly when "
                                   f"{earlier.period.key_id} stops (the periods must follow each other)")
        if self.entries[-1].period.not_after is not None:
            raise KeyringError("the newest key must not have a not_after: some key must always sign")
        for entry in self.entries:
            if entry.signer is not None and entry.signer.public_key != entry.period.public_key:
                raise KeyringError(f"key {entry.period.key_id}: its seed is of another key")

    @property
    def history(self) -> tuple[KeyPeriod, ...]:
        """Each key's public part and period, oldest first."""
        return tuple(entry.period for entry in self.entries)

    def entry_at(self, moment: datetime) -> KeyringEntry:
        """The key whose period holds `moment` (the periods follow each other, so there is one from
        the first key's start on); `KeyringError` before that."""
        for entry in self.entries:
            if entry.period.covers(moment):
                return entry
        raise KeyringError(f"no key of the keyring signs at {rfc3339(moment)}")

    def signer_at(self, moment: datetime) -> kernel.Signer:
        """The private key that signs at `moment`; `KeyringError` if the keyring has none for it."""
        entry = self.entry_at(moment)
        if entry.signer is None:
            raise KeyringError(f"the keyring has no private part of key {entry.period.key_id}, which signs at "
                               f"{rfc3339(moment)}")
        return entry.signer

    def rotate(self, now: datetime, overlap: timedelta, seed: bytes) -> Keyring:
        """The keyring with a new key (from `seed`) that starts signing at `now + overlap`, when the
        current key retires; retired private parts are dropped. Refused while a rotation is pending,
        so a key has at most one successor."""
        if overlap < timedelta(0):
            raise KeyringError("the overlap cannot be negative")
        newest = self.entries[-1]
        if newest.status(now) == "pending":
            raise KeyringError(f"key {newest.period.key_id} is already due to sign in "
                               f"{newest.period.describe()}: rotate again after that")
        switch = now + overlap
        retiring = replace(newest, period=replace(newest.period, not_after=switch))
        signer = kernel.Signer(seed)
        added = KeyringEntry(KeyPeriod(signer.public_key, not_before=switch), signer)
        return Keyring((*self.entries[:-1], retiring, added)).pruned(now)

    def pruned(self, now: datetime) -> Keyring:
        """The keyring without the private parts of keys retired at `now`."""
        return Keyring(tuple(replace(entry, signer=None) if entry.status(now) == "retired" else entry
                             for entry in self.entries))

    def to_json(self) -> dict[str, Any]:
        """The keyring file's content."""
        return {"type": KEYRING_TYPE, "keys": [entry.to_json() for entry in self.entries]}


def parse_keyring(text: str) -> Keyring:
    """A keyring from a signing key file's content: a keyring, or a single private key (which then
    signs at every moment); `KeyringError` saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyringError("not JSON") from exc
    if isinstance(data, dict) and data.get("type") == PRIVATE_KEY_TYPE:
        try:
            signer = kernel.parse_signer(text)
        except kernel.LicetError as exc:
            raise KeyringError(str(exc)) from exc
        return Keyring((KeyringEntry(KeyPeriod(signer.public_key), signer),))
    if not isinstance(data, dict) or data.get("type") != KEYRING_TYPE or not isinstance(data.get("keys"), list):
        raise KeyringError(f"type must be {PRIVATE_KEY_TYPE!r} or {KEYRING_TYPE!r} with a list of keys")
    return Keyring(tuple(_entry(item, f"keys[{i}]") for i, item in enumerate(data["keys"])))


def _entry(item: Any, where: str) -> KeyringEntry:
    try:
        period = parse_key_period(item, where)
        seed = item.get("seed")
        signer = None if seed is None else kernel.Signer(base64.b64decode(str(seed), validate=True))
    except (kernel.LicetError, ValueError) as exc:
        raise KeyringError(f"{where}: {exc}") from exc
    return KeyringEntry(period, signer)


def load_keyring(path: Path) -> Keyring:
    """The keyring in `path`; `KeyringError` naming the file if it cannot be read or is inconsistent."""
    try:
        return parse_keyring(path.read_text())
    except OSError as exc:
        raise KeyringError(f"signing key {path}: {exc.strerror}") from exc
    except KeyringError as exc:
        raise KeyringError(f"signing key {path}: {exc}") from exc


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace `path` with `keyring` atomically: a reader sees the old file or the new one, never a
    part; the file is 0600 from its creation and on disk before this returns."""
    replace_durably(path, json.dumps(keyring.to_json(), indent=2) + "\n")


class KeyringFile:
    """A signing key file as a running process sees it: read again when the file changes (looked at
    at most once a second), so a rotation reaches every process that sees the file without a restart.
    A file that became unreadable is an error at each use until it is fixed: signing on with the
    keyring read before could use a key the new file retires (fail closed)."""

    RECHECK_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = Lock()
        self._stamp = self._stat()
        self._keyring = load_keyring(path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int]:
        try:
            found = self.path.stat()
        except OSError as exc:
            raise KeyringError(f"signing key {self.path}: {exc.strerror}") from exc
        return found.st_ino, found.st_mtime_ns, found.st_size

    def keyring(self, *, recheck: bool = False) -> Keyring:
        """The keyring, read again first if the file changed since (looked at if a second has passed
        since the last look, or at once with `recheck`)."""
        with self._lock:
            if recheck or time.monotonic() - self._checked >= self.RECHECK_SECONDS:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._keyring = load_keyring(self.path)
                    self._stamp = stamp
                self._checked = time.monotonic()
            return self._keyring

    def signer_at(self, moment: datetime) -> kernel.Signer:
        """The private key that signs at `moment`, looking at the file once more before giving up."""
        try:
            return self.keyring().signer_at(moment)
        except KeyringError:
            return self.keyring(recheck=True).signer_at(moment)
