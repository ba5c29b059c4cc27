"""Local mode: the kernel in-process with a local signing key and a local evidence log directory,
for development and air-gapped use. Same calls and same certificates as the server. The session
history that invariants (budgets, counts, flows) read is kept beside the log, in
`<log_dir>/session.sqlite3` (`licet.sdk.history`): a restarted agent, or another process with the same
log directory, counts what was already spent, and deciders sharing it take turns."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from licet import kernel
from licet.kernel.plans import verify_plan
from licet.sdk.history import HISTORY_FILE, SessionHistory
from licet.sdk.logstore import open_log
from licet.sdk.types import DecisionResult, PlanResult


class LocalLicet:
    """Decide, certify and log on this machine, as one principal of one tenant."""

    def __init__(self, policy: kernel.Policy | str | Path, signing_key: kernel.Signer | str | Path,
                 log_dir: str | Path, *, principal: dict[str, Any], tenant: str = "local",
                 context: dict[str, Any] | None = None, deployment: str = "licet.localhost") -> None:
        self.policy = policy if isinstance(policy, kernel.Policy) else kernel.load_policy(
            Path(policy).read_text(), str(policy))
        self.signer = signing_key if isinstance(signing_key, kernel.Signer) else kernel.parse_signer(
            Path(signing_key).read_text())
        self.tenant = tenant
        self.principal = {**principal, "tenant": tenant}
        self.context = dict(context or {})
        from licet.kernel.checkpoint import tenant_origin

        self.log = open_log(log_dir, tenant_origin(deployment, tenant))
        self.history = SessionHistory(Path(log_dir) / HISTORY_FILE)

    def decide(self, action: str, resource: str, args: dict[str, Any] | None = None) -> DecisionResult:
        """Decide, sign and append to the local log; the certified decision, whatever it is."""
        principal = str(self.principal.get("id", ""))
        request = {"principal": self.principal, "action": action, "resource": resource, "args": args or {},
                   "context": self.context}
        # Read the state, decide, log and record in one transaction: nobody spends in between. The event
        # commits after the certificate is logged; if that fails the call raises and no tool runs.
        with self.history.transaction():
            now = datetime.now(UTC)
            state = (self.history.state(principal, self.policy, now.timestamp())
                     if kernel.involved_invariants(self.policy, request) else {"summary": {}})
            decision = kernel.decide(self.policy, request, state=state, now=now)
            certificate = kernel.issue_certificate(decision, signer=self.signer, tenant=self.tenant, issued_at=now,
                                                   certificate_id=kernel.uuid7(now, os.urandom(10)))
            index = self.log.append(kernel.certificate_leaf(certificate))
            if decision.outcome == "permit":
                self.history.record(principal, now.timestamp(), decision.request, self.policy, index)
        return DecisionResult.from_json({**decision.to_json(), "certificate": certificate,
                                         "certificate_id": certificate["id"], "log_index": index})

    def verify_plan(self, steps: list[dict[str, Any]]) -> PlanResult:
        """Pre-flight check of a plan from the principal's recorded session state."""
        with self.history.transaction():
            now = datetime.now(UTC)
            state = self.history.state(str(self.principal.get("id", "")), self.policy, now.timestamp())
        verdict = verify_plan(self.policy, steps, state=state, now=now, principal=self.principal,
                              context=self.context)
        return PlanResult.from_json(verdict.to_json())

    def close(self) -> None:
        """Close the local log and the session history."""
        self.history.close()
        store = self.log.store
        if hasattr(store, "close"):
            store.close()
