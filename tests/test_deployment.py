"""docker-compose.prod.yml and the Dockerfile, checked without Docker: the file is parsed, every
project command it runs exists with the options it passes, every LICET_* variable is a setting,
and what the services do is run directly — `licet migrate` then the API's own `licet serve`
command in production mode on a fresh PostgreSQL database, with and without a signing key.

PostgreSQL: a fresh database `licet_mig_deploy_<xdist worker>`; unreachable, the tests that need it
skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from licet.server.settings import Settings
from tests.server_harness import drop_pg_database, free_port, fresh_pg_database, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.prod.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "production.md"
# Values for the variables compose interpolates from the operator's shell.
SHELL_VARIABLES = {"POSTGRES_PASSWORD": "s3cret", "PUBLIC_HOST": "licet.example.com"}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` and `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        present = name in variables and (variables[name] != "" or op in ("-", "?"))
        if op in (":?", "?") and not present:
            raise ValueError(f"${{{name}}} is required: {arg}")
        if op in (":-", "-") and not present:
            return arg
        return variables.get(name, "")

    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}", one, value)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or list form), values as compose passes them (strings)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def project_argv(argv: list[str]) -> list[str] | None:
    """The `licet ...` arguments of a command that runs the project's CLI, else None."""
    if argv and Path(argv[0]).name == "licet":
        return argv[1:]
    if len(argv) > 2 and Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "licet"]:
        return argv[3:]
    return None


def project_commands() -> list[tuple[str, list[str]]]:
    """(where, licet arguments) of every project command the compose file and the Dockerfile run."""
    found: list[tuple[str, list[str]]] = []
    for name, service in load_compose()["services"].items():
        for key in ("entrypoint", "command"):
            if service.get(key):
                args = project_argv(as_argv(service[key]))
                if args is not None:
                    found.append((f"{name}.{key}", args))
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            args = project_argv(argv)
            if args is not None:
                found.append((f"{name}.healthcheck", args))
    for instruction, argv in dockerfile_exec_forms():
        args = project_argv(argv)
        if args is not None:
            found.append((f"Dockerfile {instruction}", args))
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def dockerfile_exec_forms() -> list[tuple[str, list[str]]]:
    return [(instruction, json.loads(args) if args.startswith("[") else shlex.split(args))
            for instruction, args in dockerfile_instructions() if instruction in ("CMD", "ENTRYPOINT")]


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any LICET_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICET_")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


def licet(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "licet", *args], capture_output=True, text=True,
                          env=env or cli_env(), cwd=cwd, timeout=timeout)


# ---------------------------------------------------------------- the compose file, as a document


def test_compose_services_and_their_order() -> None:
    compose = load_compose()
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api"} <= set(services)
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert "pg_isready" in " ".join(as_argv(services["postgres"]["healthcheck"]["test"]))

    migrate, api = services["migrate"], services["api"]
    assert project_argv(as_argv(migrate["command"]))[:1] == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no"
    assert project_argv(as_argv(api["command"]))[:1] == ["serve"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(as_argv(api["healthcheck"]["test"]))

    for name in ("migrate", "api"):
        env = environment(services[name])
        assert env["LICET_MODE"] == "production"
        assert env["LICET_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["LICET_DATABASE_URL"]
        assert services[name]["build"] in (".", {"context": "."})

    # the signing key and the secrets key: compose secrets (mounted read-only) at the paths the API reads
    mounted = set()
    for listed in api["secrets"]:
        secret = listed if isinstance(listed, dict) else {"source": listed}
        target = secret.get("target", secret["source"])
        mounted.add(target if target.startswith("/") else f"/run/secrets/{target}")
        assert secret["source"] in compose["secrets"]
    assert mounted == {environment(api)["LICET_SIGNING_KEY_FILE"], environment(api)["LICET_SECRETS_KEY_FILE"]}


def test_compose_references_resolve() -> None:
    """depends_on, secrets and named volumes name things the file defines; conditions are valid."""
    compose = load_compose()
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert other in services, f"{name} depends on unknown service {other}"
            assert spec.get("condition", "service_started") in (
                "service_started", "service_healthy", "service_completed_successfully")
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other} to be healthy; it has no healthcheck"
        for secret in service.get("secrets") or []:
            source = secret["source"] if isinstance(secret, dict) else secret
            assert source in (compose.get("secrets") or {}), f"{name}: unknown secret {source}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in (compose.get("volumes") or {}), f"{name}: unknown volume {source}"
        for key in ("command", "entrypoint"):  # every ${VAR} resolves (required ones given by the operator)
            for part in as_argv(service.get(key) or []):
                interpolate(part, SHELL_VARIABLES)
        for value in environment(service).values():
            interpolate(value, SHELL_VARIABLES)


def check_cli(commands: list[tuple[str, list[str]]]) -> None:
    """For each (where, licet arguments): `licet <subcommand ...> --help` works and lists every option
    passed. One `--help` per subcommand."""
    wanted: dict[tuple[str, ...], dict[str, str]] = {}
    for place, args in commands:
        path: list[str] = []  # the subcommand path: the leading words (and any arguments) before the options
        for arg in args:
            if arg.startswith("-"):
                break
            path.append(arg)
        flags = wanted.setdefault(tuple(path), {})
        flags.update({a.split("=", 1)[0]: place for a in args if a.startswith("--")})
    for path, flags in wanted.items():
        name = " ".join(path)
        shown = licet(*path, "--help")
        assert shown.returncode == 0, f"`licet {name} --help` failed: {shown.stdout}{shown.stderr}"
        for flag, place in flags.items():
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown.stdout), \
                f"{place}: `licet {name}` has no option {flag}"


def test_every_project_command_exists_with_its_options() -> None:
    commands = project_commands()
    where = {place for place, _ in commands}
    assert {"migrate.command", "api.command"} <= where, commands
    check_cli([(place, [interpolate(a, SHELL_VARIABLES) for a in args]) for place, args in commands])


def test_production_docs_name_real_settings_and_commands() -> None:
    """docs/production.md: every LICET_* variable is a setting, every `licet ...` line a command."""
    text = DOCS.read_text()
    fields = set(Settings.model_fields)
    for name in set(re.findall(r"\bLICET_[A-Z_]+", text)):
        assert name == "LICET_CONFIG" or name.removeprefix("LICET_").lower() in fields, f"{name} is not a setting"
    commands = [line.strip() for line in re.findall(r"^\s*licet .*$", text, re.M)]
    commands += re.findall(r"`(licet [^`]+)`", text.replace("\n", " "))
    assert len(commands) >= 4
    check_cli([(f"docs: {command}", shlex.split(command, comments=True)[1:]) for command in commands])


def test_licet_variables_are_settings() -> None:
    """Every LICET_* a service sets is a field of server.settings.Settings, and its value parses."""
    fields = set(Settings.model_fields)
    checked = 0
    for name, service in load_compose()["services"].items():
        env = {k: interpolate(v, SHELL_VARIABLES) for k, v in environment(service).items()}
        licet_env = {k: v for k, v in env.items() if k.startswith("LICET_")}
        for key in licet_env:
            assert key == "LICET_CONFIG" or key.removeprefix("LICET_").lower() in fields, \
                f"{name}: {key} is not a Licet setting"
        if licet_env:
            saved = {k: v for k, v in os.environ.items() if k.startswith("LICET_")}
            try:
                for key in saved:
                    del os.environ[key]
                os.environ.update(licet_env)
                settings = Settings()
            finally:
                for key in licet_env:
                    os.environ.pop(key, None)
                os.environ.update(saved)
            assert settings.mode == "production" and settings.url.startswith("postgresql+asyncpg://")
            checked += 1
    assert checked >= 2


def test_dockerfile_builds_from_the_lock_and_runs_as_nobody_in_particular() -> None:
    instructions = dockerfile_instructions()
    stages = [args for instruction, args in instructions if instruction == "FROM"]
    assert stages == ["python:3.11-slim AS build", "python:3.11-slim"], "a build stage, then a slim runtime"
    for instruction, args in instructions:
        if instruction in ("COPY", "ADD") and "--from=" not in args:
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "uv sync --frozen" in runs and "uv export --frozen" in runs, "the build follows uv.lock, unchanged"
    assert "--require-hashes -r /wheels/requirements.txt" in runs, "the runtime installs the lock's hashes"
    assert "python -m licet.dashboard.build" in runs, "the image serves a built dashboard"
    runtime = instructions[[i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM"][1]:]
    assert ("USER", "10001") in runtime, "the image should not run as root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "licet-data/", "*.key"} <= set(ignored), "secrets and environments stay out of the build"


def test_production_start_without_a_key_fails_clearly(tmp_path: Path) -> None:
    """Embedded storage, production mode, no key: a start-up error naming the key path, no key made."""
    key = tmp_path / "secrets" / "licet-signing.key"
    result = licet("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                   env=cli_env(LICET_MODE="production", LICET_SIGNING_KEY_FILE=str(key)), timeout=60)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert str(key) in output.replace("\n", ""), output
    assert "licet keygen" in output
    assert not key.exists()


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[dict[str, Any]]:
    """The API service's environment and command, aimed at a fresh PostgreSQL database that the
    migrate service's own command has migrated."""
    name = f"licet_mig_deploy_{worker_id}"
    url = fresh_pg_database(name)
    tmp = tmp_path_factory.mktemp("production")
    services = load_compose()["services"]
    try:
        env: dict[str, dict[str, str]] = {}
        for service in ("migrate", "api"):
            compose_env = {k: interpolate(v, SHELL_VARIABLES) for k, v in environment(services[service]).items()}
            # only what is specific to this machine changes: the database's address and the keys' paths
            assert {"LICET_DATABASE_URL", "LICET_SIGNING_KEY_FILE", "LICET_SECRETS_KEY_FILE"} <= set(compose_env)
            compose_env.update(LICET_DATABASE_URL=url, LICET_SIGNING_KEY_FILE=str(tmp / "secrets" / "signing.key"),
                               LICET_SECRETS_KEY_FILE=str(tmp / "secrets" / "secrets.key"))
            env[service] = cli_env(**compose_env)
        (tmp / "secrets").mkdir()
        sealing = licet("secrets", "keygen", "--out", str(tmp / "secrets" / "secrets.key"))
        assert sealing.returncode == 0, sealing.stdout + sealing.stderr
        migrate = project_argv([interpolate(a, SHELL_VARIABLES) for a in as_argv(services["migrate"]["command"])])
        assert migrate is not None
        started = time.perf_counter()
        result = licet(*migrate, env=env["migrate"], cwd=tmp)
        assert result.returncode == 0, result.stdout + result.stderr
        yield {"url": url, "tmp": tmp, "env": env, "key": tmp / "secrets" / "signing.key",
               "migrate_seconds": time.perf_counter() - started}
    finally:
        drop_pg_database(name)


def api_argv(port: int) -> list[str]:
    """The API service's command, listening on 127.0.0.1:`port` instead of 0.0.0.0:8000."""
    args = project_argv([interpolate(a, SHELL_VARIABLES) for a in as_argv(load_compose()["services"]["api"]["command"])])
    assert args is not None
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        args[args.index(flag) + 1] = value
    return args


def test_production_api_without_a_key_fails_clearly(production: dict[str, Any]) -> None:
    key: Path = production["key"]
    assert not key.exists()
    result = licet(*api_argv(free_port()), env=production["env"]["api"], cwd=production["tmp"], timeout=60)
    assert result.returncode != 0
    output = (result.stdout + result.stderr).replace("\n", "")
    assert str(key) in output, output
    assert not key.exists(), "production mode must never create its own key"


def test_production_api_starts_with_a_generated_key(production: dict[str, Any]) -> None:
    tmp: Path = production["tmp"]
    key: Path = production["key"]
    key.parent.mkdir(exist_ok=True)
    made = licet("keygen", "--out", str(key), "--json")
    assert made.returncode == 0, made.stdout + made.stderr
    public = json.loads(made.stdout)
    assert key.stat().st_mode & 0o777 == 0o600

    env = production["env"]["api"]
    created = licet("tenant", "create", "acme", "--name", "Acme", "--owner-email", "Root@Acme.example", env=env, cwd=tmp)
    assert created.returncode == 0, created.stdout + created.stderr
    printed = created.stdout.strip().splitlines()
    owner_key, invitation = printed[1].strip(), printed[-1].strip()
    assert owner_key.startswith("licet_") and invitation != owner_key, printed

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out, err = (tmp / "api.stdout").open("wb"), (tmp / "api.stderr").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "licet", *api_argv(port)], env=env, cwd=tmp,
                               stdout=out, stderr=err, start_new_session=True)
    try:
        wait_until_ready(process, base, lambda: (tmp / "api.stdout").read_text() + (tmp / "api.stderr").read_text())
        ready_seconds = time.perf_counter() - started

        # the service's own healthcheck command, aimed at this port
        test = load_compose()["services"]["api"]["healthcheck"]["test"]
        argv = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in test[1:]]
        if Path(argv[0]).name.startswith("python"):
            argv[0] = sys.executable
        assert subprocess.run(argv, timeout=30).returncode == 0

        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert "licet_http_request_seconds" in httpx.get(f"{base}/metrics").text
        # the key it signs with is the generated one; the tenant made by `licet tenant create` is served
        for _ in range(4):  # several requests, so more than one worker answers
            reply = httpx.get(f"{base}/v1/evidence/keys", headers={"Authorization": f"Bearer {owner_key}"})
            assert reply.status_code == 200, reply.text
            assert [k["key_id"] for k in reply.json()["certificate_keys"]] == [public["key_id"]]
        assert httpx.get(f"{base}/v1/evidence/keys").status_code == 401
        # the first owner signs in through the invitation `tenant create` printed, once
        accept = {"token": invitation, "password": "correct horse battery staple 42"}
        accepted = httpx.post(f"{base}/v1/auth/invitations/accept", json=accept)
        assert accepted.status_code == 201, accepted.text
        me = httpx.get(f"{base}/v1/auth/me", headers={"Authorization": f"Bearer {accepted.json()['token']}"}).json()
        assert (me["user"]["email"], me["user"]["role"], me["tenant"]) == ("root@acme.example", "owner", "acme")
        assert httpx.post(f"{base}/v1/auth/invitations/accept", json=accept).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        out.close()
        err.close()
    logs = (tmp / "api.stdout").read_text() + (tmp / "api.stderr").read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and line.get("route") == "/readyz" for line in lines), logs
    print(f"migrate {production['migrate_seconds']:.2f}s, ready after {ready_seconds:.2f}s")
