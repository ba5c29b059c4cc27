"""The Licet Python SDK: ask before acting, remotely (`LicetClient`, `AsyncLicetClient`) or locally
(`LocalLicet`), guard tools with `Agent`, and verify certificates and evidence offline."""

from sdk.agent import Agent
from sdk.client import AsyncLicetClient, LicetClient
from sdk.errors import (
    ApiError,
    ApprovalRefused,
    ApprovalRequired,
    Denied,
    Forbidden,
    LicetError,
    LicetUnavailable,
    NotPermitted,
)
from sdk.local import LocalLicet
from sdk.types import DecisionResult, PlanResult
from sdk.verify import verified, verify_bundle, verify_certificate

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
    "verified",
    "verify_bundle",
    "verify_certificate",
]
