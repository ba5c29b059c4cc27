"""Policies (`/policies`): each policy's versions (who made each, when, which is active), the YAML of any
version, a side-by-side text diff of two versions, and the impact of a version against the active one:
the kernel's semantic diff (each difference with an example `decide` confirmed, "equivalent" only with
a proof, "unknown" with its reason) and a replay of the tenant's recorded decisions of the last N days.

Everything is read through `/v1` as the signed-in person (`GET /v1/policies...`, `POST .../diff`,
`POST .../replay`); the text diff is computed here from the two stored documents.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict

import reflex as rx
from reflex.vars import ArrayVar

from licet.dashboard.layout import error_callout, field, page
from licet.dashboard.pages.explorer import CERTIFICATE_PAGE, shown_time
from licet.dashboard.state import Session, refusal

REPLAY_PAGE = 1000  # decisions per replay call
REPLAY_PAGES = 20  # calls per replay on the page: at most 20 000 decisions, then it says it stopped


class VersionRow(TypedDict):
    number: str
    label: str
    created_by: str
    created_at: str
    active: bool
    activated: str
    hash: str


class DiffRow(TypedDict):
    """One line pair of a side-by-side diff; `kind` is same, changed, removed or added."""

    old_no: str
    old: str
    new_no: str
    new: str
    kind: str


class ExampleRow(TypedDict):
    request: str
    outcomes: str
    rules: str


class CountRow(TypedDict):
    old: str
    new: str
    count: str
    changed: bool


class ChangeRow(TypedDict):
    id: str
    time: str
    agent: str
    action: str
    resource: str
    old: str
    new: str
    href: str


def side_by_side(old: str, new: str) -> list[DiffRow]:
    """`old` and `new` line by line: equal lines beside each other, replaced lines paired, removed lines on
    the left only and added ones on the right only."""
    left, right = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        kind = {"equal": "same", "replace": "changed", "delete": "removed", "insert": "added"}[tag]
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            rows.append(
                DiffRow(
                    old_no=str(i + 1) if i < i2 else "",
                    old=left[i] if i < i2 else "",
                    new_no=str(j + 1) if j < j2 else "",
                    new=right[j] if j < j2 else "",
                    kind=kind,
                )
            )
    return rows


def version_row(version: Mapping[str, Any]) -> VersionRow:
    """A `GET /v1/policies/{id}` version as the table shows it."""
    activated = version.get("activated_at")
    return VersionRow(
        number=str(version["number"]),
        label=f"v{version['number']}" + (" (active)" if version["active"] else ""),
        created_by=version["created_by"],
        created_at=shown_time(version["created_at"]),
        active=bool(version["active"]),
        activated=f"{shown_time(activated)} by {version.get('activated_by')}" if activated else "never",
        hash=str(version["hash"])[:19],
    )


def example_row(example: Mapping[str, Any]) -> ExampleRow:
    """A confirmed example of `POST /v1/policies/{id}/diff`."""
    request = example.get("request", {})
    shown = {k: request[k] for k in ("action", "resource", "args", "principal", "context") if k in request}
    rules = example.get("rules") or {}
    return ExampleRow(
        request=json.dumps(shown, sort_keys=True, ensure_ascii=False),
        outcomes=", ".join(f"{k}: {v}" for k, v in (example.get("outcomes") or {}).items()),
        rules="; ".join(f"{k}: {', '.join(v) or '-'}" for k, v in rules.items()),
    )


def change_row(change: Mapping[str, Any]) -> ChangeRow:
    """A changed decision of `POST /v1/policies/{id}/replay`."""
    request = change.get("request", {})
    old, new = change["old"], change["new"]
    return ChangeRow(
        id=change["certificate_id"],
        time=shown_time(change["issued_at"]),
        agent=change["principal_id"],
        action=str(request.get("action", "")),
        resource=str(request.get("resource", "")),
        old=f"{old['outcome']} ({', '.join(old['rules']) or 'no rule'})",
        new=f"{new['outcome']} ({', '.join(new['rules']) or 'no rule'})",
        href=CERTIFICATE_PAGE + change["certificate_id"],
    )


def count_rows(counts: Counter[tuple[str, str]]) -> list[CountRow]:
    """Replay tallies, changed transitions first."""
    ordered = sorted(counts.items(), key=lambda item: (item[0][0] == item[0][1], item[0]))
    return [CountRow(old=o, new=n, count=str(c), changed=o != n) for (o, n), c in ordered]


class Policies(Session):
    """The policies page, read from `/v1` as the signed-in person."""

    policies: rx.Field[list[dict[str, str]]] = rx.field(default_factory=list)
    policy_id: rx.Field[str] = rx.field("")
    versions: rx.Field[list[VersionRow]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")
    # The YAML shown.
    shown_number: rx.Field[str] = rx.field("")
    shown_source: rx.Field[str] = rx.field("")
    # The text diff.
    left: rx.Field[str] = rx.field("")
    right: rx.Field[str] = rx.field("")
    diff_rows: rx.Field[list[DiffRow]] = rx.field(default_factory=list)
    diff_summary: rx.Field[str] = rx.field("")
    # The impact of `impact_number` against the active version.
    impact_number: rx.Field[str] = rx.field("")
    impact_busy: rx.Field[bool] = rx.field(False)
    impact_error: rx.Field[str] = rx.field("")
    semantic: rx.Field[str] = rx.field("")  # differs | equivalent | unknown ("" before any)
    semantic_text: rx.Field[str] = rx.field("")
    gained: rx.Field[list[ExampleRow]] = rx.field(default_factory=list)
    lost: rx.Field[list[ExampleRow]] = rx.field(default_factory=list)
    replay_summary: rx.Field[str] = rx.field("")
    replay_counts: rx.Field[list[CountRow]] = rx.field(default_factory=list)
    replay_changes: rx.Field[list[ChangeRow]] = rx.field(default_factory=list)
    _sources: dict[str, str] = {}  # the documents fetched, by version number (of `policy_id`)

    @rx.event
    async def load(self) -> None:
        """The tenant's policies; the one holding the active version is shown first."""
        if not self.signed_in:
            return
        listed = await self.api().get("/v1/policies")
        if not listed.ok:
            self.error = refusal(listed)
            return
        self.error = ""
        self.policies = [{"id": p["id"], "name": p["name"]} for p in listed.body["policies"]]
        active = listed.body["active"]
        wanted = self.router.url.query_parameters.get("policy") or (active["policy_id"] if active else "")
        known = [p["id"] for p in self.policies]
        await self.choose(wanted if wanted in known else (known[0] if known else ""))

    @rx.event
    async def choose(self, policy_id: str) -> None:
        """Show the versions of `policy_id`: the newest's YAML, its diff with the one before, no impact yet."""
        self.policy_id, self._sources = policy_id, {}
        self.versions, self.diff_rows, self.shown_source, self.semantic = [], [], "", ""
        self.replay_counts, self.replay_changes, self.replay_summary, self.impact_error = [], [], "", ""
        if not policy_id:
            return
        got = await self.api().get(f"/v1/policies/{policy_id}")
        if not got.ok:
            self.error = refusal(got)
            return
        self.versions = [version_row(v) for v in got.body["versions"]]
        newest = self.versions[0]["number"]
        self.impact_number = newest
        self.left, self.right = (self.versions[1]["number"] if len(self.versions) > 1 else newest), newest
        await self.show(newest)
        await self.compare()

    async def _source(self, number: str) -> str | None:
        if number not in self._sources:
            got = await self.api().get(f"/v1/policies/{self.policy_id}/versions/{number}")
            if not got.ok:
                self.error = refusal(got)
                return None
            self._sources = {**self._sources, number: got.body["source"]}  # assigned, so the state sees it change
        return self._sources[number]

    @rx.event
    async def show(self, number: str) -> None:
        """Show version `number`'s document."""
        source = await self._source(number)
        if source is not None:
            self.shown_number, self.shown_source = number, source

    @rx.event
    def pick_left(self, number: str) -> None:
        self.left = number

    @rx.event
    def pick_right(self, number: str) -> None:
        self.right = number

    @rx.event
    def pick_impact(self, number: str) -> None:
        self.impact_number = number

    @rx.event
    async def compare(self) -> None:
        """The side-by-side text diff of the two chosen versions."""
        old, new = await self._source(self.left), await self._source(self.right)
        if old is None or new is None:
            return
        self.diff_rows = side_by_side(old, new)
        changed = sum(1 for r in self.diff_rows if r["kind"] != "same")
        self.diff_summary = f"v{self.left} → v{self.right}: " + (
            f"{changed} line{'' if changed == 1 else 's'} differ" if changed else "identical text"
        )

    @rx.event
    async def impact(self, form: dict[str, Any]) -> AsyncIterator[None]:
        """The semantic diff of the chosen version against the active one, then the replay of the last N days."""
        try:
            days = int(str(form.get("days", "")).strip())  # its bounds are the API's to refuse
        except ValueError:
            self.impact_error = "Days of decisions: a whole number"
            return
        self.impact_busy, self.impact_error, self.semantic = True, "", ""
        self.replay_counts, self.replay_changes, self.replay_summary = [], [], ""
        yield
        try:
            await self._semantic()
            yield
            await self._replay(days)
        finally:
            self.impact_busy = False

    async def _semantic(self) -> None:
        got = await self.api().post(f"/v1/policies/{self.policy_id}/diff", {"version": int(self.impact_number)})
        if not got.ok:
            self.impact_error = refusal(got)
            return
        body = got.body
        self.semantic = body["answer"]
        old, new = body["old"]["number"], body["new"]["number"]
        self.semantic_text = {
            "differs": f"v{new} and the active v{old} permit different requests; each example below was "
            "confirmed by deciding it under both.",
            "equivalent": f"v{new} permits exactly what the active v{old} permits (proved).",
            "unknown": f"Not established whether v{new} and the active v{old} differ: {body.get('reason')}",
        }[body["answer"]]
        self.gained = [example_row(e) for e in body["gained"]]
        self.lost = [example_row(e) for e in body["lost"]]

    async def _replay(self, days: int) -> None:
        api = self.api()
        counts: Counter[tuple[str, str]] = Counter()
        changes: list[ChangeRow] = []
        body: dict[str, Any] = {"version": int(self.impact_number), "days": days, "limit": REPLAY_PAGE}
        replayed = changed = undetermined = 0
        more = False
        for _ in range(REPLAY_PAGES):
            got = await api.post(f"/v1/policies/{self.policy_id}/replay", body)
            if not got.ok:
                self.impact_error = refusal(got)
                return
            page_ = got.body
            replayed += page_["replayed"]
            changed += page_["changed"]
            undetermined += page_["undetermined"]
            counts.update({(c["old"], c["new"]): c["count"] for c in page_["counts"]})
            changes += [change_row(c) for c in page_["changes"]]
            more = page_["next_cursor"] is not None
            if not more:
                break
            body = {"version": int(self.impact_number), "cursor": page_["next_cursor"], "limit": REPLAY_PAGE}
        self.replay_counts, self.replay_changes = count_rows(counts), changes
        self.replay_summary = (
            f"{replayed} decision{'' if replayed == 1 else 's'} of the last {days} day{'' if days == 1 else 's'} "
            f"replayed under v{self.impact_number}: {changed} would change"
            + (f", {undetermined} could not be re-decided from what was recorded" if undetermined else "")
            + (f" (stopped after {replayed}; older decisions were not replayed)" if more else "")
            + "."
        )


# ---- components ---------------------------------------------------------------------------------------

MONO = {"fontFamily": "var(--code-font-family)", "fontSize": "12px"}
SELECT = {
    "minHeight": "32px",
    "padding": "4px 8px",
    "fontSize": "14px",
    "border": "1px solid var(--gray-a7)",
    "borderRadius": "var(--radius-2)",
    "background": "var(--color-surface)",
    "color": "var(--gray-12)",
}
_OUTCOME_COLORS = (("permit", "green"), ("forbid", "red"), ("require_approval", "amber"), ("deny", "gray"))


def _version_select(id: str, value: rx.Var[str], on_change: Any) -> rx.Component:
    return rx.el.select(
        rx.foreach(Policies.versions, lambda v: rx.el.option(v["label"], value=v["number"])),
        id=id,
        name=id,  # the impact form submits it with the days (its value is read from the state)
        value=value,
        on_change=on_change,
        style=SELECT,
    )


def labelled(label: str, control: rx.Component) -> rx.Component:
    return rx.el.div(
        rx.el.label(label, html_for=control.id, style={"fontSize": "14px"}),
        control,
        style={"display": "flex", "flexDirection": "column", "gap": "4px"},
    )


def scroll_frame(caption: str, table: rx.Component) -> rx.Component:
    # Wide on a phone: the table scrolls inside its own frame, never the page.
    return rx.el.div(
        table,
        style={"width": "100%", "maxWidth": "100%", "overflowX": "auto"},
        tabindex=0,
        role="region",
        aria_label=caption,
    )


def headers(*names: str) -> rx.Component:
    return rx.table.header(rx.table.row(*[rx.table.column_header_cell(h, scope="col") for h in names]))


def _version_line(row: rx.Var[VersionRow]) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell("v", row["number"]),
        rx.table.cell(row["created_by"], style=MONO),
        rx.table.cell(row["created_at"], white_space="nowrap"),
        rx.table.cell(rx.cond(row["active"], rx.badge("active", color_scheme="green", high_contrast=True), "")),
        rx.table.cell(row["activated"]),
        rx.table.cell(row["hash"], style=MONO),
        rx.table.cell(
            rx.button(
                "Show YAML",
                size="1",
                variant="soft",
                on_click=Policies.show(row["number"]),
                aria_label="Show YAML of version " + row["number"],  # the visible name first (WCAG 2.5.3)
            )
        ),
        class_name="version-row",
        data_number=row["number"],
    )


def _diff_line(row: rx.Var[DiffRow]) -> rx.Component:
    text = {**MONO, "whiteSpace": "pre-wrap", "wordBreak": "break-all", "minWidth": "220px"}
    old_bg = rx.cond((row["kind"] == "removed") | (row["kind"] == "changed"), "var(--red-a4)", "transparent")
    new_bg = rx.cond((row["kind"] == "added") | (row["kind"] == "changed"), "var(--green-a4)", "transparent")
    sign = {"same": (" ", " "), "changed": ("−", "+"), "removed": ("−", " "), "added": (" ", "+")}
    return rx.table.row(
        rx.table.cell(
            row["old_no"],
            " ",
            rx.match(row["kind"], *[(k, v[0]) for k, v in sign.items()], " "),
            style={**MONO, "whiteSpace": "nowrap"},
        ),
        rx.table.cell(row["old"], style={**text, "background": old_bg}, class_name="diff-old"),
        rx.table.cell(
            row["new_no"],
            " ",
            rx.match(row["kind"], *[(k, v[1]) for k, v in sign.items()], " "),
            style={**MONO, "whiteSpace": "nowrap"},
        ),
        rx.table.cell(row["new"], style={**text, "background": new_bg}, class_name="diff-new"),
        class_name="diff-row",
        data_kind=row["kind"],
    )


def outcome_badge(value: rx.Var[str]) -> rx.Component:
    return rx.badge(value, color_scheme=rx.match(value, *_OUTCOME_COLORS, "gray"), high_contrast=True)


def examples_list(title: str, rows: ArrayVar[Any], id: str) -> rx.Component:
    return rx.cond(
        rows.length() > 0,
        rx.vstack(
            rx.heading(title, size="3", as_="h4"),
            rx.el.ul(
                rx.foreach(
                    rows,
                    lambda e: rx.el.li(
                        rx.code(e["request"], style={"whiteSpace": "pre-wrap", "wordBreak": "break-all"}),
                        rx.text("Outcomes: ", e["outcomes"], size="2"),
                        rx.text("Rules: ", e["rules"], size="2", color_scheme="gray"),
                        class_name="example",
                        style={"marginBottom": "8px"},
                    ),
                ),
                id=id,
                style={"margin": "0", "paddingLeft": "20px"},
            ),
            spacing="1",
            width="100%",
        ),
    )


def _semantic() -> rx.Component:
    p = Policies
    return rx.cond(
        p.semantic != "",
        rx.vstack(
            rx.heading("What the version permits differently", size="4", as_="h3"),
            rx.hstack(
                rx.text("Answer:", size="2"),
                rx.badge(
                    p.semantic,
                    id="semantic-answer",
                    high_contrast=True,
                    color_scheme=rx.match(p.semantic, ("differs", "amber"), ("equivalent", "green"), "gray"),
                ),
                align="center",
            ),
            rx.text(p.semantic_text, id="semantic-text", size="2"),
            examples_list("Permitted by this version, not by the active one", p.gained, "gained"),
            examples_list("Permitted by the active version, not by this one", p.lost, "lost"),
            spacing="2",
            width="100%",
        ),
    )


def _count_line(row: rx.Var[CountRow]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(outcome_badge(row["old"])),
        rx.table.cell(outcome_badge(row["new"])),
        rx.table.cell(row["count"], class_name="count"),
        rx.table.cell(rx.cond(row["changed"], "changes", "unchanged")),
        class_name="replay-count",
        data_old=row["old"],
        data_new=row["new"],
    )


def _change_line(row: rx.Var[ChangeRow]) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row["time"], white_space="nowrap"),
        rx.table.cell(row["agent"], style=MONO),
        rx.table.cell(row["action"], style=MONO),
        rx.table.cell(row["resource"], style={**MONO, "wordBreak": "break-all"}),
        rx.table.cell(row["old"], style=MONO),
        rx.table.cell(row["new"], style=MONO),
        rx.table.cell(rx.link("View", href=row["href"], aria_label="View certificate " + row["id"])),
        class_name="replay-change",
        data_id=row["id"],
    )


def _replay() -> rx.Component:
    p = Policies
    return rx.cond(
        p.replay_summary != "",
        rx.vstack(
            rx.heading("Replay of recorded decisions", size="4", as_="h3"),
            rx.text(p.replay_summary, id="replay-summary", size="2", role="status"),
            scroll_frame(
                "Replayed decisions by outcome",
                rx.table.root(
                    headers("Recorded", "Under this version", "Decisions", ""),
                    rx.table.body(rx.foreach(p.replay_counts, _count_line)),
                    id="replay-counts",
                    variant="surface",
                    size="1",
                ),
            ),
            rx.cond(
                p.replay_changes.length() > 0,
                scroll_frame(
                    "Decisions that would change",
                    rx.table.root(
                        headers(
                            "Time", "Agent", "Action", "Resource", "Recorded", "Under this version", "Certificate"
                        ),
                        rx.table.body(rx.foreach(p.replay_changes, _change_line)),
                        id="replay-changes",
                        variant="surface",
                        size="1",
                    ),
                ),
            ),
            spacing="2",
            width="100%",
        ),
    )


def policies_page() -> rx.Component:
    p = Policies
    return page(
        "Policies",
        error_callout(p.error, "policies-error"),
        rx.cond(
            p.policies.length() > 1,
            labelled(
                "Policy",
                rx.el.select(
                    rx.foreach(p.policies, lambda item: rx.el.option(item["name"], value=item["id"])),
                    id="policy-choice",
                    value=p.policy_id,
                    on_change=p.choose,
                    style=SELECT,
                ),
            ),
        ),
        rx.el.section(
            rx.heading("Versions", size="4", as_="h2"),
            scroll_frame(
                "Versions",
                rx.table.root(
                    headers("Version", "Made by", "Made at", "Active", "Activated", "Hash", "Document"),
                    rx.table.body(rx.foreach(p.versions, _version_line)),
                    id="versions",
                    variant="surface",
                    size="1",
                ),
            ),
            style={"width": "100%"},
            aria_label="Versions",
        ),
        rx.el.section(
            rx.heading("Version ", p.shown_number, size="4", as_="h2", id="yaml-heading"),
            rx.el.div(
                rx.code_block(
                    p.shown_source,
                    language="yaml",
                    show_line_numbers=True,
                    wrap_long_lines=True,
                    theme=rx.code_block.themes.a11y_dark,  # its colours meet WCAG AA contrast (axe)
                ),
                id="version-yaml",
                style={"width": "100%", "maxWidth": "100%", "overflowX": "auto"},
            ),
            style={"width": "100%"},
            aria_labelledby="yaml-heading",
        ),
        rx.el.section(
            rx.heading("Compare two versions", size="4", as_="h2"),
            rx.hstack(
                labelled("From", _version_select("diff-left", p.left, p.pick_left)),
                labelled("To", _version_select("diff-right", p.right, p.pick_right)),
                rx.button("Compare", on_click=p.compare, id="compare"),
                align="end",
                wrap="wrap",
            ),
            rx.text(p.diff_summary, id="diff-summary", size="2", role="status", margin_top="8px"),
            scroll_frame(
                "Text diff",
                rx.table.root(
                    headers("Line", "From", "Line", "To"),
                    rx.table.body(rx.foreach(p.diff_rows, _diff_line)),
                    id="text-diff",
                    variant="surface",
                    size="1",
                ),
            ),
            style={"width": "100%"},
            aria_label="Compare two versions",
        ),
        rx.el.section(
            rx.heading("Impact against the active version", size="4", as_="h2"),
            rx.text(
                "The kernel's proof of what the version permits differently, and what it would have decided "
                "for the decisions recorded in the last days.",
                size="2",
                color_scheme="gray",
            ),
            rx.form(
                rx.hstack(
                    labelled("Version", _version_select("impact-version", p.impact_number, p.pick_impact)),
                    field(
                        "Days of decisions",
                        rx.input(id="replay-days", name="days", default_value="7", input_mode="numeric", width="90px"),
                    ),
                    rx.button("Show impact", type="submit", id="show-impact", loading=p.impact_busy),
                    align="end",
                    wrap="wrap",
                ),
                on_submit=p.impact,
                id="impact-form",
            ),
            error_callout(p.impact_error, "impact-error"),
            _semantic(),
            _replay(),
            style={"width": "100%"},
            aria_label="Impact",
        ),
    )
