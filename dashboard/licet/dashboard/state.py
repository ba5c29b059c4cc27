"""The signed-in person, as every page's state sees them."""

from __future__ import annotations

import hashlib
from typing import Any

import reflex as rx

from licet.dashboard.api import Api, Reply, session_cookies


class Session(rx.State):
    """Who is signed in (from `GET /v1/auth/me`); pages subclass it to reach `/v1` as that person."""

    email: rx.Field[str] = rx.field("")
    display_name: rx.Field[str] = rx.field("")
    role: rx.Field[str] = rx.field("")
    tenant: rx.Field[str] = rx.field("")
    mfa_methods: rx.Field[list[str]] = rx.field(default_factory=list)
    permissions: rx.Field[list[str]] = rx.field(default_factory=list)  # the API's word on what this role may do
    # The browser's cookie is read once per socket (at connect): a state loaded for another session
    # (sign-out, then someone else signs in in the same tab) is reset before use.
    _loaded_for: str = ""

    def api(self) -> Api:
        """`/v1` with this browser's session cookie, CSRF token and address."""
        headers = self.router.headers.raw_headers
        session, csrf = session_cookies(headers.get("cookie", ""))
        return Api(session, csrf, self.router.session.client_ip, headers.get("user-agent", ""))

    @rx.var
    def signed_in(self) -> bool:
        return self.email != ""

    @rx.var
    def may_vote(self) -> bool:
        return self.role in ("owner", "admin", "approver")

    @rx.var
    def may_audit(self) -> bool:
        return self.role in ("owner", "admin", "auditor")

    @rx.event
    async def require(self) -> Any:
        """On every protected page: load the person, or send the browser to sign in."""
        api = self.api()
        key = hashlib.sha256(api.session.encode()).hexdigest()
        if key != self._loaded_for:
            self.reset()
            self._loaded_for = key
        if not api.session:
            return rx.redirect("/login")
        me = await api.get("/v1/auth/me")
        if not me.ok or me.body["session"]["stage"] != "active":
            self.reset()
            return rx.redirect("/login")
        user = me.body["user"]
        self.email, self.display_name, self.role = user["email"], user["display_name"], user["role"]
        self.tenant, self.mfa_methods = me.body["tenant"], me.body["mfa_methods"]
        self.permissions = me.body["permissions"]
        return None

    @rx.event
    def sign_out(self) -> Any:
        return in_browser("logout()", Session.signed_out)

    @rx.event
    def signed_out(self, _result: Any) -> Any:
        self.reset()
        return in_browser("go('/login')")


class StepUp(rx.State, mixin=True):
    """An action the API refused for stale MFA (`step_up_required`), held while the page asks for a step-up
    in place (a code or a passkey, sent by the browser straight to `/v1/auth/mfa/...`), then done."""

    step_up_open: rx.Field[bool] = rx.field(False)
    step_up_error: rx.Field[str] = rx.field("")

    def _ask_step_up(self) -> None:
        self.step_up_open, self.step_up_error = True, ""

    async def _resume(self) -> Any:
        """Do the held action again (each page says which); what it returns goes back to the browser."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Forget the held action."""
        raise NotImplementedError

    @rx.event
    async def stepped_up(self, result: dict[str, Any]) -> Any:
        """The browser's step-up answer: retry the held action, or say why the step-up failed."""
        if result.get("status") != 200:
            error = (result.get("body") or {}).get("error") or {}
            self.step_up_error = f"step-up failed: {error.get('message', '')}"
            return None
        self.step_up_open, self.step_up_error = False, ""
        return await self._resume()

    @rx.event
    def cancel_step_up(self) -> None:
        self.step_up_open = False
        self._drop()


def in_browser(call: str, callback: Any = None) -> Any:
    """Run `licet.<call>` (assets/licet.js) in the page, once that script has loaded (a click that
    comes first is not lost), and hand its result to `callback`."""
    script = ("(async () => { while (!window.licet) await new Promise(r => setTimeout(r, 25)); "
              f"return await licet.{call}; }})()")
    return rx.call_script(script, callback=callback)


def refusal(reply: Reply) -> str:
    """The API's refusal as a person reads it: its message and stable code."""
    return f"{reply.message} ({reply.error_code})" if reply.error_code else reply.message
