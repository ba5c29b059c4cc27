"""The certificate viewer: every field of a certificate, its proof in words, the offline checks run
here on demand (signature by a published key, theorem and request hashes, re-decision under the
stored policy version, inclusion in a signed checkpoint), and what to download to check it elsewhere.

Everything is read through `/v1` as the signed-in person; the checks run in this process with the
kernel's own verification code on what the API returned, exactly as `licet verify` would offline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict
from urllib.parse import quote

import reflex as rx

from licet.dashboard.api import Api, Reply
from licet.dashboard.layout import error_callout, page
from licet.dashboard.state import Session, refusal
from licet.kernel.bundle import BundleError, parse_bundle, verify_bundle
from licet.kernel.certificate import verify_certificate
from licet.kernel.errors import LicetError
from licet.kernel.keys import PublicKey, parse_public_key
from licet.kernel.policy import load_policy
from licet.kernel.proof_text import RuleStep, field_rows, proof_steps, proof_summary, rule_texts
from licet.kernel.redecision import redecide
from licet.kernel.report import Check

FIELD_ORDER = ("id", "decision", "rules", "issued_at", "tenant", "policy", "request", "request_hash",
               "theorem_hash", "key_id", "signature", "approval", "session", "delegation", "diagnostics",
               "proof", "version")


class CheckRow(TypedDict):
    """One verification check as shown: its name, whether it passed, and why."""

    name: str
    ok: bool
    detail: str


class FieldRow(TypedDict):
    """One certificate field: its name and its value as text (JSON for structured values)."""

    name: str
    value: str


def check_rows(checks: list[Check]) -> list[CheckRow]:
    """Kernel checks as the page shows them."""
    return [CheckRow(name=c.name, ok=c.ok, detail=c.detail) for c in checks]


def verdict_text(checks: list[Check]) -> str:
    """One line: every check passed, or which ones failed (none run counts as a failure)."""
    failed = [c.name for c in checks if not c.ok]
    if not checks:
        return "Verification failed: no check could be run."
    if failed:
        return f"Verification failed: {', '.join(failed)}."
    return f"Verified: all {len(checks)} checks passed."


def certificate_keys(keys: Any) -> list[PublicKey]:
    """The published certificate keys in a `GET /v1/evidence/keys` answer; raises `LicetError`."""
    if not isinstance(keys, Mapping) or not isinstance(keys.get("certificate_keys"), list):
        raise LicetError("the keys answer has no certificate_keys list")
    return [parse_public_key(json.dumps(key)) for key in keys["certificate_keys"]]


def log_trust(keys: Any) -> tuple[str, str]:
    """The log's origin and note verifier key in a `GET /v1/evidence/keys` answer ("" when absent)."""
    log = keys.get("log") if isinstance(keys, Mapping) else None
    if not isinstance(log, Mapping):
        return "", ""
    return str(log.get("origin") or ""), str(log.get("verifier_key") or "")


def redecide_check(certificate: Mapping[str, Any], source: str, version: str) -> Check:
    """The kernel's re-decision of the certified request under the stored policy version `source`.
    A permit granted with an approval is re-decided without it: the policy must still require approval
    by the same rules (the votes themselves are the server's record)."""
    try:
        policy = load_policy(source, "stored policy version")
    except LicetError as exc:
        return Check("redecide", False, f"{version} does not load: {exc}")
    approval = certificate.get("approval")
    if not (isinstance(approval, Mapping) and "id" in approval):
        check = redecide(certificate, policy)
        return Check(check.name, check.ok, f"under {version}: {check.detail}")
    again = redecide({**certificate, "approval": None, "decision": "require_approval"}, policy)
    approvers = ", ".join(str(a) for a in approval.get("approvers") or []) or "nobody named"
    return Check("redecide", again.ok, f"under {version}: {again.detail}; the certificate's permit rests on approval "
                 f"{approval['id']} granted by {approvers} (the votes are the server's record)")


def offline_checks(certificate: Any, log_index: int | None, keys: Any, bundle: str | None, bundle_problem: str,
                   policy_source: str | None, policy_version: str) -> list[Check]:
    """Every check of a certificate, from what `/v1` returned: its signature by a published key, theorem
    and request hashes (`verify_certificate`), re-decision under the stored policy version, and inclusion
    in a signed checkpoint of the tenant's log (`verify_bundle`). A check that cannot run fails."""
    if not isinstance(certificate, Mapping):
        return [Check("format", False, "the API's answer is not a certificate object")]
    checks: list[Check] = []
    try:
        public = certificate_keys(keys)
    except LicetError as exc:
        public = []
        checks.append(Check("published-keys", False, str(exc)))
    checks += verify_certificate(certificate, public)
    if policy_source is None:
        checks.append(Check("redecide", False, f"the stored policy version could not be read: {policy_version}"))
    else:
        checks.append(redecide_check(certificate, policy_source, policy_version))
    origin, verifier = log_trust(keys)
    if bundle is None:
        checks.append(Check("inclusion", False, f"the log gave no inclusion proof: {bundle_problem}"))
        return checks
    if not verifier:
        checks.append(Check("checkpoint-signature", False, "the API published no log verifier key"))
    checks += verify_bundle(certificate, bundle, [verifier] if verifier else [], origin=origin or None)
    try:
        index = parse_bundle(bundle).index
        checks.append(Check("log-index", index == log_index, f"entry {index}" if index == log_index else
                            f"the bundle proves entry {index}, the API lists the certificate at {log_index}"))
    except BundleError:
        pass  # verify_bundle has already failed the "bundle" check with the reason
    return checks


async def stored_policy_source(api: Api, policy: Any) -> tuple[str | None, str]:
    """The source of the stored policy version a certificate names (by its document id and hash), and
    a description of that version; or None and why it could not be read."""
    if not isinstance(policy, Mapping):
        return None, "the certificate names no policy"
    name, digest = policy.get("id"), policy.get("hash")
    listed = await api.get("/v1/policies")
    if not listed.ok:
        return None, refusal(listed)
    record = next((p for p in listed.body["policies"] if p["name"] == name), None)
    if record is None:
        return None, f"no stored policy is named {name!r}"
    versions = await api.get(f"/v1/policies/{quote(record['id'], safe='')}")
    if not versions.ok:
        return None, refusal(versions)
    version = next((v for v in versions.body["versions"] if v["hash"] == digest), None)
    if version is None:
        return None, f"no stored version of {name!r} hashes to {digest}"
    got = await api.get(f"/v1/policies/{quote(record['id'], safe='')}/versions/{version['number']}")
    if not got.ok:
        return None, refusal(got)
    return str(got.body["source"]), f"{name} version {version['number']}"


async def inclusion_proof(api: Api, certificate_id: str) -> Reply:
    """`GET /v1/certificates/{id}/proof`: the certificate's tlog-proof bundle, or the API's refusal."""
    return await api.get(f"/v1/certificates/{quote(certificate_id, safe='')}/proof")


def data_url(text: str, media_type: str = "text/plain") -> str:
    """A `data:` URL holding `text` (UTF-8), for a download link."""
    return f"data:{media_type};charset=utf-8,{quote(text, safe='')}"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


class CertificateView(Session):
    """One certificate, its proof in words, its downloads, and the last verification's checks."""

    certificate_id: rx.Field[str] = rx.field("")
    decision: rx.Field[str] = rx.field("")
    log_index: rx.Field[str] = rx.field("")
    fields: rx.Field[list[FieldRow]] = rx.field(default_factory=list)
    summary: rx.Field[list[str]] = rx.field(default_factory=list)
    steps: rx.Field[list[RuleStep]] = rx.field(default_factory=list)
    policy_version: rx.Field[str] = rx.field("")
    checks: rx.Field[list[CheckRow]] = rx.field(default_factory=list)
    verdict: rx.Field[str] = rx.field("")
    verified: rx.Field[bool] = rx.field(False)
    verifying: rx.Field[bool] = rx.field(False)
    error: rx.Field[str] = rx.field("")
    bundle_error: rx.Field[str] = rx.field("")
    certificate_url: rx.Field[str] = rx.field("")
    bundle_url: rx.Field[str] = rx.field("")
    key_url: rx.Field[str] = rx.field("")
    policy_url: rx.Field[str] = rx.field("")
    policy_file: rx.Field[str] = rx.field("")
    command: rx.Field[str] = rx.field("")

    @rx.var
    def bundle_file(self) -> str:
        return f"certificate-{self.certificate_id}.tlog-proof"

    @rx.var
    def certificate_file(self) -> str:
        return f"certificate-{self.certificate_id}.json"

    @rx.event
    async def load(self) -> None:
        if not self.signed_in:
            return
        wanted = self.router.url.query_parameters.get("id", "").strip()
        self.reset()
        self.certificate_id = wanted
        if not wanted:
            self.error = "No certificate named: open one from the evidence log, or add ?id=<certificate id>."
            return
        api = self.api()
        got = await api.get(f"/v1/certificates/{quote(wanted, safe='')}")
        if not got.ok:
            self.error = refusal(got)
            return
        certificate = got.body["certificate"]
        self.decision, self.log_index = str(certificate.get("decision", "")), str(got.body.get("log_index", ""))
        self.fields = [FieldRow(name=name, value=_shown(value))
                       for name, value in field_rows(certificate, FIELD_ORDER)]
        self.certificate_url = data_url(json.dumps(certificate, indent=2, ensure_ascii=False) + "\n",
                                        "application/json")
        source, self.policy_version = await stored_policy_source(api, certificate.get("policy"))
        written: dict[str, str] = {}
        if source is not None:
            try:
                written = rule_texts(load_policy(source, "stored policy version").document)
            except LicetError as exc:
                self.policy_version = f"{self.policy_version} (does not load: {exc})"
            name = str(certificate["policy"].get("id", "policy"))
            self.policy_file = f"{name}-{str(certificate['policy'].get('hash', ''))[7:19]}.yaml"
            self.policy_url = data_url(source, "application/yaml")
        self.summary = proof_summary(certificate)
        self.steps = proof_steps(certificate, written)
        await self._downloads(api, certificate)

    async def _downloads(self, api: Api, certificate: Mapping[str, Any]) -> None:
        proof = await inclusion_proof(api, self.certificate_id)
        keys = await api.get("/v1/evidence/keys")
        if proof.ok:
            self.bundle_url = data_url(proof.body["bundle"])
        else:
            self.bundle_error = f"The log gave no inclusion proof: {refusal(proof)}"
        key_option, log_option = "--public-key <published key file>", "--log-key <log verifier key>"
        if keys.ok:
            wanted = [k for k in keys.body["certificate_keys"] if k.get("key_id") == certificate.get("key_id")]
            if wanted:
                self.key_url = data_url(json.dumps(wanted[0], indent=2) + "\n", "application/json")
                key_option = "--public-key licet-public-key.json"
            log_option = f"--log-key '{log_trust(keys.body)[1]}'"
        policy_option = f" --policy {self.policy_file}" if self.policy_file else ""
        self.command = (f"licet verify {self.certificate_file} {key_option} --bundle {self.bundle_file} "
                        f"{log_option}{policy_option}")

    @rx.event
    async def verify(self) -> AsyncIterator[None]:
        """Fetch the certificate, keys, proof and policy version afresh and run every offline check."""
        self.verifying, self.checks, self.verdict, self.verified = True, [], "", False
        yield
        try:
            checks = await self._fresh_checks()
            self.checks, self.verdict, self.verified = check_rows(checks), verdict_text(checks), \
                all(c.ok for c in checks)
        finally:
            self.verifying = False

    async def _fresh_checks(self) -> list[Check]:
        api = self.api()
        got = await api.get(f"/v1/certificates/{quote(self.certificate_id, safe='')}")
        if not got.ok:
            return [Check("certificate", False, refusal(got))]
        certificate = got.body["certificate"]
        keys = await api.get("/v1/evidence/keys")
        proof = await inclusion_proof(api, self.certificate_id)
        source, version = await stored_policy_source(api, certificate.get("policy"))
        return await asyncio.to_thread(
            offline_checks, certificate, got.body.get("log_index"), keys.body if keys.ok else None,
            proof.body["bundle"] if proof.ok else None, refusal(proof), source, version)


def check_list(rows: rx.Var[Any], id: str) -> rx.Component:
    """Checks, each green or red with its detail."""
    return rx.el.ul(
        rx.foreach(rows, lambda row: rx.el.li(
            rx.hstack(
                rx.cond(row["ok"], rx.badge("pass", color_scheme="green", variant="solid", high_contrast=True),
                        rx.badge("FAIL", color_scheme="red", variant="solid", high_contrast=True)),
                rx.text(rx.code(row["name"]), " ", row["detail"], size="2", style={"wordBreak": "break-word",
                                                                                   "minWidth": "0"}),
                align="start", spacing="2",
            ),
            class_name=rx.cond(row["ok"], "check check-ok", "check check-failed"), data_check=row["name"],
            style={"listStyle": "none", "padding": "4px 0"},
        )),
        id=id, style={"padding": "0", "margin": "0", "width": "100%"},
    )


_PRE = {"fontSize": "13px", "background": "var(--gray-a3)", "padding": "8px", "overflowX": "auto",
        "maxWidth": "100%", "whiteSpace": "pre-wrap", "wordBreak": "break-all", "margin": "0"}


def _step(step: rx.Var[RuleStep]) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text(step["headline"], weight="bold", size="2",
                    color_scheme=rx.cond(step["stopped"], "red", "green")),
            rx.cond(step["condition"] != "",
                    rx.text(step["rule"], " says: ", rx.code(step["condition"]), size="2",
                            style={"wordBreak": "break-word"})),
            rx.el.ul(rx.foreach(step["facts"], lambda fact: rx.el.li(rx.code(fact), style={"wordBreak": "break-word"})),
                     style={"margin": "0", "paddingLeft": "20px"}),
            spacing="2", width="100%",
        ),
        width="100%", class_name="proof-step", data_rule=step["rule"],
    )


def _field(row: rx.Var[FieldRow]) -> rx.Component:
    return rx.box(
        rx.el.dt(rx.code(row["name"]), style={"fontWeight": "bold", "marginTop": "8px"}),
        rx.el.dd(rx.el.pre(row["value"], style=_PRE), style={"margin": "2px 0 0 0"}),
        data_field=row["name"],
    )


def _download(label: str, url: rx.Var[str], file: rx.Var[str] | str, id: str) -> rx.Component:
    return rx.cond(url != "", rx.el.a(label, href=url, download=file, id=id,
                                       style={"color": "var(--accent-11)", "textDecoration": "underline"}))


def certificate_page() -> rx.Component:
    view = CertificateView
    return page(
        "Certificate",
        error_callout(view.error, "certificate-error"),
        rx.cond(
            view.decision != "",
            rx.vstack(
                rx.hstack(rx.code(view.certificate_id, id="certificate-id", style={"wordBreak": "break-all"}),
                          rx.badge(view.decision, id="certificate-decision", size="2", high_contrast=True),
                          rx.text("log entry ", view.log_index, size="2", color_scheme="gray"),
                          wrap="wrap", align="center"),
                rx.el.section(
                    rx.heading("The proof in words", size="4", as_="h2"),
                    rx.text("Policy version: ", view.policy_version, size="2", color_scheme="gray",
                            id="policy-version"),
                    rx.foreach(view.summary, lambda line: rx.text(line, size="2", class_name="proof-line")),
                    rx.vstack(rx.foreach(view.steps, _step), width="100%", spacing="2", id="proof-steps"),
                    style={"width": "100%"}, aria_label="Proof",
                ),
                rx.el.section(
                    rx.heading("Verify", size="4", as_="h2"),
                    rx.text("Checks the signature against the published keys, the theorem and request hashes, the "
                            "re-decision under the stored policy version, and inclusion in a signed checkpoint.",
                            size="2", color_scheme="gray"),
                    rx.button("Verify", on_click=view.verify, loading=view.verifying, id="verify"),
                    rx.box(
                        rx.cond(view.verdict != "",
                                rx.cond(view.verified,
                                        rx.callout(view.verdict, color_scheme="green", id="verdict"),
                                        rx.callout(view.verdict, color_scheme="red", id="verdict", role="alert"))),
                        role="status", aria_live="polite", width="100%",
                    ),
                    check_list(view.checks, "checks"),
                    style={"width": "100%"}, aria_label="Verify",
                ),
                rx.el.section(
                    rx.heading("Check it offline", size="4", as_="h2"),
                    rx.cond(view.bundle_error != "", rx.callout(view.bundle_error, color_scheme="red", role="alert",
                                                               id="bundle-error")),
                    rx.hstack(
                        _download("Evidence bundle (tlog-proof)", view.bundle_url, view.bundle_file, "download-bundle"),
                        _download("Certificate (JSON)", view.certificate_url, view.certificate_file,
                                  "download-certificate"),
                        _download("Public key", view.key_url, "licet-public-key.json", "download-key"),
                        _download("Policy version", view.policy_url, view.policy_file, "download-policy"),
                        wrap="wrap", spacing="4",
                    ),
                    rx.text("Then, with the files in one folder:", size="2"),
                    rx.el.pre(view.command, id="verify-command", style=_PRE),
                    style={"width": "100%"}, aria_label="Check it offline",
                ),
                rx.el.section(
                    rx.heading("Every field", size="4", as_="h2"),
                    rx.el.dl(rx.foreach(view.fields, _field), id="certificate-fields", style={"margin": "0"}),
                    style={"width": "100%"}, aria_label="Every field",
                ),
                spacing="5", width="100%",
            ),
        ),
    )
