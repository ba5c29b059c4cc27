"""Verification reports: a list of named checks, each passed or failed with a reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One verification step (e.g. `signature`, `inclusion`) and its outcome."""

    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        """JSON form used by `licet verify --json`."""
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def all_ok(checks: list[Check]) -> bool:
    """True when there is at least one check and every check passed."""
    return bool(checks) and all(c.ok for c in checks)
