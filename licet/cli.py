"""The `licet` command line: keys, policy checks, decisions, certificate verification, the demo."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from licet import kernel
from licet.cli_log import bundle_checks, log_app
from licet.cli_mcp import mcp_app
from licet.cli_server import EXAMPLES, beat, demo_code, demo_people, migrate, serve, tenant_app, worker
from licet.output import console, fail, print_checks

app = typer.Typer(help="Licet: proven decisions for AI agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
policy_app = typer.Typer(help="Check and analyse policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(log_app, name="log")
plan_app = typer.Typer(help="Verify multi-step plans.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
delegation_app = typer.Typer(help="Check delegation grants.", no_args_is_help=True)
app.add_typer(delegation_app, name="delegation")
app.add_typer(tenant_app, name="tenant")
app.add_typer(mcp_app, name="mcp")
app.command()(serve)
app.command("demo-code")(demo_code)
app.command("demo-people")(demo_people)
app.command()(migrate)
app.command()(worker)
app.command()(beat)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise fail(f"{what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise fail(f"{what} {path}: not valid JSON ({exc})") from exc


def load_policy_file(path: Path) -> kernel.Policy:
    """Read and validate a policy file; errors are printed as FILE:LINE:COL and exit 2."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise fail(f"policy {path}: {exc.strerror}") from exc
    try:
        return kernel.load_policy(text, str(path))
    except kernel.PolicyError as exc:
        print(exc.render(), file=sys.stderr)
        raise typer.Exit(2) from exc


def _write_private(path: Path, content: str) -> None:
    # Created 0600 from the start: the key never exists with wider permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file to create (0600).")] = Path(
        "licet-signing.key"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a new random Ed25519 signing key; print its public key and key id."""
    if out.exists():
        raise fail(f"{out} already exists; refusing to overwrite a key")
    signer = kernel.Signer(os.urandom(32))
    _write_private(out, json.dumps(signer.to_json(), indent=2) + "\n")
    public_path = out.with_suffix(".pub")
    public_path.write_text(json.dumps(signer.public_key.to_json(), indent=2) + "\n")
    info = {"private_key_file": str(out), "public_key_file": str(public_path),
            **signer.public_key.to_json()}
    if json_out:
        print(json.dumps(info, indent=2))
    else:
        console.print(f"key id      {signer.key_id}\npublic key  {info['public_key']}\n"
                      f"private key {out} (0600)\npublic file {public_path}")


@policy_app.command("check")
def policy_check(path: Path) -> None:
    """Validate a policy: exit 0 if valid, else exit 2 with FILE:LINE:COL: message on stderr.

    Warns (exit 0) about rules proved never to apply and about approval roles no person who may
    vote holds — checked against Licet's roles, since the CLI knows no people (the server's
    validate runs the same analysis)."""
    from licet.kernel.analysis import check_policy
    from licet.server.roles import PERMISSIONS

    policy = load_policy_file(path)
    console.print(f"{path}: ok — policy {policy.id!r}, {len(policy.rules)} rules, "
                  f"{len(policy.invariants)} invariants, {policy.hash}")
    for item in check_policy(policy, PERMISSIONS["approvals.vote"]):
        console.print(f"[yellow]warning[/] {item.rule}: {item.reason}")


def _read_document(value: str, what: str) -> Any:
    """A JSON/YAML document from a file path, or given inline."""
    import yaml

    path = Path(value)
    try:
        text = path.read_text() if path.exists() else value
        return yaml.safe_load(text)
    except OSError as exc:
        raise fail(f"{what} {value}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise fail(f"{what}: not valid JSON/YAML ({exc})") from exc


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise fail(f"--now: not epoch seconds or an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise fail("--now: give a time zone (e.g. 2026-11-22T12:00:00Z)")
    return moment


NOW_OPTION = typer.Option("--now", help="Decision time: epoch seconds or ISO 8601 (default: now).")


@policy_app.command("diff")
def policy_diff(
    old: Path, new: Path,
    examples: Annotated[int, typer.Option(help="At most this many examples per direction.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What NEW permits that OLD did not and the reverse, with concrete example requests."""
    from licet.kernel.analysis import diff

    result = diff(load_policy_file(old), load_policy_file(new), max_examples=examples)
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_diff(result)
    if result.answer == "unknown":
        raise typer.Exit(3)


def _print_diff(result: Any) -> None:
    if result.answer == "unknown":
        console.print(f"[red]unknown[/]: {result.reason}")
    else:
        console.print("[green]equivalent[/]" if result.equivalent else "[yellow]the versions differ[/]")
    for title, found in (("newly permitted", result.gained), ("no longer permitted", result.lost)):
        for example in found:
            console.print(f"[bold]{title}[/]: {json.dumps(example.request)} rules={dict(example.rules)}"
                          f" history={len(example.state.get('history', []))} event(s)")
    for item in result.never_applies:
        console.print(f"[yellow]never applies[/] {item.policy}:{item.rule}: {item.reason}")


@policy_app.command("query")
def policy_query(
    policy: Path,
    pattern: Annotated[str, typer.Argument(help="File or inline JSON/YAML: {action, resource, when}.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Can any request matching PATTERN be permitted? An example, or a proof that none can."""
    from licet.kernel.analysis import query

    document = _read_document(pattern, "query")
    if not isinstance(document, dict):
        raise fail("query: expected a mapping with action, resource and/or when")
    try:
        answer = query(load_policy_file(policy), document)
    except kernel.LicetError as exc:
        raise fail(f"query: {exc}") from exc
    if json_out:
        print(json.dumps(answer.to_json(), indent=2))
    elif answer.answer == "yes" and answer.example is not None:
        console.print(f"[yellow]yes[/]: {json.dumps(answer.example.request)} "
                      f"(re-decided: permit; history {json.dumps(answer.example.state)})")
    elif answer.answer == "no":
        console.print("[green]no[/]: no request matching the pattern can be permitted (unsat)")
    else:
        console.print(f"[red]unknown[/]: {answer.reason}")
    if answer.answer == "unknown":
        raise typer.Exit(3)


@plan_app.command("verify")
def plan_verify(
    policy: Annotated[Path, typer.Option(help="Policy file.")],
    plan: Annotated[Path, typer.Option(help="Plan file: a list of steps, or {principal, context, steps}.")],
    state: Annotated[Path | None, typer.Option(help="Session state file (JSON).")] = None,
    max_steps: Annotated[int, typer.Option(help="Refuse longer plans (never truncated).")] = 10_000,
    now: Annotated[str | None, NOW_OPTION] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check every step of a plan, for every value of its symbolic arguments."""
    from licet.kernel.plans import verify_plan

    loaded = load_policy_file(policy)
    body = _read_json(plan, "plan")
    steps, principal, context = body, {}, {}
    if isinstance(body, dict):
        steps, principal, context = body.get("steps"), body.get("principal", {}), body.get("context", {})
    session = _read_json(state, "state") if state else None
    try:
        verdict = verify_plan(loaded, steps, state=session, now=_parse_now(now), principal=principal,
                              context=context, max_steps=max_steps)
    except kernel.LicetError as exc:
        raise fail(str(exc)) from exc
    out = verdict.to_json()
    if json_out:
        print(json.dumps(out, indent=2))
    else:
        colour = {"safe": "green", "needs_approval": "yellow", "unsafe": "red"}[verdict.verdict]
        console.print(f"[bold {colour}]{verdict.verdict}[/] ({verdict.steps_checked} steps checked)")
        if verdict.counterexample:
            console.print_json(json.dumps(out["counterexample"]))
        if verdict.approval_steps:
            console.print(f"steps needing approval: {list(verdict.approval_steps)}")


@delegation_app.command("check")
def delegation_check(
    parent: Annotated[Path, typer.Option(help="Parent grant (JSON/YAML).")],
    child: Annotated[Path, typer.Option(help="Child grant (JSON/YAML).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Prove that CHILD attenuates PARENT (scope, expiry, depth), or show a counterexample."""
    from licet.kernel.delegation import check_attenuation, load_grant

    grants = []
    for path in (parent, child):
        try:
            grants.append(load_grant(_read_document(str(path), "grant"), str(path)))
        except kernel.PolicyError as exc:
            print(exc.render(), file=sys.stderr)
            raise typer.Exit(2) from exc
    verdict = check_attenuation(grants[0], grants[1])
    if json_out:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        shown = {"attenuates": "[green]attenuates[/]", "widens": "[red]does not attenuate[/]",
                 "unknown": "[red]unknown[/]: attenuation could not be proved"}
        console.print(shown[verdict.answer])
        for reason in verdict.reasons:
            console.print(f"  - {reason}")
    if verdict.answer == "unknown":
        raise typer.Exit(3)
    if not verdict.ok:
        raise typer.Exit(1)


def _load_signer(path: Path) -> kernel.Signer:
    try:
        return kernel.parse_signer(path.read_text())
    except OSError as exc:
        raise fail(f"key {path}: {exc.strerror}") from exc
    except kernel.LicetError as exc:
        raise fail(f"key {path}: {exc}") from exc


@app.command()
def decide(
    policy: Annotated[Path, typer.Option(help="Policy file (YAML or JSON).")],
    request: Annotated[Path, typer.Option(help="Request file (JSON).")],
    state: Annotated[Path | None, typer.Option(help="Session state file (JSON).")] = None,
    key: Annotated[Path | None, typer.Option(help="Signing key: also issue a certificate.")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant named in the certificate.")] = "local",
    now: Annotated[str | None, NOW_OPTION] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decide one request (here the CLI is the trusted caller: principal and context come from the file)."""
    compiled_policy = load_policy_file(policy)
    body = _read_json(request, "request")
    session = _read_json(state, "state") if state else None
    at = _parse_now(now)
    try:
        decision = kernel.decide(compiled_policy, body, state=session, now=at)
    except kernel.InvalidRequest as exc:
        raise fail(f"invalid request: {exc}") from exc
    out = decision.to_json()
    if key is not None:
        signer = _load_signer(key)
        out["certificate"] = kernel.issue_certificate(
            decision, signer=signer, tenant=tenant, issued_at=at,
            certificate_id=kernel.uuid7(at, os.urandom(10)))
    if json_out:
        print(json.dumps(out, indent=2))
        return
    colour = {"permit": "green", "forbid": "red", "deny": "red", "require_approval": "yellow"}
    console.print(f"[bold {colour[decision.outcome]}]{decision.outcome}[/] "
                  f"rules={list(decision.rules)}")
    console.print_json(json.dumps(out["proof"]))
    for note in decision.diagnostics:
        console.print(f"[yellow]note:[/] {note}")


def _public_keys(values: list[str]) -> list[kernel.PublicKey]:
    keys = []
    for value in values:
        path = Path(value)
        try:
            text = path.read_text() if path.exists() else value
            keys.append(kernel.parse_public_key(text))
        except kernel.LicetError as exc:
            raise fail(f"public key {value}: {exc}") from exc
    return keys


@app.command()
def verify(
    certificate: Path,
    public_key: Annotated[list[str], typer.Option(
        "--public-key", help="Public key file or base64 (repeatable: rotated keys).")],
    policy: Annotated[Path | None, typer.Option(help="Policy file: also re-decide.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Evidence bundle: also check log inclusion.")] = None,
    log_key: Annotated[list[str] | None, typer.Option(
        "--log-key", help="Checkpoint verifier key (note verifier string or key file).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify a certificate offline: signature, theorem hash, optionally re-decision and log inclusion."""
    cert = _read_json(certificate, "certificate")
    keys = _public_keys(public_key)
    checks = kernel.verify_certificate(cert, keys)
    if bundle is not None:
        checks += bundle_checks(cert, bundle, log_key or [], keys)
    if policy is not None:
        checks.append(kernel.redecide(cert, load_policy_file(policy)))
    print_checks(checks, json_out)


@app.command()
def demo(
    policy: Annotated[Path, typer.Option(help="Policy to demonstrate.")] = EXAMPLES / "payments-agent.yaml",
    now: Annotated[str, typer.Option(
        "--now", help="Decision time; the examples' session histories are dated around this.")
    ] = "2025-06-01T12:00:00Z",
) -> None:
    """Load an example policy, decide a handful of requests and print their certificates."""
    loaded = load_policy_file(policy)
    requests_dir = policy.parent / "requests" / policy.stem
    signer = kernel.Signer(os.urandom(32))  # an ephemeral key: the demo keeps nothing
    now_at = _parse_now(now)
    console.rule(f"[bold]Licet demo[/] — policy {loaded.id} ({len(loaded.rules)} rules), "
                 f"ephemeral key {signer.key_id}")
    files = sorted(p for p in requests_dir.glob("*.json") if not p.name.endswith(".state.json"))
    if not files:
        raise fail(f"no request files in {requests_dir}")
    table = Table("request", "action", "resource", "decision", "rules", "certificate")
    last: dict[str, Any] | None = None
    for path in files:
        body = _read_json(path, "request")
        state_file = path.with_name(path.stem + ".state.json")
        session = _read_json(state_file, "state") if state_file.exists() else None
        try:
            decision = kernel.decide(loaded, body, state=session, now=now_at)
        except kernel.InvalidRequest as exc:
            table.add_row(path.name, str(body.get("action")), str(body.get("resource")),
                          "[red]invalid[/]", str(exc), "—")
            continue
        last = kernel.issue_certificate(decision, signer=signer, tenant="demo", issued_at=now_at,
                                        certificate_id=kernel.uuid7(now_at, os.urandom(10)))
        ok = kernel.all_ok(kernel.verify_certificate(last, [signer.public_key]))
        table.add_row(path.name, decision.request.action, decision.request.resource,
                      decision.outcome, ", ".join(decision.rules) or "—",
                      f"{last['id'][:13]}… {'verified' if ok else 'BROKEN'}")
    console.print(table)
    if last is not None:
        console.rule("last certificate")
        console.print_json(json.dumps(last))
