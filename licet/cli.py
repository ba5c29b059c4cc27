"""The `licet` command line: keys, policy checks, decisions, certificate verification, the demo."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import kernel
from kernel.report import Check

app = typer.Typer(help="Licet: proven decisions for AI agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
policy_app = typer.Typer(help="Check and analyse policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
console = Console()
errors = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise _fail(f"{what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise _fail(f"{what} {path}: not valid JSON ({exc})") from exc


def load_policy_file(path: Path) -> kernel.Policy:
    """Read and validate a policy file; errors are printed as FILE:LINE:COL and exit 2."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise _fail(f"policy {path}: {exc.strerror}") from exc
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
        raise _fail(f"{out} already exists; refusing to overwrite a key")
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
    """Validate a policy: exit 0 if valid, else exit 2 with FILE:LINE:COL: message on stderr."""
    policy = load_policy_file(path)
    console.print(f"{path}: ok — policy {policy.id!r}, {len(policy.rules)} rules, "
                  f"{len(policy.invariants)} invariants, {policy.hash}")


def _load_signer(path: Path) -> kernel.Signer:
    try:
        return kernel.parse_signer(path.read_text())
    except OSError as exc:
        raise _fail(f"key {path}: {exc.strerror}") from exc
    except kernel.LicetError as exc:
        raise _fail(f"key {path}: {exc}") from exc


@app.command()
def decide(
    policy: Annotated[Path, typer.Option(help="Policy file (YAML or JSON).")],
    request: Annotated[Path, typer.Option(help="Request file (JSON).")],
    state: Annotated[Path | None, typer.Option(help="Session state file (JSON).")] = None,
    key: Annotated[Path | None, typer.Option(help="Signing key: also issue a certificate.")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant named in the certificate.")] = "local",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decide one request (here the CLI is the trusted caller: principal and context come from the file)."""
    compiled_policy = load_policy_file(policy)
    body = _read_json(request, "request")
    session = _read_json(state, "state") if state else None
    now = datetime.now(UTC)
    try:
        decision = kernel.decide(compiled_policy, body, state=session, now=now)
    except kernel.InvalidRequest as exc:
        raise _fail(f"invalid request: {exc}") from exc
    out = decision.to_json()
    if key is not None:
        signer = _load_signer(key)
        out["certificate"] = kernel.issue_certificate(
            decision, signer=signer, tenant=tenant, issued_at=now,
            certificate_id=kernel.uuid7(now, os.urandom(10)))
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
            raise _fail(f"public key {value}: {exc}") from exc
    return keys


def redecide_check(certificate: dict[str, Any], policy: kernel.Policy) -> Check:
    """Re-run the kernel on the certified request and compare outcome, rules and proof."""
    if certificate.get("policy", {}).get("hash") != policy.hash:
        return Check("redecide", False, f"the policy file hashes to {policy.hash}, the "
                     f"certificate was decided under {certificate.get('policy', {}).get('hash')}")
    if certificate.get("approval") and "id" in certificate["approval"]:
        return Check("redecide", False, "approval-based permits are re-decided by the server")
    try:
        issued = datetime.fromisoformat(str(certificate["issued_at"]).replace("Z", "+00:00"))
        again = kernel.decide(policy, certificate["request"], now=issued,
                              state={"summary": certificate.get("session") or {}})
    except (kernel.LicetError, KeyError, ValueError) as exc:
        return Check("redecide", False, f"could not re-decide: {exc}")
    # Cores are minimal but not unique, so the proof is compared by what it proves.
    same = (again.outcome == certificate.get("decision")
            and list(again.rules) == certificate.get("rules"))
    detail = f"kernel again says {again.outcome} {list(again.rules)}"
    return Check("redecide", same, detail + ("" if same else
                 f"; certificate says {certificate.get('decision')} {certificate.get('rules')}"))


def print_checks(checks: list[Check], json_out: bool) -> None:
    """Print verification checks as JSON or a table; exit 1 unless all passed."""
    ok = kernel.all_ok(checks)
    if json_out:
        print(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        table = Table("check", "result", "detail")
        for c in checks:
            table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
        console.print(table)
    if not ok:
        raise typer.Exit(1)


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
    checks = kernel.verify_certificate(cert, _public_keys(public_key))
    if bundle is not None:
        from licet.evidence_cli import bundle_checks

        checks += bundle_checks(cert, bundle, log_key or [])
    if policy is not None:
        checks.append(redecide_check(cert, load_policy_file(policy)))
    print_checks(checks, json_out)


@app.command()
def demo(
    policy: Annotated[Path, typer.Option(help="Policy to demonstrate.")] = Path(
        "examples/payments-agent.yaml"),
) -> None:
    """Load an example policy, decide a handful of requests and print their certificates."""
    loaded = load_policy_file(policy)
    requests_dir = Path("examples/requests") / policy.stem
    signer = kernel.Signer(os.urandom(32))  # an ephemeral key: the demo keeps nothing
    now = datetime.now(UTC)
    console.rule(f"[bold]Licet demo[/] — policy {loaded.id} ({len(loaded.rules)} rules), "
                 f"ephemeral key {signer.key_id}")
    files = sorted(p for p in requests_dir.glob("*.json") if not p.name.endswith(".state.json"))
    if not files:
        raise _fail(f"no request files in {requests_dir}")
    table = Table("request", "action", "resource", "decision", "rules", "certificate")
    last: dict[str, Any] | None = None
    for path in files:
        body = _read_json(path, "request")
        state_file = path.with_name(path.stem + ".state.json")
        session = _read_json(state_file, "state") if state_file.exists() else None
        try:
            decision = kernel.decide(loaded, body, state=session, now=now)
        except kernel.InvalidRequest as exc:
            table.add_row(path.name, str(body.get("action")), str(body.get("resource")),
                          "[red]invalid[/]", str(exc), "—")
            continue
        last = kernel.issue_certificate(decision, signer=signer, tenant="demo", issued_at=now,
                                        certificate_id=kernel.uuid7(now, os.urandom(10)))
        ok = kernel.all_ok(kernel.verify_certificate(last, [signer.public_key]))
        table.add_row(path.name, decision.request.action, decision.request.resource,
                      decision.outcome, ", ".join(decision.rules) or "—",
                      f"{last['id'][:13]}… {'verified' if ok else 'BROKEN'}")
    console.print(table)
    if last is not None:
        console.rule("last certificate")
        console.print_json(json.dumps(last))


def _register_optional() -> None:
    # Sub-command groups that live in their own modules.
    from licet.cli_log import log_app

    app.add_typer(log_app, name="log")


if (Path(__file__).with_name("cli_log.py")).exists():
    _register_optional()
