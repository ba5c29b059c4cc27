"""The decisions and audit explorer's API: filters, keyset pages, and streamed CSV/JSONL exports that
hold exactly what the listing of the same filter holds (over real HTTP, SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.server_harness import Server, Tenant

TRANSFER = {"action": "payments.transfer", "resource": "/accounts/1"}


def _decide(client: httpx.Client, action: str, resource: str, **args: Any) -> dict[str, Any]:
    reply = client.post("/v1/decide", json={"action": action, "resource": resource, "args": args})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _all_pages(client: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    items, before = [], None
    while True:
        reply = client.get(path, params={**params, "limit": 2, **({"before": before} if before is not None else {})})
        assert reply.status_code == 200, reply.text
        items += reply.json()[key]
        before = reply.json()["next_before"]
        if before is None:
            return items


def _traffic(tenant: Tenant) -> tuple[str, str]:
    """Two agents' decisions of every outcome; their keys."""
    one, two = tenant.key("agent", "agent:one", ["ops"]), tenant.key("agent", "agent:two", ["ops"])
    with tenant.server.client(one) as a, tenant.server.client(two) as b:
        _decide(a, **TRANSFER, amount=10, currency="EUR")          # permit: transfer
        _decide(a, **TRANSFER, amount=2000, currency="EUR")        # require_approval: large-transfer
        _decide(b, "db.delete", "/prod/x")                          # forbid: no-prod-delete
        _decide(b, "db.delete", "/scratch/x")                       # permit: delete-scratch
        _decide(b, "api.read", "/api/x")                            # deny (role/mfa)
        _decide(a, **TRANSFER, amount=20, currency="USD")          # permit: transfer
    return one, two


def test_filters_and_pages_find_exactly_the_matching_decisions(server: Server, tenant: Tenant) -> None:
    one, _ = _traffic(tenant)
    with tenant.owner() as owner:
        everything = _all_pages(owner, "/v1/certificates", "certificates")
        assert len(everything) == 6
        assert [c["log_index"] for c in everything] == sorted((c["log_index"] for c in everything), reverse=True)
        cases: list[tuple[dict[str, Any], Any]] = [
            ({"outcome": "permit"}, lambda c: c["decision"] == "permit"),
            ({"principal": "agent:two"}, lambda c: c["principal_id"] == "agent:two"),
            ({"action": "db.*"}, lambda c: c["action"].startswith("db.")),
            ({"action": "payments.transfer"}, lambda c: c["action"] == "payments.transfer"),
            ({"rule": "transfer"}, lambda c: "transfer" in c["rules"]),
            ({"rule": "large-transfer"}, lambda c: "large-transfer" in c["rules"]),
            ({"outcome": "permit", "principal": "agent:one"},
             lambda c: c["decision"] == "permit" and c["principal_id"] == "agent:one"),
            ({"action": "db_delete"}, lambda c: False),  # LIKE's `_` is not a wildcard here
        ]
        for params, wanted in cases:
            found = _all_pages(owner, "/v1/certificates", "certificates", **params)
            assert found == [c for c in everything if wanted(c)], params
        assert {c["decision"] for c in everything} == {"permit", "forbid", "deny", "require_approval"}
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert _all_pages(owner, "/v1/certificates", "certificates", since=future) == []
        assert len(_all_pages(owner, "/v1/certificates", "certificates", until=future)) == 6
    with tenant.server.client(one) as agent:  # an agent sees its own decisions only, whatever it asks
        mine = _all_pages(agent, "/v1/certificates", "certificates", principal="agent:two")
        assert mine == []
        assert {c["principal_id"] for c in _all_pages(agent, "/v1/certificates", "certificates")} == {"agent:one"}


def test_exports_hold_exactly_the_listing_of_the_same_filter(server: Server, tenant: Tenant) -> None:
    one, _ = _traffic(tenant)
    with tenant.owner() as owner:
        for params in ({}, {"outcome": "permit"}, {"action": "db.*"}, {"rule": "transfer"}):
            listing = _all_pages(owner, "/v1/certificates", "certificates", **params)
            jsonl = owner.get("/v1/certificates/export", params={**params, "format": "jsonl"})
            assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in jsonl.text.splitlines()]
            assert [{k: v for k, v in line.items() if k != "certificate"} for line in lines] == listing
            assert all(line["certificate"]["id"] == line["id"] for line in lines)
            exported = owner.get("/v1/certificates/export", params={**params, "format": "csv"})
            rows = list(csv.DictReader(io.StringIO(exported.text)))
            assert [(int(r["log_index"]), r["id"], r["decision"], r["rules"].split()) for r in rows] == \
                   [(c["log_index"], c["id"], c["decision"], c["rules"]) for c in listing]
    with tenant.server.client(one) as agent:
        lines = agent.get("/v1/certificates/export").text.splitlines()
        assert lines and {json.loads(line)["principal_id"] for line in lines} == {"agent:one"}


def test_exports_are_scoped_to_the_callers_tenant(server: Server, tenant: Tenant) -> None:
    _traffic(tenant)
    other = server.new_tenant()
    with other.owner() as owner:
        assert owner.get("/v1/certificates/export").text == ""
        assert owner.get("/v1/certificates/export", params={"format": "csv"}).text.splitlines() == [
            "log_index,id,issued_at,principal_id,action,decision,rules,request_hash"]
        events = [json.loads(line) for line in owner.get("/v1/audit/export").text.splitlines()]
        assert events and all(tenant.id not in json.dumps(e) for e in events)


def test_audit_filters_and_export(server: Server, tenant: Tenant) -> None:
    tenant.key("agent", "agent:audited")
    with tenant.owner() as owner:
        everything = _all_pages(owner, "/v1/audit", "events")
        assert everything, "creating keys and people is audited"
        keys = _all_pages(owner, "/v1/audit", "events", action="key.*")
        assert keys and keys == [e for e in everything if e["action"].startswith("key.")]
        exported = [json.loads(line) for line in owner.get("/v1/audit/export", params={"action": "key.*"}).text.splitlines()]
        assert exported == keys
        rows = list(csv.DictReader(io.StringIO(owner.get("/v1/audit/export", params={"format": "csv"}).text)))
        assert [int(r["id"]) for r in rows] == [e["id"] for e in everything]
        assert [json.loads(r["details"]) for r in rows] == [e["details"] for e in everything]
