"""Administration of a tenant (owners and admins): people (invite with a role, change a role, disable or
enable, invite again), API keys (create with roles and an expiry, the secret shown once with a copy button;
revoke; rotate), webhooks (add, remove, send a test event, their deliveries and retries) and the approval defaults
(escalation role and timing).

Every read and write is a `/v1` call as the signed-in person; the API decides who may do what (a role
without `users.manage`, `keys.manage` or `webhooks.manage` sees its refusal). Writes need a recent second
factor: one refused with `step_up_required` is held, the step-up asked for in place, then done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import reflex as rx

from licet.dashboard.api import Reply
from licet.dashboard.layout import error_callout, field, page, step_up_dialog
from licet.dashboard.pages.explorer import shown_time
from licet.dashboard.state import Session, StepUp, refusal

PERSON_ROLES = ("owner", "admin", "policy_author", "approver", "auditor")
KEY_ROLES = (*PERSON_ROLES, "agent")
WEBHOOK_EVENTS = ("opened", "escalated", "granted", "denied", "expired", "cancelled", "used")
# What an answer shows once: an invitation's token, a key's secret, a webhook's signing secret.
Shown = Literal["invitation", "secret", "webhook_secret", "none"]


class PersonRow(TypedDict):
    id: str
    email: str
    name: str
    role: str
    created: str
    disabled: bool


class KeyRow(TypedDict):
    id: str
    name: str
    role: str
    principal: str
    principal_roles: str
    created: str
    expires: str
    state: str
    live: bool


class HookRow(TypedDict):
    id: str
    url: str
    events: str
    created: str
    removed: bool


class DeliveryRow(TypedDict):
    id: str
    event: str
    approval: str
    state: str
    attempts: int
    created: str
    next_attempt: str
    last: str


def person_row(user: dict[str, Any]) -> PersonRow:
    return PersonRow(id=user["id"], email=user["email"], name=user["display_name"], role=user["role"],
                     created=shown_time(user["created_at"]), disabled=user["disabled_at"] is not None)


def _ended(moment: str | None, now: datetime) -> bool:
    return moment is not None and datetime.fromisoformat(moment.replace("Z", "+00:00")) <= now


def key_row(key: dict[str, Any], now: datetime) -> KeyRow:
    """A key as listed: its state says why it no longer works, or until when it does."""
    revoked, expires = key["revoked_at"], key["expires_at"]
    if _ended(revoked, now):
        state = "rotated" if key["rotated_to"] else "revoked"
    elif _ended(expires, now):
        state = "expired"
    elif revoked is not None:
        state = f"rotated, works until {shown_time(revoked)}"
    else:
        state = "active"
    return KeyRow(id=key["id"], name=key["name"], role=key["role"], principal=key["principal_id"],
                  principal_roles=", ".join(key["principal_roles"]) or "none", created=shown_time(key["created_at"]),
                  expires=shown_time(expires) if expires else "never", state=state,
                  live=not _ended(revoked, now) and not _ended(expires, now))


def hook_row(hook: dict[str, Any]) -> HookRow:
    return HookRow(id=hook["id"], url=hook["url"], events=", ".join(hook["events"]) or "every event",
                   created=shown_time(hook["created_at"]), removed=hook["disabled_at"] is not None)


def delivery_row(delivery: dict[str, Any]) -> DeliveryRow:
    last = delivery["last_error"] or (f"HTTP {delivery['last_status']}" if delivery["last_status"] else "—")
    return DeliveryRow(id=delivery["id"], event=delivery["event"], approval=delivery["approval_id"] or "",
                       state=delivery["state"], attempts=delivery["attempts"],
                       created=shown_time(delivery["created_at"]),
                       next_attempt=shown_time(delivery["next_attempt_at"]) if delivery["state"] == "pending" else "—",
                       last=last)


def key_body(form: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/keys`'s body from the form: roles as a comma list, the expiry a UTC date (blank: never)."""
    expires = str(form.get("expires_at") or "").strip()
    return {"name": str(form.get("name", "")).strip(), "role": form.get("role", "agent"),
            "principal_id": str(form.get("principal_id", "")).strip(),
            "principal_roles": [r.strip() for r in str(form.get("principal_roles", "")).split(",") if r.strip()],
            "expires_at": f"{expires}T23:59:59Z" if expires else None}


def settings_body(form: dict[str, Any]) -> dict[str, Any]:
    """`PUT /v1/approvals/settings`'s body: a blank field is null (the server's default applies)."""
    def number(name: str) -> int | str | None:
        text = str(form.get(name) or "").strip()
        return None if not text else int(text) if text.isdigit() else text  # the API names a bad one

    def role(name: str) -> str | None:
        return str(form.get(name) or "") or None

    return {"quorum": number("quorum"), "role": role("role"), "ttl_seconds": number("ttl_seconds"),
            "deny_quorum": number("deny_quorum"), "escalate_after_seconds": number("escalate_after_seconds"),
            "escalate_role": role("escalate_role")}


# A write held for a step-up: what it shows once, its call, and what the notice says when it is done.
Held = tuple[Shown, str, str, dict[str, Any] | None, str]


class Admin(StepUp, Session):
    """The tenant's people, keys, webhooks and approval defaults, through `/v1`."""

    people: rx.Field[list[PersonRow]] = rx.field(default_factory=list)
    keys: rx.Field[list[KeyRow]] = rx.field(default_factory=list)
    hooks: rx.Field[list[HookRow]] = rx.field(default_factory=list)
    deliveries: rx.Field[list[DeliveryRow]] = rx.field(default_factory=list)
    deliveries_of: rx.Field[str] = rx.field("")
    settings: rx.Field[dict[str, str]] = rx.field(default_factory=dict)
    shown_label: rx.Field[str] = rx.field("")
    shown_value: rx.Field[str] = rx.field("")
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    _held: Held | None = None
    _deliveries_hook: str = ""  # the webhook whose deliveries are shown (kept current after each write)

    async def _refresh(self) -> None:
        api = self.api()
        users, keys, hooks, defaults = (await api.get("/v1/users"), await api.get("/v1/keys"),
                                        await api.get("/v1/webhooks"), await api.get("/v1/approvals/settings"))
        refused = next((r for r in (users, keys, hooks, defaults) if not r.ok), None)
        if refused is not None:
            self.error = refusal(refused)
            return
        now = datetime.now(UTC)
        self.people = [person_row(u) for u in users.body["users"]]
        self.keys = [key_row(k, now) for k in keys.body["keys"]]
        self.hooks = [hook_row(h) for h in hooks.body["webhooks"]]
        self.settings = {k: "" if v is None else str(v) for k, v in defaults.body.items()}
        if self._deliveries_hook:
            await self._load_deliveries()

    async def _load_deliveries(self) -> None:
        reply = await self.api().get(f"/v1/webhooks/{self._deliveries_hook}/deliveries")
        if reply.ok:
            self.deliveries_of = next((h["url"] for h in self.hooks if h["id"] == self._deliveries_hook),
                                      self._deliveries_hook)
            self.deliveries = [delivery_row(d) for d in reply.body["deliveries"]]
        else:
            self.error = refusal(reply)

    @rx.event
    async def load(self) -> None:
        if self.signed_in:
            self.error, self.notice, self.shown_label, self.shown_value = "", "", "", ""
            self.deliveries, self.deliveries_of, self._deliveries_hook = [], "", ""
            await self._refresh()

    async def _write(self, held: Held) -> None:
        """Make the write `held`; a refusal for stale MFA holds it for the step-up."""
        shown, method, path, body, done = held
        self.error, self.notice, self.shown_label, self.shown_value = "", "", "", ""
        reply = await self.api().call(method, path, json=body)
        if reply.error_code == "step_up_required":
            self._held = held
            self._ask_step_up()
            return
        if not reply.ok:
            self.error = refusal(reply)
            return
        self.notice = done
        self._show_once(shown, reply)
        await self._refresh()

    def _show_once(self, shown: Shown, reply: Reply) -> None:
        if shown == "invitation":
            invitation = reply.body["invitation"]
            self.shown_label = (f"Invitation for {reply.body['user']['email']} (valid until "
                                f"{shown_time(invitation['expires_at'])}): send them this link")
            self.shown_value = f"{self.router.url.origin}/invite?token={invitation['token']}"
        elif shown == "secret":
            self.shown_label = f"Secret of the key “{reply.body['key']['name']}”"
            self.shown_value = reply.body["secret"]
        elif shown == "webhook_secret":
            self.shown_label = f"Signing secret of the webhook to {reply.body['url']}"
            self.shown_value = reply.body["secret"]

    async def _resume(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self._write(held)

    def _drop(self) -> None:
        self._held = None

    @rx.event
    async def invite(self, form: dict[str, Any]) -> None:
        body = {"email": str(form.get("email", "")).strip(), "display_name": str(form.get("display_name", "")).strip(),
                "role": form.get("role", "")}
        await self._write(("invitation", "POST", "/v1/users", body, f"{body['email']} invited as {body['role']}."))

    @rx.event
    async def change_role(self, user_id: str, email: str, role: str) -> None:
        await self._write(("none", "POST", f"/v1/users/{user_id}/role", {"role": role},
                           f"{email} is now {role}."))

    @rx.event
    async def set_disabled(self, user_id: str, email: str, disabled: bool) -> None:
        verb = "disable" if disabled else "enable"
        await self._write(("none", "POST", f"/v1/users/{user_id}/{verb}", None, f"{email}: account {verb}d."))

    @rx.event
    async def reinvite(self, user_id: str, email: str) -> None:
        await self._write(("invitation", "POST", f"/v1/users/{user_id}/invitation", None,
                           f"New invitation for {email}; earlier links no longer work."))

    @rx.event
    async def create_key(self, form: dict[str, Any]) -> None:
        body = key_body(form)
        await self._write(("secret", "POST", "/v1/keys", body, f"Key “{body['name']}” created."))

    @rx.event
    async def revoke_key(self, key_id: str, name: str) -> None:
        await self._write(("none", "POST", f"/v1/keys/{key_id}/revoke", None, f"Key “{name}” revoked."))

    @rx.event
    async def rotate_key(self, key_id: str, name: str) -> None:
        await self._write(("secret", "POST", f"/v1/keys/{key_id}/rotate", {"grace_seconds": 0},
                           f"Key “{name}” rotated: the old secret no longer works."))

    @rx.event
    async def create_hook(self, form: dict[str, Any]) -> None:
        events = [e for e in WEBHOOK_EVENTS if form.get(f"event-{e}")]
        body = {"url": str(form.get("url", "")).strip(), "events": events}
        await self._write(("webhook_secret", "POST", "/v1/webhooks", body, f"Webhook to {body['url']} added."))

    @rx.event
    async def remove_hook(self, hook_id: str, url: str) -> None:
        await self._write(("none", "DELETE", f"/v1/webhooks/{hook_id}", None, f"Webhook to {url} removed."))

    @rx.event
    async def send_test(self, hook_id: str, url: str) -> None:
        """Queue a signed test event; the webhook's deliveries then show it (the refresh after the write)."""
        self._deliveries_hook = hook_id
        await self._write(("none", "POST", f"/v1/webhooks/{hook_id}/test", None,
                           f"Test event queued for {url}: it shows below with its attempts."))

    @rx.event
    async def show_deliveries(self, hook_id: str) -> None:
        self.error = ""
        self._deliveries_hook = hook_id
        await self._load_deliveries()

    @rx.event
    async def save_settings(self, form: dict[str, Any]) -> None:
        await self._write(("none", "PUT", "/v1/approvals/settings", settings_body(form),
                           "Approval defaults saved: they apply to approvals opened from now on."))


def inline(label: str, control: rx.Component) -> rx.Component:
    """A labelled control that shares a row with its neighbours where there is room."""
    return rx.box(field(label, control), flex="1 1 180px", min_width="0")


def _select(id: str, name: str, options: tuple[str, ...], default: str | rx.Var[str]) -> rx.Component:
    return rx.el.select(*[rx.el.option(o or "server default", value=o) for o in options], id=id, name=name,
                        default_value=default,
                        class_name="admin-select")


def _shown_once() -> rx.Component:
    return rx.cond(
        Admin.shown_value != "",
        rx.callout(
            rx.vstack(
                rx.text(Admin.shown_label, ". Shown only now: copy it somewhere safe.", weight="bold"),
                rx.hstack(rx.code(Admin.shown_value, id="shown-once", class_name="break"),
                          rx.button("Copy", size="1", variant="soft", on_click=rx.set_clipboard(Admin.shown_value),
                                    id="copy-shown"), align="center", wrap="wrap"),
                spacing="2",
            ),
            color_scheme="amber", width="100%", role="status",
        ),
    )


def _person(row: rx.Var[PersonRow]) -> rx.Component:
    user_id, email = row["id"], row["email"]
    return rx.table.row(
        rx.table.cell(rx.text(row["name"], weight="bold"), rx.text(email, size="1", class_name="break")),
        rx.table.cell(rx.el.select(*[rx.el.option(r, value=r) for r in PERSON_ROLES], value=row["role"],
                                   aria_label=f"Role of {email}", class_name="admin-select person-role",
                                   on_change=lambda role: Admin.change_role(user_id, email, role))),
        rx.table.cell(rx.cond(row["disabled"], rx.badge("disabled", color_scheme="red", high_contrast=True),
                              rx.badge("active", color_scheme="green", high_contrast=True))),
        rx.table.cell(rx.hstack(
            rx.cond(row["disabled"],
                    rx.button("Enable", size="1", variant="soft", class_name="person-enable",
                              on_click=Admin.set_disabled(user_id, email, False)),
                    rx.button("Disable", size="1", variant="soft", color_scheme="red", class_name="person-disable",
                              on_click=Admin.set_disabled(user_id, email, True))),
            rx.button("Invite again", size="1", variant="soft", class_name="person-reinvite",
                      on_click=Admin.reinvite(user_id, email)),
            wrap="wrap", spacing="1")),
        class_name="person-row", data_email=email,
    )


def _table(headers: tuple[str, ...], rows: rx.Component, table_id: str) -> rx.Component:
    """A table of rows under `headers`, scrolling sideways inside its own frame on a phone."""
    return rx.box(rx.table.root(rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
                                rx.table.body(rows), size="1", id=table_id, width="100%"),
                  overflow_x="auto", width="100%")


def _people() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("People", size="4", as_="h2"),
            _table(("Person", "Role", "Account", ""), rx.foreach(Admin.people, _person), "people"),
            rx.form(
                rx.flex(
                    inline("Email", rx.input(id="invite-email", name="email", type="email", required=True)),
                    inline("Name", rx.input(id="invite-name", name="display_name", required=True)),
                    inline("Role", _select("invite-role", "role", PERSON_ROLES, "approver")),
                    rx.button("Invite", type="submit", id="invite"),
                    align="end", wrap="wrap", spacing="2", width="100%",
                ),
                on_submit=Admin.invite, reset_on_submit=True,
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def _key(row: rx.Var[KeyRow]) -> rx.Component:
    key_id, name = row["id"], row["name"]
    return rx.table.row(
        rx.table.cell(rx.text(name, weight="bold"), rx.text(row["principal"], size="1", class_name="mono break")),
        rx.table.cell(row["role"], rx.text(row["principal_roles"], size="1", color_scheme="gray")),
        rx.table.cell(rx.text(row["state"], class_name="key-state"), rx.text("expires ", row["expires"], size="1")),
        rx.table.cell(rx.cond(row["live"], rx.hstack(
            rx.button("Rotate", size="1", variant="soft", class_name="key-rotate",
                      on_click=Admin.rotate_key(key_id, name)),
            rx.button("Revoke", size="1", variant="soft", color_scheme="red", class_name="key-revoke",
                      on_click=Admin.revoke_key(key_id, name)),
            wrap="wrap", spacing="1"))),
        class_name="key-row", data_name=name,
    )


def _keys() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("API keys", size="4", as_="h2"),
            _table(("Key", "Role", "State", ""), rx.foreach(Admin.keys, _key), "keys"),
            rx.form(
                rx.flex(
                    inline("Name", rx.input(id="key-name", name="name", required=True)),
                    inline("Role", _select("key-role", "role", KEY_ROLES, "agent")),
                    inline("Principal", rx.input(id="key-principal", name="principal_id", required=True,
                                                placeholder="agent:payments-bot")),
                    inline("Principal roles (comma separated)", rx.input(id="key-principal-roles",
                                                                        name="principal_roles")),
                    inline("Expires (UTC, end of day; blank: never)", rx.input(id="key-expires", name="expires_at",
                                                                              type="date")),
                    rx.button("Create key", type="submit", id="create-key"),
                    align="end", wrap="wrap", spacing="2", width="100%",
                ),
                on_submit=Admin.create_key, reset_on_submit=True,
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def _hook(row: rx.Var[HookRow]) -> rx.Component:
    hook_id, url = row["id"], row["url"]
    return rx.el.li(
        rx.hstack(
            rx.vstack(rx.text(url, weight="bold", class_name="break"),
                      rx.text(row["events"], " · added ", row["created"], size="1", color_scheme="gray"),
                      spacing="1", min_width="0", flex="1"),
            rx.button("Deliveries", size="1", variant="soft", class_name="hook-deliveries",
                      on_click=Admin.show_deliveries(hook_id)),
            rx.cond(row["removed"], rx.badge("removed", color_scheme="gray", high_contrast=True),
                    rx.fragment(
                        rx.button("Send test event", size="1", variant="soft", class_name="hook-test",
                                  on_click=Admin.send_test(hook_id, url)),
                        rx.button("Remove", size="1", variant="soft", color_scheme="red", class_name="hook-remove",
                                  on_click=Admin.remove_hook(hook_id, url)))),
            align="center", wrap="wrap", width="100%",
        ),
        class_name="hook", style={"padding": "6px 0", "borderBottom": "1px solid var(--gray-a4)", "listStyle": "none"},
    )


def _delivery(row: rx.Var[DeliveryRow]) -> rx.Component:
    return rx.table.row(rx.table.cell(row["event"], class_name="delivery-event"),
                        rx.table.cell(row["state"], class_name="delivery-state"),
                        rx.table.cell(row["attempts"], class_name="delivery-attempts"),
                        rx.table.cell(row["next_attempt"]), rx.table.cell(row["last"], class_name="break"),
                        rx.table.cell(row["created"], class_name="nowrap"), class_name="delivery-row")


def _hooks() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Webhooks", size="4", as_="h2"),
            rx.cond(Admin.hooks.length() == 0, rx.text("No webhook yet.", size="2")),
            rx.el.ul(rx.foreach(Admin.hooks, _hook), id="hooks",
                     style={"margin": "0", "padding": "0", "width": "100%"}),
            rx.cond(Admin.deliveries_of != "", rx.vstack(
                rx.heading("Deliveries to ", Admin.deliveries_of, size="3", as_="h3", class_name="break"),
                rx.cond(Admin.deliveries.length() == 0, rx.text("None yet.", size="2")),
                _table(("Event", "State", "Attempts", "Next attempt", "Last answer", "Created"),
                       rx.foreach(Admin.deliveries, _delivery), "deliveries"),
                width="100%")),
            rx.form(
                rx.vstack(
                    field("URL", rx.input(id="hook-url", name="url", type="url", required=True, width="100%",
                                          placeholder="https://hooks.example.com/licet")),
                    rx.el.fieldset(
                        rx.el.legend("Events (none ticked: every event)", style={"fontSize": "14px"}),
                        rx.flex(*[rx.el.label(rx.el.input(type="checkbox", name=f"event-{e}", id=f"hook-event-{e}"),
                                              " ", e, style={"fontSize": "14px"}) for e in WEBHOOK_EVENTS],
                                wrap="wrap", spacing="3"),
                        style={"border": "none", "padding": "0", "margin": "0"},
                    ),
                    rx.button("Add webhook", type="submit", id="create-hook"),
                    spacing="2", width="100%",
                ),
                on_submit=Admin.create_hook, reset_on_submit=True,
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def _number(label: str, name: str) -> rx.Component:
    return inline(label, rx.input(id=f"settings-{name}", name=name, default_value=Admin.settings[name],
                                 input_mode="numeric", key=Admin.settings[name]))


def _settings() -> rx.Component:
    roles = ("", *PERSON_ROLES)
    return rx.card(
        rx.vstack(
            rx.heading("Approval defaults", size="4", as_="h2"),
            rx.text("What applies where a rule's approval block is silent. A blank field falls back to the server's "
                    "setting.", size="2"),
            rx.form(
                rx.flex(
                    _number("Quorum", "quorum"),
                    inline("Approver role", _select("settings-role", "role", roles, Admin.settings["role"])),
                    _number("Time to decide (seconds)", "ttl_seconds"),
                    _number("Denials that close it", "deny_quorum"),
                    _number("Escalate after (seconds, 0: never)", "escalate_after_seconds"),
                    inline("Escalate to role", _select("settings-escalate-role", "escalate_role", roles,
                                                      Admin.settings["escalate_role"])),
                    rx.button("Save defaults", type="submit", id="save-settings"),
                    align="end", wrap="wrap", spacing="2", width="100%",
                ),
                on_submit=Admin.save_settings, key=Admin.settings.to_string(),
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def admin_page() -> rx.Component:
    return page(
        "Administration",
        error_callout(Admin.error, "admin-error"),
        rx.cond(Admin.notice != "", rx.callout(Admin.notice, color_scheme="green", id="admin-notice", role="status",
                                               width="100%")),
        _shown_once(),
        _people(),
        _keys(),
        _hooks(),
        _settings(),
        step_up_dialog(Admin, "Administrative changes need a second factor within the last few minutes."),
    )
