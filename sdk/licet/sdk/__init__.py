"""The Licet Python SDK: ask before acting, remotely (`LicetClient`, `AsyncLicetClient`) or locally
(`LocalLicet`), guard tools with `Agent`, and verify certificates and evidence offline.

`LocalLicet` (the kernel in-process) loads on first use and needs the `local` extra
(`pip install "licet-sdk[local]"`); everything else needs only httpx and PyNaCl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from licet.sdk.agent import Agent
from licet.sdk.client import AsyncLicetClient, LicetClient
from licet.sdk.errors import (
    ApiError,
    ApprovalRefused,
    ApprovalRequired,
    Denied,
    Forbidden,
    LicetError,
    LicetUnavailable,
    NotPermitted,
)
from licet.sdk.types import DecisionResult, PlanResult, TrustedKeys
from licet.sdk.verify import verified, verify_bundle, verify_certificate

if TYPE_CHECKING:
    from licet.sdk.local import LocalLicet


# What the `local` extra installs (through `licet-kernel[decide]`), by import name.
_LOCAL_EXTRA = ("z3", "lark", "yaml")


def __getattr__(name: str) -> Any:
    """`LocalLicet`, imported when first used (PEP 562): it brings the solver."""
    if name != "LocalLicet":
        raise AttributeError(f"module 'licet.sdk' has no attribute {name!r}")
    try:
        from licet.sdk.local import LocalLicet
    except ImportError as exc:
        if exc.name not in _LOCAL_EXTRA:
            raise
        raise ImportError(f"LocalLicet needs the solver and the policy parser ({exc.name} is missing): "
                          "pip install 'licet-sdk[local]'", name=exc.name) from exc

    globals()[name] = LocalLicet
    return LocalLicet


__all__ = [
    "Agent",
    "ApiError",
    "ApprovalRefused",
    "ApprovalRequired",
    "AsyncLicetClient",
    "DecisionResult",
    "Denied",
    "Forbidden",
    "LicetClient",
    "LicetError",
    "LicetUnavailable",
    "LocalLicet",
    "NotPermitted",
    "PlanResult",
    "TrustedKeys",
    "verified",
    "verify_bundle",
    "verify_certificate",
]
