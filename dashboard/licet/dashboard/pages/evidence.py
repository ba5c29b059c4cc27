"""The evidence log: the current signed checkpoint (its signature checked here against the published
log key), the checkpoint kept for any size, a consistency check between two sizes (the proof shown,
verified here with the kernel), and inclusion of a certificate by its id.

The API keeps a signed checkpoint only for the sizes one was signed at (on demand, when the newest is
asked for or a proof needs one): a size without one has no signed root to check a proof against, and
the page says so rather than trust an unsigned root.
"""

from __future__ import annotations

import base64
from typing import Any, TypedDict
from urllib.parse import quote

import reflex as rx

from licet.dashboard.api import Api
from licet.dashboard.layout import error_callout, field, page
from licet.dashboard.pages.certificate import CheckRow, check_list, check_rows, inclusion_proof, log_trust, verdict_text
from licet.dashboard.state import Session, refusal
from licet.kernel.bundle import verify_bundle
from licet.kernel.checkpoint import CheckpointError, check_consistency, verify_checkpoint
from licet.kernel.report import Check


def _size(text: Any, what: str) -> int:
    """A tree size typed by a person; raises ValueError naming the field."""
    value = str(text or "").strip()
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{what}: a whole number of entries (0 or more), not {value[:30]!r}")
    return int(value)


def checkpoint_check(note: str, verifier: str, origin: str) -> Check:
    """The checkpoint's signature by the published log key, and its origin."""
    if not verifier:
        return Check("checkpoint-signature", False, "the API published no log verifier key")
    try:
        signed = verify_checkpoint(note, [verifier], origin=origin or None)
    except CheckpointError as exc:
        return Check("checkpoint-signature", False, str(exc))
    return Check("checkpoint-signature", True, f"signed by {', '.join(v.vkey() for v in signed.verified_by)}")


class Served(TypedDict):
    """A checkpoint the log signed: its tree size and when."""

    size: int
    signed_at: str


class Evidence(Session):
    """The tenant's log as the person checks it."""

    origin: rx.Field[str] = rx.field("")
    size: rx.Field[int] = rx.field(-1)
    root_hash: rx.Field[str] = rx.field("")
    root_hex: rx.Field[str] = rx.field("")
    note: rx.Field[str] = rx.field("")
    verifier: rx.Field[str] = rx.field("")
    head_checks: rx.Field[list[CheckRow]] = rx.field(default_factory=list)
    error: rx.Field[str] = rx.field("")
    served: rx.Field[list[Served]] = rx.field(default_factory=list)
    more_served: rx.Field[bool] = rx.field(False)
    found_size: rx.Field[str] = rx.field("")
    found_note: rx.Field[str] = rx.field("")
    found_error: rx.Field[str] = rx.field("")
    consistency_checks: rx.Field[list[CheckRow]] = rx.field(default_factory=list)
    consistency_proof: rx.Field[list[str]] = rx.field(default_factory=list)
    consistency_verdict: rx.Field[str] = rx.field("")
    consistency_ok: rx.Field[bool] = rx.field(False)
    inclusion_checks: rx.Field[list[CheckRow]] = rx.field(default_factory=list)
    inclusion_verdict: rx.Field[str] = rx.field("")
    inclusion_ok: rx.Field[bool] = rx.field(False)
    inclusion_id: rx.Field[str] = rx.field("")

    @rx.var
    def inclusion_link(self) -> str:
        return f"/certificate?id={quote(self.inclusion_id, safe='')}" if self.inclusion_id else ""

    @rx.event
    async def load(self) -> None:
        if not self.signed_in:
            return
        self.reset()
        api = self.api()
        keys = await api.get("/v1/evidence/keys")
        if not keys.ok:
            self.error = refusal(keys)
            return
        self.origin, self.verifier = log_trust(keys.body)
        head = await api.get("/v1/evidence/checkpoint")
        if not head.ok:
            self.error = refusal(head)
            return
        self.size, self.root_hash, self.note = head.body["size"], head.body["root_hash"], head.body["note"]
        self.root_hex = base64.b64decode(self.root_hash).hex()
        check = checkpoint_check(self.note, self.verifier, self.origin)
        self.head_checks = check_rows([check])
        listed = await api.get("/v1/evidence/checkpoints", limit=SERVED_SHOWN)
        if listed.ok:
            self.served = [Served(size=c["size"], signed_at=c["signed_at"]) for c in listed.body["checkpoints"]]
            self.more_served = listed.body["next_before"] is not None
        else:
            self.error = refusal(listed)

    async def _note_at(self, api: Api, size: int) -> tuple[str | None, str]:
        """The signed checkpoint kept at `size` (the current one included), or why there is none."""
        if size == self.size and self.note:
            return self.note, ""
        got = await api.get(f"/v1/evidence/checkpoints/{size}")
        if got.ok:
            return str(got.body["note"]), ""
        if got.status == 404:
            return None, (f"no checkpoint was signed at size {size}, so there is no signed root to check against "
                          f"(the current one is at size {self.size})")
        return None, refusal(got)

    @rx.event
    async def look_up(self, form: dict[str, Any]) -> None:
        try:
            size = _size(form.get("size"), "Tree size")
        except ValueError as exc:
            self.found_size, self.found_note, self.found_error = "", "", str(exc)
            return
        await self.show(size)

    @rx.event
    async def show(self, size: int) -> None:
        """Show the signed note kept at `size`."""
        note, problem = await self._note_at(self.api(), size)
        self.found_size, self.found_note, self.found_error = str(size), note or "", problem

    @rx.event
    async def check_consistency(self, form: dict[str, Any]) -> None:
        """Fetch the two sizes' signed checkpoints and the proof between them; verify it here."""
        self.consistency_checks, self.consistency_proof, self.consistency_verdict = [], [], ""
        try:
            first, second = _size(form.get("first"), "Older size"), _size(form.get("second"), "Newer size")
        except ValueError as exc:
            failed = [Check("input", False, str(exc))]
            self.consistency_checks, self.consistency_verdict, self.consistency_ok = \
                check_rows(failed), verdict_text(failed), False
            return
        api = self.api()
        checks: list[Check] = []
        notes = []
        for name, size in (("old-checkpoint", first), ("new-checkpoint", second)):
            note, problem = await self._note_at(api, size)
            notes.append(note)
            if note is None:
                checks.append(Check(name, False, problem))
        proof: list[bytes] = []
        got = await api.get("/v1/evidence/consistency", first=first, second=second)
        if got.ok:
            proof = [base64.b64decode(h) for h in got.body["proof"]]
            self.consistency_proof = list(got.body["proof"])
        else:
            checks.append(Check("consistency", False, f"the log gave no proof: {refusal(got)}"))
        if notes[0] is not None and notes[1] is not None and got.ok:
            checks += check_consistency(notes[0], notes[1], proof, [self.verifier] if self.verifier else [],
                                        origin=self.origin or None)
        self.consistency_checks, self.consistency_verdict = check_rows(checks), verdict_text(checks)
        self.consistency_ok = bool(checks) and all(c.ok for c in checks)

    @rx.event
    async def check_inclusion(self, form: dict[str, Any]) -> None:
        """Prove a certificate's entry is in a signed checkpoint of this log, checked here."""
        self.inclusion_checks, self.inclusion_verdict, self.inclusion_id = [], "", ""
        wanted = str(form.get("certificate_id") or "").strip()
        if not wanted:
            failed = [Check("input", False, "Certificate id: enter the id of a certificate")]
            self.inclusion_checks, self.inclusion_verdict, self.inclusion_ok = \
                check_rows(failed), verdict_text(failed), False
            return
        api = self.api()
        got = await api.get(f"/v1/certificates/{quote(wanted, safe='')}")
        proof = await inclusion_proof(api, wanted)
        if not got.ok:
            checks = [Check("certificate", False, refusal(got))]
        elif not proof.ok:
            self.inclusion_id = wanted
            checks = [Check("inclusion", False, f"the log gave no inclusion proof: {refusal(proof)}")]
        else:
            self.inclusion_id = wanted
            checks = verify_bundle(got.body["certificate"], proof.body["bundle"],
                                   [self.verifier] if self.verifier else [], origin=self.origin or None)
            checks.append(Check("log-index", proof.body["log_index"] == got.body["log_index"],
                                f"entry {got.body['log_index']} of {proof.body['tree_size']}"))
        self.inclusion_checks, self.inclusion_verdict = check_rows(checks), verdict_text(checks)
        self.inclusion_ok = all(c.ok for c in checks)


SERVED_SHOWN = 50  # the newest checkpoints listed; any other is looked up by its size

_PRE = {"fontSize": "13px", "background": "var(--gray-a3)", "padding": "8px", "overflowX": "auto",
        "maxWidth": "100%", "whiteSpace": "pre-wrap", "wordBreak": "break-all", "margin": "0"}


def _verdict(text: rx.Var[str], ok: rx.Var[bool], id: str) -> rx.Component:
    return rx.box(
        rx.cond(text != "", rx.cond(ok, rx.callout(text, color_scheme="green", id=id),
                                    rx.callout(text, color_scheme="red", id=id, role="alert"))),
        role="status", aria_live="polite", width="100%",
    )


def _row(label: str, value: rx.Var[Any] | rx.Component, id: str) -> rx.Component:
    return rx.box(rx.text(label, size="2", color_scheme="gray"),
                  rx.text(value, id=id, size="2", style={"wordBreak": "break-all"}), width="100%")


def evidence_page() -> rx.Component:
    ev = Evidence
    return page(
        "Evidence log",
        rx.text("Every certificate is an entry of this tenant's append-only log (RFC 6962 Merkle tree); signed "
                "checkpoints commit to its size and root.", color_scheme="gray", size="2"),
        error_callout(ev.error, "evidence-error"),
        rx.el.section(
            rx.heading("Current checkpoint", size="4", as_="h2"),
            rx.cond(ev.size >= 0, rx.vstack(
                _row("Origin", ev.origin, "checkpoint-origin"),
                _row("Tree size", ev.size, "checkpoint-size"),
                _row("Root hash (base64)", ev.root_hash, "checkpoint-root"),
                _row("Root hash (hex)", ev.root_hex, "checkpoint-root-hex"),
                _row("Log verifier key", ev.verifier, "log-key"),
                rx.text("The signed note:", size="2", color_scheme="gray"),
                rx.el.pre(ev.note, id="checkpoint-note", style=_PRE),
                check_list(ev.head_checks, "checkpoint-checks"),
                spacing="2", width="100%",
            )),
            style={"width": "100%"}, aria_label="Current checkpoint",
        ),
        rx.el.section(
            rx.heading("Checkpoints served", size="4", as_="h2"),
            rx.text("The log signs a checkpoint when the newest one is asked for or a proof needs one; these are "
                    "the tree sizes it signed, newest first.", size="2", color_scheme="gray"),
            rx.el.ol(rx.foreach(ev.served, lambda row: rx.el.li(
                rx.hstack(rx.text("size ", rx.el.strong(row["size"]), " · signed ", row["signed_at"], size="2",
                                  style={"wordBreak": "break-word"}),
                          rx.button("Show", size="1", variant="soft", on_click=Evidence.show(row["size"]),
                                    aria_label="Show the checkpoint of size " + row["size"].to_string()),
                          align="center", wrap="wrap", spacing="2"),
                class_name="served", data_size=row["size"], style={"padding": "2px 0"})),
                id="checkpoints-served", style={"margin": "0", "paddingLeft": "24px"}),
            rx.cond(ev.more_served, rx.text(f"Only the newest {SERVED_SHOWN} are listed; look up any other size "
                                            "below.", size="2", color_scheme="gray")),
            style={"width": "100%"}, aria_label="Checkpoints served",
        ),
        rx.el.section(
            rx.heading("Checkpoint at a size", size="4", as_="h2"),
            rx.form(
                rx.hstack(
                    field("Tree size", rx.input(id="lookup-size", name="size", input_mode="numeric", width="100%")),
                    rx.button("Show", type="submit", id="lookup"),
                    align="end", spacing="2", width="100%", max_width="360px",
                ),
                on_submit=ev.look_up,
            ),
            rx.cond(ev.found_error != "", rx.callout(ev.found_error, color_scheme="red", role="alert",
                                                     id="lookup-error")),
            rx.cond(ev.found_note != "", rx.vstack(
                rx.text("Signed note of size ", ev.found_size, ":", size="2", color_scheme="gray"),
                rx.el.pre(ev.found_note, id="lookup-note", style=_PRE), spacing="1", width="100%")),
            style={"width": "100%"}, aria_label="Checkpoint at a size",
        ),
        rx.el.section(
            rx.heading("Consistency between two sizes", size="4", as_="h2"),
            rx.text("Checks that the log at the newer size extends the log at the older one: both signed "
                    "checkpoints and the consistency proof between them are verified here.", size="2",
                    color_scheme="gray"),
            rx.form(
                rx.hstack(
                    field("Older size", rx.input(id="consistency-first", name="first", input_mode="numeric")),
                    field("Newer size", rx.input(id="consistency-second", name="second", input_mode="numeric")),
                    rx.button("Check", type="submit", id="check-consistency"),
                    align="end", spacing="2", width="100%", max_width="480px",
                ),
                on_submit=ev.check_consistency,
            ),
            _verdict(ev.consistency_verdict, ev.consistency_ok, "consistency-verdict"),
            check_list(ev.consistency_checks, "consistency-checks"),
            rx.cond(ev.consistency_proof.length() > 0, rx.vstack(
                rx.text("Proof hashes (base64):", size="2", color_scheme="gray"),
                rx.el.ol(rx.foreach(ev.consistency_proof, lambda h: rx.el.li(rx.code(h),
                                                                             style={"wordBreak": "break-all"})),
                         id="consistency-proof", style={"margin": "0", "paddingLeft": "24px"}),
                spacing="1", width="100%",
            )),
            style={"width": "100%"}, aria_label="Consistency",
        ),
        rx.el.section(
            rx.heading("Inclusion of a certificate", size="4", as_="h2"),
            rx.form(
                rx.hstack(
                    field("Certificate id", rx.input(id="inclusion-id", name="certificate_id", width="100%")),
                    rx.button("Check", type="submit", id="check-inclusion"),
                    align="end", spacing="2", width="100%", max_width="560px",
                ),
                on_submit=ev.check_inclusion,
            ),
            _verdict(ev.inclusion_verdict, ev.inclusion_ok, "inclusion-verdict"),
            check_list(ev.inclusion_checks, "inclusion-checks"),
            rx.cond(ev.inclusion_link != "", rx.link("Open the certificate", href=ev.inclusion_link,
                                                     id="inclusion-link")),
            style={"width": "100%"}, aria_label="Inclusion",
        ),
    )
