"""Licet as others install it: the wheels of every distribution built from this checkout, the SDK
installed alone into a fresh environment (an agent and an offline verification run there, against a
live server), and the full set installed from the wheels serving the demo with its dashboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.server_harness import IN_CI, Tenant, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
HEAVY = ("z3-solver", "fastapi", "sqlalchemy", "celery", "reflex", "lark", "pyyaml", "mypy", "typer", "mcp")

if not UV.exists():
    if IN_CI:
        raise RuntimeError("uv is missing from the environment: scripts/setup --dev installs it")
    pytest.skip("uv is not installed", allow_module_level=True)


def _uv(*args: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(UV), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    _uv("build", "--all-packages", "--wheel", "--quiet", "-o", out)
    return out


def _environment(where: Path, wheels: Path, *requirements: str) -> Path:
    """A fresh virtual environment at `where` with `requirements` installed from `wheels` (and PyPI);
    its Python."""
    _uv("venv", "--quiet", "--python", sys.executable, where)
    python = where / "bin" / "python"
    _uv("pip", "install", "--quiet", "--python", python, "--find-links", wheels, *requirements)
    return python


def _installed(python: Path) -> dict[str, list[str]]:
    """Each installed distribution's top-level import names."""
    script = """
import json, importlib.metadata as m
found = {}
for d in m.distributions():
    tops = {f.parts[0].removesuffix('.py') for f in (d.files or []) if f.parts and not f.parts[0].endswith(
        ('.dist-info', '.data', '.pth')) and f.parts[0] not in ('..', 'bin', '__pycache__')}
    found[d.metadata['Name'].lower()] = sorted(tops)
print(json.dumps(found))
"""
    return dict(json.loads(subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True,
                                          check=True).stdout))


@pytest.fixture(scope="module")
def sdk_python(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _environment(tmp_path_factory.mktemp("sdk-env") / "venv", wheels, "licet-sdk")


def test_licets_distributions_install_only_the_licet_namespace(wheels: Path, sdk_python: Path) -> None:
    names = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert names == ["licet", "licet_dashboard", "licet_kernel", "licet_mcp", "licet_migrations", "licet_sdk",
                     "licet_server"]
    installed = _installed(sdk_python)
    ours = {name: tops for name, tops in installed.items() if name.startswith("licet")}
    assert set(ours) == {"licet-sdk", "licet-kernel"}
    assert all(tops == ["licet"] for tops in ours.values()), ours
    assert not [heavy for heavy in HEAVY if heavy in installed], "the SDK alone installs light"


AGENT = """
import json, sys
from licet.sdk import Agent, LicetClient, verified, verify_bundle, verify_certificate
from licet.kernel.note import parse_verifier_key
from licet.kernel.keys import parse_public_key

url, key = sys.argv[1:3]
with LicetClient(url, key) as client:
    agent = Agent(client)

    @agent.tool(action="payments.transfer", resource="/accounts/{account}")
    def transfer(account: str, amount: int, currency: str = "EUR") -> str:
        return f"sent {amount}"

    result = transfer("acc-1", 100)
    certificate = agent.last_certificate
    published = client.evidence_keys()
    keys = [parse_public_key(json.dumps(k)) for k in published["certificate_keys"]]
    log_key = parse_verifier_key(published["log"]["verifier_key"])
    bundle = client.proof(certificate["id"])["bundle"]
    forged = json.loads(json.dumps(certificate))
    forged["request"]["args"]["amount"] = 1
    print(json.dumps({"result": result,
                      "certificate": verified(verify_certificate(certificate, keys)),
                      "bundle": verified(verify_bundle(certificate, bundle, [log_key],
                                                       origin=published["log"]["origin"])),
                      "forged": verified(verify_certificate(forged, keys)),
                      "solver_loaded": "z3" in sys.modules}))
"""


def test_the_sdk_alone_runs_an_agent_and_verifies_offline(tenant: Tenant, sdk_python: Path) -> None:
    key = tenant.key("agent", "agent:packaged", ["ops"])
    done = subprocess.run([str(sdk_python), "-I", "-c", AGENT, tenant.server.url, key], capture_output=True,
                          text=True, timeout=120, cwd=sdk_python.parent)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"result": "sent 100", "certificate": True, "bundle": True,
                                       "forged": False, "solver_loaded": False}


def test_the_full_set_from_wheels_serves_the_demo_with_its_dashboard(wheels: Path,
                                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("full-env")
    python = _environment(work / "venv", wheels, "licet")
    assert all(tops == ["licet"] for name, tops in _installed(python).items() if name.startswith("licet"))
    port = free_port()
    elsewhere = work / "elsewhere"  # not the checkout: nothing may be read from it
    elsewhere.mkdir()
    log = work / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICET_")}
    process = subprocess.Popen([str(work / "venv" / "bin" / "licet"), "serve", "--demo", "--port", str(port)],
                               cwd=elsewhere, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, url, log.read_text)
        seeded = json.loads((elsewhere / "licet-data" / "demo-keys.json").read_text())
        page = httpx.get(f"{url}/login/", timeout=10)
        assert page.status_code == 200 and "Sign in · Licet" in page.text
        assert "window.licet" in httpx.get(f"{url}/licet.js", timeout=10).text
        decided = httpx.post(f"{url}/v1/decide", headers={"authorization": f"Bearer {seeded['agent_key']}"},
                             json={"action": "payments.read", "resource": "/accounts/acc-001/statements/2025-05"},
                             timeout=30)
        assert decided.status_code == 200 and decided.json()["decision"] == "permit"
        assert httpx.get(f"{url}/v1/approvals", headers={"authorization": f"Bearer {seeded['owner_key']}"},
                         params={"state": "pending"}, timeout=10).json()["approvals"], "the demo has a pending approval"
    finally:
        process.terminate()
        process.wait(10)
