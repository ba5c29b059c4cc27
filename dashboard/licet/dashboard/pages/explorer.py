"""The decisions and audit explorer: the filtered decisions (`/decisions`) and the people's audit trail
(`/audit`), a page at a time (keyset: `before` = the last row's index, a stack of the pages seen to go
back), with CSV and JSON-lines exports of the same filter.

The filter lives in the page's address (the API's own query names), so a filtered view can be shared
and reloaded; applying one navigates to that address. Exports are plain links to the API's streamed
export routes: the browser downloads them itself, with the person's own cookie. Whatever the API
refuses (an approver reading the audit trail) is shown as its refusal, never as an empty table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast
from urllib.parse import urlencode

import reflex as rx
from reflex.vars import ObjectVar

from licet.dashboard.api import Api
from licet.dashboard.layout import error_callout, page
from licet.dashboard.state import Session, refusal

PAGE_SIZE = "50"
OUTCOMES = ("permit", "forbid", "require_approval", "deny")
# A certificate's own page (dashboard/pages/certificate.py).
CERTIFICATE_PAGE = "/certificate?id="


class DecisionRow(TypedDict):
    """One decision as the table shows it."""

    id: str
    log_index: str
    time: str
    agent: str
    action: str
    resource: str
    decision: str
    rules: str
    href: str


class AuditRow(TypedDict):
    """One audit event as the table shows it."""

    id: str
    time: str
    actor: str
    action: str
    target: str
    details: str


def shown_time(moment: str) -> str:
    """An API timestamp as a person reads it, in UTC (one without an offset is UTC, as the API stores it)."""
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return moment
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def chosen(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, str]:
    """The non-empty filter values among `names` (trimmed), in `names`' order."""
    picked = {name: str(values.get(name) or "").strip() for name in names}
    return {name: value for name, value in picked.items() if value}


def decision_row(item: Mapping[str, Any]) -> DecisionRow:
    """A `GET /v1/certificates` item as a table row."""
    return DecisionRow(id=item["id"], log_index=str(item["log_index"]), time=shown_time(item["issued_at"]),
                       agent=item["principal_id"], action=item["action"], resource=item.get("resource") or "",
                       decision=item["decision"], rules=", ".join(item.get("rules") or []),
                       href=CERTIFICATE_PAGE + item["id"])


def audit_row(event: Mapping[str, Any]) -> AuditRow:
    """A `GET /v1/audit` event as a table row."""
    details = event.get("details")
    return AuditRow(id=str(event["id"]), time=shown_time(event["at"]), actor=event["actor"], action=event["action"],
                    target=event.get("target") or "",
                    details=json.dumps(details, sort_keys=True, ensure_ascii=False) if details else "")


@dataclass(frozen=True)
class Kind:
    """An explorer: its page, the API listing it reads (exported at `listing` + "/export"), the key of
    the listing's items, its filters (the API's query names, which the page's address uses too)."""

    route: str
    listing: str
    items: str
    filters: tuple[str, ...]
    noun: str


DECISIONS = Kind("/decisions", "/v1/certificates", "certificates",
                 ("principal", "action", "outcome", "rule", "since", "until"), "decision")
AUDIT = Kind("/audit", "/v1/audit", "events", ("actor", "action", "target", "since", "until"), "event")


class Listing(rx.State, mixin=True):
    """What both explorers share: the filter from the address, keyset pages with a stack of the pages
    seen, the API's refusal. Each page names its route, API listing, filter fields and rows; its state
    derives from `Session` too, which gives it the person and `api()`."""

    if TYPE_CHECKING:
        signed_in: bool

        def api(self) -> Api: ...

    filters: rx.Field[dict[str, str]] = rx.field(default_factory=dict)
    page_size: rx.Field[str] = rx.field(PAGE_SIZE)
    error: rx.Field[str] = rx.field("")
    summary: rx.Field[str] = rx.field("")
    # `before` of the page shown ("" for the newest) and of each page seen before it, newest first.
    current: rx.Field[str] = rx.field("")
    seen: rx.Field[list[str]] = rx.field(default_factory=list)
    next_before: rx.Field[str] = rx.field("")
    form_key: rx.Field[int] = rx.field(0)  # changed when the filter comes from the address: the form redraws

    @rx.var
    def export_query(self) -> str:
        """The filter as `&name=value...`, for the export links."""
        return "&" + urlencode(self.filters) if self.filters else ""

    @rx.var
    def filter_text(self) -> str:
        return "; ".join(f"{name} = {value}" for name, value in self.filters.items()) or "none (everything)"

    @rx.var
    def has_newer(self) -> bool:
        return self.current != ""

    @rx.var
    def has_older(self) -> bool:
        return self.next_before != ""

    @rx.event
    async def load(self) -> None:
        """On opening the page (or a new address): the filter from the address, then the newest page."""
        if not self.signed_in:
            return
        query = self.router.url.query_parameters
        self.filters = chosen(query, self._kind().filters)
        self.page_size = str(query.get("limit") or PAGE_SIZE)
        self.current, self.seen, self.form_key = "", [], self.form_key + 1
        await self._fetch()

    @rx.event
    def apply(self, form: dict[str, Any]) -> Any:
        """The form's filter becomes the page's address (which loads it)."""
        route = self._kind().route
        wanted = chosen(form, self._kind().filters)
        if str(form.get("limit") or PAGE_SIZE) != PAGE_SIZE:
            wanted["limit"] = str(form["limit"])
        return rx.redirect(f"{route}?{urlencode(wanted)}" if wanted else route)

    @rx.event
    async def older(self) -> None:
        if not self.next_before:
            return
        self.seen = [*self.seen, self.current]
        self.current = self.next_before
        await self._fetch()

    @rx.event
    async def newer(self) -> None:
        if not self.seen:
            return
        self.current, self.seen = self.seen[-1], self.seen[:-1]
        await self._fetch()

    async def _fetch(self) -> None:
        kind = self._kind()
        reply = await self.api().get(kind.listing, **self.filters, limit=self.page_size, before=self.current)
        if not reply.ok:
            self.error, self.summary, self.next_before = refusal(reply), "", ""
            self._show([])
            return
        self.error = ""
        self.next_before = "" if reply.body["next_before"] is None else str(reply.body["next_before"])
        count = self._show(reply.body[kind.items])
        self.summary = f"Page {len(self.seen) + 1}: {count} {kind.noun}{'' if count == 1 else 's'}" + (
            "" if self.next_before else " (the oldest page)")

    @classmethod
    def _kind(cls) -> Kind:
        """Which explorer this is."""
        raise NotImplementedError

    def _show(self, items: list[dict[str, Any]]) -> int:
        """Show `items` (the API's page); how many."""
        raise NotImplementedError


class Decisions(Session, Listing):
    """`/decisions`: certificates filtered by agent, action glob, outcome, rule and time."""

    @classmethod
    def _kind(cls) -> Kind:
        return DECISIONS

    rows: rx.Field[list[DecisionRow]] = rx.field(default_factory=list)

    def _show(self, items: list[dict[str, Any]]) -> int:
        self.rows = [decision_row(item) for item in items]
        return len(self.rows)


class AuditTrail(Session, Listing):
    """`/audit`: the people's audit trail filtered by actor, event glob, target and time."""

    @classmethod
    def _kind(cls) -> Kind:
        return AUDIT

    rows: rx.Field[list[AuditRow]] = rx.field(default_factory=list)

    def _show(self, items: list[dict[str, Any]]) -> int:
        self.rows = [audit_row(item) for item in items]
        return len(self.rows)


# ---- components ---------------------------------------------------------------------------------------

_INPUT_STYLE = {"width": "100%", "minHeight": "32px", "padding": "4px 8px", "fontSize": "14px",
                "border": "1px solid var(--gray-a7)", "borderRadius": "var(--radius-2)",
                "background": "var(--color-surface)", "color": "var(--gray-12)", "boxSizing": "border-box"}


def _filters(state: type[Listing]) -> ObjectVar[dict[str, str]]:
    return cast(ObjectVar[dict[str, str]], state.filters)  # Field's typing misses dict values


def _control(state: type[Listing], name: str, label: str, *, kind: str = "text", placeholder: str = "") -> rx.Component:
    control_id = f"f-{name}"
    control = rx.el.input(id=control_id, name=name, type=kind, placeholder=placeholder,
                          default_value=_filters(state).get(name, ""), step="1" if kind == "datetime-local" else None,
                          style=_INPUT_STYLE)
    return rx.el.div(rx.el.label(label, html_for=control_id, style={"fontSize": "14px"}), control,
                     style={"display": "flex", "flexDirection": "column", "gap": "4px", "minWidth": "0"})


def _select(state: type[Listing], name: str, label: str, options: Sequence[tuple[str, str]],
            default: rx.Var[str] | str) -> rx.Component:
    control_id = f"f-{name}"
    return rx.el.div(
        rx.el.label(label, html_for=control_id, style={"fontSize": "14px"}),
        rx.el.select(*[rx.el.option(text, value=value) for value, text in options], id=control_id, name=name,
                     default_value=default, style=_INPUT_STYLE),
        style={"display": "flex", "flexDirection": "column", "gap": "4px", "minWidth": "0"})


def _page_size(state: type[Listing]) -> rx.Component:
    return _select(state, "limit", "Rows per page", [(n, n) for n in ("10", "25", "50", "100", "500")],
                   state.page_size)


def _filter_form(state: type[Listing], *controls: rx.Component) -> rx.Component:
    return rx.el.section(
        rx.heading("Filter", size="4", as_="h2", id="filter-heading"),
        # Shown once the address's filter is loaded (it remounts the form): what is typed before then would
        # be lost, and Apply would send an empty filter.
        rx.cond(state.form_key > 0, rx.form(
            rx.el.div(*controls, _page_size(state),
                      style={"display": "grid", "gridTemplateColumns": "repeat(auto-fill, minmax(170px, 1fr))",
                             "gap": "12px", "width": "100%"}),
            rx.hstack(
                rx.button("Apply filter", type="submit", id="apply-filter"),
                rx.link("Clear", href=state._kind().route, id="clear-filter", size="2"),
                spacing="4", align="center", margin_top="12px"),
            on_submit=state.apply, key=state.form_key, id="filter-form", width="100%",
        ), rx.spinner()),
        rx.text("Filter in use: ", rx.el.span(state.filter_text, id="filter-in-use"), size="2", color_scheme="gray",
                margin_top="8px"),
        aria_labelledby="filter-heading", style={"width": "100%"},
    )


def _exports(state: type[Listing], file_noun: str) -> rx.Component:
    export = f"{state._kind().listing}/export?format="
    # A document navigation (not the client-side router's): the browser itself downloads the stream.
    return rx.hstack(
        rx.text("Export this filter (every page):", size="2"),
        rx.link("CSV", href=f"{export}csv{state.export_query}", download=f"{file_noun}.csv", id="export-csv",
                reload_document=True, size="2"),
        rx.link("JSON lines", href=f"{export}jsonl{state.export_query}", download=f"{file_noun}.jsonl",
                id="export-jsonl", reload_document=True, size="2"),
        wrap="wrap", spacing="3", align="center",
    )


def _pager(state: type[Listing]) -> rx.Component:
    return rx.el.nav(
        rx.hstack(
            rx.button("Newer", on_click=state.newer, disabled=~state.has_newer, variant="soft", id="page-newer"),
            rx.button("Older", on_click=state.older, disabled=~state.has_older, variant="soft", id="page-older"),
            rx.text(state.summary, size="2", id="page-summary", role="status"),
            wrap="wrap", spacing="3", align="center"),
        aria_label="Pages",
    )


def _table(caption: str, headers: Sequence[str], body: rx.Component, table_id: str) -> rx.Component:
    # Wide on a phone: the table scrolls inside its own frame, never the page.
    return rx.el.div(
        rx.table.root(
            rx.el.caption(caption, style={"position": "absolute", "width": "1px", "height": "1px",
                                          "overflow": "hidden", "clip": "rect(0 0 0 0)"}),
            rx.table.header(rx.table.row(*[rx.table.column_header_cell(h, scope="col") for h in headers])),
            body, id=table_id, variant="surface", size="1"),
        style={"width": "100%", "maxWidth": "100%", "overflowX": "auto"}, tabindex=0, role="region",
        aria_label=caption,
    )


_DECISION_COLORS = {"permit": "green", "forbid": "red", "require_approval": "amber", "deny": "gray"}


def _decision_row(row: rx.Var[DecisionRow]) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row["log_index"], class_name="log-index"),
        rx.table.cell(row["time"], class_name="nowrap"),
        rx.table.cell(row["agent"], class_name="agent mono nowrap"),
        rx.table.cell(row["action"], class_name="action mono nowrap"),
        rx.table.cell(row["resource"], class_name="mono break resource-cell"),
        rx.table.cell(rx.badge(row["decision"], color_scheme=rx.match(
            row["decision"], *[(k, v) for k, v in _DECISION_COLORS.items()], "gray"), high_contrast=True,
            class_name="decision")),
        rx.table.cell(row["rules"], class_name="rules mono"),
        rx.table.cell(rx.link("View", href=row["href"], aria_label="View certificate " + row["id"],
                              class_name="certificate-link")),
        class_name="decision-row", data_id=row["id"],
    )


def _audit_row(row: rx.Var[AuditRow]) -> rx.Component:
    return rx.table.row(
        rx.table.row_header_cell(row["id"], class_name="event-id"),
        rx.table.cell(row["time"], class_name="nowrap"),
        rx.table.cell(row["actor"], class_name="actor mono"),
        rx.table.cell(row["action"], class_name="action mono"),
        rx.table.cell(row["target"], class_name="target mono break"),
        rx.table.cell(row["details"], class_name="mono break details-cell"),
        class_name="audit-row", data_id=row["id"],
    )


def _results(state: type[Listing], rows: rx.Component, file_noun: str) -> rx.Component:
    """The API's refusal, or the exports, pager and table."""
    return rx.cond(
        state.error != "",
        error_callout(state.error, "explorer-error"),
        rx.el.section(
            rx.vstack(rx.heading("Results", size="4", as_="h2", id="results-heading"), _exports(state, file_noun),
                      _pager(state), rows, spacing="3", width="100%"),
            aria_labelledby="results-heading", style={"width": "100%"},
        ),
    )


def decisions_page() -> rx.Component:
    outcomes = [("", "Any"), *[(o, o.replace("_", " ")) for o in OUTCOMES]]
    return page(
        "Decisions",
        rx.text("Every decision of the evidence log, newest first.", color_scheme="gray"),
        _filter_form(Decisions,
                     _control(Decisions, "principal", "Agent", placeholder="agent:payments-bot"),
                     _control(Decisions, "action", "Action (glob)", placeholder="payments.*"),
                     _select(Decisions, "outcome", "Outcome", outcomes, _filters(Decisions).get("outcome", "")),
                     _control(Decisions, "rule", "Rule", placeholder="transfer-small"),
                     _control(Decisions, "since", "Since (UTC)", kind="datetime-local"),
                     _control(Decisions, "until", "Until (UTC)", kind="datetime-local")),
        _results(Decisions, _table(
            "Decisions", ("Log index", "Time", "Agent", "Action", "Resource", "Decision", "Rules", "Certificate"),
            rx.table.body(rx.foreach(Decisions.rows, _decision_row)), "decisions-table"), "licet-decisions"),
    )


def audit_page() -> rx.Component:
    return page(
        "Audit trail",
        rx.text("What people and keys did: sign-ins, votes, key, user and policy changes, newest first.",
                color_scheme="gray"),
        _filter_form(AuditTrail,
                     _control(AuditTrail, "actor", "Actor", placeholder="user:ana@example.com"),
                     _control(AuditTrail, "action", "Event (glob)", placeholder="auth.*"),
                     _control(AuditTrail, "target", "Target", placeholder="approval:<id>"),
                     _control(AuditTrail, "since", "Since (UTC)", kind="datetime-local"),
                     _control(AuditTrail, "until", "Until (UTC)", kind="datetime-local")),
        _results(AuditTrail, _table(
            "Audit events", ("Event", "Time", "Actor", "Event type", "Target", "Details"),
            rx.table.body(rx.foreach(AuditTrail.rows, _audit_row)), "audit-table"), "licet-audit"),
    )
