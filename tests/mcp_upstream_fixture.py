"""A small real MCP server (official SDK, `MCPServer`) used as the governed upstream in proxy tests
and in bench/sdk_mcp.py. Every tool call is appended as one JSON line to the `--log` file, so a test
can prove which calls reached it.

    python tests/mcp_upstream_fixture.py --log calls.jsonl                 # stdio
    python tests/mcp_upstream_fixture.py --log calls.jsonl --http --port N # streamable HTTP at /mcp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mcp.server import MCPServer


def build(log: Path | None) -> MCPServer:
    """The fixture server; calls are recorded to `log` (if given) before they answer."""
    server = MCPServer("upstream-fixture", instructions="A toy file and payments server for tests.")

    def record(tool: str, arguments: dict[str, Any]) -> None:
        if log is not None:
            with log.open("a") as out:
                out.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")

    @server.tool(description="Read a file.")
    def read_file(path: str) -> str:
        record("read_file", {"path": path})
        return f"contents of {path}"

    @server.tool(description="Delete a file.")
    def delete_file(path: str) -> str:
        record("delete_file", {"path": path})
        return f"deleted {path}"

    @server.tool(description="Send money.")
    def transfer(amount: float, currency: str) -> dict[str, Any]:
        record("transfer", {"amount": amount, "currency": currency})
        return {"sent": amount, "currency": currency}

    @server.tool(description="Echo a text back.")
    def echo(text: str) -> str:
        record("echo", {"text": text})
        return text

    @server.tool(description="Stop everything.")
    def shutdown() -> str:
        record("shutdown", {})
        return "stopped"

    @server.tool(description="An administrator's tool.")
    def admin_reset(confirm: bool) -> str:
        record("admin_reset", {"confirm": confirm})
        return "reset"

    return server


def main() -> None:
    """Serve over stdio, or streamable HTTP with `--http`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    server = build(options.log)
    if options.http:
        server.run("streamable-http", host="127.0.0.1", port=options.port, stateless_http=True, json_response=True)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
