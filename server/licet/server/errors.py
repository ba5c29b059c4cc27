"""JSON errors with stable codes: `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from licet.kernel.errors import InvalidRequest, KernelFault, PolicyError


class ApiError(Exception):
    """An error the API reports to its caller, with an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.detail = status, code, message, field, detail


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(examples=["not_found"], description="Stable, machine-readable.")
    message: str = Field(examples=["policy not found"])
    field: str | None = Field(description="The input at fault, as a dotted path, if one is.")


class ErrorBody(BaseModel):
    """Every error the API reports (some codes add details next to `code`, `message` and `field`)."""

    error: ErrorDetail


# Declared on every router, so the OpenAPI document describes the error bodies actually sent
# (FastAPI's default 422 schema, `{"detail": [...]}`, is not what this API returns).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request was refused; nothing was changed."},
    "5XX": {"model": ErrorBody, "description": "The server could not answer; nothing was permitted."},
}


def not_found(what: str) -> ApiError:
    """The same 404 whether the object does not exist or belongs to another tenant."""
    return ApiError(404, "not_found", f"{what} not found")


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The error document."""
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def policy_error(exc: PolicyError) -> ApiError:
    """A policy that does not load, with where it fails."""
    return ApiError(422, "invalid_policy", exc.message, exc.field or None,
                    {"line": exc.line, "column": exc.column, "rendered": exc.render()})


def install(app: FastAPI) -> None:
    """Route every failure through the error document."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field, **(exc.detail or {})), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A route that checks its API key inside its own transaction (identity.require_in_write) has
        # not checked it yet: a caller who may not call the route learns that first, as elsewhere.
        check = getattr(request.state, "check_credential", None)
        if check is not None:
            try:
                await check()
            except ApiError as refused:
                return await _api(request, refused)
        first = exc.errors()[0]
        field = _field(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid input"))
        if first.get("type") == "extra_forbidden":
            message = f"unknown field {field!r}"
        elif first.get("type") == "json_invalid":  # its location is ("body", character offset)
            offset = first.get("loc", ("body", "?"))[-1]
            field, message = "body", f"not valid JSON at character {offset}: {first.get('ctx', {}).get('error', '')}"
        problems = [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg"))} for e in exc.errors()]
        return JSONResponse(error_body("invalid_input", message, field, problems=problems), 422)

    @app.exception_handler(InvalidRequest)
    async def _invalid_request(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", exc.message, exc.field), 422)

    @app.exception_handler(PolicyError)
    async def _policy(_: Request, exc: PolicyError) -> JSONResponse:
        err = policy_error(exc)
        return JSONResponse(error_body(err.code, err.message, err.field, **(err.detail or {})), err.status)

    @app.exception_handler(KernelFault)
    async def _fault(_: Request, exc: KernelFault) -> JSONResponse:
        # The solver could not settle the question: nothing is permitted, and the caller may retry.
        return JSONResponse(error_body("kernel_fault", f"no verdict could be established: {exc}"), 503)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        structlog.get_logger("licet.errors").exception("unhandled", error=type(exc).__name__)
        return JSONResponse(error_body("internal", "internal error; nothing was permitted"), 500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                 401: "unauthenticated"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))
