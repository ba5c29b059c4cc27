"""Structured logs (structlog, JSON lines), Prometheus metrics, the body-size limit, and the answer to
errors no handler took."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from licet.server.db import counting_request_writes
from licet.server.errors import error_body, unexpected


def configure_logging(json_lines: bool) -> None:
    """One JSON object per event on stderr (or a readable console form)."""
    renderer: Any = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, renderer],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO), cache_logger_on_first_use=True)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("licet_http_request_seconds", "HTTP request latency", ["method", "route", "status"],
                                  registry=self.registry,
                                  buckets=(.001, .002, .003, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.decisions = Counter("licet_decisions_total", "Decisions certified, by outcome", ["outcome"],
                                 registry=self.registry)


class RequestObserver:
    """ASGI middleware: latency metrics by route template, one log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.log = structlog.get_logger("licet.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status)).observe(elapsed)
            self.log.info("request", method=scope["method"], route=template, status=status,
                          ms=round(elapsed * 1000, 3))


class UnexpectedErrors:
    """ASGI middleware, the innermost of the app's own: an exception no handler took is logged once (JSON)
    and answered with its error document here: 503 `unavailable` or `outcome_unknown` with Retry-After
    when the database failed, else 500 (server/errors.py `unexpected`). Starlette's own last resort
    (ServerErrorMiddleware) would answer too, but re-raises afterwards, and uvicorn then closes the
    keep-alive connection without `Connection: close`, resetting requests already sent on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("licet.errors")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with counting_request_writes() as writes:
            try:
                await self.app(scope, receive, sending)
            except Exception as exc:
                answer = unexpected(exc, committed=writes.committed > 0)
                route = getattr(scope.get("route"), "path", "unmatched")
                # A 500 is a defect: its traceback goes with it. A database outage is not, and its many
                # requests log one line each, without.
                self.log.error("unhandled", method=scope["method"], route=route, status=answer.status,
                               code=answer.code, error=type(exc).__name__, detail=(str(exc).splitlines() or [""])[0],
                               response_started=started, exc_info=exc if answer.status == 500 else None)
                if started:
                    raise  # part of another answer is out: only closing the connection can tell the client
                body = json.dumps(answer.body()).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                           *((name.lower().encode(), value.encode()) for name, value in answer.headers.items())]
                await send({"type": "http.response.start", "status": answer.status, "headers": headers})
                await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        seen = 0

        async def receiving() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, receiving, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body("body_too_large", _too_large(self.limit))).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> str:
    return f"request bodies are limited to {limit} bytes"


class _TooLarge(HTTPException):
    # An HTTPException, because FastAPI turns any other failure while it reads a body into a 400
    # ("There was an error parsing the body"); this one reaches the error handler as a 413.
    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))
