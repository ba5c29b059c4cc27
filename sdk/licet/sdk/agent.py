"""`Agent` and `@agent.tool`: every call of a guarded function is decided first and runs only on
a permit; anything else (including Licet being unreachable) raises before the function runs."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from licet.sdk.errors import raise_for_decision
from licet.sdk.types import DecisionResult, PlanResult

F = TypeVar("F", bound=Callable[..., Any])


class Decider(Protocol):
    """What an `Agent` asks: a `LicetClient`, an `AsyncLicetClient` or a `LocalLicet`."""

    def decide(self, action: str, resource: str, args: dict[str, Any] | None = None) -> Any: ...

    def verify_plan(self, steps: list[dict[str, Any]]) -> Any: ...


Resource = str | Callable[..., str]
# The approval that guarded calls present inside `Agent.approved` (per thread and per asyncio task).
_PRESENTED: ContextVar[str | None] = ContextVar("licet_presented_approval", default=None)


class Agent:
    """Guards tool functions with Licet decisions and keeps the last certificate."""

    def __init__(self, licet: Decider) -> None:
        self.licet = licet
        self._last: dict[str, Any] | None = None

    @property
    def last_certificate(self) -> dict[str, Any] | None:
        """A copy of the certificate of the last decision (changing it changes nothing here)."""
        return copy.deepcopy(self._last)

    def tool(self, fn: F | None = None, *, action: str | None = None, resource: Resource | None = None,
             args: Callable[..., dict[str, Any]] | None = None) -> Any:
        """Decorate a tool. `action` defaults to the function's name with `__` read as `.`
        (`payments__transfer` → `payments.transfer`); `resource` is a format string over the
        arguments (`"/accounts/{account}"`) or a function of them (default `/tools/<name>`); `args`
        maps the arguments to the decided args (default: all of them, by name)."""

        def wrap(func: F) -> F:
            name = action or func.__name__.replace("__", ".")
            signature = inspect.signature(func)

            def ask(call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> Any:
                bound = signature.bind(*call_args, **call_kwargs)
                bound.apply_defaults()
                values = dict(bound.arguments)
                where = (resource(**values) if callable(resource) else resource.format(**values)
                         if resource is not None else f"/tools/{func.__name__}")
                decided = args(**values) if args is not None else values
                approval = _PRESENTED.get()
                if approval is None:
                    return self.licet.decide(name, where, decided)
                # Clients take `approval`; LocalLicet (no approvals) refuses it with a TypeError.
                return self.licet.decide(name, where, decided, approval=approval)  # type: ignore[call-arg]

            if inspect.iscoroutinefunction(func):
                @functools.wraps(func)
                async def guarded_async(*call_args: Any, **call_kwargs: Any) -> Any:
                    found = ask(call_args, call_kwargs)
                    self._allow(await found if inspect.isawaitable(found) else found)
                    return await func(*call_args, **call_kwargs)

                return guarded_async  # type: ignore[return-value]

            sync_only = (f"@agent.tool: {func.__name__} is not `async def` but the client is async; make the "
                         "tool `async def` or use a sync client")
            if inspect.iscoroutinefunction(self.licet.decide):
                raise TypeError(sync_only)

            @functools.wraps(func)
            def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
                self._allow(_not_awaitable(ask(call_args, call_kwargs), sync_only))
                return func(*call_args, **call_kwargs)

            return guarded  # type: ignore[return-value]

        return wrap(fn) if fn is not None else wrap

    @staticmethod
    @contextmanager
    def approved(approval_id: str) -> Iterator[None]:
        """Inside the block, guarded calls present the granted approval `approval_id` (the server then
        permits the exact request it was granted for, once; anything else is a certified deny,
        raised as `ApprovalRefused`). Needs a client: local mode has no approvals."""
        token = _PRESENTED.set(approval_id)
        try:
            yield
        finally:
            _PRESENTED.reset(token)

    def _allow(self, decision: DecisionResult) -> None:
        self._last = decision.certificate
        raise_for_decision(decision)

    def preflight(self, calls: list[tuple[str, str, dict[str, Any]]]) -> PlanResult:
        """Verify a list of intended calls `(action, resource, args)` as one plan before starting
        (with an `AsyncLicetClient`: `await agent.preflight_async(calls)`)."""
        if inspect.iscoroutinefunction(self.licet.verify_plan):
            raise TypeError(_PREFLIGHT_ASYNC)
        return _not_awaitable(self.licet.verify_plan(_steps(calls)), _PREFLIGHT_ASYNC)  # type: ignore[no-any-return]

    async def preflight_async(self, calls: list[tuple[str, str, dict[str, Any]]]) -> PlanResult:
        """`preflight`, awaited: with an async client, a sync client or a `LocalLicet` alike."""
        result = self.licet.verify_plan(_steps(calls))
        return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]


_PREFLIGHT_ASYNC = "Agent.preflight with an async client: use `await agent.preflight_async(...)`"


def _steps(calls: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"action": a, "resource": r, "args": x} for a, r, x in calls]


def _not_awaitable(result: Any, message: str) -> Any:
    """`result`, unless a decider that does not declare itself async returned an awaitable: then it is
    closed unsent (nothing was asked, so nothing is permitted) and `TypeError(message)` raised."""
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(message)
    return result
