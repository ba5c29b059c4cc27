"""Set up and run the ea-agentgate 1.0.1 peer in its own Python 3.13 venv.

ea-agentgate requires Python >= 3.13 and this project runs on 3.11, so the bench keeps it in
`bench/.peers/agentgate-venv` (gitignored), created on first use, and talks to it through
`agentgate_driver.py` over a JSON file and stdout.

ea-agentgate 1.0.1 declares only fastapi, sqlmodel, keyring, ... as dependencies, but importing
its `check_admissibility` path also needs prometheus-client, bcrypt, pyotp, qrcode, z3-solver and
cryptography (they live in its `server` extra, which would pull in presidio, lingua, mcp, ...).
We install exactly those on top.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
VENV = BENCH / ".peers" / "agentgate-venv"
DRIVER = Path(__file__).resolve().parent / "agentgate_driver.py"
REQUIREMENTS = (
    "ea-agentgate==1.0.1",
    "prometheus-client",
    "bcrypt<5",
    "pyotp",
    "qrcode",
    "z3-solver",
    "cryptography",
)
_STAMP = VENV / ".licet-bench-ready"


class PeerUnavailable(RuntimeError):
    """The peer could not be set up or run; the bench skips its column and says why."""


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_python313() -> str | None:
    """A Python >= 3.13 interpreter: $LICET_BENCH_PYTHON313, pyenv's 3.13.0, or python3.13."""
    candidates = [
        os.environ.get("LICET_BENCH_PYTHON313"),
        "/root/.pyenv/versions/3.13.0/bin/python3",
        shutil.which("python3.13"),
        shutil.which("python3.14"),
    ]
    for cand in candidates:
        if cand and Path(cand).exists():
            return cand
    return None


def _env() -> dict[str, str]:
    # ea-agentgate ships a top-level package named `server`, like this repository: run the
    # peer away from the repo (cwd, PYTHONPATH) so ours never shadows its own.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    VENV.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=VENV.parent, env=_env())


def _checked(cmd: list[str], timeout: float) -> None:
    done = _run(cmd, timeout)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)


def ensure_venv(log: Any = print) -> Path:
    """Create the venv and install the peer unless a previous run already did."""
    python = _venv_python()
    wanted = "\n".join(REQUIREMENTS)
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return python
    base = find_python313()
    if base is None:
        raise PeerUnavailable("no Python >= 3.13 found (set LICET_BENCH_PYTHON313)")
    log(f"setting up {VENV.relative_to(BENCH.parent)} with {base} (one-time)...")
    try:
        if not python.exists():
            _checked([base, "-m", "venv", str(VENV)], 300)
        _checked([str(python), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", *REQUIREMENTS], 900)
        _checked([str(python), "-c", "import ea_agentgate.verification, "
                  "server.policy_governance.kernel.solver_engine"], 300)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise PeerUnavailable(f"installing ea-agentgate failed: {' | '.join(tail)}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"installing ea-agentgate failed: {exc}") from exc
    _STAMP.write_text(wanted)
    return python


def run(workload: dict[str, Any], *, mode: str = "enforce", log: Any = print,
        timeout: float = 900) -> dict[str, Any]:
    """Run the driver on `workload` in the peer venv; its parsed JSON report."""
    python = ensure_venv(log)
    path = VENV.parent / "agentgate-workload.json"
    path.write_text(json.dumps(workload))
    try:
        done = _run([str(python), str(DRIVER), str(path), "--mode", mode], timeout)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"agentgate driver timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise PeerUnavailable(f"agentgate driver failed: {' | '.join(tail)}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise PeerUnavailable("agentgate driver printed no JSON report") from exc


if __name__ == "__main__":  # `python bench/peers/agentgate.py` just prepares the venv
    try:
        print(ensure_venv())
    except PeerUnavailable as exc:
        print(f"agentgate unavailable: {exc}", file=sys.stderr)
        sys.exit(1)
