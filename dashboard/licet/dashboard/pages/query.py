"""Query (`/query`): can any request matching a pattern (action and resource globs, a condition) be
permitted? `POST /v1/policies/query` answers yes with an example `decide` confirmed, no with the
solver's proof that none exists, or unknown with its reason; against the active version or any stored one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import reflex as rx

from licet.dashboard.api import Api, Reply
from licet.dashboard.layout import error_callout, field, page
from licet.dashboard.pages.policies import SELECT, example_row, labelled
from licet.dashboard.state import Session, refusal

ACTIVE = ""  # the version choice meaning "whichever is active when asked"


class VersionOption(TypedDict):
    id: str
    label: str


async def version_options(api: Api) -> list[VersionOption] | Reply:
    """Every stored version to check against, "the active version" (`ACTIVE`) first; the refusal if the
    policies cannot be listed."""
    listed = await api.get("/v1/policies")
    if not listed.ok:
        return listed
    active = listed.body["active"]
    names = {p["id"]: p["name"] for p in listed.body["policies"]}
    options = [VersionOption(id=ACTIVE, label=(
        f"The active version ({names.get(active['policy_id'], '?')} v{active['number']})" if active
        else "The active version (none yet)"))]
    for policy_id, name in names.items():
        got = await api.get(f"/v1/policies/{policy_id}")
        if got.ok:
            options += [VersionOption(id=v["id"], label=f"{name} v{v['number']}") for v in got.body["versions"]]
    return options


class Query(Session):
    """The query form and the kernel's answer."""

    versions: rx.Field[list[VersionOption]] = rx.field(default_factory=list)
    version_id: rx.Field[str] = rx.field(ACTIVE)
    busy: rx.Field[bool] = rx.field(False)
    error: rx.Field[str] = rx.field("")
    answer: rx.Field[str] = rx.field("")  # yes | no | unknown ("" before any)
    answer_text: rx.Field[str] = rx.field("")
    example_request: rx.Field[str] = rx.field("")
    example_outcomes: rx.Field[str] = rx.field("")
    example_rules: rx.Field[str] = rx.field("")
    proof: rx.Field[str] = rx.field("")

    @rx.event
    async def load(self) -> None:
        """Every stored version, to ask against (the active one first)."""
        if not self.signed_in:
            return
        found = await version_options(self.api())
        if isinstance(found, Reply):
            self.error = refusal(found)
            return
        self.error, self.versions = "", found

    @rx.event
    def pick_version(self, version_id: str) -> None:
        self.version_id = version_id

    @rx.event
    async def ask(self, form: dict[str, Any]) -> AsyncIterator[None]:
        """Send the pattern (empty fields are left out: any action, any resource, no condition)."""
        pattern = {k: str(form.get(k, "")).strip() for k in ("action", "resource", "when")}
        body: dict[str, Any] = {"pattern": {k: v for k, v in pattern.items() if v}}
        if self.version_id != ACTIVE:
            body["version_id"] = self.version_id
        self.busy, self.error, self.answer = True, "", ""
        yield
        try:
            reply = await self.api().post("/v1/policies/query", body)
        finally:
            self.busy = False
        if not reply.ok:
            self.error = refusal(reply)
            return
        self._show(reply.body)

    def _show(self, body: dict[str, Any]) -> None:
        self.answer = body["answer"]
        self.example_request = self.example_outcomes = self.example_rules = self.proof = ""
        if body["answer"] == "yes":
            self.answer_text = "Yes: this request matches the pattern and is permitted (confirmed by deciding it)."
            shown = example_row(body["example"])
            self.example_request = json.dumps(json.loads(shown["request"]), indent=2, sort_keys=True)
            self.example_outcomes, self.example_rules = shown["outcomes"], shown["rules"]
        elif body["answer"] == "no":
            self.answer_text = "No: no request matching the pattern can be permitted. The solver's proof:"
            self.proof = "\n".join(f"{k}: {v}" for k, v in body["proof"].items())
        else:
            self.answer_text = f"Unknown: {body.get('reason')}"


def query_page() -> rx.Component:
    q = Query
    return page(
        "Query",
        rx.text("Can any request matching this pattern be permitted? Leave a field empty to leave it open.",
                size="2", color_scheme="gray"),
        error_callout(q.error, "query-error"),
        rx.form(
            rx.vstack(
                labelled("Ask against", rx.el.select(
                    rx.foreach(q.versions, lambda v: rx.el.option(v["label"], value=v["id"])),
                    id="query-version", value=q.version_id, on_change=q.pick_version, style=SELECT)),
                field("Action (a glob, e.g. payments.* )",
                      rx.input(id="query-action", name="action", placeholder="payments.transfer", width="100%")),
                field("Resource (a glob, e.g. /accounts/** )",
                      rx.input(id="query-resource", name="resource", placeholder="/accounts/**", width="100%")),
                field("Condition (the policy language, e.g. args.amount > 1000 )",
                      rx.text_area(id="query-when", name="when", placeholder='args.currency == "EUR"', rows="3",
                                   width="100%", style={"fontFamily": "var(--code-font-family)"})),
                rx.button("Ask", type="submit", id="query-ask", loading=q.busy),
                spacing="3", width="100%", max_width="640px",
            ),
            on_submit=q.ask, id="query-form", width="100%",
        ),
        rx.cond(
            q.answer != "",
            rx.el.section(
                rx.heading("Answer", size="4", as_="h2", id="answer-heading"),
                rx.hstack(rx.badge(q.answer, id="query-answer", high_contrast=True, size="3", color_scheme=rx.match(
                    q.answer, ("yes", "green"), ("no", "red"), "gray")),
                    rx.text(q.answer_text, size="2", id="query-answer-text"), align="center", wrap="wrap"),
                rx.cond(q.example_request != "", rx.vstack(
                    rx.el.pre(q.example_request, id="query-example", style={
                        "fontSize": "13px", "background": "var(--gray-a3)", "padding": "8px", "overflowX": "auto",
                        "maxWidth": "100%", "margin": "0"}),
                    rx.text("Outcomes: ", q.example_outcomes, size="2", id="query-outcomes"),
                    rx.text("Rules: ", q.example_rules, size="2", id="query-rules"),
                    spacing="2", width="100%")),
                rx.cond(q.proof != "", rx.el.pre(q.proof, id="query-proof", style={
                    "fontSize": "13px", "background": "var(--gray-a3)", "padding": "8px", "whiteSpace": "pre-wrap",
                    "maxWidth": "100%", "margin": "0"})),
                aria_labelledby="answer-heading", role="status", style={"width": "100%"},
            ),
        ),
    )
