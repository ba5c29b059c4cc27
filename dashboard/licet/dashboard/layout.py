"""The frame every signed-in page shares: navigation, who is signed in, sign-out."""

from __future__ import annotations

import reflex as rx

from licet.dashboard.state import Session

NAV = (
    ("Overview", "/"),
    ("Approvals", "/approvals"),
    ("Decisions", "/decisions"),
    ("Audit", "/audit"),
    ("Evidence log", "/evidence"),
)


def _nav() -> rx.Component:
    return rx.el.nav(
        rx.hstack(
            rx.link(rx.text("Licet", size="5", weight="bold"), href="/", underline="none", color_scheme="gray"),
            *[rx.link(label, href=path, size="3", id=f"nav-{path.strip('/') or 'overview'}") for label, path in NAV],
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
