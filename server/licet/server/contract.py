"""The OpenAPI document as the contract: each operation's security and error statuses, derived from
the same dependency metadata as the role table (server/route_table.py), plus the codes a route
declares itself (`errors.raises`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from licet.server import responses as response_models
from licet.server.errors import CODES_KEY, ERRORS, ErrorBody
from licet.server.route_table import route_mark, walk_routes

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "licet_…",
               "description": "An API key (`licet_` and 43 characters), for agents and automation."},
    "sessionToken": {"type": "http", "scheme": "bearer", "bearerFormat": "lcs_…",
                     "description": "A person's session token (`lcs_…`) from `POST /v1/auth/login`."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "licet_session",
                      "description": "A person's session as the dashboard holds it (HttpOnly cookie)."},
    "csrfToken": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                  "description": "The session's CSRF token: required with the cookie on every write."},
}
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}


def security(permission: str | None, step_up: bool, method: str) -> list[dict[str, list[str]]]:
    """Who may present what to call a route of `permission` (None: an operations route, public)."""
    if permission in (None, "public"):
        return []
    cookie: dict[str, list[str]] = {"sessionCookie": []} if method in _SAFE else {"sessionCookie": [], "csrfToken": []}
    sessions: list[dict[str, list[str]]] = [{"sessionToken": []}, cookie]
    return sessions if permission == "account" or step_up else [{"apiKey": []}, *sessions]


def derived_codes(route: APIRoute, method: str, permission: str | None, step_up: bool) -> list[str]:
    """The error codes any route of this shape can answer with, from its dependencies and inputs."""
    codes = []
    if permission not in (None, "public"):
        codes += ["unauthenticated", "session_expired", "mfa_required", "forbidden"]
        if method not in _SAFE:
            codes.append("csrf_failed")
        if step_up:
            codes.append("step_up_required")
    if route.body_field is not None or get_flat_params(route.dependant):
        codes.append("invalid_input")
    if route.body_field is not None:
        codes.append("body_too_large")
    return [*codes, "internal", "unavailable", "outcome_unknown"]  # any route meets the database


def _describe(codes: list[str]) -> str:
    return "\n".join(f"- `{code}`: {ERRORS[code].meaning}" for code in codes)


def annotate(app: FastAPI, document: dict[str, Any]) -> None:
    """Add security schemes, each operation's security and its error statuses to `document`."""
    components = document.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape, which this API never sends
        schemas.pop(name, None)
    _restore_examples(app, document)
    for route in walk_routes(app.routes):
        if not route.include_in_schema:
            continue
        mark = route_mark(route)
        permission = None if mark is None else str(mark.permission)
        step_up = bool(getattr(mark, "step_up", False))
        for method in sorted(route.methods or ()):
            operation = document["paths"][route.path_format][method.lower()]
            operation["security"] = security(permission, step_up, method)
            responses = operation["responses"]
            codes = derived_codes(route, method, permission, step_up)
            for status, response in list(responses.items()):
                if status.isdigit() and int(status) >= 400:
                    codes += [c for c in response.get(CODES_KEY, []) if c not in codes]
                    if CODES_KEY not in response:  # FastAPI's own 422
                        del responses[status]
            by_status: dict[int, list[str]] = {}
            for code in codes:
                for status in ERRORS[code].statuses:
                    by_status.setdefault(status, []).append(code)
            for status, listed in by_status.items():
                responses[str(status)] = {"description": _describe(listed), CODES_KEY: listed,
                                          "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
            operation["responses"] = dict(sorted(responses.items()))


def _restore_examples(app: FastAPI, document: dict[str, Any]) -> None:
    # FastAPI drops every null from the document, examples included: a response example holding a
    # null (a certificate's `approval`, say) would no longer match its own schema. Put them back.
    schemas = document.get("components", {}).get("schemas", {})
    for name, model in vars(response_models).items():
        extra = getattr(model, "model_config", {}).get("json_schema_extra")
        if name in schemas and isinstance(extra, dict) and "examples" in extra:
            schemas[name]["examples"] = extra["examples"]
    for route in walk_routes(app.routes):
        for status, response in route.responses.items():
            for media, content in response.get("content", {}).items():
                if "example" in content:
                    for method in route.methods or ():
                        documented = document["paths"][route.path_format][method.lower()]["responses"][str(status)]
                        documented["content"][media]["example"] = content["example"]


def install(app: FastAPI) -> None:
    """Serve the annotated document at /openapi.json (built once, on first request)."""
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            annotate(app, build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


BEGIN, END = "<!-- error-codes:begin -->", "<!-- error-codes:end -->"
_LISTED_ROUTES = 12  # a code more routes answer with is one every route of a kind can answer with


def errors_markdown(document: dict[str, Any]) -> str:
    """The table of docs/errors.md: every registered code, its statuses, its meaning and the operations
    of `document` that can answer with it."""
    answering: dict[str, list[str]] = {code: [] for code in ERRORS}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for response in operation["responses"].values():
                for code in response.get(CODES_KEY, []):
                    answering[code].append(f"`{method.upper()} {path}`")
    lines = ["| Code | Status | Meaning | Operations |", "|---|---|---|---|"]
    for code, entry in ERRORS.items():
        statuses = ", ".join(str(s) for s in entry.statuses) or "any"
        found = sorted(set(answering[code]))
        where = ("—" if not found else ", ".join(found) if len(found) <= _LISTED_ROUTES
                 else f"{len(found)} operations")
        lines.append(f"| `{code}` | {statuses} | {entry.meaning} | {where} |")
    return "\n".join(lines) + "\n"
