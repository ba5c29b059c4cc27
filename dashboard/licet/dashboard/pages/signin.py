"""Signing in: password then a second factor (TOTP, backup code or passkey), or a passkey alone;
accepting an invitation and enrolling TOTP.

The browser itself posts credentials to `/v1/auth/...` (assets/licet.js), so it receives the HttpOnly
session cookie and passwords never pass through the dashboard's state; after any change of session
the page is loaded afresh, so the new socket carries the new cookie.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

from licet.dashboard.layout import error_callout, field, page, step_up_dialog
from licet.dashboard.state import Session, StepUp, in_browser, refusal


def _error(result: Any) -> str:
    body = result.get("body") if isinstance(result, dict) else None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        said = f"{error.get('message', '')} ({error.get('code', '')})"
        # The throttle's answer: no password or code is tried at all until the lock ends.
        return f"Sign-in locked: {said}" if error.get("code") == "too_many_attempts" else said
    return f"sign-in failed (HTTP {result.get('status') if isinstance(result, dict) else '?'})"


class SignIn(rx.State):
    """The sign-in form's progress: which step, which second factors, the last error."""

    step: rx.Field[str] = rx.field("password")  # password | mfa
    methods: rx.Field[list[str]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")
    busy: rx.Field[bool] = rx.field(False)
    tenant: rx.Field[str] = rx.field("")

    @rx.event
    def start(self) -> None:
        self.reset()
        self.tenant = self.router.url.query_parameters.get("tenant", "")

    @rx.event
    def set_tenant(self, value: str) -> None:
        self.tenant = value

    @rx.event
    def passkey(self) -> Any:
        self.error, self.busy = "", True
        return in_browser("passkeyLogin()", SignIn.signed_in)

    @rx.event
    def signed_in(self, result: dict[str, Any]) -> Any:
        self.busy = False
        if result.get("status") not in (200, 201):
            self.error = _error(result)
            return None
        session = result["body"]["session"]
        if session["stage"] == "mfa_pending":
            self.step, self.methods = "mfa", result["body"]["mfa_methods"]
            return None
        return in_browser("go('/')")

    @rx.event
    def passkey_check(self) -> Any:
        self.error, self.busy = "", True
        return in_browser("passkeyCheck()", SignIn.second_factor)

    @rx.event
    def second_factor(self, result: dict[str, Any]) -> Any:
        self.busy = False
        if result.get("status") != 200:
            self.error = _error(result)
            return None
        return in_browser("go('/')")


def _password_step() -> rx.Component:
    return rx.form(
        rx.vstack(
            field("Tenant", rx.input(id="tenant", name="tenant", value=SignIn.tenant, on_change=SignIn.set_tenant,
                                     auto_complete="organization", required=True, width="100%")),
            field("Email", rx.input(id="email", name="email", type="email", auto_complete="username",
                                    required=True, width="100%")),
            field("Password", rx.input(id="password", type="password", auto_complete="current-password",
                                       required=True, width="100%")),
            rx.button("Sign in", type="submit", id="sign-in", loading=SignIn.busy, width="100%"),
            rx.button("Sign in with a passkey", type="button", variant="outline", id="passkey-sign-in",
                      on_click=SignIn.passkey, width="100%"),
            spacing="3", width="100%",
        ),
        # The form is handled in the browser: the password goes to /v1 only, never to the dashboard's state.
        on_submit=in_browser("login()", SignIn.signed_in),
    )


def _mfa_step() -> rx.Component:
    return rx.vstack(
        rx.text("Second factor: a code from your authenticator app, or one of your backup codes."),
        rx.form(
            rx.vstack(
                field("Code", rx.input(id="code", auto_complete="one-time-code", input_mode="text",
                                       required=True, width="100%")),
                rx.button("Verify", type="submit", id="verify-code", loading=SignIn.busy, width="100%"),
                spacing="3", width="100%",
            ),
            on_submit=in_browser("totp('code')", SignIn.second_factor),
        ),
        rx.cond(SignIn.methods.contains("passkey"),
                rx.button("Use a passkey", variant="outline", id="passkey-check", on_click=SignIn.passkey_check,
                          width="100%")),
        spacing="3", width="100%",
    )


def signin_page() -> rx.Component:
    return rx.center(
        rx.card(
            rx.vstack(
                rx.heading("Sign in to Licet", size="6", as_="h1"),
                error_callout(SignIn.error, "sign-in-error"),
                # The form appears once the page is live: before that a click would submit it natively.
                rx.cond(rx.State.is_hydrated,
                        rx.cond(SignIn.step == "mfa", _mfa_step(), _password_step()),
                        rx.center(rx.spinner(size="3"), padding="24px")),
                spacing="4", width="100%",
            ),
            width="min(420px, 94vw)",
        ),
        padding_top="10vh",
    )


class Invitation(rx.State):
    """Accepting an invitation, then enrolling TOTP (QR code, first code, backup codes)."""

    error: rx.Field[str] = rx.field("")
    token: rx.Field[str] = rx.field("")

    @rx.event
    def start(self) -> None:
        self.reset()
        self.token = self.router.url.query_parameters.get("token", "")

    @rx.event
    def set_token(self, value: str) -> None:
        self.token = value

    @rx.event
    def accepted(self, result: dict[str, Any]) -> Any:
        if result.get("status") != 201:
            self.error = _error(result)
            return None
        return in_browser("go('/enrol')")


class Enrolment(StepUp, Session):
    """TOTP enrolment for the signed-in person (right after an invitation, or later: replacing an
    authenticator needs a recent MFA, asked for in place)."""

    error: rx.Field[str] = rx.field("")
    qr_svg: rx.Field[str] = rx.field("")
    otpauth: rx.Field[str] = rx.field("")
    backup_codes: rx.Field[list[str]] = rx.field(default_factory=list)

    @rx.event
    async def begin(self) -> None:
        if not self.signed_in:
            return
        self.error, self.qr_svg, self.otpauth, self.backup_codes = "", "", "", []
        reply = await self.api().post("/v1/auth/totp/enrol")
        if reply.ok:
            self.qr_svg, self.otpauth = reply.body["qr_svg"], reply.body["otpauth_uri"]
        elif reply.error_code == "step_up_required":
            self._ask_step_up()
        else:
            self.error = refusal(reply)

    async def _resume(self) -> None:
        await self.begin()

    def _drop(self) -> None:
        self.error = "Your authenticator was left as it was."

    @rx.event
    async def confirm(self, form: dict[str, Any]) -> None:
        reply = await self.api().post("/v1/auth/totp/confirm", {"code": str(form.get("code", "")).strip()})
        if reply.ok:
            self.error, self.backup_codes = "", reply.body["backup_codes"]
        else:
            self.error = refusal(reply)


def invitation_page() -> rx.Component:
    return rx.center(
        rx.card(
            rx.cond(~rx.State.is_hydrated, rx.center(rx.spinner(size="3"), padding="24px"), rx.form(
                rx.vstack(
                    rx.heading("Accept your invitation", size="6", as_="h1"),
                    error_callout(Invitation.error, "invite-error"),
                    field("Invitation token", rx.input(id="invitation", value=Invitation.token,
                                                       on_change=Invitation.set_token, required=True, width="100%")),
                    field("New password (12 characters or more, hard to guess)",
                          rx.input(id="new-password", type="password", auto_complete="new-password", required=True,
                                   width="100%")),
                    rx.button("Set password and sign in", type="submit", id="accept", width="100%"),
                    spacing="3", width="100%",
                ),
                on_submit=in_browser("accept()", Invitation.accepted),
            )),
            width="min(460px, 94vw)",
        ),
        padding_top="10vh",
    )


def enrol_page() -> rx.Component:
    return page(
        "Set up your authenticator",
        error_callout(Enrolment.error, "enrol-error"),
        rx.cond(
            Enrolment.backup_codes.length() > 0,
            rx.vstack(
                rx.text("Authenticator on. Keep these backup codes somewhere safe: each works once, and they are "
                        "shown only now."),
                rx.code_block(Enrolment.backup_codes.join("\n"), id="backup-codes"),
                rx.link(rx.button("Continue"), href="/"),
            ),
            rx.vstack(
                rx.text("Scan the QR code with an authenticator app, then type the code it shows."),
                rx.html(Enrolment.qr_svg, id="totp-qr", style={"width": "220px"}),
                rx.text("Or enter this URI by hand: ", rx.code(Enrolment.otpauth, id="otpauth"), size="2",
                        style={"wordBreak": "break-all"}),
                rx.form(
                    rx.hstack(field("Code", rx.input(id="enrol-code", name="code", required=True)),
                              rx.button("Turn on", type="submit", id="enrol-confirm"), align="end"),
                    on_submit=Enrolment.confirm,
                ),
            ),
        ),
        step_up_dialog(Enrolment, "Replacing your authenticator needs a second factor within the last few minutes."),
    )
