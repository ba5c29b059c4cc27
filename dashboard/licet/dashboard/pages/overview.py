"""Overview: the active policy, what waits for people, decisions per outcome over time, the most refused
actions and agents, the log's size and newest checkpoint."""

from __future__ import annotations

from typing import Any, TypedDict

import reflex as rx

from licet.dashboard.layout import error_callout, page
from licet.dashboard.state import Session, refusal

OUTCOMES = (("permit", "green"), ("require_approval", "amber"), ("forbid", "red"), ("deny", "gray"))
WINDOWS = ("hour", "day", "week")


class Ranked(TypedDict):
    """An action or agent and how often it was refused."""

    name: str
    count: int


class Overview(Session):
    """Figures read from `/v1` for the overview."""

    policy: rx.Field[str] = rx.field("")
    pending: rx.Field[int] = rx.field(0)
    log_size: rx.Field[int] = rx.field(0)
    root_hash: rx.Field[str] = rx.field("")
    window: rx.Field[str] = rx.field("day")
    series: rx.Field[list[dict[str, Any]]] = rx.field(default_factory=list)
    totals: rx.Field[dict[str, int]] = rx.field(default_factory=dict)
    refused_actions: rx.Field[list[Ranked]] = rx.field(default_factory=list)
    refused_agents: rx.Field[list[Ranked]] = rx.field(default_factory=list)
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
        summary = await api.get("/v1/certificates/summary", window=self.window)
        if summary.ok:
            self.series, self.totals = summary.body["series"], summary.body["totals"]
            self.refused_actions = summary.body["most_refused_actions"]
            self.refused_agents = summary.body["most_refused_agents"]
        else:
            problems.append(refusal(summary))
        self.error = "; ".join(problems)

    @rx.event
    async def show(self, window: str | list[str]) -> None:
        """Decisions over the last hour, day or week."""
        if isinstance(window, str) and window in WINDOWS:
            self.window = window
            await self.load()


def _figure(label: str, value: rx.Var[Any], id: str) -> rx.Component:
    return rx.card(rx.vstack(rx.text(label, size="2", color_scheme="gray"), rx.heading(value, size="5", id=id)),
                   min_width="220px")


def _ranking(title: str, rows: Any, id: str) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(title, size="3", as_="h2"),
            rx.cond(rows.length() == 0, rx.text("Nothing refused in this window.", size="2", color_scheme="gray")),
            rx.el.ol(rx.foreach(rows, lambda r: rx.el.li(rx.code(r["name"]), " · ", r["count"])), id=id,
                     style={"margin": 0, "paddingLeft": "20px"}),
            spacing="2",
        ),
        min_width="280px", flex="1",
    )


def _chart() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading("Decisions per outcome", size="3", as_="h2"),
                rx.spacer(),
                rx.segmented_control.root(
                    *[rx.segmented_control.item(f"Last {w}", value=w) for w in WINDOWS],
                    value=Overview.window, on_change=Overview.show, id="window", aria_label="Time window",
                ),
                wrap="wrap", width="100%",
            ),
            rx.hstack(*[rx.badge(f"{outcome}: ", Overview.totals[outcome], color_scheme=color, high_contrast=True,
                                 id=f"total-{outcome}") for outcome, color in OUTCOMES], wrap="wrap"),
            rx.recharts.bar_chart(
                *[rx.recharts.bar(data_key=outcome, stack_id="outcomes", fill=f"var(--{color}-9)", name=outcome)
                  for outcome, color in OUTCOMES],
                rx.recharts.x_axis(data_key="at"),
                rx.recharts.y_axis(allow_decimals=False),
                rx.recharts.graphing_tooltip(),
                rx.recharts.legend(),
                data=Overview.series, width="100%", height=260,
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


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
        _chart(),
        rx.hstack(_ranking("Most refused actions", Overview.refused_actions, "refused-actions"),
                  _ranking("Most refused agents", Overview.refused_agents, "refused-agents"),
                  wrap="wrap", spacing="4", width="100%"),
        rx.text("Log root ", rx.code(Overview.root_hash), size="2", style={"wordBreak": "break-all"}),
    )
