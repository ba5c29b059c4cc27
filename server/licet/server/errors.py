"""JSON errors with stable codes: `{"error": {"code", "message", "field"}}`, and the one registry of
those codes (docs/errors.md is generated from it; an unregistered code cannot be raised)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from licet.kernel.errors import InvalidRequest, KernelFault, PolicyError
from licet.server.db import OutcomeUnknown


@dataclass(frozen=True)
class ErrorCode:
    """A stable error code: the HTTP statuses it is sent with and what it means to the caller."""

    statuses: tuple[int, ...]
    meaning: str


ERRORS: dict[str, ErrorCode] = {
    # 400: a sign-in artefact that is not (or no longer) usable
    "invalid_invitation": ErrorCode((400,), "The invitation token is unknown, used or expired: ask for a new one."),
    "invalid_challenge": ErrorCode((400,), "The WebAuthn challenge is unknown, used or expired: ask for new options."),
    "invalid_credential": ErrorCode((400, 401), "The passkey credential is malformed (400), unknown or does not "
                                    "verify (401)."),
    # 401: who is calling is not established
    "unauthenticated": ErrorCode((401,), "No credentials, or an unknown, revoked or expired API key or session."),
    "session_expired": ErrorCode((401,), "The session has expired (idle or absolute limit): sign in again."),
    "mfa_required": ErrorCode((401,), "The session still waits for its second factor: POST /v1/auth/mfa/totp or "
                              "/v1/auth/mfa/passkey."),
    "invalid_credentials": ErrorCode((401,), "Wrong email or password (or the account cannot sign in); the same "
                                     "answer for each, on purpose."),
    "invalid_code": ErrorCode((401,), "The TOTP or backup code is wrong, expired or already used."),
    # 403: the caller is known and may not do this
    "forbidden": ErrorCode((403,), "The caller's role lacks the route's permission (docs/roles.md), or an "
                           "admin acts on an owner."),
    "step_up_required": ErrorCode((403,), "The route needs a person's session that passed MFA within the step-up "
                                  "window; API keys cannot call it."),
    "csrf_failed": ErrorCode((403,), "A cookie-authenticated write without the session's X-CSRF-Token header."),
    "not_an_approver": ErrorCode((403,), "The approval needs a person of another role."),
    "self_approval": ErrorCode((403,), "The requester, or anyone in its delegation chain, may not vote on its "
                               "own request."),
    # 404, 405
    "not_found": ErrorCode((404,), "No such object in the caller's tenant (the same answer whether it exists "
                           "elsewhere or not), or no such route."),
    "method_not_allowed": ErrorCode((405,), "The route exists but not with this HTTP method."),
    # 409: the request is valid but the state does not allow it
    "conflict": ErrorCode((409,), "The object exists already (an email, a passkey)."),
    "idempotency_conflict": ErrorCode((409,), "The Idempotency-Key was used with a different request."),
    "no_active_policy": ErrorCode((409,), "The tenant has no active policy version to compare with or query."),
    "nothing_to_roll_back": ErrorCode((409,), "No earlier active version to roll back to."),
    "key_revoked": ErrorCode((409,), "A revoked API key cannot be rotated."),
    "key_rotated": ErrorCode((409,), "The API key was rotated already (once only): rotate its successor, named in "
                             "the message."),
    "account_disabled": ErrorCode((409,), "The account is disabled: an admin must enable it before its invitation "
                                  "can be accepted."),
    "own_account": ErrorCode((409,), "One cannot disable, enable or change the role of one's own account."),
    "grant_revoked": ErrorCode((409,), "The parent delegation grant is revoked."),
    "approval_closed": ErrorCode((409,), "The approval is no longer pending (granted, used, denied, expired or "
                                 "cancelled)."),
    "already_voted": ErrorCode((409,), "Each person votes once on an approval."),
    "no_enrolment": ErrorCode((409,), "No TOTP enrolment is waiting to be confirmed."),
    "no_totp": ErrorCode((409,), "TOTP is not on for this account."),
    "no_passkey": ErrorCode((409,), "The account has no passkey."),
    # 413
    "body_too_large": ErrorCode((413,), "The request body is larger than the server accepts "
                                "(LICET_MAX_BODY_BYTES)."),
    "plan_too_long": ErrorCode((413,), "The plan has more steps than the server verifies (LICET_MAX_PLAN_STEPS)."),
    # 422: the input is understood and wrong
    "invalid_input": ErrorCode((400, 422), "The input does not match the schema; `field` names it, `problems` "
                               "lists every fault."),
    "invalid_request": ErrorCode((422,), "The kernel refused the request's values (e.g. an argument of the wrong "
                                 "type for the policy); `field` names it."),
    "invalid_policy": ErrorCode((422,), "The policy document does not load; `field`, `line` and `column` say "
                                "where."),
    "invalid_range": ErrorCode((422,), "The tree sizes of a consistency proof are out of order or beyond the log."),
    "not_attenuating": ErrorCode((422,), "A re-delegation allows something its parent does not; `attenuation` "
                                 "holds a witness request."),
    "delegation_too_deep": ErrorCode((422,), "The delegation chain is longer than the server follows."),
    "reason_required": ErrorCode((422,), "A denial needs a reason."),
    "unapprovable_policy": ErrorCode((422,), "A require_approval rule or invariant of the version asks for "
                                     "approval by a role no person who may vote holds, so it is not activated; "
                                     "`field`, `line` and `column` say where, `rule` and `role` name them."),
    "weak_password": ErrorCode((422,), "The new password is too short or too easy to guess."),
    "webhook_target_not_public": ErrorCode((422,), "The webhook URL resolves to a private address "
                                           "(LICET_WEBHOOK_PRIVATE_TARGETS allows it)."),
    # 429
    "too_many_attempts": ErrorCode((429,), "Too many failed sign-ins for the account or the address; "
                                   "`retry_after` says how many seconds to wait."),
    # 431
    "headers_too_large": ErrorCode((431,), "The request's head (target and header fields) is longer "
                                   "(LICET_MAX_HEADER_BYTES) or has more fields (LICET_MAX_HEADERS) than the "
                                   "server reads; answered before any route runs, and the connection is closed."),
    # 5xx: nothing was permitted, unless the code says the outcome is unknown
    "internal": ErrorCode((500,), "An unexpected server error before any decision or vote was committed; "
                          "nothing was permitted."),
    "unavailable": ErrorCode((503,), "The database is unreachable, overloaded or failing (connection lost, pool "
                             "exhausted, locked, disk error); the transaction that met it was rolled back, so "
                             "nothing it was to record was recorded. Retry after `Retry-After` seconds."),
    "outcome_unknown": ErrorCode((500, 503), "The request may have been recorded: the database failed while "
                                 "committing (its acknowledgement was lost; 503 with `Retry-After`), or an "
                                 "error followed a committed decision or vote (500). Retry with the same "
                                 "`Idempotency-Key`: it returns what was recorded, or carries the request "
                                 "out once."),
    "evidence_mismatch": ErrorCode((500,), "A stored certificate no longer matches its evidence-log entry (altered "
                                   "after it was logged): no inclusion proof can be built for it."),
    "kernel_fault": ErrorCode((503,), "The solver could not establish a verdict; nothing was permitted, the "
                              "caller may retry."),
    "not_ready": ErrorCode((503,), "The database is unreachable (GET /readyz)."),
    "http_error": ErrorCode((), "Any other HTTP-level refusal, with its own status."),
}


def statuses_of(*codes: str) -> dict[int, list[str]]:
    """The HTTP statuses `codes` are sent with, each with its codes."""
    found: dict[int, list[str]] = {}
    for code in codes:
        for status in ERRORS[code].statuses:
            found.setdefault(status, []).append(code)
    return found


class ApiError(Exception):
    """An error the API reports to its caller, with an HTTP status and a stable code of `ERRORS`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        registered = ERRORS.get(code)
        if registered is None or status not in registered.statuses:
            # A programming error: it surfaces as a 500 `internal` (nothing permitted) and fails the tests.
            raise LookupError(f"error code {code!r} with status {status} is not in licet.server.errors.ERRORS")
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.detail = status, code, message, field, detail


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(examples=["not_found"], description="Stable, machine-readable: docs/errors.md lists each.",
                      json_schema_extra={"enum": list(ERRORS)})
    message: str = Field(examples=["policy not found"])
    field: str | None = Field(description="The input at fault, as a dotted path, if one is.")


class ErrorBody(BaseModel):
    """Every error the API reports (some codes add details next to `code`, `message` and `field`)."""

    error: ErrorDetail


CODES_KEY = "x-error-codes"  # an OpenAPI extension on each error response: the codes sent with that status


def raises(*codes: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` for the error codes it raises itself (besides those server/contract.py
    derives from its dependencies and inputs); `ErrorBody` replaces FastAPI's 422 schema, which this
    API never sends."""
    return {status: {"model": ErrorBody, "description": ", ".join(found), CODES_KEY: found}
            for status, found in statuses_of(*codes).items()}


def not_found(what: str) -> ApiError:
    """The same 404 whether the object does not exist or belongs to another tenant."""
    return ApiError(404, "not_found", f"{what} not found")


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The error document (for a registered code)."""
    if code not in ERRORS:
        raise LookupError(f"error code {code!r} is not in licet.server.errors.ERRORS")
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

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                 401: "unauthenticated"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))


# --- what no handler took: the database's failures and the unexpected ------------------------------

RETRY_AFTER_SECONDS = 2  # what a 503 for a database failure asks the caller to wait
# SQLite result codes (extended ones start with these) and PostgreSQL SQLSTATEs (classes or prefixes)
# that mean the database cannot serve now: busy or locked, cannot open, I/O, disk full, read-only;
# connection exception (08), insufficient resources (53), operator intervention such as a shutdown or
# "cannot connect now" (57), system error (58). Not syntax, constraint or data errors: those are ours.
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL",
                       "SQLITE_READONLY", "SQLITE_PROTOCOL", "SQLITE_NOMEM")
_PG_UNAVAILABLE = ("08", "53", "57", "58")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    # The exception, the driver's error SQLAlchemy wraps (`orig`), and what each was raised from or during.
    seen: set[int] = set()
    waiting: list[BaseException | None] = [exc]
    while waiting:
        link = waiting.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None)
        waiting += [orig if isinstance(orig, BaseException) else None, link.__cause__, link.__context__]


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve now (down, unreachable, overloaded, locked, failing
    disk), rather than that the request or the code is wrong."""
    for link in _causes(exc):
        if isinstance(link, PoolTimeout | ConnectionError | TimeoutError | socket.gaierror):
            return True
        if isinstance(link, DBAPIError) and link.connection_invalidated:
            return True
        sqlite_error = getattr(link, "sqlite_errorname", None)
        if isinstance(sqlite_error, str) and sqlite_error.startswith(_SQLITE_UNAVAILABLE):
            return True
        sqlstate = getattr(link, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_PG_UNAVAILABLE):
            return True
    return False


@dataclass(frozen=True)
class Unexpected:
    """The answer to an exception no handler took."""

    status: int
    code: str
    message: str

    @property
    def headers(self) -> dict[str, str]:
        """`Retry-After` on a 503: the database may serve again soon."""
        return {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else {}

    def body(self) -> dict[str, Any]:
        """The error document (a 503's says when to retry, as `Retry-After` does)."""
        if self.status == 503:
            return error_body(self.code, self.message, retry_after=RETRY_AFTER_SECONDS)
        return error_body(self.code, self.message)


def unexpected(exc: BaseException, *, committed: bool) -> Unexpected:
    """What to answer for `exc`, which no handler took; `committed`: the request committed a decision or
    vote before it. Nothing is said to be unrecorded unless it cannot have been."""
    retry = f"retry after {RETRY_AFTER_SECONDS} s"
    unavailable = database_unavailable(exc)
    if isinstance(exc, OutcomeUnknown):
        return Unexpected(503, "outcome_unknown", f"the database failed while committing "
                          f"({type(exc.error).__name__}): the request may have been recorded or not; {retry} with "
                          "the same Idempotency-Key, which returns what was recorded or carries it out once")
    if committed:
        return Unexpected(503 if unavailable else 500, "outcome_unknown", "the request was recorded, but "
                          f"an error followed ({type(exc).__name__}) before it could be answered; retry with the "
                          "same Idempotency-Key to get its answer" + (f" ({retry})" if unavailable else ""))
    if unavailable:
        return Unexpected(503, "unavailable", f"the database is unavailable ({type(exc).__name__}); the "
                          f"transaction it failed in was rolled back (nothing of it was recorded): {retry}")
    return Unexpected(500, "internal", "internal error; nothing was permitted")
