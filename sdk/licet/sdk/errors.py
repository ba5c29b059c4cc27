"""What an SDK call raises. A decision that is not a permit is an exception where the caller asked
for the action to be allowed (`require`, guarded tools); the server being unreachable is too, so
nothing runs unless Licet said yes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from licet.sdk.types import DecisionResult


class LicetError(Exception):
    """Base class of every SDK error."""


class NotPermitted(LicetError):
    """The action was decided and is not permitted; `decision` carries the certificate."""

    def __init__(self, decision: DecisionResult) -> None:
        self.decision = decision
        rules = ", ".join(decision.rules) or "no permit rule applies"
        super().__init__(f"{decision.decision}: {rules} (certificate {decision.certificate_id})")


class Forbidden(NotPermitted):
    """A forbid rule applies or an invariant would be broken."""


class Denied(NotPermitted):
    """No permit rule applies (the default deny)."""


class ApprovalRequired(NotPermitted):
    """A person must approve first; `approval_id` names the approval once the server opened one."""

    @property
    def approval_id(self) -> str | None:
        """The approval to wait for, if the server opened one."""
        return self.decision.approval_id


class ApprovalRefused(Denied):
    """A presented approval could not be used (already used, expired, pending, denied, cancelled, for
    another request or agent): the server certified a deny. `code` and `reason` say why."""

    def __init__(self, decision: DecisionResult) -> None:
        refusal = decision.proof.get("approval_refused") or {}
        self.code = str(refusal.get("code", "approval_refused"))
        self.reason = str(refusal.get("reason", ""))
        self.approval = refusal.get("id")
        NotPermitted.__init__(self, decision)
        self.args = (f"approval {self.approval} refused ({self.code}): {self.reason} "
                     f"(certificate {decision.certificate_id})",)


class LicetUnavailable(LicetError):
    """The server could not be reached or failed: nothing is permitted (fail closed)."""


class ApiError(LicetError):
    """The server refused the request; `code`, `message` and `field` come from its error document."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.code = str(error.get("code", "unknown"))
        self.message = str(error.get("message", ""))
        self.field = error.get("field")
        self.detail = error
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{status} {self.code}{where}: {self.message}")


def raise_for_decision(decision: DecisionResult) -> DecisionResult:
    """`decision` if it is a permit, else the matching `NotPermitted`."""
    kinds: dict[str, type[NotPermitted]] = {"forbid": Forbidden, "deny": Denied,
                                            "require_approval": ApprovalRequired}
    if decision.decision == "permit":
        return decision
    if decision.decision == "deny" and isinstance(decision.proof.get("approval_refused"), dict):
        raise ApprovalRefused(decision)
    raise kinds.get(decision.decision, Denied)(decision)
