"""The frame every signed-in page shares: navigation, who is signed in, sign-out."""

from __future__ import annotations

import reflex as rx

from licet.dashboard.state import Session, StepUp, in_browser

# Each page, and the permission (docs/roles.md) its reads need: a link is shown to people whose role the API
# says holds it. Hiding is a courtesy; the API refuses the page's calls to anyone else all the same.
NAV = (
    ("Overview", "/", "certificates.read"),
    ("Approvals", "/approvals", "approvals.status"),
    ("Decisions", "/decisions", "certificates.read"),
    ("Audit", "/audit", "audit.read"),
    ("Evidence log", "/evidence", "evidence.read"),
    ("Policies", "/policies", "policies.read"),
    ("Editor", "/editor", "policies.write"),
    ("Query", "/query", "policies.read"),
    ("Plans", "/plans", "plans.verify"),
    ("Delegations", "/delegations", "delegations.read"),
    ("Administration", "/admin", "keys.manage"),
    ("Account", "/account", None),
)


def _link(label: str, path: str, permission: str | None) -> rx.Component:
    link = rx.link(label, href=path, size="3", id=f"nav-{path.strip('/') or 'overview'}")
    return link if permission is None else rx.cond(Session.permissions.contains(permission), link)


def _nav() -> rx.Component:
    return rx.el.nav(
        rx.hstack(
            rx.link(rx.text("Licet", size="5", weight="bold"), href="/", underline="none", color_scheme="gray"),
            *[_link(*entry) for entry in NAV],
            rx.spacer(),
            rx.text(Session.email, " · ", Session.role, size="2", color_scheme="gray", id="whoami"),
            rx.button("Sign out", on_click=Session.sign_out, variant="soft", size="1", id="sign-out"),
            wrap="wrap", align="center", spacing="4", width="100%",
        ),
        aria_label="Main",
        style={"padding": "12px 20px", "borderBottom": "1px solid var(--gray-a5)"},
    )


def page(title: str, *children: rx.Component) -> rx.Component:
    """A signed-in page: the navigation, then `children` under `title` (shown once the person is loaded)."""
    return rx.fragment(
        _nav(),
        rx.el.main(
            rx.cond(
                Session.signed_in,
                rx.vstack(rx.heading(title, size="6", as_="h1"), *children, spacing="4", width="100%"),
                rx.center(rx.spinner(size="3"), padding="40px"),
            ),
            style={"padding": "20px", "maxWidth": "1200px", "margin": "0 auto"},
        ),
    )


def error_callout(message: rx.Var[str], id: str) -> rx.Component:
    """An error the API gave, announced to screen readers."""
    return rx.cond(message != "", rx.callout(message, color_scheme="red", role="alert", id=id, width="100%"))


def field(label: str, control: rx.Component) -> rx.Component:
    """A form control with its visible label."""
    return rx.vstack(rx.el.label(label, html_for=control.id, style={"fontSize": "14px"}), control,
                     spacing="1", width="100%")


def step_up_dialog(state: type[StepUp], why: str) -> rx.Component:
    """The in-place step-up of `state`'s held action: a code (TOTP or backup) or, if the person has one, a
    passkey; the browser sends either straight to `/v1/auth/mfa/...`."""
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title("Confirm it is you"),
            rx.dialog.description(why),
            error_callout(state.step_up_error, "step-up-error"),
            rx.form(
                rx.vstack(
                    field("Code from your authenticator (or a backup code)",
                          rx.input(id="step-up-code", auto_complete="one-time-code")),
                    rx.hstack(rx.button("Confirm", type="submit", id="step-up-confirm"),
                              rx.cond(Session.mfa_methods.contains("passkey"),
                                      rx.button("Use a passkey", type="button", variant="outline",
                                                on_click=in_browser("passkeyCheck()", state.stepped_up),
                                                id="step-up-passkey")),
                              rx.button("Cancel", type="button", variant="soft", color_scheme="gray",
                                        on_click=state.cancel_step_up),
                              wrap="wrap"),
                    spacing="3",
                ),
                on_submit=in_browser("totp('step-up-code')", state.stepped_up),
            ),
        ),
        open=state.step_up_open,
    )
