"""Overview: the active policy, what waits for people, the log's size and newest checkpoint."""

from __future__ import annotations

from typing import Any

import reflex as rx

from licet.dashboard.layout import error_callout, page
from licet.dashboard.state import Session, refusal


class Overview(Session):
    """Figures read from `/v1` for the overview."""

    policy: rx.Field[str] = rx.field("")
    pending: rx.Field[int] = rx.field(0)
    log_size: rx.Field[int] = rx.field(0)
    root_hash: rx.Field[str] = rx.field("")
    outcomes: rx.Field[list[dict[str, Any]]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")

    @rx.event
    async def load(self) -> None:
        if not self.signed_in:
            return
        api, problems = self.api(), []
        policies = await api.get("/v1/policies")
        if policies.ok:
            active = policies.body["active"]
            names = {p["id"]: p["name"] for p in policies.body["policies"]}
            self.policy = (f"{names.get(active['policy_id'], '?')} v{active['number']}" if active
                           else "none active: every request is denied")
        else:
            problems.append(refusal(policies))
        pending = await api.get("/v1/approvals", state="pending", limit=500)
        if pending.ok:
            self.pending = len(pending.body["approvals"])
        checkpoint = await api.get("/v1/evidence/checkpoint")
        if checkpoint.ok:
            self.log_size, self.root_hash = checkpoint.body["size"], checkpoint.body["root_hash"]
        self.error = "; ".join(problems)


def _figure(label: str, value: rx.Var[Any], id: str) -> rx.Component:
    return rx.card(rx.vstack(rx.text(label, size="2", color_scheme="gray"), rx.heading(value, size="5", id=id)),
                   min_width="220px")


def overview_page() -> rx.Component:
    return page(
        "Overview",
        error_callout(Overview.error, "overview-error"),
        rx.hstack(
            _figure("Active policy", Overview.policy, "active-policy"),
            rx.link(_figure("Waiting for approval", Overview.pending, "pending-count"), href="/approvals",
                    underline="none"),
            _figure("Evidence log entries", Overview.log_size, "log-size"),
            wrap="wrap", spacing="4",
        ),
        rx.text("Log root ", rx.code(Overview.root_hash), size="2", style={"wordBreak": "break-all"}),
    )
