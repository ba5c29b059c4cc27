"""The dashboard app: its pages, and how it is served on the API's own app and port."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import reflex as rx
from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from licet.dashboard import api
from licet.dashboard.pages.account import Account, account_page
from licet.dashboard.pages.admin import Admin, admin_page
from licet.dashboard.pages.approvals import Approvals, approvals_page
from licet.dashboard.pages.certificate import CertificateView, certificate_page
from licet.dashboard.pages.delegations import Delegations, delegations_page
from licet.dashboard.pages.editor import Editor, editor_page
from licet.dashboard.pages.evidence import Evidence, evidence_page
from licet.dashboard.pages.explorer import AuditTrail, Decisions, audit_page, decisions_page
from licet.dashboard.pages.overview import Overview, overview_page
from licet.dashboard.pages.plans import Plans, plans_page
from licet.dashboard.pages.policies import Policies, policies_page
from licet.dashboard.pages.query import Query, query_page
from licet.dashboard.pages.signin import Enrolment, Invitation, SignIn, enrol_page, invitation_page, signin_page
from licet.dashboard.state import Session

PROJECT = Path(__file__).resolve().parent  # the Reflex project: rxconfig.py, assets/
FRONTEND = PROJECT / "frontend"  # the built frontend (`build/client`), made by licet.dashboard.build

# Reflex makes its state manager when the app is made, before `serve` can point it at rxconfig.py: its
# default would pickle every page's state into `.states/` in the working directory on every event. A
# page's state is only a view of `/v1` (sessions live in the API's store), so memory is right.
os.environ.setdefault("REFLEX_STATE_MANAGER_MODE", "memory")
app = rx.App(
    theme=rx.theme(accent_color="indigo", radius="medium"),
    head_components=[rx.script(src="/licet.js")],
    stylesheets=["/licet.css"],
)
app.add_page(signin_page, route="/login", title="Sign in · Licet", on_load=SignIn.start)
app.add_page(invitation_page, route="/invite", title="Invitation · Licet", on_load=Invitation.start)
app.add_page(enrol_page, route="/enrol", title="Authenticator · Licet", on_load=[Session.require, Enrolment.begin])
app.add_page(overview_page, route="/", title="Overview · Licet", on_load=[Session.require, Overview.load])
app.add_page(approvals_page, route="/approvals", title="Approvals · Licet",
             on_load=[Session.require, Approvals.load])
app.add_page(certificate_page, route="/certificate", title="Certificate · Licet",
             on_load=[Session.require, CertificateView.load])
app.add_page(decisions_page, route="/decisions", title="Decisions · Licet",
             on_load=[Session.require, Decisions.load])
app.add_page(audit_page, route="/audit", title="Audit trail · Licet", on_load=[Session.require, AuditTrail.load])
app.add_page(account_page, route="/account", title="Your account · Licet", on_load=[Session.require, Account.load])
app.add_page(evidence_page, route="/evidence", title="Evidence log · Licet", on_load=[Session.require, Evidence.load])
app.add_page(policies_page, route="/policies", title="Policies · Licet", on_load=[Session.require, Policies.load])
app.add_page(editor_page, route="/editor", title="Edit a policy · Licet", on_load=[Session.require, Editor.load])
app.add_page(query_page, route="/query", title="Query · Licet", on_load=[Session.require, Query.load])
app.add_page(plans_page, route="/plans", title="Plan playground · Licet", on_load=[Session.require, Plans.load])
app.add_page(delegations_page, route="/delegations", title="Delegations · Licet",
             on_load=[Session.require, Delegations.load])
app.add_page(admin_page, route="/admin", title="Administration · Licet", on_load=[Session.require, Admin.load])


class FrontendMissing(RuntimeError):
    """The dashboard's frontend has not been built (scripts/setup builds it)."""


def serve(fastapi_app: FastAPI, origins: list[str]) -> ASGIApp:
    """One ASGI app: `fastapi_app` (its routes win) with the prebuilt dashboard mounted at `/`, accepting
    browser connections from `origins` only."""
    built = FRONTEND / "build" / "client" / "index.html"
    if not built.is_file():
        raise FrontendMissing(f"the dashboard's frontend is not built ({built} is missing): run scripts/setup, "
                              "or `python -m licet.dashboard.build`")
    # Reflex reads these when the app is called (names with two underscores are its internal switches:
    # serve the prebuilt frontend, never compile at start-up). Reflex is pinned, so they stay valid.
    os.environ.update({"REFLEX_ENV_MODE": "prod", "__REFLEX_SKIP_COMPILE": "true",
                       "__REFLEX_MOUNT_FRONTEND_COMPILED_APP": "true", "REFLEX_WEB_WORKDIR": str(FRONTEND),
                       "REFLEX_CORS_ALLOWED_ORIGINS": ",".join(origins), "REFLEX_TELEMETRY_ENABLED": "false"})
    api.bind(fastapi_app)
    app.api_transformer = fastapi_app

    @contextlib.asynccontextmanager
    async def api_lifespan() -> AsyncIterator[None]:  # Reflex owns the ASGI lifespan: run the API's inside it
        async with fastapi_app.router.lifespan_context(fastapi_app):
            yield

    app.register_lifespan_task(api_lifespan)
    with contextlib.chdir(PROJECT):  # Reflex finds rxconfig.py in the working directory
        return immutable_assets(app())


def immutable_assets(inner: ASGIApp) -> ASGIApp:
    """`inner`, with `/assets/...` marked immutable: the build names those files by their content hash,
    so a page load need not revalidate each of its ~30 scripts (a round trip each) before it can run."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/assets/"):
            await inner(scope, receive, send)
            return

        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                MutableHeaders(scope=message)["cache-control"] = "public, max-age=31536000, immutable"
            await send(message)

        await inner(scope, receive, send_cached)

    return wrapped
