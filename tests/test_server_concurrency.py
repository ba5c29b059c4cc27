"""200 concurrent decisions at one tenant, then an audit of its evidence log: every certificate is
in the log exactly once, the log's root matches a signed checkpoint, and every inclusion proof
verifies. On SQLite and PostgreSQL. And two worker processes sharing a PostgreSQL log, one of them
rolling an append back, keep one consistent tree."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from licet import kernel
from licet.kernel.bundle import verify_bundle
from licet.kernel.checkpoint import parse_checkpoint
from licet.kernel.log import MemoryLogStore, TransparencyLog, audit_log
from licet.kernel.merkle import tree_hash
from licet.kernel.note import parse_verifier_key
from licet.kernel.report import all_ok
from licet.server.logstore import DatabaseLogStore, lock_head
from licet.server.migrations import upgrade_async
from licet.server.services import Services
from licet.server.settings import Settings
from licet.server.tenants import create_tenant
from tests.server_harness import Tenant, certificate_keys, pg_database

CONCURRENT = 200


async def _fire(url: str, keys: list[str]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(i: int) -> dict[str, Any]:
            reply = await client.post("/v1/decide", headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                                      json={"action": "api.read", "resource": f"/api/items/{i}"})
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))


def test_concurrent_decisions_never_fork_the_log(tenant: Tenant) -> None:
    keys = [tenant.key(principal_id=f"agent:{n}", roles=["ops"]) for n in range(4)]
    results = asyncio.run(_fire(tenant.server.url, keys))
    ids = [r["certificate_id"] for r in results]
    assert len(set(ids)) == CONCURRENT
    assert sorted(r["log_index"] for r in results) == list(range(CONCURRENT))

    with tenant.owner_session() as owner:
        entries: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None:
            page = owner.get("/v1/evidence/entries", params={"start": start, "limit": 64}).json()
            entries += page["entries"]
            start = page["next_start"]
        logged = [e["certificate"]["id"] for e in entries]
        assert sorted(logged) == sorted(ids) and len(logged) == len(set(logged))

        published = certificate_keys(owner)
        log_info = owner.get("/v1/evidence/keys").json()["log"]
        verifier = parse_verifier_key(log_info["verifier_key"])
        checkpoint = owner.get("/v1/evidence/checkpoint").json()
        assert checkpoint["size"] == CONCURRENT

        # Recompute the whole tree from the certificates themselves and compare with the signed root.
        rebuilt = TransparencyLog(MemoryLogStore(), log_info["origin"])
        rebuilt.append_many([kernel.certificate_leaf(e["certificate"]) for e in entries])
        assert rebuilt.root() == parse_checkpoint(checkpoint["note"]).root_hash

        for entry in entries:
            certificate = entry["certificate"]
            assert all_ok(kernel.verify_certificate(certificate, published))
            bundle = owner.get(f"/v1/certificates/{certificate['id']}/proof").json()["bundle"]
            assert all_ok(verify_bundle(certificate, bundle, [verifier], origin=log_info["origin"]))


class _RolledBack(Exception):
    """Raised inside a write transaction to roll it back."""


def test_a_rolled_back_append_never_corrupts_another_workers_log(tmp_path: Path) -> None:
    # Two server processes on one PostgreSQL database: worker A appends and rolls back, worker B
    # appends an entry at the same index, then A appends twice more. A border A kept from its rolled-back
    # transaction describes a size the log has reached with different content: A must not use it.
    with pg_database("licet_log_workers") as url:
        asyncio.run(_two_workers(url, tmp_path))


async def _two_workers(url: str, tmp_path: Path) -> None:
    await upgrade_async(url)
    workers = [Services(Settings(data_dir=tmp_path, database_url=url)) for _ in range(2)]
    a, b = workers
    try:
        await create_tenant(a, "acme", "Acme")

        def append(session: Session, services: Services, leaf: bytes, *, roll_back: bool = False) -> int:
            connection = session.connection()
            store = DatabaseLogStore(connection, "acme", lock_head(connection, "acme"))
            index = services.transparency_log(store).append(leaf)
            if roll_back:
                raise _RolledBack
            return index

        assert await a.db.run_write(append, a, b"first") == 0
        with pytest.raises(_RolledBack):
            await a.db.run_write(functools.partial(append, roll_back=True), a, b"rolled back")
        assert await b.db.run_write(append, b, b"second") == 1
        assert await a.db.run_write(append, a, b"third") == 2
        assert await a.db.run_write(append, a, b"fourth") == 3  # completes the subtree over entries 0-3

        async with a.db.read() as session:
            report = await session.run_sync(lambda s: audit_log(DatabaseLogStore(s.connection(), "acme")))
        assert report.ok, report.problems
        assert report.root_hash == tree_hash([b"first", b"second", b"third", b"fourth"])
    finally:
        for services in workers:
            await services.db.dispose()
