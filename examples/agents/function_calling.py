"""An OpenAI-style function-calling loop, guarded by Licet, with a scripted model stand-in: runs
without network access.

    .venv/bin/python examples/agents/function_calling.py

The "model" returns tool calls in the Chat Completions shape (`{"tool_calls": [{"function":
{"name", "arguments": "<json>"}}]}`); the loop first asks Licet to pre-flight the whole batch,
then executes each call through the guard, and feeds every outcome back as a `tool` message — a
refusal included, with the rule and the certificate id, so the model can adapt instead of retrying
blindly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from licet import kernel, sdk

EXAMPLES = Path(__file__).resolve().parent.parent
IBAN = "DE89370400440532013000"

TOOLS = [{"type": "function", "function": {
    "name": "payments__refund", "description": "Refund (part of) a charge.",
    "parameters": {"type": "object", "required": ["account", "charge", "amount", "charged_amount", "currency"],
                   "properties": {"account": {"type": "string"}, "charge": {"type": "string"},
                                  "amount": {"type": "number"}, "charged_amount": {"type": "number"},
                                  "currency": {"type": "string"}}}}}]


def scripted_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Stands in for the model: one batch of refunds, then a final answer."""
    if messages[-1]["role"] == "tool":
        return {"role": "assistant", "content": "Done: see the tool results above."}
    calls = [("ch-1", 40, 40), ("ch-2", 900, 900), ("ch-3", 80, 50)]  # the last refunds more than charged
    return {"role": "assistant", "tool_calls": [
        {"id": f"call_{i}", "type": "function", "function": {"name": "payments__refund", "arguments": json.dumps(
            {"account": "acc-001", "charge": charge, "amount": amount, "charged_amount": charged,
             "currency": "EUR"})}} for i, (charge, amount, charged) in enumerate(calls)]}


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="licet-fc-"))
    licet = sdk.LocalLicet(EXAMPLES / "payments-agent.yaml", kernel.Signer(os.urandom(32)), workdir / "log",
                           principal={"id": "agent:support-refunds", "roles": ["payments-agent"]},
                           context={"mfa": True})
    agent = sdk.Agent(licet)

    @agent.tool(resource="/accounts/{account}/charges/{charge}",
                args=lambda account, charge, **rest: rest)
    def payments__refund(account: str, charge: str, amount: float, charged_amount: float, currency: str) -> str:
        return f"refunded {amount} {currency} of {charge}"

    tools = {"payments__refund": payments__refund}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Refund the three disputed charges."}]
    while True:
        reply = scripted_model(messages)
        messages.append(reply)
        if not reply.get("tool_calls"):
            print("assistant:", reply["content"])
            break
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reply["tool_calls"]]
        plan = agent.preflight([(name.replace("__", "."), f"/accounts/{a['account']}/charges/{a['charge']}",
                                 {k: v for k, v in a.items() if k not in ("account", "charge")})
                                for name, a in calls])
        print(f"pre-flight of {len(calls)} calls: {plan.verdict}"
              + (f" (first failing step {plan.counterexample['step']})" if plan.counterexample else ""))
        for call, (name, arguments) in zip(reply["tool_calls"], calls, strict=True):
            try:
                content = tools[name](**arguments)
            except sdk.ApprovalRequired as exc:
                content = f"needs approval ({', '.join(exc.decision.rules)}); certificate {exc.decision.certificate_id}"
            except sdk.NotPermitted as exc:
                content = (f"{exc.decision.decision} by {', '.join(exc.decision.rules) or 'default deny'}; "
                           f"certificate {exc.decision.certificate_id}")
            print(f"tool {name}({arguments['charge']}): {content}")
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    licet.close()


if __name__ == "__main__":
    main()
