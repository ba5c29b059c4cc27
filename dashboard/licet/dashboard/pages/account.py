"""The signed-in person's own account: their passkeys (register one under a name, rename, remove) and
their backup codes (make a new set, shown once).

Registering runs in the browser (assets/licet.js: the WebAuthn ceremony, posted straight to `/v1`);
listing, renaming, removing and new backup codes go through `/v1` as the person. Whatever needs a
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


Held = tuple[Literal["register", "remove", "backup_codes"], str]


class Account(StepUp, Session):
    """The person's passkeys and backup codes, read and changed through `/v1/auth/...`."""

    passkeys: rx.Field[list[PasskeyRow]] = rx.field(default_factory=list)
    new_names: rx.Field[dict[str, str]] = rx.field(default_factory=dict)
    backup_codes: rx.Field[list[str]] = rx.field(default_factory=list)
    backup_codes_left: rx.Field[int] = rx.field(0)
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    _held: Held | None = None

    async def _refresh(self) -> None:
        api = self.api()
        listed, me = await api.get("/v1/auth/passkeys"), await api.get("/v1/auth/me")
        if not listed.ok or not me.ok:
            self.error = refusal(listed if not listed.ok else me)
            return
        self.passkeys = [passkey_row(k) for k in listed.body["passkeys"]]
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


def account_page() -> rx.Component:
    return page(
        "Your account",
        rx.text(Session.display_name, " · ", Session.email, color_scheme="gray"),
        error_callout(Account.error, "account-error"),
        rx.cond(Account.notice != "", rx.callout(Account.notice, color_scheme="green", id="account-notice",
                                                 role="status", width="100%")),
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
        step_up_dialog(Account, "Changing how you sign in needs a second factor within the last few minutes."),
    )
