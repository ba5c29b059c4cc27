"""The policy editor (`/editor`): a version's document in a code editor with line numbers, checked
as the person types (debounced) by `POST /v1/policies/validate`: the kernel's error at its line and
column and the analysis warnings (rules that never apply, approval roles nobody holds) in the editor's
gutter and in a list whose entries move the cursor there; saved as the policy's next version
(`POST /v1/policies`). Any version can then be activated, or the active one rolled back, after the
page shows one last time what the activation changes (the kernel's semantic diff of the version to be
activated, or of the one a roll-back returns to, against the active version); both need a fresh second
factor, asked for in place.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict

import reflex as rx
from reflex.event import passthrough_event_spec

from licet.dashboard.api import Reply
from licet.dashboard.layout import error_callout, page, step_up_dialog
from licet.dashboard.pages.policies import SELECT, ExampleRow, example_row, examples_list, labelled
from licet.dashboard.state import Session, StepUp, refusal
from licet.kernel.document import load_document
from licet.kernel.errors import PolicyError

DEBOUNCE_MS = 300  # the editor reports its text this long after the typing stops
EDITOR_ID = "policy-editor"


class Problem(TypedDict):
    """An error or warning at a place in the document (1-based line and column)."""

    line: int
    column: int
    severity: str  # error | warning
    message: str
    where: str  # "line 4, column 9"


class VersionChoice(TypedDict):
    number: str
    label: str


def _problem(line: int, column: int, severity: str, message: str) -> Problem:
    return Problem(line=line, column=column, severity=severity, message=message,
                   where=f"line {line}, column {column}")


def rule_positions(source: str) -> dict[str, tuple[int, int]]:
    """Where each rule (by id) starts in `source`; {} when the document does not load."""
    try:
        located = load_document(source, "source")
    except PolicyError:
        return {}
    rules = located.value.get("rules") if isinstance(located.value, Mapping) else None
    if not isinstance(rules, list):
        return {}
    return {str(rule["id"]): located.positions.get(f"rules[{i}]", (1, 1))
            for i, rule in enumerate(rules) if isinstance(rule, Mapping) and "id" in rule}


def problems_of(reply: Reply, source: str) -> tuple[list[Problem], str]:
    """A validation answer as located problems and a one-line status."""
    if reply.ok:
        body = reply.body
        at = rule_positions(source)
        warnings = [_problem(*at.get(w["rule"], (1, 1)), "warning", f"rule {w['rule']}: {w['reason']}")
                    for w in body["never_applying"]]
        status = (f"Valid: policy {body['id']}, {body['rules']} rule{'' if body['rules'] == 1 else 's'}, "
                  f"{body['invariants']} invariant{'' if body['invariants'] == 1 else 's'}")
        if warnings:
            status += f"; {len(warnings)} warning{'' if len(warnings) == 1 else 's'}"
        if not body["analysed"]:
            status += "; looking for rules that never apply"
        return warnings, status + "."
    error = reply.body.get("error", {}) if isinstance(reply.body, dict) else {}
    if reply.error_code == "invalid_policy" and error.get("line"):
        found = _problem(int(error["line"]), int(error.get("column") or 1), "error",
                         error.get("message", "") + (f" ({error['field']})" if error.get("field") else ""))
        return [found], f"1 error, at {found['where']}."
    return [], f"Not checked: {refusal(reply)}"


class Editor(StepUp, Session):
    """The editor page: the draft, its problems, saving, activation and roll-back."""

    policies: rx.Field[list[dict[str, str]]] = rx.field(default_factory=list)
    policy_id: rx.Field[str] = rx.field("")
    versions: rx.Field[list[VersionChoice]] = rx.field(default_factory=list)
    active_label: rx.Field[str] = rx.field("")  # "payments-agent v2", or "" when none is active
    base_number: rx.Field[str] = rx.field("")  # the version loaded into the editor
    source: rx.Field[str] = rx.field("")  # what the editor was given (it owns the text being typed)
    revision: rx.Field[int] = rx.field(0)  # bumped to make the editor take `source`
    problems: rx.Field[list[Problem]] = rx.field(default_factory=list)
    status: rx.Field[str] = rx.field("")
    valid: rx.Field[bool] = rx.field(False)
    error: rx.Field[str] = rx.field("")
    notice: rx.Field[str] = rx.field("")
    activate_number: rx.Field[str] = rx.field("")
    # The confirmation shown before an activation or roll-back.
    confirm_open: rx.Field[bool] = rx.field(False)
    confirm_title: rx.Field[str] = rx.field("")
    confirm_text: rx.Field[str] = rx.field("")
    confirm_gained: rx.Field[list[ExampleRow]] = rx.field(default_factory=list)
    confirm_lost: rx.Field[list[ExampleRow]] = rx.field(default_factory=list)
    confirm_busy: rx.Field[bool] = rx.field(False)
    _draft: str = ""  # the editor's text as last reported
    _held: tuple[str, str] | None = None  # ("activate", number) or ("rollback", ""), awaiting confirmation

    @rx.event
    async def load(self) -> Any:
        """The tenant's policies; the one asked for (`?policy=`) or holding the active version is opened."""
        if not self.signed_in:
            return None
        listed = await self.api().get("/v1/policies")
        if not listed.ok:
            self.error = refusal(listed)
            return None
        self.error, self.notice = "", ""
        self.policies = [{"id": p["id"], "name": p["name"]} for p in listed.body["policies"]]
        active = listed.body["active"]
        wanted = self.router.url.query_parameters.get("policy") or (active["policy_id"] if active else "")
        known = [p["id"] for p in self.policies]
        return await self.choose(wanted if wanted in known else (known[0] if known else ""))

    async def _versions(self) -> bool:
        got = await self.api().get(f"/v1/policies/{self.policy_id}")
        if not got.ok:
            self.error = refusal(got)
            return False
        self.versions = [VersionChoice(number=str(v["number"]),
                                       label=f"v{v['number']}" + (" (active)" if v["active"] else ""))
                         for v in got.body["versions"]]
        active = next((v for v in got.body["versions"] if v["active"]), None)
        name = got.body["name"]
        listed = await self.api().get("/v1/policies")
        current = listed.body["active"] if listed.ok else None
        if active is not None:
            self.active_label = f"{name} v{active['number']}"
        elif current is not None:
            other = next((p["name"] for p in self.policies if p["id"] == current["policy_id"]), "another policy")
            self.active_label = f"{other} v{current['number']}"
        else:
            self.active_label = ""
        return True

    @rx.event
    async def choose(self, policy_id: str) -> Any:
        """Open `policy_id`: its newest version in the editor."""
        self.policy_id = policy_id
        self.versions, self.problems, self.status = [], [], ""
        if policy_id and await self._versions():
            return await self.open_version(self.versions[0]["number"])
        return None

    @rx.event
    async def open_version(self, number: str) -> Any:
        """Put version `number`'s document in the editor (what was typed is replaced) and check it."""
        got = await self.api().get(f"/v1/policies/{self.policy_id}/versions/{number}")
        if not got.ok:
            self.error = refusal(got)
            return None
        self.base_number, self.activate_number = number, number
        self.source = self._draft = got.body["source"]
        self.revision += 1
        return await self._check()

    @rx.event
    async def edited(self, text: str) -> Any:
        """The editor's text, once the typing paused: check it."""
        self._draft = text
        self.notice = ""
        return await self._check()

    async def _check(self) -> Any:
        """Load and type-check the draft at once (the errors); the analysis (the warnings) follows."""
        if not self._draft.strip():
            self.problems, self.status, self.valid = [], "The document is empty.", False
            return None
        reply = await self.api().post("/v1/policies/validate", {"source": self._draft, "analysis": False})
        self.problems, self.status = problems_of(reply, self._draft)
        self.valid = reply.ok
        return Editor.analyse if reply.ok else None

    @rx.event(background=True)
    async def analyse(self) -> None:
        """The analysis warnings take Z3 longer than the errors take the parser: typing goes on
        meanwhile, and warnings about a draft that has changed since are dropped."""
        async with self:
            draft, api = self._draft, self.api()
        reply = await api.post("/v1/policies/validate", {"source": draft})
        async with self:
            if self._draft == draft:
                self.problems, self.status = problems_of(reply, draft)
                self.valid = reply.ok

    @rx.event
    def jump(self, line: int, column: int) -> Any:
        """Put the editor's cursor at a problem."""
        return rx.call_script(f"window.licetEditor.jump({json.dumps(EDITOR_ID)}, {int(line)}, {int(column)})")

    @rx.event
    async def save(self) -> None:
        """Store the editor's text as the next version of the policy its `id` names."""
        self.error, self.notice = "", ""
        reply = await self.api().post("/v1/policies", {"source": self._draft})
        if not reply.ok:
            self.error = refusal(reply)
            if reply.error_code == "invalid_policy":
                self.problems, self.status = problems_of(reply, self._draft)
            return
        policy, version = reply.body["policy"], reply.body["version"]
        if policy["id"] not in [p["id"] for p in self.policies]:
            self.policies = [*self.policies, {"id": policy["id"], "name": policy["name"]}]
        self.policy_id = policy["id"]
        await self._versions()
        self.base_number = self.activate_number = str(version["number"])
        self.notice = f"Saved as {policy['name']} v{version['number']} (a draft until it is activated)."

    @rx.event
    def pick_activate(self, number: str) -> None:
        self.activate_number = number

    @rx.event
    async def ask_activate(self) -> AsyncIterator[None]:
        """What activating the chosen version changes against the active one, for the person to confirm."""
        number = self.activate_number
        async for _ in self._confirm_impact(("activate", number), f"Activate v{number}?", self.policy_id, number,
                                            f"v{number}"):
            yield

    @rx.event
    async def ask_rollback(self) -> AsyncIterator[None]:
        """Roll-back re-activates the version active before the current one (the API's `rollback_to`, from
        the activation history): what that changes is shown as for an activation."""
        self.error, self.notice = "", ""
        listed = await self.api().get("/v1/policies")
        if not listed.ok:
            self.error = refusal(listed)
            return
        target = listed.body["rollback_to"]
        if target is None:
            self.error = "Nothing to roll back to: no other version was active before the current one."
            return
        number = str(target["number"])
        name = next((p["name"] for p in listed.body["policies"] if p["id"] == target["policy_id"]), "")
        label = f"v{number}" if target["policy_id"] == self.policy_id else f"{name} v{number}"
        async for _ in self._confirm_impact(("rollback", ""), f"Roll back to {label}?", target["policy_id"], number,
                                            label):
            yield

    async def _confirm_impact(self, held: tuple[str, str], title: str, policy_id: str, number: str,
                              label: str) -> AsyncIterator[None]:
        """Open the confirmation of `held` with the semantic diff of `policy_id` v`number` (shown as `label`)
        against the active version."""
        self.error, self.notice, self._held = "", "", held
        self.confirm_title = title
        self.confirm_text, self.confirm_gained, self.confirm_lost = "Comparing with the active version…", [], []
        self.confirm_open, self.confirm_busy = True, True
        yield
        try:
            reply = await self.api().post(f"/v1/policies/{policy_id}/diff", {"version": int(number), "max_examples": 3})
            self.confirm_text = self._impact_text(reply, label)
            if reply.ok:
                self.confirm_gained = [example_row(e) for e in reply.body["gained"]]
                self.confirm_lost = [example_row(e) for e in reply.body["lost"]]
        finally:
            self.confirm_busy = False

    def _impact_text(self, reply: Reply, label: str) -> str:
        if reply.error_code == "no_active_policy":
            return f"No version is active: from now on every decision uses {label}."
        if not reply.ok:
            return f"The impact could not be computed: {refusal(reply)}"
        body = reply.body
        old = f"the active {self.active_label}" if self.active_label else "the active version"
        if body["answer"] == "equivalent":
            return f"{label} permits exactly what {old} permits (proved): decisions keep their outcomes."
        if body["answer"] == "unknown":
            return f"Not established whether {label} and {old} differ: {body.get('reason')}"
        return (f"{label} permits requests {old} does not ({len(body['gained'])} shown) and refuses requests "
                f"it permits ({len(body['lost'])} shown); each example was confirmed by deciding it under both.")

    @rx.event
    def cancel_confirm(self) -> None:
        self.confirm_open, self._held = False, None

    @rx.event
    async def confirm(self) -> Any:
        """Do the confirmed activation or roll-back; a stale second factor is asked for in place."""
        self.confirm_open = False
        return await self._resume()

    async def _resume(self) -> Any:
        if self._held is None:
            return None
        kind, number = self._held
        path = (f"/v1/policies/{self.policy_id}/versions/{number}/activate" if kind == "activate"
                else "/v1/policies/rollback")
        reply = await self.api().post(path, {"reason": f"dashboard {kind}"})
        if reply.error_code == "step_up_required":
            self._ask_step_up()
            return None
        self._held = None
        if not reply.ok:
            self.error = refusal(reply)
            return None
        active = reply.body["active"]
        self.notice = f"v{active['number']} is now active (hash {active['hash'][:19]}); new decisions use it."
        if active["policy_id"] == self.policy_id:
            await self._versions()
            return None
        return await self.choose(active["policy_id"])

    def _drop(self) -> None:
        self._held = None


class CodeEditor(rx.NoSSRComponent):
    """assets/policy_editor.jsx: CodeMirror 6 with line numbers, YAML and the problems in its gutter."""

    library = "$/public/policy_editor.jsx"
    tag = "PolicyEditor"
    is_default = True
    lib_dependencies: list[str] = [
        "@uiw/react-codemirror@4.25.12", "@codemirror/lang-yaml@6.1.3", "@codemirror/lint@6.9.8",
        "@codemirror/view@6.44.2", "@codemirror/state@6.7.6"]

    source: rx.Var[str]
    revision: rx.Var[int]
    problems: rx.Var[list[Problem]]
    delay: rx.Var[int]
    label: rx.Var[str]
    height: rx.Var[str]
    # Reflex reads the handler's arguments from this subscript at run time; its stubs declare no type arguments.
    on_change: rx.EventHandler[passthrough_event_spec(str)]  # type: ignore[type-arg,valid-type]


# ---- components ---------------------------------------------------------------------------------------


def _problem_line(problem: rx.Var[Problem]) -> rx.Component:
    return rx.el.li(
        rx.button(
            rx.badge(problem["severity"], color_scheme=rx.cond(problem["severity"] == "error", "red", "amber"),
                     high_contrast=True),
            rx.text(problem["where"], ": ", problem["message"], size="2", align="left"),
            variant="ghost", on_click=Editor.jump(problem["line"], problem["column"]), class_name="problem",
            style={"height": "auto", "whiteSpace": "normal", "justifyContent": "flex-start", "textAlign": "left"},
        ),
        data_line=problem["line"].to_string(), data_column=problem["column"].to_string(),
        data_severity=problem["severity"], style={"marginBottom": "4px"},
    )


def _confirm_dialog() -> rx.Component:
    e = Editor
    return rx.dialog.root(
        rx.dialog.content(
            rx.dialog.title(e.confirm_title),
            rx.dialog.description(e.confirm_text, id="confirm-impact"),
            examples_list("Permitted after, not now", e.confirm_gained, "confirm-gained"),
            examples_list("Permitted now, not after", e.confirm_lost, "confirm-lost"),
            rx.hstack(
                rx.button("Confirm", on_click=e.confirm, loading=e.confirm_busy, id="confirm-activation"),
                rx.button("Cancel", variant="soft", color_scheme="gray", on_click=e.cancel_confirm),
                margin_top="12px",
            ),
            max_height="85vh", overflow_y="auto",
        ),
        open=e.confirm_open,
    )


def editor_page() -> rx.Component:
    e = Editor
    version_options = rx.foreach(e.versions, lambda v: rx.el.option(v["label"], value=v["number"]))
    return page(
        "Edit a policy",
        rx.text("Type in the editor: the document is checked as you type. Saving stores it as the policy's "
                "next version; nothing changes for agents until a version is activated.",
                size="2", color_scheme="gray"),
        error_callout(e.error, "editor-error"),
        rx.cond(e.notice != "", rx.callout(e.notice, color_scheme="green", id="editor-notice", role="status",
                                           width="100%")),
        rx.hstack(
            rx.cond(e.policies.length() > 1, labelled("Policy", rx.el.select(
                rx.foreach(e.policies, lambda p: rx.el.option(p["name"], value=p["id"])),
                id="editor-policy", value=e.policy_id, on_change=e.choose, style=SELECT))),
            labelled("Open version", rx.el.select(version_options, id="editor-version", value=e.base_number,
                                                  on_change=e.open_version, style=SELECT)),
            rx.text("Active: ", rx.cond(e.active_label != "", e.active_label, "none"), size="2", id="active-label"),
            align="end", wrap="wrap", spacing="4",
        ),
        rx.el.section(
            rx.heading("Document", size="4", as_="h2", id="document-heading"),
            rx.el.div(
                CodeEditor.create(id=EDITOR_ID, source=e.source, revision=e.revision, problems=e.problems,
                                  delay=DEBOUNCE_MS, label="Policy document (YAML)", on_change=e.edited),
                style={"width": "100%", "maxWidth": "100%"},
            ),
            rx.text(e.status, id="editor-status", size="2", role="status", margin_top="8px",
                    color_scheme=rx.cond(e.valid, "green", "red")),
            rx.el.ul(rx.foreach(e.problems, _problem_line), id="problems",
                     style={"margin": "0", "padding": "0", "listStyle": "none"}),
            rx.cond(Session.permissions.contains("policies.write"),
                    rx.button("Save as a new version", on_click=e.save, id="save-version", disabled=~e.valid)),
            style={"width": "100%"}, aria_labelledby="document-heading",
        ),
        rx.cond(
            Session.permissions.contains("policies.activate"),
            rx.el.section(
                rx.heading("Activate or roll back", size="4", as_="h2", id="activate-heading"),
                rx.text("Before it is done, the page shows what the version (for a roll-back, the one active before) "
                        "permits differently from the active one. Both need a second factor within the last few "
                        "minutes.", size="2",
                        color_scheme="gray"),
                rx.hstack(
                    labelled("Version", rx.el.select(version_options, id="activate-version", value=e.activate_number,
                                                     on_change=e.pick_activate, style=SELECT)),
                    rx.button("Activate…", on_click=e.ask_activate, id="activate"),
                    rx.button("Roll back…", on_click=e.ask_rollback, variant="soft", color_scheme="gray",
                              id="rollback"),
                    align="end", wrap="wrap",
                ),
                style={"width": "100%"}, aria_labelledby="activate-heading",
            ),
        ),
        _confirm_dialog(),
        step_up_dialog(Editor, "Activating a policy needs a second factor within the last few minutes."),
    )
