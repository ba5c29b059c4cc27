"""Which role may call which route: read off the routes' own `require(...)` dependencies, printed as
the table in docs/roles.md (a test regenerates it and calls every route as every role)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from licet.server.roles import ROLES, allowed

BEGIN, END = "<!-- route-table:begin -->", "<!-- route-table:end -->"


@dataclass(frozen=True)
class RouteRule:
    """A route and who may call it: `permission` is a permission of server/roles.py, `public`
    (signing in) or `account` (a person's own account: any person, with a session)."""

    method: str
    path: str
    permission: str
    step_up: bool

    def admits(self, role: str) -> bool:
        """Whether a caller of `role` passes the route's role check."""
        return self.permission == "public" or allowed(role, self.permission)


def _marks(dependant: Dependant) -> list[Any]:
    found = [d.call for d in dependant.dependencies if hasattr(d.call, "permission")]
    for sub in dependant.dependencies:
        found.extend(_marks(sub))
    return found


def walk_routes(routes: list[Any]) -> list[APIRoute]:
    """Every API route of `routes`, those of included routers too."""
    # FastAPI keeps included routers as a node of their own (`original_router`): walk into them.
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(walk_routes(route.original_router.routes))
    return found


def route_mark(route: APIRoute) -> Any:
    """The route's permission check (its `permission` and `step_up`), or None for a route without one
    (operations: /healthz, /readyz, /metrics); more than one is an error."""
    marks = _marks(route.dependant)
    if len(marks) > 1:
        raise LookupError(f"{sorted(route.methods or ())} {route.path} has {len(marks)} permission checks, not one")
    return marks[0] if marks else None


def route_table(app: FastAPI) -> list[RouteRule]:
    """Every /v1 route with its permission; a route without exactly one permission check is an error."""
    rows = []
    for route in walk_routes(app.routes):
        if not route.path.startswith("/v1"):
            continue
        mark = route_mark(route)
        if mark is None:
            raise LookupError(f"{sorted(route.methods or ())} {route.path} has no permission check")
        for method in sorted(route.methods or ()):
            rows.append(RouteRule(method, route.path, mark.permission, bool(getattr(mark, "step_up", False))))
    return sorted(rows, key=lambda r: (r.path, r.method))


def markdown(rows: list[RouteRule]) -> str:
    """The table as docs/roles.md shows it."""
    lines = ["| Route | Permission | " + " | ".join(ROLES) + " |", "|---|---|" + "---|" * len(ROLES)]
    for row in rows:
        permission = row.permission + (" (step-up)" if row.step_up else "")
        marks = " | ".join("yes" if row.admits(role) else "—" for role in ROLES)
        lines.append(f"| `{row.method} {row.path}` | {permission} | {marks} |")
    return "\n".join(lines) + "\n"
