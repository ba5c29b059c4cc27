"""The approvals queue: pending requests live, each with its full request, quorum and votes; approve or
deny, with a step-up (TOTP or passkey) asked for in place when the session's MFA is stale."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, TypedDict

import reflex as rx

from licet.dashboard.layout import error_callout, page, step_up_dialog
from licet.dashboard.state import Session, StepUp, refusal

POLL_SECONDS = 1.0  # a new approval shows within this (plus one API call) in every open queue
PAGE = 20  # approvals shown at first and added by "Show more": a long queue still paints at once


class Item(TypedDict):
    """One pending approval, as the queue shows it."""

    id: str
    action: str
    resource: str
    agent: str
    args: str
    rules: str
    policy: str
    policy_hash: str
    request_hash: str
    progress: str
    votes: str
    deadline: str
    remaining: str
    may_vote: bool
    why_not: str


def _remaining(deadline: str, now: datetime) -> str:
    left = int((datetime.fromisoformat(deadline.replace("Z", "+00:00")) - now).total_seconds())
    return "expired" if left <= 0 else f"{left // 60}m {left % 60:02d}s left"


def _version(ref: dict[str, Any] | None) -> str:
    return f"{ref['name']} v{ref['number']}" if ref else "a version no longer stored"


def _item(approval: dict[str, Any], now: datetime) -> Item:
    request = approval["request"]
    votes = ", ".join(f"{v['voter']} ({v['vote']})" for v in approval["votes"]) or "none yet"
    mine = approval.get("your_vote") or {"allowed": False, "reason": "unknown"}
    return Item(id=approval["id"], action=approval["action"], resource=approval["resource"] or "",
                agent=approval["requested_by"], args=json.dumps(request.get("args", {}), indent=2, sort_keys=True),
                rules=", ".join(approval["rules"]), policy=_version(approval.get("policy_version")),
                policy_hash=approval["policy_hash"],
                request_hash=approval["request_hash"],
                progress=f"{approval['approvals']} of {approval['quorum']} approvals ({', '.join(approval['roles'])})",
                votes=votes, deadline=approval["deadline"], remaining=_remaining(approval["deadline"], now),
                may_vote=bool(mine["allowed"]), why_not=mine.get("reason") or "")


class Approvals(StepUp, Session):
    """The pending approvals this person may see, refreshed every second while the page is open."""

    items: rx.Field[list[Item]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    reasons: rx.Field[dict[str, str]] = rx.field(default_factory=dict)
    more: rx.Field[bool] = rx.field(False)
    _shown: int = PAGE
    _pending_vote: tuple[str, bool] | None = None
    _watching: bool = False

    async def _refresh(self) -> None:
        reply = await self.api().get("/v1/approvals", state="pending", limit=self._shown)
        if reply.ok:
            now = datetime.now(UTC)
            self.items = [_item(a, now) for a in reply.body["approvals"]]
            self.more = reply.body["next_before"] is not None
        else:
            self.error = refusal(reply)

    @rx.event
    async def load(self) -> Any:
        if not self.signed_in:
            return None
        await self._refresh()
        return Approvals.watch

    @rx.event(background=True)
    async def watch(self) -> None:
        """Poll `/v1/approvals` while this tab shows the queue (one watcher per tab)."""
        async with self:
            if self._watching:
                return
            self._watching = True
        try:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                async with self:
                    if not self.router.url.path.startswith("/approvals") or not self.signed_in:
                        return
                    await self._refresh()
        finally:
            async with self:
                self._watching = False

    @rx.event
    async def show_more(self) -> None:
        self._shown += PAGE
        await self._refresh()

    @rx.event
    def set_reason(self, approval_id: str, value: str) -> None:
        self.reasons[approval_id] = value

    @rx.event
    async def vote(self, approval_id: str, approve: bool) -> None:
        self.error, self.notice = "", ""
        reason = self.reasons.get(approval_id, "").strip() or None
        verb = "approve" if approve else "deny"
        reply = await self.api().post(f"/v1/approvals/{approval_id}/{verb}", {"reason": reason})
        if reply.error_code == "step_up_required":
            self._pending_vote = (approval_id, approve)
            self._ask_step_up()
            return
        if reply.ok:
            self.notice = f"{'Approved' if approve else 'Denied'} {approval_id}: now {reply.body['state']} " \
                          f"({reply.body['approvals']} of {reply.body['quorum']})"
        else:
            self.error = refusal(reply)
        await self._refresh()

    async def _resume(self) -> None:
        if self._pending_vote is not None:
            approval_id, approve = self._pending_vote
            self._pending_vote = None
            await self.vote(approval_id, approve)

    def _drop(self) -> None:
        self._pending_vote = None


def _card(item: rx.Var[Item]) -> rx.Component:
    approval_id = item["id"]
    return rx.card(
        rx.vstack(
            rx.hstack(rx.heading(item["action"], size="4", as_="h2"),
                      rx.badge("pending", color_scheme="amber", high_contrast=True),
                      rx.spacer(), rx.text(item["remaining"], size="2", class_name="countdown"), wrap="wrap",
                      width="100%"),
            rx.text("Resource ", rx.code(item["resource"]), " · agent ", rx.code(item["agent"]), size="2"),
            rx.text("Asked by rule(s) ", rx.code(item["rules"]), " of ", rx.code(item["policy"], class_name="policy"),
                    " (", rx.code(item["policy_hash"]), ")", size="2", style={"wordBreak": "break-all"}),
            rx.text("Request hash ", rx.code(item["request_hash"]), size="2", style={"wordBreak": "break-all"}),
            rx.el.pre(item["args"], style={"fontSize": "13px", "background": "var(--gray-a3)", "padding": "8px",
                                           "overflowX": "auto", "maxWidth": "100%"}),
            rx.text(item["progress"], " · votes: ", item["votes"], " · deadline ", item["deadline"], size="2",
                    class_name="progress"),
            rx.cond(
                item["may_vote"],
                rx.hstack(
                    rx.input(placeholder="Reason (needed to deny)", aria_label="Reason",
                             on_change=lambda value: Approvals.set_reason(approval_id, value), width="320px",
                             max_width="100%"),
                    rx.button("Approve", color_scheme="green", on_click=Approvals.vote(approval_id, True),
                              class_name="approve"),
                    rx.button("Deny", color_scheme="red", variant="soft", on_click=Approvals.vote(approval_id, False),
                              class_name="deny"),
                    wrap="wrap", spacing="2",
                ),
                rx.callout(rx.text("You cannot vote on this request: ", item["why_not"]), color_scheme="gray",
                           size="1", class_name="why-not"),
            ),
            spacing="2", width="100%",
        ),
        width="100%", class_name="approval", data_approval_id=approval_id,
    )


def approvals_page() -> rx.Component:
    return page(
        "Approvals",
        rx.text("Requests waiting for people. The list refreshes by itself.", color_scheme="gray"),
        error_callout(Approvals.error, "approvals-error"),
        rx.cond(Approvals.notice != "", rx.callout(Approvals.notice, color_scheme="green", id="approvals-notice",
                                                   role="status")),
        rx.cond(Approvals.items.length() == 0, rx.text("Nothing is waiting.", id="approvals-empty")),
        rx.foreach(Approvals.items, _card),
        rx.cond(Approvals.more, rx.button("Show more", variant="soft", on_click=Approvals.show_more,
                                          id="approvals-more")),
        step_up_dialog(Approvals, "Votes need a second factor within the last few minutes."),
    )
