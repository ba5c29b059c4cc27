"""Plan playground (`/plans`): build a plan step by step (action, resource, args; an argument may be
symbolic, with bounds for numbers) or paste its JSON, and verify it with `POST /v1/plans/verify` against
the active policy or a chosen stored version (a draft, say), as the signed-in person (the API takes the
principal, context and session state from the caller). The verdict is shown on the steps:
the failing step highlighted with the counterexample's values, the steps that need approval marked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import reflex as rx

from licet.dashboard.api import Reply
from licet.dashboard.layout import error_callout, field, page
from licet.dashboard.pages.policies import SELECT, labelled
from licet.dashboard.pages.query import ACTIVE, VersionOption, version_options
from licet.dashboard.state import Session, refusal
from licet.kernel.proof_text import counterexample_value_text

SYMBOLIC_KINDS = ("int", "real", "bool", "string")
EXAMPLE_PLAN = [
    {"action": "payments.read", "resource": "/accounts/acc-001", "args": {}},
    {"action": "payments.transfer", "resource": "/accounts/acc-001",
     "args": {"amount": {"symbolic": "int", "min": 1, "max": 5000}, "currency": "EUR", "country": "DE",
              "beneficiary_iban": "DE89370400440532013000"}},
]


class StepView(TypedDict):
    """A step as the verdict shows it."""

    index: str
    action: str
    resource: str
    args: str
    state: str  # failing | approval | checked | "" (not verified)
    values: list[str]  # the counterexample's values on this step ("amount = 901")
    reason: str


def plan_steps(text: str) -> list[dict[str, Any]]:
    """The steps of a pasted plan: a list of steps, or an object with `steps` (what `licet plan verify`
    reads; its principal and context are the caller's here). Raises ValueError naming what is wrong."""
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the plan is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    steps = plan.get("steps") if isinstance(plan, dict) else plan
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise ValueError("the plan must be a list of steps {action, resource, args}, or an object with 'steps'")
    return steps


def step_views(steps: list[dict[str, Any]], verdict: dict[str, Any] | None) -> list[StepView]:
    """`steps` with the verdict on them: the counterexample's step and values, the approval steps."""
    found = (verdict or {}).get("counterexample")
    approvals = set((verdict or {}).get("approval_steps") or [])
    views = []
    for i, step in enumerate(steps):
        failing = found is not None and found["step"] == i
        values = [f"{key.partition('].')[2]} = {counterexample_value_text(steps, key, value)}"
                  for key, value in found["values"].items() if key.startswith(f"steps[{i}].")] if failing else []
        state = ("failing" if failing else "approval" if i in approvals
                 else "checked" if verdict is not None and (found is None or i < found["step"]) else "")
        views.append(StepView(index=str(i), action=str(step.get("action", "")), resource=str(step.get("resource", "")),
                              args=json.dumps(step.get("args", {}), sort_keys=True), state=state, values=values,
                              reason=found["reason"] if failing else ""))
    return views


class Plans(Session):
    """The plan being built and its verdict."""

    plan_json: rx.Field[str] = rx.field(json.dumps(EXAMPLE_PLAN, indent=2))
    steps: rx.Field[list[StepView]] = rx.field(default_factory=list)
    kind: rx.Field[str] = rx.field("int")
    error: rx.Field[str] = rx.field("")
    builder_error: rx.Field[str] = rx.field("")
    busy: rx.Field[bool] = rx.field(False)
    verdict: rx.Field[str] = rx.field("")  # safe | unsafe | needs_approval ("" before any)
    verdict_text: rx.Field[str] = rx.field("")
    versions: rx.Field[list[VersionOption]] = rx.field(default_factory=list)
    version_id: rx.Field[str] = rx.field(ACTIVE)  # what the plan is verified against

    @rx.event
    async def load(self) -> None:
        self._show(self.plan_json, None)
        if not self.signed_in:
            return
        found = await version_options(self.api())
        if isinstance(found, Reply):
            self.error = refusal(found)
        else:
            self.versions = found

    @rx.event
    def pick_version(self, version_id: str) -> None:
        """Verify against another version: the old verdict no longer holds."""
        self.version_id, self.verdict = version_id, ""
        self._show(self.plan_json, None)

    def _show(self, text: str, verdict: dict[str, Any] | None) -> None:
        try:
            self.steps = step_views(plan_steps(text), verdict)
            self.error = ""
        except ValueError as exc:
            self.steps, self.error = [], str(exc)

    @rx.event
    def set_plan(self, text: str) -> None:
        """The pasted or edited JSON: the steps are shown again, the old verdict no longer holds."""
        self.plan_json, self.verdict = text, ""
        self._show(text, None)

    @rx.event
    def pick_kind(self, kind: str) -> None:
        self.kind = kind

    @rx.event
    def add_step(self, form: dict[str, Any]) -> None:
        """Append the builder's step (its args JSON, plus the symbolic argument if one is named)."""
        self.builder_error = ""
        try:
            steps = plan_steps(self.plan_json)
        except ValueError as exc:
            self.builder_error = f"Fix the plan's JSON first: {exc}"
            return
        action, resource = str(form.get("action", "")).strip(), str(form.get("resource", "")).strip()
        if not action or not resource:
            self.builder_error = "A step needs an action and a resource"
            return
        try:
            args = json.loads(str(form.get("args", "")).strip() or "{}")
        except json.JSONDecodeError as exc:
            self.builder_error = f"Args: not JSON ({exc.msg} at column {exc.colno})"
            return
        if not isinstance(args, dict):
            self.builder_error = "Args: a JSON object, e.g. {\"currency\": \"EUR\"}"
            return
        name = str(form.get("symbolic_name", "")).strip()
        if name:
            symbolic: dict[str, Any] = {"symbolic": self.kind}
            for end in ("min", "max"):
                bound = str(form.get(f"symbolic_{end}", "")).strip()
                if not bound:
                    continue
                if self.kind not in ("int", "real"):
                    self.builder_error = f"Symbolic {end}: a {self.kind} has no range"
                    return
                try:
                    symbolic[end] = int(bound) if self.kind == "int" else float(bound)
                except ValueError:
                    self.builder_error = f"Symbolic {end}: {'an integer' if self.kind == 'int' else 'a number'}"
                    return
            args[name] = symbolic
        steps.append({"action": action, "resource": resource, "args": args})
        self.set_plan(json.dumps(steps, indent=2))

    @rx.event
    def clear(self) -> None:
        self.set_plan("[]")

    @rx.event
    async def verify(self) -> AsyncIterator[None]:
        """Verify the plan against the chosen version (by default the active one), as this person."""
        try:
            steps = plan_steps(self.plan_json)
        except ValueError as exc:
            self.error = str(exc)
            return
        self.busy, self.error, self.verdict = True, "", ""
        yield
        try:
            body = {"steps": steps} if self.version_id == ACTIVE else {"steps": steps, "version_id": self.version_id}
            reply = await self.api().post("/v1/plans/verify", body)
        finally:
            self.busy = False
        if not reply.ok:
            self.error = refusal(reply)
            self._show(self.plan_json, None)
            return
        body = reply.body
        self.verdict = body["verdict"]
        self._show(self.plan_json, body)
        found = body.get("counterexample")
        self.verdict_text = {
            "safe": f"Every step is permitted for every value of its symbolic arguments "
                    f"({body['steps_checked']} steps checked).",
            "needs_approval": f"No step is refused, but steps {', '.join(map(str, body.get('approval_steps') or []))} "
                              "need approval before they run.",
            "unsafe": f"Step {found['step'] if found else '?'} can be refused: "
                      f"{found['reason'] if found else ''}",
        }[body["verdict"]]


# ---- components ---------------------------------------------------------------------------------------

_STATE_STYLE = {"failing": ("var(--red-a4)", "red"), "approval": ("var(--amber-a4)", "amber"),
                "checked": ("transparent", "green")}


def _step_card(step: rx.Var[StepView]) -> rx.Component:
    return rx.el.li(
        rx.hstack(
            rx.text("Step ", step["index"], weight="bold", size="2"),
            rx.code(step["action"]),
            rx.code(step["resource"], style={"wordBreak": "break-all"}),
            rx.match(step["state"],
                     ("failing", rx.badge("refused here", color_scheme="red", high_contrast=True)),
                     ("approval", rx.badge("needs approval", color_scheme="amber", high_contrast=True)),
                     ("checked", rx.badge("passes", color_scheme="green", high_contrast=True)),
                     rx.fragment()),
            wrap="wrap", align="center",
        ),
        rx.text(step["args"], size="1", style={"fontFamily": "var(--code-font-family)", "wordBreak": "break-all"}),
        rx.cond(step["reason"] != "", rx.text(step["reason"], size="2", class_name="reason")),
        rx.cond(step["values"].length() > 0, rx.el.ul(
            rx.foreach(step["values"], lambda v: rx.el.li(rx.code(v), class_name="value")),
            aria_label="Counterexample values", style={"margin": "4px 0 0", "paddingLeft": "20px"})),
        class_name="plan-step",
        data_index=step["index"], data_state=step["state"],
        style={"padding": "8px", "marginBottom": "6px", "borderRadius": "var(--radius-2)",
               "border": "1px solid var(--gray-a5)",
               "background": rx.match(step["state"], *[(k, v[0]) for k, v in _STATE_STYLE.items()], "transparent")},
    )


def _builder() -> rx.Component:
    p = Plans
    return rx.form(
        rx.vstack(
            rx.hstack(
                field("Action", rx.input(id="step-action", name="action", placeholder="payments.transfer")),
                field("Resource", rx.input(id="step-resource", name="resource", placeholder="/accounts/acc-001")),
                wrap="wrap", width="100%",
            ),
            field("Args (JSON object)", rx.input(id="step-args", name="args", placeholder='{"currency": "EUR"}',
                                                 width="100%", style={"fontFamily": "var(--code-font-family)"})),
            rx.text("A symbolic argument (optional): the plan is checked for every value it may take.", size="2",
                    color_scheme="gray"),
            rx.hstack(
                field("Name", rx.input(id="symbolic-name", name="symbolic_name", placeholder="amount", width="120px")),
                labelled("Type", rx.el.select(*[rx.el.option(k, value=k) for k in SYMBOLIC_KINDS], id="symbolic-kind",
                                              value=p.kind, on_change=p.pick_kind, style=SELECT)),
                field("Min", rx.input(id="symbolic-min", name="symbolic_min", width="90px", input_mode="decimal")),
                field("Max", rx.input(id="symbolic-max", name="symbolic_max", width="90px", input_mode="decimal")),
                wrap="wrap", align="end",
            ),
            error_callout(p.builder_error, "builder-error"),
            rx.hstack(rx.button("Add step", type="submit", id="add-step"),
                      rx.button("Clear the plan", type="button", variant="soft", color_scheme="gray",
                                on_click=p.clear, id="clear-plan"), wrap="wrap"),
            spacing="2", width="100%",
        ),
        on_submit=p.add_step, reset_on_submit=True, id="step-form", width="100%",
    )


def plans_page() -> rx.Component:
    p = Plans
    return page(
        "Plan playground",
        rx.text("Build a plan step by step or paste its JSON, then verify it against the active policy or another "
                "version (a draft, say: what the plan could do once it is active). It is "
                "verified for you: your identity, a session with your sign-in's second factor, your session's "
                "history. Nothing is recorded.", size="2", color_scheme="gray"),
        rx.el.section(rx.heading("Add a step", size="4", as_="h2", id="builder-heading"), _builder(),
                      aria_labelledby="builder-heading", style={"width": "100%"}),
        rx.el.section(
            rx.heading("The plan (JSON)", size="4", as_="h2", id="json-heading"),
            rx.text_area(value=p.plan_json, on_change=p.set_plan, id="plan-json", rows="12", width="100%",
                         aria_labelledby="json-heading",
                         style={"fontFamily": "var(--code-font-family)", "fontSize": "13px"}),
            rx.hstack(
                labelled("Verify against", rx.el.select(
                    rx.foreach(p.versions, lambda v: rx.el.option(v["label"], value=v["id"])),
                    id="plan-version", value=p.version_id, on_change=p.pick_version, style=SELECT)),
                rx.button("Verify", on_click=p.verify, id="verify-plan", loading=p.busy),
                align="end", wrap="wrap", margin_top="8px"),
            aria_labelledby="json-heading", style={"width": "100%"},
        ),
        error_callout(p.error, "plan-error"),
        rx.cond(p.verdict != "", rx.hstack(
            rx.text("Verdict:", size="2"),
            rx.badge(p.verdict, id="plan-verdict", size="3", high_contrast=True, color_scheme=rx.match(
                p.verdict, ("safe", "green"), ("unsafe", "red"), ("needs_approval", "amber"), "gray")),
            rx.text(p.verdict_text, size="2", id="plan-verdict-text"),
            align="center", wrap="wrap", role="status")),
        rx.el.section(
            rx.heading("Steps", size="4", as_="h2", id="steps-heading"),
            rx.el.ol(rx.foreach(p.steps, _step_card), id="plan-steps",
                     style={"margin": "0", "padding": "0", "listStyle": "none"}),
            aria_labelledby="steps-heading", style={"width": "100%"},
        ),
    )
