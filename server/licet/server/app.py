"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from licet.server import contract, errors, responses
from licet.server.errors import database_unavailable
from licet.server.logstore import StoreBehindSignedHead, check_signed_heads
from licet.server.observability import BodyLimit, Metrics, RequestObserver, UnexpectedErrors, configure_logging
from licet.server.routers import admin, approvals, auth, capabilities, decide, delegations, evidence, policies
from licet.server.sealing import UnsealError, seal_legacy
from licet.server.services import Services, StartupError
from licet.server.settings import Settings
from licet.server.workers.dispatch import make_dispatcher

DESCRIPTION = """Licet decides each action and plan of an AI agent against its tenant's policy with the
Z3 SMT solver, signs every decision as an Ed25519 certificate and appends it to the tenant's RFC 6962
transparency log. Authenticate with `Authorization: Bearer <API key>` (agents) or a person's session
(`Bearer lcs_…`, or the dashboard's cookie with the `X-CSRF-Token` header on writes): each operation
lists the ones it accepts. Errors are `{"error": {"code", "message", "field"}}` with stable codes
(docs/errors.md lists them; each operation lists those it can answer with)."""

DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's files, served from the fastapi-offline package


def serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from Licet's own copies of their JavaScript and CSS: no CDN."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title="Licet API", oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # No validator badge: it is an image fetched from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True})

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title="Licet API",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


async def refuse_a_store_behind_its_signed_heads(services: Services) -> None:
    """`StartupError` if a tenant's stored log does not extend the newest checkpoint signed from it
    (server/logstore.py `SignedHeads`): serving would append at indices whose head clients may hold."""
    try:
        async with services.db.read() as session:
            await session.run_sync(lambda s: check_signed_heads(s.connection(), services.signed_heads,
                                                                services.origin))
    except StoreBehindSignedHead as exc:
        structlog.get_logger("licet.startup").error("refusing to serve", reason=str(exc))
        raise StartupError(str(exc)) from exc


async def when_the_database_answers(services: Services, step: Callable[[Services], Awaitable[None]]) -> None:
    """Run a start-up `step`, again while the database is unreachable, for up to
    `startup_database_wait_seconds`: a worker that uvicorn restarts while PostgreSQL restarts must wait
    for it, as failing its start-up makes uvicorn stop every worker. `StartupError` once that is up."""
    log = structlog.get_logger("licet.startup")
    deadline = time.monotonic() + services.settings.startup_database_wait_seconds
    pause = 0.25
    while True:
        try:
            await step(services)
            return
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise StartupError(f"the database did not answer within "
                                   f"{services.settings.startup_database_wait_seconds} s: {exc!r}") from exc
            log.warning("waiting for the database", step=step.__name__, error=repr(exc), retry_in=pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def seal_secrets_at_rest(services: Services) -> None:
    """Seal the TOTP and webhook secrets still stored in plaintext (written before they were sealed);
    `StartupError` if stored secrets are sealed under another key than this process holds: serving
    would leave their people unable to sign in and their webhooks unsigned."""
    log = structlog.get_logger("licet.startup")
    try:
        async with services.db.write() as session:
            sealed = await session.run_sync(seal_legacy, services.secrets)
    except UnsealError as exc:
        log.error("refusing to serve", reason=str(exc))
        raise StartupError(str(exc)) from exc
    if sealed:
        log.info("sealed plaintext secrets", key_id=services.secrets.kid, **sealed)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A Licet API server for `settings` (default: from the environment)."""
    settings = settings or Settings()
    configure_logging(settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await when_the_database_answers(app.state.services, refuse_a_store_behind_its_signed_heads)
        await when_the_database_answers(app.state.services, seal_secrets_at_rest)
        await app.state.dispatcher.start()  # approval jobs: Celery, or the in-process worker
        # What exists now (modules, routes, SQLAlchemy's and the kernel's caches) lives as long as the
        # process: kept out of the cyclic collector, a full collection no longer walks it, which
        # paused requests for tens of milliseconds (p99 at one client 54 -> 6 ms).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()  # a process that builds another app (tests) must not keep this one for ever
        await app.state.dispatcher.stop()
        await app.state.services.db.dispose()

    app = FastAPI(title="Licet", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.services = Services(settings)  # start-up errors (no key in production) surface here
    app.state.metrics = metrics
    app.state.dispatcher = make_dispatcher(app.state.services)
    errors.install(app)
    for module in (decide, capabilities, policies, admin, evidence, delegations, auth, approvals):
        app.include_router(module.router)
    contract.install(app)
    serve_docs(app)

    @app.get("/healthz", tags=["operations"], summary="The process is up", response_model=responses.Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The database answers", responses=errors.raises("not_ready"),
             response_model=responses.Ready)
    async def readyz(request: Request) -> Any:
        try:
            async with request.app.state.services.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
            return JSONResponse(errors.error_body("not_ready", f"database unreachable: {type(exc).__name__}"), 503,
                                headers={"Retry-After": str(errors.RETRY_AFTER_SECONDS)})
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"description": "The Prometheus text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(UnexpectedErrors)  # the innermost: the others see its answer as any other
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestObserver, metrics=metrics)
    return app
