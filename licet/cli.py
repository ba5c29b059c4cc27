"""The `licet` command line: keys, policy checks and tests, decisions, plans, delegations, certificate
verification, the evidence log, the platform.

Every command exits by one table (docs/cli.md, `licet.output`): 0 the positive answer, 1 the negative
answer, 2 bad input or usage, 3 needs approval or unknown, 4 Licet itself failed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from licet import kernel
from licet.cli_explain import certificate_view, explanation, outcome_headline
from licet.cli_inputs import (
    display_name,
    file_or_inline,
    load_located,
    load_policy_file,
    parse_now,
    read_json,
    read_text,
)
from licet.cli_keys import keys_app
from licet.cli_log import bundle_checks, log_app
from licet.cli_mcp import mcp_app
from licet.cli_policy import policy_app
from licet.cli_secrets import secrets_app
from licet.cli_server import EXAMPLES, beat, demo_code, demo_people, migrate, serve, tenant_app, worker
from licet.cli_typer import LicetTyper
from licet.cli_witness import witness_app
from licet.kernel.proof_text import counterexample_value_text
from licet.output import BAD_INPUT, PIPED, console, escape, exit_for, fail, print_checks

if TYPE_CHECKING:
    from licet.kernel.delegation import Grant
    from licet.sdk.types import TrustedKeys


app = LicetTyper(
    help="Licet: proven decisions for AI agents. Exit codes: 0 positive answer, 1 negative "
    "answer, 2 bad input, 3 needs approval or unknown, 4 a bug (docs/cli.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(log_app, name="log")
app.add_typer(keys_app, name="keys")
plan_app = LicetTyper(help="Verify multi-step plans.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
delegation_app = LicetTyper(help="Check delegation grants.", no_args_is_help=True)
app.add_typer(delegation_app, name="delegation")
app.add_typer(tenant_app, name="tenant")
app.add_typer(mcp_app, name="mcp")
app.add_typer(secrets_app, name="secrets")
app.add_typer(witness_app, name="witness")
app.command()(serve)
app.command("demo-code")(demo_code)
app.command("demo-people")(demo_people)
app.command()(migrate)
app.command()(worker)
app.command()(beat)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NowOption = Annotated[
    str | None,
    typer.Option("--now", metavar="TIME", help="Decision time: epoch seconds or ISO 8601 with a zone (default: now)."),
]


def _licet_version() -> str:
    try:
        return version("licet")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        print(f"licet {_licet_version()}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Licet: proven decisions for AI agents."""


def _write_private(path: Path, content: str) -> None:
    # Created 0600 from the start: the key never exists with wider permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Private key file to create (0600).")] = Path(
        "licet-signing.key"
    ),
    json_out: JsonOption = False,
) -> None:
    """Create a new random Ed25519 signing key; print its public key and key id."""
    if out.exists():
        raise fail(f"{out} already exists; refusing to overwrite a key")
    signer = kernel.Signer(os.urandom(32))
    try:
        _write_private(out, json.dumps(signer.to_json(), indent=2) + "\n")
    except OSError as exc:
        raise fail(f"{out}: {exc.strerror}") from exc
    public_path = out.with_suffix(".pub")
    public_path.write_text(json.dumps(signer.public_key.to_json(), indent=2) + "\n")
    info = {"private_key_file": str(out), "public_key_file": str(public_path), **signer.public_key.to_json()}
    if json_out:
        print(json.dumps(info, indent=2))
    else:
        console.print(
            f"key id      {signer.key_id}\npublic key  {info['public_key']}\n"
            f"private key {escape(str(out))} (0600)\npublic file {escape(str(public_path))}",
            highlight=False,
        )


@plan_app.command("verify")
def plan_verify(
    policy: Annotated[Path, typer.Option(metavar="FILE", help="Policy file.")],
    plan: Annotated[
        Path,
        typer.Option(
            metavar="FILE", help="Plan file (JSON, - for stdin): a list of steps, or {principal, context, steps}."
        ),
    ],
    state: Annotated[Path | None, typer.Option(metavar="FILE", help="Session state file (JSON).")] = None,
    max_steps: Annotated[int, typer.Option(metavar="N", help="Refuse longer plans (never truncated).")] = 10_000,
    now: NowOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check every step of a plan, for every value of its symbolic arguments.

    Exit 0 if safe, 1 if unsafe (with a counterexample), 3 if some steps need approval."""
    from licet.kernel.plans import verify_plan

    loaded = load_policy_file(policy)
    body = read_json(plan, "plan")
    steps, principal, context = body, {}, {}
    if isinstance(body, dict):
        steps, principal, context = body.get("steps"), body.get("principal", {}), body.get("context", {})
    session = read_json(state, "state") if state else None
    try:
        verdict = verify_plan(
            loaded, steps, state=session, now=parse_now(now), principal=principal, context=context, max_steps=max_steps
        )
    except kernel.LicetError as exc:
        raise fail(str(exc)) from exc
    if json_out:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        colour = {"safe": "green", "needs_approval": "yellow", "unsafe": "red"}[verdict.verdict]
        console.print(f"[bold {colour}]{verdict.verdict}[/] ({verdict.steps_checked} steps checked)")
        found = verdict.counterexample
        if found is not None:
            console.print(f"step {found.step} fails: {escape(found.reason)}", highlight=False)
            for key, value in found.values.items():
                shown = counterexample_value_text(steps, key, value)
                console.print(f"  {escape(key)} = {escape(shown)}", highlight=False)
        if verdict.approval_steps:
            console.print(f"steps needing approval: {', '.join(map(str, verdict.approval_steps))}")
    exit_for(verdict.verdict)


def load_grant_file(path: Path) -> Grant:
    """Read and validate a grant file: errors as FILE:LINE:COL naming the field (and the allowed fields),
    YAML dates accepted for expires_at. Raises `kernel.PolicyError`."""
    from licet.kernel import delegation

    name = display_name(path)
    located = load_located(read_text(path, "grant"), name)
    try:
        return delegation.load_grant(located.value, name)
    except kernel.PolicyError as exc:
        where = exc.field
        if where == "rules" or where.startswith(("rules[", "rules.")):
            # The scope is loaded as a policy whose rules are the grant's scope: point into the file.
            scope = located.value.get("scope") if isinstance(located.value, dict) else None
            where = ("scope.rules" if isinstance(scope, dict) else "scope") + where.removeprefix("rules")
        message = exc.message
        if message.startswith("unknown field") and "allowed" not in message:
            # The fields a grant document may have are the Grant's own (`checked` is a cache, not data).
            allowed = sorted(f.name for f in dataclasses.fields(delegation.Grant) if f.compare)
            message += f" (allowed: {', '.join(allowed)})"
        raise located.error(where, message) from exc


@delegation_app.command("check")
def delegation_check(
    parent: Annotated[Path, typer.Option(metavar="FILE", help="Parent grant (JSON/YAML).")],
    child: Annotated[Path, typer.Option(metavar="FILE", help="Child grant (JSON/YAML).")],
    json_out: JsonOption = False,
) -> None:
    """Prove that CHILD attenuates PARENT (scope, expiry, depth), or show a counterexample.

    Exit 0 if it attenuates, 1 if it widens, 3 if the solver could not tell."""
    from licet.kernel.delegation import check_attenuation

    grants = []
    for path in (parent, child):
        try:
            grants.append(load_grant_file(path))
        except kernel.PolicyError as exc:
            print(exc.render(), file=sys.stderr)
            raise typer.Exit(BAD_INPUT) from exc
    verdict = check_attenuation(grants[0], grants[1])
    if json_out:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        shown = {
            "attenuates": "[green]attenuates[/]",
            "widens": "[red]does not attenuate[/]",
            "unknown": "[red]unknown[/]: attenuation could not be proved",
        }
        console.print(shown[verdict.answer])
        for reason in verdict.reasons:
            console.print(f"  - {escape(reason)}", highlight=False)
        if verdict.counterexample is not None:
            console.print(f"  e.g. {escape(json.dumps(verdict.counterexample.request))}", highlight=False)
    exit_for(verdict.answer)


def _load_signer(path: Path) -> kernel.Signer:
    text = read_text(path, "key")
    try:
        return kernel.parse_signer(text)
    except kernel.LicetError as exc:
        raise fail(f"key {path}: {exc}") from exc


@app.command()
def decide(
    policy: Annotated[Path, typer.Option(metavar="FILE", help="Policy file (YAML or JSON).")],
    request: Annotated[Path, typer.Option(metavar="FILE", help="Request file (JSON), or - for stdin.")],
    state: Annotated[Path | None, typer.Option(metavar="FILE", help="Session state file (JSON).")] = None,
    key: Annotated[Path | None, typer.Option(metavar="FILE", help="Signing key: also issue a certificate.")] = None,
    tenant: Annotated[str, typer.Option(metavar="ID", help="Tenant named in the certificate.")] = "local",
    now: NowOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decide one request (here the CLI is the trusted caller: principal and context come from the file).

    Exit 0 on permit, 1 on forbid or deny, 3 on require_approval, 2 if the request is invalid."""
    compiled_policy = load_policy_file(policy)
    body = read_json(request, "request")
    session = read_json(state, "state") if state else None
    at = parse_now(now)
    try:
        decision = kernel.decide(compiled_policy, body, state=session, now=at)
    except kernel.InvalidRequest as exc:
        raise fail(f"invalid request: {exc}") from exc
    out = decision.to_json()
    if key is not None:
        signer = _load_signer(key)
        out["certificate"] = kernel.issue_certificate(
            decision, signer=signer, tenant=tenant, issued_at=at, certificate_id=kernel.uuid7(at, os.urandom(10))
        )
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        console.print(outcome_headline(decision.outcome, decision.rules), highlight=False)
        for line in explanation(out.get("certificate") or certificate_view(out), compiled_policy):
            console.print(line, highlight=False)
        if "certificate" in out:
            console.print(
                f"certificate {out['certificate']['id']} signed by {out['certificate']['key_id']} (--json prints it)",
                highlight=False,
            )
    exit_for(decision.outcome)


def _public_keys(values: list[str]) -> list[kernel.PublicKey]:
    return [file_or_inline(value, "public key", kernel.parse_public_key) for value in values]


def _published_keys(path: Path) -> TrustedKeys:
    from licet.sdk.errors import LicetError as SdkError
    from licet.sdk.types import TrustedKeys

    try:
        return TrustedKeys.from_json(read_json(path, "keys"))
    except SdkError as exc:
        raise fail(f"{path}: {exc}") from exc


@app.command()
def verify(
    certificate: Annotated[Path, typer.Argument(metavar="CERTIFICATE", help="Certificate file, or - for stdin.")],
    public_key: Annotated[
        list[str] | None,
        typer.Option("--public-key", metavar="KEY", help="Public key file or base64 (repeatable: rotated keys)."),
    ] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option("--keys", metavar="FILE", help="Keys published by GET /v1/evidence/keys, saved: every "
                     "certificate and log key with its period (a certificate issued outside it fails)."),
    ] = None,
    policy: Annotated[Path | None, typer.Option(metavar="FILE", help="Policy file: also re-decide.")] = None,
    bundle: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Evidence bundle: also check log inclusion.")
    ] = None,
    log_key: Annotated[
        list[str] | None,
        typer.Option("--log-key", metavar="KEY", help="Checkpoint verifier key (note verifier string or key file)."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Verify a certificate offline: signature, theorem hash, optionally re-decision and log inclusion.

    Exit 0 if every check passes, 1 if one fails."""
    if not public_key and keys_file is None:
        raise fail("give the keys to trust: --public-key, or --keys with the saved answer of GET /v1/evidence/keys")
    cert = read_json(certificate, "certificate")
    keys = _public_keys(public_key or [])
    published = _published_keys(keys_file) if keys_file is not None else None
    checks = kernel.verify_certificate(cert, [*keys, *(published.certificate_periods if published else ())])
    if bundle is not None:
        checks += bundle_checks(cert, bundle, log_key or [], [*keys, *(published.log_keys if published else ())],
                                origin=published.log_origin if published else None)
    if policy is not None:
        checks.append(kernel.redecide(cert, load_policy_file(policy)))
    print_checks(checks, json_out)


def _heading(title: str) -> None:
    # A rule spans the terminal; piped, a plain line (the output is unwrapped, so a rule would be huge).
    if PIPED:
        console.print(f"== {title}")
    else:
        console.rule(title)


@app.command()
def demo(
    policy: Annotated[Path, typer.Option(metavar="FILE", help="Policy to demonstrate.")] = EXAMPLES
    / "payments-agent.yaml",
    now: Annotated[
        str,
        typer.Option(
            "--now", metavar="TIME", help="Decision time; the examples' session histories are dated around this."
        ),
    ] = "2025-06-01T12:00:00Z",
) -> None:
    """Load an example policy, decide a handful of requests and print their certificates."""
    loaded = load_policy_file(policy)
    requests_dir = policy.parent / "requests" / policy.stem
    signer = kernel.Signer(os.urandom(32))  # an ephemeral key: the demo keeps nothing
    now_at = parse_now(now)
    _heading(
        f"[bold]Licet demo[/] — policy {escape(loaded.id)} ({len(loaded.rules)} rules), ephemeral key {signer.key_id}"
    )
    files = sorted(p for p in requests_dir.glob("*.json") if not p.name.endswith(".state.json"))
    if not files:
        raise fail(f"no request files in {requests_dir}")
    table = Table("request", "action", "resource", "decision", "rules", "certificate")
    last: dict[str, Any] | None = None
    for path in files:
        body = read_json(path, "request")
        state_file = path.with_name(path.stem + ".state.json")
        session = read_json(state_file, "state") if state_file.exists() else None
        try:
            decision = kernel.decide(loaded, body, state=session, now=now_at)
        except kernel.InvalidRequest as exc:
            table.add_row(
                path.name,
                escape(str(body.get("action"))),
                escape(str(body.get("resource"))),
                "[red]invalid[/]",
                escape(str(exc)),
                "—",
            )
            continue
        last = kernel.issue_certificate(
            decision,
            signer=signer,
            tenant="demo",
            issued_at=now_at,
            certificate_id=kernel.uuid7(now_at, os.urandom(10)),
        )
        ok = kernel.all_ok(kernel.verify_certificate(last, [signer.public_key]))
        table.add_row(
            path.name,
            escape(decision.request.action),
            escape(decision.request.resource),
            decision.outcome,
            escape(", ".join(decision.rules)) or "—",
            f"{last['id'][:13]}… {'verified' if ok else 'BROKEN'}",
        )
    console.print(table)
    if last is not None:
        _heading("last certificate")
        console.print_json(json.dumps(last))
