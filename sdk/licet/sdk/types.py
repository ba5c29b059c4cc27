"""Typed results of SDK calls."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from licet.kernel.errors import LicetError as KernelError
from licet.kernel.keys import KeyPeriod, PublicKey, parse_key_history, parse_public_key
from licet.kernel.note import NoteVerifier, parse_verifier_key
from licet.sdk.errors import LicetError


@dataclass(frozen=True)
class DecisionResult:
    """A certified decision: the outcome, its proof and the signed certificate."""

    decision: str
    rules: tuple[str, ...]
    proof: dict[str, Any]
    certificate: dict[str, Any]
    certificate_id: str
    log_index: int | None = None
    diagnostics: tuple[str, ...] = ()
    replayed: bool = False
    approval_id: str | None = None

    @property
    def permitted(self) -> bool:
        """Whether the action may go ahead."""
        return self.decision == "permit"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DecisionResult:
        """From a decide response (server or local)."""
        approval = body.get("approval") if isinstance(body.get("approval"), dict) else {}
        return cls(str(body["decision"]), tuple(body.get("rules", ())), dict(body.get("proof", {})),
                   copy.deepcopy(body["certificate"]), str(body["certificate_id"]), body.get("log_index"),
                   tuple(body.get("diagnostics", ())), bool(body.get("replayed", False)),
                   approval.get("id") if approval else None)


@dataclass(frozen=True)
class PlanResult:
    """A plan verdict: safe, unsafe (with the first failing step) or needs_approval."""

    verdict: str
    steps_checked: int
    counterexample: dict[str, Any] | None = None
    approval_steps: tuple[int, ...] = ()
    proof: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def safe(self) -> bool:
        """Whether every step is permitted for every value of its symbolic arguments."""
        return self.verdict == "safe"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PlanResult:
        """From a plan verdict's JSON."""
        return cls(str(body["verdict"]), int(body.get("steps_checked", 0)), body.get("counterexample"),
                   tuple(body.get("approval_steps", ()) or ()), dict(body.get("proof", {})), dict(body))


@dataclass(frozen=True)
class TrustedKeys:
    """What verifies a tenant's evidence offline (`GET /v1/evidence/keys`): the public keys that sign
    certificates, and the origin and verifier key of the tenant's log that sign its checkpoints.
    Pass it as is to `verify_certificate` and `verify_bundle`."""

    certificate_keys: tuple[PublicKey, ...]
    log_origin: str
    log_key: NoteVerifier
    history: tuple[KeyPeriod, ...] = ()
    """Every key with the period in which it signs; when given, certificates are checked against it."""

    @property
    def log_keys(self) -> tuple[NoteVerifier, ...]:
        """The log's verifier keys: the one signing now and every key of the history, under the log's
        origin (a checkpoint carries no time, so any published log key verifies it)."""
        return (self.log_key, *(NoteVerifier(self.log_origin, period.public_key) for period in self.history))

    @property
    def certificate_periods(self) -> tuple[PublicKey | KeyPeriod, ...]:
        """What verifies certificates: the history's periods, or the bare keys of a server without one."""
        return self.history or self.certificate_keys

    @classmethod
    def from_json(cls, body: Any) -> TrustedKeys:
        """From the JSON of `GET /v1/evidence/keys` (`{"certificate_keys": [public key], "log":
        {"origin", "verifier_key"}, "history": [key period]}`, `history` optional); a `LicetError`
        naming the field that is missing or malformed."""
        body = _read("body", lambda b: b if isinstance(b, Mapping) else None, body)
        listed = _read("certificate_keys", lambda k: k if isinstance(k, list) and k else None,
                       body.get("certificate_keys"))
        keys = tuple(_read(f"certificate_keys[{i}]", lambda k: parse_public_key(json.dumps(k)), key)
                     for i, key in enumerate(listed))
        log = _read("log", lambda b: b if isinstance(b, Mapping) else None, body.get("log"))
        origin = _read("log.origin", lambda o: o if isinstance(o, str) and o else None, log.get("origin"))
        verifier = _read("log.verifier_key", lambda v: parse_verifier_key(v) if isinstance(v, str) else None,
                         log.get("verifier_key"))
        history = () if body.get("history") is None else _read("history", parse_key_history, body["history"])
        return cls(keys, origin, verifier, history)


def _read(where: str, read: Callable[[Any], Any], value: Any) -> Any:
    """`read(value)`; a `LicetError` naming the field `where` if that is None or fails."""
    try:
        found = read(value)
    except (KernelError, TypeError, ValueError) as exc:
        raise LicetError(f"evidence keys: {where}: {exc}") from exc
    if found is None:
        raise LicetError(f"evidence keys: {where}: missing or of the wrong type")
    return found
