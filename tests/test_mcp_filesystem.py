"""The governance proxy in front of the real npm filesystem server (`@modelcontextprotocol/server-filesystem`,
the README's own example): the proxy decides on the path the upstream will really open. Symbolic links
(to a file, to a directory) and a second Unicode spelling of a forbidden directory must not turn a
forbidden read into a permitted one; a link that cannot be resolved is refused."""

from __future__ import annotations

import asyncio
import os
import shlex
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from mcp_types import CallToolResult

from tests.node_clients import filesystem_server
from tests.server_harness import Tenant
from tests.test_mcp_proxy import certificate, proxy_session, text

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

READS = "[mcp.files.read_text_file, mcp.files.list_directory, mcp.files.get_file_info]"


def policy(root: Path) -> str:
    """Reads permitted under ROOT/public, forbidden under ROOT/secret and ROOT/public/privé (NFC)."""
    prive = unicodedata.normalize("NFC", "privé")
    return f"""\
id: files
version: 1
rules:
  - {{id: public-reads, effect: permit, action: {READS}, resource: ["{root}/public/**"]}}
  - {{id: no-secrets, effect: forbid, action: {READS}, resource: ["{root}/secret/**"]}}
  - {{id: no-prive, effect: forbid, action: {READS}, resource: ["{root}/public/{prive}/**"]}}
  - {{id: ask-first, effect: require_approval, action: {READS}, resource: ["{root}/public/ask/**"]}}
"""


def tree(root: Path) -> Path:
    """ROOT/{public,secret} with the links and spellings the tests use; returns ROOT."""
    (root / "public" / "ask").mkdir(parents=True)
    (root / "secret").mkdir()
    (root / "public" / "hello.txt").write_text("hello, world")
    (root / "public" / "ask" / "plan.txt").write_text("the plan")
    (root / "secret" / "s.txt").write_text("TOP SECRET")
    prive = root / "public" / unicodedata.normalize("NFC", "privé")
    prive.mkdir()
    (prive / "p.txt").write_text("PRIVATE")
    os.symlink("../secret/s.txt", root / "public" / "link.txt")
    os.symlink("../secret", root / "public" / "secretdir")
    os.symlink("../secret/gone.txt", root / "public" / "dangling.txt")
    os.symlink("loop-b", root / "public" / "loop-a")
    os.symlink("loop-a", root / "public" / "loop-b")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tree(tmp_path.resolve() / "root")


@pytest.fixture
def files(server: Any, root: Path) -> Tenant:
    made = server.new_tenant()
    made.activate(policy(root))
    return made


def files_proxy(tenant: Tenant, root: Path, *options: str) -> Any:
    """`licet mcp proxy` over the npm filesystem server on ROOT, resources from `path`."""
    return proxy_session(tenant.server.url, tenant.key(), "--name", "files", "--upstream",
                         shlex.join(filesystem_server(root)), "--resource-arg", "path", *options)


def refused(result: CallToolResult, rule: str) -> None:
    """A refusal by `rule` that the upstream never saw."""
    assert result.is_error, text(result)
    assert rule in text(result) and "SECRET" not in text(result) and "PRIVATE" not in text(result)
    assert result.meta is not None and result.meta["licet/forwarded"] is False, result.meta


def test_symlinks_are_decided_on_their_real_path(files: Tenant, root: Path) -> None:
    async def run() -> None:
        async with files_proxy(files, root) as session:
            hello = await session.call_tool("read_text_file", {"path": f"{root}/public/hello.txt"})
            assert not hello.is_error and "hello, world" in text(hello)
            # a file link and a directory link into ROOT/secret: forbidden like the secret itself
            refused(await session.call_tool("read_text_file", {"path": f"{root}/public/link.txt"}), "no-secrets")
            refused(await session.call_tool("read_text_file", {"path": f"{root}/public/secretdir/s.txt"}),
                    "no-secrets")
            refused(await session.call_tool("list_directory", {"path": f"{root}/public/secretdir"}), "no-secrets")
            # the lexical forms of the same tricks
            refused(await session.call_tool("read_text_file", {"path": f"{root}/public/./secretdir//s.txt"}),
                    "no-secrets")
            # the certificate of the refusal records both paths: the resource decided (the real path)
            # and the call's arguments as sent (the literal path)
            link = await session.call_tool("read_text_file", {"path": f"{root}/public/link.txt"})
            assert link.meta is not None
            recorded = certificate(files, link.meta["licet/certificate_id"])["request"]
            assert recorded["resource"] == f"{root}/secret/s.txt"
            assert recorded["args"]["path"] == f"{root}/public/link.txt"
            assert link.meta["licet/resolved_paths"] == [f"{root}/secret/s.txt"]

    asyncio.run(run())


def test_unresolvable_links_are_refused(files: Tenant, root: Path) -> None:
    async def run() -> None:
        async with files_proxy(files, root) as session:
            for name in ("dangling.txt", "loop-a"):
                result = await session.call_tool("read_text_file", {"path": f"{root}/public/{name}"})
                assert result.is_error and result.meta is not None, text(result)
                assert result.meta["licet/status"] == "refused" and result.meta["licet/forwarded"] is False
                assert "resolve" in text(result) and name in text(result)

    asyncio.run(run())


def test_nfd_spelling_of_a_forbidden_directory_resolves_to_it(files: Tenant, root: Path) -> None:
    nfd = unicodedata.normalize("NFD", "privé")

    async def run() -> None:
        async with files_proxy(files, root) as session:
            refused(await session.call_tool("read_text_file", {"path": f"{root}/public/{nfd}/p.txt"}), "no-prive")

    asyncio.run(run())


# Without --resolve-paths only the kernel's NFC normalisation of resources (issue 15) stops this one
# (it failed before that change).
def test_nfd_spelling_without_path_resolution_needs_the_kernel_nfc(files: Tenant, root: Path) -> None:
    nfd = unicodedata.normalize("NFD", "privé")

    async def run() -> None:
        async with files_proxy(files, root, "--no-resolve-paths") as session:
            result = await session.call_tool("read_text_file", {"path": f"{root}/public/{nfd}/p.txt"})
            assert result.is_error and "no-prive" in text(result) and "PRIVATE" not in text(result), text(result)

    asyncio.run(run())
