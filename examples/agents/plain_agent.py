"""A plain Python agent guarded by Licet in local mode: no server, no network.

    .venv/bin/python examples/agents/plain_agent.py

Each tool call is decided by the kernel first and runs only on a permit; the certificate of every
decision goes into a local evidence log. Shows a permit, a forbid, an approval required and a
pre-flight plan rejection.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from licet import kernel, sdk

EXAMPLES = Path(__file__).resolve().parent.parent
IBAN = "DE89370400440532013000"


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="licet-agent-"))
    licet = sdk.LocalLicet(EXAMPLES / "payments-agent.yaml", kernel.Signer(os.urandom(32)), workdir / "log",
                           principal={"id": "agent:payments-bot", "roles": ["payments-agent"]},
                           context={"mfa": True})
    agent = sdk.Agent(licet)

    @agent.tool(resource="/accounts/{account}")
    def payments__transfer(account: str, amount: int, currency: str, country: str,
                           beneficiary_iban: str = IBAN) -> str:
        return f"transferred {amount} {currency} from {account}"

    attempts = [("acc-001", 250, "EUR", "DE"), ("acc-001", 250, "EUR", "RU"), ("acc-001", 4000, "EUR", "FR")]
    for account, amount, currency, country in attempts:
        try:
            print("permit:", payments__transfer(account, amount, currency, country))
        except sdk.ApprovalRequired as exc:
            print("approval required:", ", ".join(exc.decision.rules))
        except sdk.NotPermitted as exc:
            print(f"{exc.decision.decision}:", ", ".join(exc.decision.rules))

    plan = agent.preflight([("payments.transfer", "/accounts/acc-002",
                             {"amount": 1000, "currency": "EUR", "country": "DE", "beneficiary_iban": IBAN})] * 10)
    found = plan.counterexample or {}
    because = found.get("invariant") or found.get("rule")
    print(f"pre-flight: {plan.verdict} (first failing step {found.get('step')}, {because})")
    print(f"evidence log: {licet.log.size} certificates in {workdir / 'log'}")
    licet.close()


if __name__ == "__main__":
    main()
