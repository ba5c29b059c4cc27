"""Delegation grants as a tree (issuer → holder, re-delegations under their parent), each with its scope and
expiry; issuing a grant after the kernel's attenuation check is shown (a dry run of `POST /v1/delegations`:
the grant issued is exactly the one checked); revoking after a preview of what the revocation cascades to
(a dry run of `POST /v1/delegations/{id}/revoke`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypedDict

import reflex as rx
import yaml

from licet.dashboard.layout import error_callout, field, page
from licet.dashboard.pages.admin import inline
from licet.dashboard.pages.explorer import shown_time
from licet.dashboard.state import Session, refusal

WRITE = "delegations.write"
EXAMPLE_SCOPE = """- id: small-refunds
  effect: permit
  action: [payments.refund]
  resource: ["/accounts/*"]
  when: args.amount <= 100
"""


class GrantRow(TypedDict):
    """A grant as the tree shows it, `depth` levels under its root."""

    id: str
    issuer: str
    delegate: str
    scope: str
    expires: str
    max_depth: int
    state: str
    live: bool
    depth: int
    indent: str  # how far right the tree draws it (at most four steps, so a deep chain still fits a phone)


class CascadeRow(TypedDict):
    id: str
    holder: str
    already: bool


def tree(grants: list[dict[str, Any]], now: datetime) -> list[GrantRow]:
    """`grants` depth first: each root (no parent, or a parent not listed), then what was issued under it."""
    listed = {g["id"] for g in grants}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for grant in grants:  # the API lists them oldest first
        children.setdefault(grant["parent"] if grant["parent"] in listed else None, []).append(grant)
    rows: list[GrantRow] = []
    stack = [(g, 0) for g in reversed(children.get(None, []))]
    while stack:
        grant, depth = stack.pop()
        expired = datetime.fromisoformat(grant["expires_at"]) <= now
        state = ("revoked " + shown_time(grant["revoked_at"]) if grant["revoked_at"]
                 else "expired" if expired else "live")
        rows.append(GrantRow(id=grant["id"], issuer=grant["issuer"], delegate=grant["delegate"],
                             scope=yaml.safe_dump(grant["scope"], sort_keys=False, allow_unicode=True).strip(),
                             expires=shown_time(grant["expires_at"]), max_depth=grant["max_depth"], state=state,
                             live=state == "live", depth=depth, indent=f"{min(depth, 4) * 24}px"))
        stack.extend((c, depth + 1) for c in reversed(children.get(grant["id"], [])))
    return rows


def grant_body(form: dict[str, Any]) -> dict[str, Any] | str:
    """`POST /v1/delegations`'s body from the form, or what is wrong with the scope (the API names the rest)."""
    try:
        scope = yaml.safe_load(str(form.get("scope", "")))
    except yaml.YAMLError as exc:
        return f"scope: not YAML ({exc})"
    if not isinstance(scope, list) or not all(isinstance(rule, dict) for rule in scope):
        return "scope: a list of rules (each a mapping with id, effect, action, ...)"
    expires = str(form.get("expires_at", "")).strip()
    depth = str(form.get("max_depth", "")).strip() or "0"
    return {"delegate": str(form.get("delegate", "")).strip(), "scope": scope,
            "expires_at": f"{expires}:00Z" if len(expires) == 16 else expires,  # datetime-local, read as UTC
            "max_depth": int(depth) if depth.isdigit() else depth, "parent": form.get("parent") or None}


class Delegations(Session):
    """The tenant's grants (an agent's own key sees only its own, as the API decides)."""

    grants: rx.Field[list[GrantRow]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    verdict: rx.Field[str] = rx.field("")  # the attenuation check of the form's grant, in words
    reasons: rx.Field[list[str]] = rx.field(default_factory=list)
    counterexample: rx.Field[str] = rx.field("")
    checked: rx.Field[bool] = rx.field(False)  # the check passed: the checked grant may be issued
    cascade_of: rx.Field[str] = rx.field("")
    cascade: rx.Field[list[CascadeRow]] = rx.field(default_factory=list)
    _checked_body: dict[str, Any] | None = None

    async def _refresh(self) -> None:
        reply = await self.api().get("/v1/delegations")
        if reply.ok:
            self.grants = tree(reply.body["grants"], datetime.now(UTC))
        else:
            self.error = refusal(reply)

    def _clear(self) -> None:
        self.error, self.notice, self.verdict, self.reasons, self.counterexample = "", "", "", [], ""
        self.checked, self._checked_body = False, None
        self.cascade_of, self.cascade = "", []

    @rx.event
    async def load(self) -> None:
        if self.signed_in:
            self._clear()
            await self._refresh()

    @rx.event
    async def check(self, form: dict[str, Any]) -> None:
        """The dry run: the kernel's verdict on the form's grant, nothing stored."""
        self._clear()
        body = grant_body(form)
        if isinstance(body, str):
            self.error = body
            return
        reply = await self.api().call("POST", "/v1/delegations", params={"dry_run": "true"}, json=body)
        if reply.ok:
            attenuation = reply.body["attenuation"]
            self.verdict = ("No parent grant: nothing to attenuate. The scope is valid." if attenuation is None
                            else "Attenuates its parent: the kernel proved the grant allows nothing its parent "
                                 "does not.")
            self.checked, self._checked_body = True, body
        elif reply.error_code == "not_attenuating":
            attenuation = reply.body["error"]["attenuation"]
            self.verdict = ("Widens its parent: it cannot be issued." if attenuation["answer"] == "widens" else
                            "The kernel could not prove it attenuates its parent: it cannot be issued.")
            self.reasons = attenuation["reasons"]
            example = attenuation.get("counterexample")
            if example:
                self.counterexample = json.dumps(example["request"], indent=2, sort_keys=True)
        else:
            self.error = refusal(reply)

    @rx.event
    async def issue(self) -> None:
        body = self._checked_body
        if body is None:
            return
        self._clear()
        reply = await self.api().post("/v1/delegations", body)
        if reply.ok:
            grant = reply.body["grant"]
            self.notice = f"Grant {grant['id']} issued to {grant['delegate']}."
            await self._refresh()
        else:
            self.error = refusal(reply)

    @rx.event
    async def preview_revoke(self, grant_id: str) -> None:
        self._clear()
        reply = await self.api().call("POST", f"/v1/delegations/{grant_id}/revoke", params={"dry_run": "true"})
        if not reply.ok:
            self.error = refusal(reply)
            return
        shown = {g["id"]: g for g in self.grants}
        self.cascade_of = grant_id
        self.cascade = [CascadeRow(id=gid, holder=shown[gid]["delegate"] if gid in shown else "?",
                                   already=gid in shown and not shown[gid]["live"]) for gid in reply.body["revoked"]]

    @rx.event
    def cancel_revoke(self) -> None:
        self.cascade_of, self.cascade = "", []

    @rx.event
    async def revoke(self) -> None:
        grant_id = self.cascade_of
        self._clear()
        reply = await self.api().post(f"/v1/delegations/{grant_id}/revoke")
        if reply.ok:
            self.notice = f"Revoked {len(reply.body['revoked'])} grant(s): {', '.join(reply.body['revoked'])}."
            await self._refresh()
        else:
            self.error = refusal(reply)


def _grant(row: rx.Var[GrantRow]) -> rx.Component:
    return rx.el.li(
        rx.vstack(
            rx.hstack(
                rx.text(rx.code(row["issuer"]), " → ", rx.code(row["delegate"]), class_name="break"),
                rx.badge(row["state"], color_scheme=rx.cond(row["live"], "green", "gray"), high_contrast=True,
                         class_name="grant-state"),
                rx.spacer(),
                rx.cond(Session.permissions.contains(WRITE) & row["live"],
                        rx.button("Revoke…", size="1", variant="soft", color_scheme="red", class_name="grant-revoke",
                                  on_click=Delegations.preview_revoke(row["id"]))),
                align="center", wrap="wrap", width="100%",
            ),
            rx.text("expires ", row["expires"], " · may re-delegate ", row["max_depth"], " more level(s) · ",
                    rx.code(row["id"], class_name="grant-id"), size="1", color_scheme="gray", class_name="break"),
            rx.el.pre(row["scope"], class_name="grant-scope",
                      style={"fontSize": "12px", "background": "var(--gray-a3)", "padding": "6px", "margin": "0",
                             "overflowX": "auto", "maxWidth": "100%"}),
            spacing="1", width="100%",
        ),
        class_name="grant", data_id=row["id"], data_depth=row["depth"],
        style={"listStyle": "none", "padding": "8px 0", "borderBottom": "1px solid var(--gray-a4)",
               "marginLeft": row["indent"],
               "borderLeft": rx.cond(row["depth"] > 0, "2px solid var(--accent-a6)", "none"),
               "paddingLeft": rx.cond(row["depth"] > 0, "10px", "0")},
    )


def _cascade() -> rx.Component:
    return rx.cond(
        Delegations.cascade_of != "",
        rx.callout(
            rx.vstack(
                rx.text("Revoking this grant revokes ", Delegations.cascade.length(), " grant(s), it and every grant "
                        "issued under it:", weight="bold"),
                rx.el.ul(rx.foreach(Delegations.cascade, lambda c: rx.el.li(
                    rx.code(c["id"]), " held by ", rx.code(c["holder"]),
                    rx.cond(c["already"], rx.text(" (no longer live)", as_="span")), class_name="cascade-item")),
                    id="cascade", style={"margin": "0"}),
                rx.hstack(rx.button("Revoke them", color_scheme="red", on_click=Delegations.revoke,
                                    id="confirm-revoke"),
                          rx.button("Cancel", variant="soft", color_scheme="gray", on_click=Delegations.cancel_revoke),
                          wrap="wrap"),
                spacing="2",
            ),
            color_scheme="amber", width="100%", id="revoke-preview",
        ),
    )


def _issue_form() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Issue a grant", size="4", as_="h2"),
            rx.text("You are the issuer. A grant under a parent must attenuate it: the kernel's check is shown "
                    "before anything is saved.", size="2"),
            rx.form(
                rx.vstack(
                    rx.flex(
                        inline("Holder (delegate)", rx.input(id="grant-delegate", name="delegate", required=True,
                                                             placeholder="agent:invoice-helper")),
                        inline("Under grant (re-delegation)", rx.el.select(
                            rx.el.option("none: a new root grant", value=""),
                            rx.foreach(Delegations.grants, lambda g: rx.cond(
                                g["live"], rx.el.option(g["delegate"].to(str) + " · " + g["id"].to(str),
                                                        value=g["id"]))),
                            id="grant-parent", name="parent", class_name="admin-select")),
                        inline("Expires (UTC)", rx.input(id="grant-expires", name="expires_at", type="datetime-local",
                                                         required=True)),
                        inline("Further levels", rx.input(id="grant-depth", name="max_depth", type="number", min=0,
                                                          max=16, default_value="0")),
                        wrap="wrap", spacing="2", width="100%",
                    ),
                    field("Scope (rules in the policy language, YAML)",
                          rx.text_area(id="grant-scope", name="scope", default_value=EXAMPLE_SCOPE, rows="7",
                                       width="100%", style={"fontFamily": "var(--code-font-family)"})),
                    rx.button("Check", type="submit", id="check-grant"),
                    spacing="2", width="100%",
                ),
                on_submit=Delegations.check,
            ),
            rx.cond(Delegations.verdict != "", rx.callout(
                rx.vstack(
                    rx.text(Delegations.verdict, weight="bold"),
                    rx.foreach(Delegations.reasons, lambda r: rx.text("• ", r, size="2")),
                    rx.cond(Delegations.counterexample != "", rx.vstack(
                        rx.text("A request the grant would allow and its parent would not:", size="2"),
                        rx.el.pre(Delegations.counterexample, id="grant-counterexample",
                                  style={"fontSize": "12px", "margin": "0", "overflowX": "auto", "maxWidth": "100%"}),
                        width="100%")),
                    rx.cond(Delegations.checked, rx.button("Issue the grant checked above", id="issue-grant",
                                                           on_click=Delegations.issue)),
                    spacing="2", width="100%",
                ),
                color_scheme=rx.cond(Delegations.checked, "green", "red"), id="grant-check", width="100%",
                role="status",
            )),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def delegations_page() -> rx.Component:
    return page(
        "Delegations",
        rx.text("Who may act for whom: each grant under the grant it re-delegates.", color_scheme="gray"),
        error_callout(Delegations.error, "delegations-error"),
        rx.cond(Delegations.notice != "", rx.callout(Delegations.notice, color_scheme="green", id="delegations-notice",
                                                     role="status", width="100%")),
        _cascade(),
        rx.cond(Delegations.grants.length() == 0, rx.text("No grant yet.", id="no-grants")),
        rx.el.ul(rx.foreach(Delegations.grants, _grant), id="grants",
                 style={"margin": "0", "padding": "0", "width": "100%"}),
        rx.cond(Session.permissions.contains(WRITE), _issue_form()),
    )
