"""200 concurrent decisions at one tenant, then an audit of its evidence log: every certificate is
in the log exactly once, the log's root matches a signed checkpoint, and every inclusion proof
verifies. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

import kernel
from kernel.bundle import verify_bundle
from kernel.checkpoint import parse_checkpoint
from kernel.log import MemoryLogStore, TransparencyLog
from kernel.note import parse_verifier_key
from kernel.report import all_ok
from tests.server_harness import Tenant, certificate_keys

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
