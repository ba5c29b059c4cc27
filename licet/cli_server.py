"""`licet serve`, `licet migrate` and `licet tenant create`: running the platform."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from licet.cli_typer import LicetTyper
from licet.output import console, fail

# The example policies and requests (a link to the repository's examples/ in a checkout, package data
# once installed): the demo seed and `licet demo` read them from any folder.
EXAMPLES = Path(__file__).resolve().parent / "examples"

tenant_app = LicetTyper(help="Manage tenants.", no_args_is_help=True)


def _settings(data_dir: Path | None) -> Any:
    from licet.server.settings import Settings

    return Settings(data_dir=data_dir) if data_dir is not None else Settings()


def _prepare(settings: Any) -> None:
    from licet.server.migrations import upgrade

    if settings.url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.url)


def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
    demo: Annotated[bool, typer.Option("--demo", help="Seed a demo tenant, keys and the example policies.")] = False,
    data_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="Where the embedded database and key live.")
                        ] = None,
    workers: Annotated[int, typer.Option(metavar="N", help="Worker processes (PostgreSQL only).")] = 1,
) -> None:
    """Run the platform: migrate the database, load (or on first run create) the signing key, serve."""
    import uvicorn

    from licet.server import request_heads
    from licet.server.services import Services, StartupError
    from licet.server.settings import MissingRelyingParty

    settings = _settings(data_dir)
    if workers > 1 and settings.url.startswith("sqlite"):
        raise fail("several workers need PostgreSQL (LICET_DATABASE_URL); SQLite has a single writer")
    _prepare(settings)
    try:
        services = Services(settings)
        settings = settings.listening_on(host, port)  # the WebAuthn relying party, from this address unless set
    except (StartupError, MissingRelyingParty) as exc:
        raise fail(str(exc)) from exc
    if demo:
        from licet.server.tenants import seed_demo

        seeded = asyncio.run(_seed(services, lambda s: seed_demo(s, EXAMPLES)))
        _print_demo(seeded, host, port)
    # Client addresses come only from LICET_TRUSTED_PROXIES (server.routers.decide.client_ip), never
    # from uvicorn's own forwarded-header handling. The server logs each request itself (JSON lines),
    # so uvicorn's access log is off.
    os.environ["LICET_DASHBOARD_ORIGINS"] = ",".join(dashboard_origins(settings, host, port))
    # Request heads are bounded here, in the server, not only by a proxy in front of it. uvicorn calls
    # `http` with the protocol's arguments, as it would the class.
    http: Any = request_heads.protocol(settings.max_header_bytes, settings.max_headers)
    if workers > 1:  # worker processes build their settings from the environment
        if data_dir is not None:
            os.environ["LICET_DATA_DIR"] = str(data_dir)
        os.environ["LICET_RP_ID"], os.environ["LICET_RP_ORIGINS"] = settings.rp_id, json.dumps(settings.rp_origins)
        uvicorn.run("licet.cli_server:platform_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", proxy_headers=False, access_log=False, http=http)
    else:
        uvicorn.run(platform_app(settings), host=host, port=port, log_level="warning", proxy_headers=False,
                    access_log=False, http=http)


def dashboard_origins(settings: Any, host: str, port: int) -> list[str]:
    """The browser origins the dashboard accepts: this address (and localhost's names for it) and the
    configured WebAuthn origins."""
    names = {host, "localhost", "127.0.0.1"} if host in ("127.0.0.1", "0.0.0.0", "localhost", "::") else {host}
    return sorted({f"http://{name}:{port}" for name in names if name not in ("0.0.0.0", "::")}
                  | set(settings.rp_origins))


def platform_app(settings: Any = None) -> Any:
    """The API with the dashboard mounted at `/` (one process, one port)."""
    from licet.dashboard.app import FrontendMissing, serve
    from licet.server.app import create_app

    try:
        return serve(create_app(settings), os.environ.get("LICET_DASHBOARD_ORIGINS", "").split(","))
    except FrontendMissing as exc:
        raise fail(str(exc)) from exc


async def _seed(services: Any, seed: Any) -> Any:
    try:
        return await seed(services)
    finally:
        await services.db.dispose()


def _print_demo(seeded: dict[str, Any], host: str, port: int) -> None:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    console.print(f"[bold]Licet demo[/] — tenant [cyan]{seeded['tenant']}[/], active policy "
                  f"[cyan]{seeded['active']}[/] (also stored: {', '.join(seeded['policies'])})", soft_wrap=True)
    console.print(f"  dashboard  {base}/login?tenant={seeded['tenant']}   (API docs: {base}/docs)", markup=False,
                  soft_wrap=True)
    for person in seeded.get("people", []):
        console.print(f"  {person['role']:<9}  {person['email']}  password {person['password']}", markup=False,
                      soft_wrap=True)
    console.print("  codes      licet demo-code EMAIL   prints a person's current TOTP code "
                  "(or scan their otpauth URI: licet demo-people)", markup=False, soft_wrap=True)
    console.print(f"  agent key  {seeded['agent_key']}\n  admin key  {seeded['admin_key']}\n"
                  f"  owner key  {seeded['owner_key']}", markup=False)
    console.print(f"  try:\n    curl -s {base}/v1/decide -H 'Authorization: Bearer "
                  f"{seeded['agent_key']}' -H 'content-type: application/json' \\\n"
                  "      -d '{\"action\": \"payments.read\", \"resource\": \"/accounts/acc-001/statements/2025-05\"}'",
                  soft_wrap=True, markup=False)


def _demo_people(data_dir: Path | None) -> list[dict[str, str]]:
    kept = _settings(data_dir).data_dir / "demo-keys.json"
    if not kept.is_file():
        raise fail(f"no demo here ({kept} is missing): run `licet serve --demo` first")
    people: list[dict[str, str]] = json.loads(kept.read_text()).get("people", [])
    return people


DemoDirOption = Annotated[Path | None, typer.Option(metavar="DIR", help="The demo's data directory.")]


def demo_code(email: Annotated[str, typer.Argument(metavar="EMAIL", help="A demo person's email.")],
              data_dir: DemoDirOption = None) -> None:
    """Print the current TOTP code of a demo person (what their authenticator app would show)."""
    import pyotp

    for person in _demo_people(data_dir):
        if person["email"] == email.strip().lower():
            print(pyotp.TOTP(person["totp_secret"]).now())
            return
    raise fail(f"{email} is not a demo person")


def demo_people(data_dir: DemoDirOption = None) -> None:
    """The demo's people: email, role, password and otpauth URI (for an authenticator app)."""
    for person in _demo_people(data_dir):
        print(f"{person['email']}\t{person['role']}\t{person['password']}\t{person['otpauth_uri']}")


def migrate(
    data_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="Where the embedded database lives.")] = None,
    revision: Annotated[str, typer.Option(metavar="REVISION", help="Target revision (e.g. head, base, 0001).")
                        ] = "head",
) -> None:
    """Migrate the configured database (LICET_DATABASE_URL, default the embedded SQLite) to `revision`."""
    from licet.server.migrations import downgrade, upgrade

    settings = _settings(data_dir)
    if settings.url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if revision == "base":
        downgrade(settings.url)
    else:
        upgrade(settings.url, revision)
    console.print(f"database at revision {revision}")


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT_ID", help="Lowercase letters, digits and dashes.")],
    name: Annotated[str, typer.Option(metavar="NAME", help="Display name.")] = "",
    owner_email: Annotated[str | None, typer.Option(
        metavar="EMAIL",
        help="The first owner's email: prints their invitation (only a person who passed MFA adds people).")] = None,
    data_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="Where the embedded database lives.")] = None,
) -> None:
    """Create a tenant; print its first owner API key and, with --owner-email, the first owner's
    invitation token (each shown once)."""
    from licet.server.services import Services, StartupError
    from licet.server.tenants import TenantExists, create_tenant

    settings = _settings(data_dir)
    _prepare(settings)
    try:
        services = Services(settings)
        made = asyncio.run(_seed(services, lambda s: create_tenant(s, tenant_id, name or tenant_id,
                                                                   owner_email=owner_email)))
    except TenantExists as exc:
        raise fail(f"tenant {tenant_id} already exists (its owner keys are unchanged)") from exc
    except (StartupError, ValueError) as exc:
        raise fail(f"tenant {tenant_id}: {exc}") from exc
    console.print(f"tenant {tenant_id} created; owner key (shown once):\n{made.owner_key}")
    if made.owner_invitation is not None:
        console.print(f"invitation for {owner_email} (shown once; POST /v1/auth/invitations/accept with "
                      f"{{token, password}}, then enrol TOTP or a passkey):\n{made.owner_invitation}")


def worker(
    concurrency: Annotated[int, typer.Option(metavar="N", help="Tasks run at once (processes of the prefork pool).")
                           ] = 2,
    pool: Annotated[str, typer.Option(metavar="POOL", help="Celery pool: prefork, threads or solo.")] = "prefork",
    loglevel: Annotated[str, typer.Option(metavar="LEVEL", help="Celery log level.")] = "info",
) -> None:
    """Run a Celery worker for approvals (webhooks, expiry, escalation) on LICET_BROKER_URL."""
    settings = _settings(None)
    if not settings.broker_url:
        raise fail("set LICET_BROKER_URL (e.g. redis://127.0.0.1:6379/0); without a broker `licet serve` runs "
                   "these jobs itself")
    from licet.server.workers import celery_app

    celery_app.worker_main(["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}",
                            "-Q", settings.task_queue])


def beat(
    schedule: Annotated[Path | None, typer.Option(metavar="FILE", help="Where beat keeps its schedule state.")] = None,
    loglevel: Annotated[str, typer.Option(metavar="LEVEL", help="Celery log level.")] = "info",
) -> None:
    """Run Celery beat: the periodic approvals sweep (expiries, escalations, deliveries due)."""
    import tempfile

    settings = _settings(None)
    if not settings.broker_url:
        raise fail("set LICET_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    from licet.server.workers import celery_app

    where = schedule or Path(tempfile.gettempdir()) / "licet-beat-schedule"
    celery_app.start(["beat", f"--loglevel={loglevel}", "-s", str(where)])
