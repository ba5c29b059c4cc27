"""`licet mcp`: the MCP tool server for Claude, Codex and any MCP client, and the governance proxy."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from licet.cli_typer import LicetTyper
from licet.output import fail

mcp_app = LicetTyper(help="Serve Licet to MCP clients (Claude Code, Codex, ...).", no_args_is_help=True)


@mcp_app.command("serve")
def mcp_serve(
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve over stdin/stdout (LICET_API_KEY is the key).")] = False,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP; each request's bearer token is the caller's API key.")
    ] = False,
    host: Annotated[str, typer.Option(metavar="HOST", help="HTTP: interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="HTTP: port to listen on.")] = 8765,
    path: Annotated[str, typer.Option(metavar="ENDPOINT", help="HTTP: endpoint path.")] = "/mcp",
    url: Annotated[str | None, typer.Option(metavar="URL", help="The Licet server (default: $LICET_URL).")] = None,
) -> None:
    """Serve the Licet tools over MCP: --stdio (for a local agent) or --http."""
    if stdio == http:
        raise fail("choose exactly one of --stdio or --http")
    licet_url = url or os.environ.get("LICET_URL", "")
    if not licet_url:
        raise fail("no Licet server: set LICET_URL (e.g. http://127.0.0.1:8000) or pass --url")
    from licet.mcp.transport import run_http, run_stdio

    if stdio:
        api_key = os.environ.get("LICET_API_KEY", "").strip()
        if not api_key:
            raise fail("LICET_API_KEY is not set: the stdio server acts with the agent's own API key")
        run_stdio(licet_url, api_key)
    else:
        run_http(licet_url, host=host, port=port, path=path)


@mcp_app.command("proxy")
def mcp_proxy(
    name: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="The upstream's name in actions and resources (mcp.<name>.<tool>, /mcp/<name>/<tool>)."
        ),
    ],
    upstream: Annotated[
        str | None,
        typer.Option(
            metavar="COMMAND",
            help="The upstream MCP server's command (stdio), "
            'e.g. "npx -y @modelcontextprotocol/server-filesystem /srv".',
        ),
    ] = None,
    upstream_url: Annotated[
        str | None, typer.Option(metavar="URL", help="The upstream's streamable HTTP endpoint.")
    ] = None,
    upstream_header: Annotated[
        list[str] | None, typer.Option(metavar="HEADER", help="HTTP upstream: a header 'Name: value' (repeatable).")
    ] = None,
    action_prefix: Annotated[
        str | None, typer.Option(metavar="PREFIX", help="Prefix of each tool's action (default: mcp.<name>.).")
    ] = None,
    resource_arg: Annotated[
        str | None,
        typer.Option(
            metavar="ARG",
            help="The tool argument that names the resource, for tools declaring it (default: /mcp/<name>/<tool>).",
        ),
    ] = None,
    resolve_paths: Annotated[
        bool | None,
        typer.Option(
            "--resolve-paths/--no-resolve-paths",
            help="Decide path resources on the real path too (symbolic links followed, NFC); a forbid on either "
            "wins (default: on for an --upstream command with --resource-arg, off for --upstream-url).",
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(metavar="URL", help="The Licet server (default: $LICET_URL).")] = None,
) -> None:
    """Put an MCP server behind Licet: list only tools the agent could be permitted, decide every call."""
    if (upstream is None) == (upstream_url is None):
        raise fail("choose exactly one of --upstream (a command) or --upstream-url")
    licet_url = url or os.environ.get("LICET_URL", "")
    if not licet_url:
        raise fail("no Licet server: set LICET_URL (e.g. http://127.0.0.1:8000) or pass --url")
    api_key = os.environ.get("LICET_API_KEY", "").strip()
    if not api_key:
        raise fail("LICET_API_KEY is not set: the proxy decides each call with the agent's own API key")
    headers: dict[str, str] = {}
    for header in upstream_header or []:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise fail(f"--upstream-header {header!r}: expected 'Name: value'")
        headers[key.strip()] = value.strip()
    from licet.mcp.proxy import ToolMapping, run

    try:
        local = upstream is not None and resource_arg is not None
        mapping = ToolMapping(name, action_prefix, resource_arg, local if resolve_paths is None else resolve_paths)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    run(mapping, licet_url, api_key, command=upstream, url=upstream_url, headers=headers)
