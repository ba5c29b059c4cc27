"""The signed-in person's own settings: their authenticator app (set up or replace it at /enrol, with a
QR code), their passkeys (register one under a name, rename, remove), their backup codes (make a new set,
shown once), their live sessions (revoke any other) and their password.

Registering a passkey and changing the password run in the browser (assets/licet.js: the WebAuthn
ceremony, and the passwords, posted straight to `/v1`, so a password never enters this state); listing,
renaming, removing, revoking and new backup codes go through `/v1` as the person. Whatever needs a
recent MFA asks for the step-up in place, then completes.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import reflex as rx

from licet.dashboard.layout import error_callout, field, page, step_up_dialog
from licet.dashboard.pages.explorer import shown_time
from licet.dashboard.state import Session, StepUp, in_browser, refusal

# The browser registers a passkey under the name typed in the page (it never passes through this state).
REGISTER = "passkeyRegister(document.getElementById('passkey-name').value)"


class PasskeyRow(TypedDict):
    """One of the person's passkeys, as listed."""

    id: str
    name: str
    created: str
    last_used: str


def passkey_row(key: dict[str, Any]) -> PasskeyRow:
    """A passkey from `GET /v1/auth/passkeys` as the page lists it."""
    used = key.get("last_used_at")
    return PasskeyRow(id=key["id"], name=key["name"], created=shown_time(key["created_at"]),
                      last_used=shown_time(used) if used else "never")


class SessionRow(TypedDict):
    """One of the person's live sessions, as listed."""

    id: str
    method: str
    created: str
    last_seen: str
    source: str
    user_agent: str
    current: bool


def session_row(record: dict[str, Any]) -> SessionRow:
    """A session from `GET /v1/auth/sessions` as the page lists it."""
    return SessionRow(id=record["id"], method=record["method"], created=shown_time(record["created_at"]),
                      last_seen=shown_time(record["last_seen_at"]), source=record["source"],
                      user_agent=record["user_agent"] or "unknown browser", current=bool(record["current"]))


Held = tuple[Literal["register", "remove", "backup_codes"], str]


class Account(StepUp, Session):
    """The person's passkeys and backup codes, read and changed through `/v1/auth/...`."""

    passkeys: rx.Field[list[PasskeyRow]] = rx.field(default_factory=list)
    sessions: rx.Field[list[SessionRow]] = rx.field(default_factory=list)
    new_names: rx.Field[dict[str, str]] = rx.field(default_factory=dict)
    backup_codes: rx.Field[list[str]] = rx.field(default_factory=list)
    backup_codes_left: rx.Field[int] = rx.field(0)
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    _held: Held | None = None

    async def _refresh(self) -> None:
        api = self.api()
        listed, me, live = (await api.get("/v1/auth/passkeys"), await api.get("/v1/auth/me"),
                            await api.get("/v1/auth/sessions"))
        refused = next((r for r in (listed, me, live) if not r.ok), None)
        if refused is not None:
            self.error = refusal(refused)
            return
        self.passkeys = [passkey_row(k) for k in listed.body["passkeys"]]
        self.sessions = [session_row(r) for r in live.body["sessions"]]
        self.backup_codes_left, self.mfa_methods = me.body["backup_codes_left"], me.body["mfa_methods"]

    def _refused(self, reply_error: str, held: Held, problem: str) -> None:
        """Hold `held` for a step-up if that is what the API asked for, else show `problem`."""
        if reply_error == "step_up_required":
            self._held = held
            self._ask_step_up()
        else:
            self.error = problem

    @rx.event
    async def load(self) -> None:
        if self.signed_in:
            self.error, self.notice, self.backup_codes = "", "", []
            await self._refresh()

    @rx.event
    def register(self, _form: dict[str, Any]) -> Any:
        self.error, self.notice = "", ""
        return in_browser(REGISTER, Account.registered)

    @rx.event
    async def registered(self, result: dict[str, Any]) -> None:
        """The browser's answer to registering a passkey."""
        body = result.get("body")
        body = body if isinstance(body, dict) else {}
        if result.get("status") == 201:
            self.notice = f"Passkey “{body['passkey']['name']}” added."
            await self._refresh()
            return
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        code, message = str(error.get("code", "")), str(error.get("message", f"HTTP {result.get('status')}"))
        self._refused(code, ("register", ""), f"{message} ({code})" if code else message)

    @rx.event
    def set_new_name(self, passkey_id: str, value: str) -> None:
        self.new_names[passkey_id] = value

    @rx.event
    async def rename(self, passkey_id: str) -> None:
        self.error, self.notice = "", ""
        name = self.new_names.get(passkey_id, "").strip()
        if not name:
            self.error = "Type the passkey's new name first."
            return
        reply = await self.api().call("PATCH", f"/v1/auth/passkeys/{passkey_id}", json={"name": name})
        if reply.ok:
            self.notice = f"Passkey renamed “{reply.body['passkey']['name']}”."
            self.new_names.pop(passkey_id, None)
            await self._refresh()
        else:
            self.error = refusal(reply)

    @rx.event
    async def remove(self, passkey_id: str) -> None:
        self.error, self.notice = "", ""
        reply = await self.api().call("DELETE", f"/v1/auth/passkeys/{passkey_id}")
        if reply.ok:
            self.notice = "Passkey removed: it no longer signs you in."
            await self._refresh()
        else:
            self._refused(reply.error_code, ("remove", passkey_id), refusal(reply))

    @rx.event
    async def new_backup_codes(self) -> None:
        self.error, self.notice, self.backup_codes = "", "", []
        reply = await self.api().post("/v1/auth/backup-codes")
        if reply.ok:
            self.backup_codes = reply.body["backup_codes"]
            await self._refresh()
        else:
            self._refused(reply.error_code, ("backup_codes", ""), refusal(reply))

    @rx.event
    async def revoke_session(self, session_id: str) -> None:
        self.error, self.notice = "", ""
        reply = await self.api().call("DELETE", f"/v1/auth/sessions/{session_id}")
        if reply.ok:
            self.notice = "Session revoked: it no longer works."
            await self._refresh()
        else:
            self.error = refusal(reply)

    @rx.event
    async def password_changed(self, result: dict[str, Any]) -> None:
        """The browser's answer to changing the password."""
        self.error, self.notice = "", ""
        body = result.get("body")
        body = body if isinstance(body, dict) else {}
        if result.get("status") == 200:
            count = body["sessions_revoked"]
            self.notice = f"Password changed. {count} other session{'' if count == 1 else 's'} signed out."
            await self._refresh()
            return
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        code, message = str(error.get("code", "")), str(error.get("message", f"HTTP {result.get('status')}"))
        self.error = f"{message} ({code})" if code else message

    async def _resume(self) -> Any:
        held, self._held = self._held, None
        if held is None:
            return None
        what, passkey_id = held
        if what == "register":
            return in_browser(REGISTER, Account.registered)
        if what == "remove":
            await self.remove(passkey_id)
        else:
            await self.new_backup_codes()
        return None

    def _drop(self) -> None:
        self._held = None


def _passkey(row: rx.Var[PasskeyRow]) -> rx.Component:
    passkey_id = row["id"]
    return rx.el.li(
        rx.vstack(
            rx.hstack(rx.text(row["name"], weight="bold", class_name="passkey-name"),
                      rx.text("added ", row["created"], " · last used ", row["last_used"], size="2",
                              color_scheme="gray"), wrap="wrap", align="baseline"),
            rx.hstack(
                rx.input(placeholder="New name", aria_label=f"New name for {row['name']}",
                         on_change=lambda value: Account.set_new_name(passkey_id, value), max_width="100%",
                         class_name="passkey-new-name"),
                rx.button("Rename", variant="soft", on_click=Account.rename(passkey_id), class_name="passkey-rename"),
                rx.button("Remove", variant="soft", color_scheme="red", on_click=Account.remove(passkey_id),
                          class_name="passkey-remove"),
                wrap="wrap", spacing="2",
            ),
            spacing="2",
        ),
        class_name="passkey", data_id=passkey_id,
        style={"padding": "8px 0", "borderBottom": "1px solid var(--gray-a4)", "listStyle": "none"},
    )


def _session(row: rx.Var[SessionRow]) -> rx.Component:
    return rx.el.li(
        rx.hstack(
            rx.vstack(
                rx.text(row["user_agent"], weight="bold", size="2", class_name="break"),
                rx.text("from ", row["source"], " · signed in ", row["created"], " (", row["method"], ") · last seen ",
                        row["last_seen"], size="2", color_scheme="gray"),
                spacing="1", min_width="0", flex="1",
            ),
            rx.cond(row["current"],
                    rx.badge("this session", color_scheme="green", high_contrast=True),
                    rx.button("Revoke", variant="soft", color_scheme="red", class_name="session-revoke",
                              on_click=Account.revoke_session(row["id"]))),
            align="center", wrap="wrap", width="100%",
        ),
        class_name="session", data_id=row["id"], data_current=row["current"],
        style={"padding": "8px 0", "borderBottom": "1px solid var(--gray-a4)", "listStyle": "none"},
    )


def _authenticator() -> rx.Component:
    totp_on = Account.mfa_methods.contains("totp")
    return rx.card(
        rx.vstack(
            rx.heading("Authenticator app", size="4", as_="h2"),
            rx.text(rx.cond(totp_on, "On: sign-ins and confirmations accept a code from your authenticator app.",
                            "Off: set up an authenticator app to get codes for signing in."),
                    size="2", id="totp-state"),
            rx.button(rx.cond(totp_on, "Replace your authenticator", "Set up an authenticator"), variant="soft",
                      on_click=rx.redirect("/enrol"), id="enrol-totp"),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def _sessions() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Where you are signed in", size="4", as_="h2"),
            rx.text("Revoking a session signs that browser or client out at once.", size="2"),
            rx.el.ul(rx.foreach(Account.sessions, _session), id="sessions",
                     style={"margin": "0", "padding": "0", "width": "100%"}),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def _password() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading("Password", size="4", as_="h2"),
            rx.text("Changing it signs out every other session of yours.", size="2"),
            # Handled in the browser: the passwords go to /v1 only, never to the dashboard's state.
            rx.form(
                rx.vstack(
                    # For password managers: which account the new password belongs to.
                    rx.el.input(type="text", name="username", auto_complete="username", value=Session.email,
                                read_only=True, hidden=True, aria_hidden="true"),
                    field("Current password", rx.input(id="current-password", type="password", required=True,
                                                       auto_complete="current-password", width="100%")),
                    field("New password (12 characters or more, hard to guess)",
                          rx.input(id="new-password", type="password", required=True, auto_complete="new-password",
                                   width="100%")),
                    rx.button("Change password", type="submit", id="change-password"),
                    spacing="3", width="100%", max_width="420px",
                ),
                # Not a state handler: one would receive the form's fields, passwords included.
                on_submit=in_browser("changePassword()", Account.password_changed),
            ),
            spacing="3", width="100%",
        ),
        width="100%",
    )


def account_page() -> rx.Component:
    return page(
        "Your account",
        rx.text(Session.display_name, " · ", Session.email, color_scheme="gray"),
        error_callout(Account.error, "account-error"),
        rx.cond(Account.notice != "", rx.callout(Account.notice, color_scheme="green", id="account-notice",
                                                 role="status", width="100%")),
        _authenticator(),
        rx.card(
            rx.vstack(
                rx.heading("Passkeys", size="4", as_="h2"),
                rx.text("A passkey signs you in on its own, and confirms votes and changes in place of a code.",
                        size="2"),
                rx.cond(Account.passkeys.length() == 0, rx.text("No passkey yet.", id="no-passkeys", size="2")),
                rx.el.ul(rx.foreach(Account.passkeys, _passkey), id="passkeys",
                         style={"margin": "0", "padding": "0", "width": "100%"}),
                rx.form(
                    rx.hstack(
                        field("Name of the new passkey", rx.input(id="passkey-name", default_value="passkey",
                                                                  max_length=100, required=True)),
                        rx.button("Add a passkey", type="submit", id="add-passkey"),
                        align="end", wrap="wrap", spacing="2",
                    ),
                    on_submit=Account.register,
                ),
                spacing="3", width="100%",
            ),
            width="100%",
        ),
        rx.card(
            rx.vstack(
                rx.heading("Backup codes", size="4", as_="h2"),
                rx.text("Each backup code stands in once for a code from your authenticator. Unused codes left: ",
                        rx.el.span(Account.backup_codes_left, id="backup-codes-left"), size="2"),
                rx.cond(
                    Account.backup_codes.length() > 0,
                    rx.vstack(
                        rx.text("Your new codes (the old ones no longer work). Keep them somewhere safe: they "
                                "are shown only now.", size="2"),
                        rx.code_block(Account.backup_codes.join("\n"), id="backup-codes"),
                        width="100%",
                    ),
                ),
                rx.button("Make new backup codes", on_click=Account.new_backup_codes, variant="soft",
                          id="new-backup-codes"),
                spacing="3", width="100%",
            ),
            width="100%",
        ),
        _sessions(),
        _password(),
        step_up_dialog(Account, "Changing how you sign in needs a second factor within the last few minutes."),
    )
