"""Official MCP clients nobody here wrote, in front of the governance proxy and the real npm filesystem
server: the MCP Inspector's CLI (`@modelcontextprotocol/inspector --cli`, one proxy process per call)
and the TypeScript SDK's `Client` (tests/node/sdk_client.mjs). Both check a result's
`structuredContent` against the tool's `outputSchema`, even on errors: a refusal and a pending
approval must reach them as the tool's error text with the rule and the ids, and a permit as the
upstream's result. Then the same clients against Licet's own MCP server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.node_clients import filesystem_server, modules, node, node_env
from tests.server_harness import Tenant
from tests.test_mcp_filesystem import policy, tree

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@pytest.fixture
def setup(server: Any, tmp_path: Path) -> tuple[Tenant, Path, str]:
    """A tenant with the filesystem policy active, the file tree, and an agent key."""
    root = tree(tmp_path.resolve() / "root")
    tenant = server.new_tenant()
    tenant.activate(policy(root))
    return tenant, root, tenant.key()


def proxy_command(root: Path) -> list[str]:
    """`licet mcp proxy` over the npm filesystem server on `root`, as an agent would start it."""
    return [sys.executable, "-m", "licet", "mcp", "proxy", "--name", "files", "--upstream",
            " ".join(filesystem_server(root)), "--resource-arg", "path"]


def proxy_env(tenant: Tenant, key: str) -> dict[str, str]:
    return {"LICET_URL": tenant.server.url, "LICET_API_KEY": key, "PYTHONPATH": str(ROOT),
            "PATH": node_env()["PATH"]}


def inspector(command: list[str], env: dict[str, str], *method: str) -> tuple[int, str]:
    """One Inspector CLI run (`--cli <command> --method ...`): its exit status and what it printed."""
    script = modules() / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
    env_args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    done = subprocess.run([node(), str(script), "--cli", *env_args, "--cwd", str(ROOT), *method, "--", *command],
                          env=node_env(), capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def sdk_client(command: list[str], env: dict[str, str], calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The TypeScript SDK Client's view: the listed tool names, then per call its result or error."""
    spec = {"modules": str(modules()), "command": command[0], "args": command[1:], "env": env, "cwd": str(ROOT),
            "calls": [{"name": name, "arguments": arguments} for name, arguments in calls]}
    done = subprocess.run([node(), str(ROOT / "tests" / "node" / "sdk_client.mjs"), json.dumps(spec)],
                          env=node_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result["content"])


def test_typescript_sdk_client_reads_refusals_and_pending_approvals(setup: tuple[Tenant, Path, str]) -> None:
    tenant, root, key = setup
    listed, permit, forbid, pending = sdk_client(proxy_command(root), proxy_env(tenant, key), [
        ("read_text_file", {"path": f"{root}/public/hello.txt"}),
        ("read_text_file", {"path": f"{root}/secret/s.txt"}),
        ("read_text_file", {"path": f"{root}/public/ask/plan.txt"})])
    assert {"read_text_file", "list_directory"} <= set(listed["tools"])
    assert "result" in forbid, forbid  # not "MCP error -32602: Structured content does not match ..."
    refused = forbid["result"]
    assert refused["isError"] is True and "structuredContent" not in refused
    assert "no-secrets" in text(refused) and refused["_meta"]["licet/certificate_id"] in text(refused)
    assert refused["_meta"]["licet/status"] == "forbidden" and "TOP SECRET" not in json.dumps(refused)

    assert "result" in pending, pending
    waiting = pending["result"]
    assert waiting["isError"] is True and waiting["_meta"]["licet/status"] == "pending_approval"
    approval = waiting["_meta"]["licet/approval_id"]
    assert approval and approval in text(waiting) and "ask-first" in text(waiting)
    assert waiting["_meta"]["licet/certificate_id"] in text(waiting)

    assert "result" in permit, permit
    assert permit["result"]["structuredContent"] == {"content": "hello, world"}
    assert permit["result"]["_meta"]["licet/forwarded"] is True


def test_inspector_cli_reads_refusals_and_pending_approvals(setup: tuple[Tenant, Path, str]) -> None:
    tenant, root, key = setup
    command, env = proxy_command(root), proxy_env(tenant, key)

    def call(path: str) -> tuple[int, str]:
        return inspector(command, env, "--method", "tools/call", "--tool-name", "read_text_file",
                         "--tool-arg", f"path={path}")

    status, shown = call(f"{root}/public/hello.txt")
    assert status == 0 and "hello, world" in shown, shown

    status, shown = call(f"{root}/secret/s.txt")
    assert "no-secrets" in shown and "Forbidden by Licet" in shown, shown
    assert "TOP SECRET" not in shown and "does not match" not in shown.lower()
    assert "licet/certificate_id" in shown

    status, shown = call(f"{root}/public/ask/plan.txt")
    assert "Pending approval" in shown and "ask-first" in shown and "licet/approval_id" in shown, shown
    assert "does not match" not in shown.lower() and "the plan" not in shown
