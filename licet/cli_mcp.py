"""`licet mcp`: the MCP tool server for Claude, Codex and any MCP client."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from licet.output import fail

mcp_app = typer.Typer(help="Serve Licet to MCP clients (Claude Code, Codex, ...).", no_args_is_help=True)


@mcp_app.command("serve")
def mcp_serve(
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve over stdin/stdout (LICET_API_KEY is the key).")]
    = False,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP; each request's bearer token is "
                                                      "the caller's API key.")] = False,
    host: Annotated[str, typer.Option(help="HTTP: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port to listen on.")] = 8765,
    path: Annotated[str, typer.Option(help="HTTP: endpoint path.")] = "/mcp",
    url: Annotated[str | None, typer.Option(help="The Licet server (default: $LICET_URL).")] = None,
) -> None:
    """Serve the Licet tools over MCP: --stdio (for a local agent) or --http."""
    if stdio == http:
        raise fail("choose exactly one of --stdio or --http")
    licet_url = url or os.environ.get("LICET_URL", "")
    if not licet_url:
        raise fail("no Licet server: set LICET_URL (e.g. http://127.0.0.1:8000) or pass --url")
    from mcp_server.transport import run_http, run_stdio

    if stdio:
        api_key = os.environ.get("LICET_API_KEY", "").strip()
        if not api_key:
            raise fail("LICET_API_KEY is not set: the stdio server acts with the agent's own API key")
        run_stdio(licet_url, api_key)
    else:
        run_http(licet_url, host=host, port=port, path=path)
