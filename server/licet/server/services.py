"""What the running server holds: settings, database, signing key, the compiled-policy cache, and what
it remembers between transactions (log borders, how far session history is covered)."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from threading import Lock

from licet import kernel
from licet.kernel.checkpoint import tenant_origin
from licet.kernel.log import TransparencyLog
from licet.kernel.note import NoteSigner
from licet.server.db import Database
from licet.server.history import Coverage
from licet.server.keyring import KeyringError, KeyringFile
from licet.server.logstore import DatabaseLogStore, SignedHeads
from licet.server.sealing import SecretBox, SecretsKeyError, load_box
from licet.server.settings import Settings
from licet.server.time import utcnow

POLICY_CACHE_SIZE = 256


class StartupError(RuntimeError):
    """The server cannot start safely (e.g. no signing key in production)."""


def load_signing_keys(settings: Settings) -> KeyringFile:
    """The deployment's signing keys (server/keyring.py: one key, or a keyring after rotations).
    Embedded mode creates a random key (0600) on first run; production refuses to start without one."""
    path = settings.key_file
    if not path.exists():
        if settings.mode == "production":
            raise StartupError(f"no signing key at {path}: create one with `licet keygen --out {path}` "
                               "(production never generates or derives keys on its own)")
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path, json.dumps(kernel.Signer(os.urandom(32)).to_json(), indent=2) + "\n")
    try:
        return KeyringFile(path)
    except KeyringError as exc:
        raise StartupError(str(exc)) from exc


def _create_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def load_secrets_key(settings: Settings) -> SecretBox:
    """The key that seals TOTP and webhook secrets in the database (server/sealing.py)."""
    try:
        return load_box(settings)
    except SecretsKeyError as exc:
        raise StartupError(str(exc)) from exc


class PolicyCache:
    """Parsed (and so compiled-once) policies by version id; versions are immutable, so entries
    never go stale, only out (least recently used)."""

    def __init__(self, size: int = POLICY_CACHE_SIZE) -> None:
        self._items: OrderedDict[str, kernel.Policy] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, version_id: str) -> kernel.Policy | None:
        """The cached policy of `version_id`, if any."""
        with self._lock:
            found = self._items.get(version_id)
            if found is not None:
                self._items.move_to_end(version_id)
            return found

    def load(self, version_id: str, source: str) -> kernel.Policy:
        """The policy of `version_id`, parsed from `source` on a miss."""
        found = self.get(version_id)
        if found is not None:
            return found
        policy = kernel.load_policy(source, f"version {version_id}")
        with self._lock:
            self._items[version_id] = policy
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return policy


class Services:
    """Everything a request handler needs, built once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
        self.keys = load_signing_keys(settings)
        self.secrets = load_secrets_key(settings)
        self.policies = PolicyCache()
        self._logs: dict[str, TransparencyLog] = {}
        # A border kept from a transaction that rolled back may describe entries that were never
        # stored, and another process may since have stored different ones at the same size.
        self.db.on_rollback(self._logs.clear)
        self.coverage = Coverage()
        self.signed_heads = SignedHeads(settings.signed_heads_path)  # checked at start-up (app.py)

    def transparency_log(self, store: DatabaseLogStore) -> TransparencyLog:
        """The tenant's log over `store` (a transaction's view), keeping the log's right border
        between committed appends so an append reads no stored hashes while nobody else appended."""
        log = self._logs.get(store.tenant_id)
        if log is None:
            log = self._logs[store.tenant_id] = TransparencyLog(store, self.origin(store.tenant_id))
        log.store = store
        return log

    def origin(self, tenant_id: str) -> str:
        """The origin line of a tenant's log."""
        return tenant_origin(self.settings.deployment, tenant_id)

    def signer_at(self, moment: datetime) -> kernel.Signer:
        """The key that signs what is issued at `moment` (certificates, approval events)."""
        return self.keys.signer_at(moment)

    def note_signer(self, tenant_id: str) -> NoteSigner:
        """The checkpoint signer of a tenant's log: the deployment key signing now, named by the origin
        (a checkpoint carries no time, so the key of the moment of signing is the one that signs)."""
        return NoteSigner(self.origin(tenant_id), self.signer_at(utcnow()))
