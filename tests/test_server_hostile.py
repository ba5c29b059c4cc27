"""Hostile input over real HTTP, on SQLite and PostgreSQL: oversized bodies, wrong types, unknown and
missing fields, traversal and control characters in resources, malformed policies, non-JSON bodies,
numbers JSON cannot hold, strings the database cannot hold. Each is refused with a clear 4xx and the
error document `{"error": {"code", "message", "field"}}`, never a permit and never a 5xx, and after
each refusal everything the tenant had stored is exactly as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from licet import kernel
from licet.server.settings import Settings
from tests.conftest import PAYMENTS
from tests.server_harness import Server, Tenant

LIMIT: int = Settings.model_fields["max_body_bytes"].default  # the test servers run with the default


def transfer(amount: Any = 1, resource: str = "/accounts/acc-1", **extra: Any) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": resource, "args": {"amount": amount, "currency": "EUR", **extra}}


class Hostile:
    """A tenant with something of everything stored, and clients for its owner and an agent."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.agent_key = tenant.key(principal_id="agent:bot")
        self.owner = tenant.owner_session()
        self.agent = tenant.server.client(self.agent_key)
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert self.agent.post("/v1/decide", json=transfer(5)).json()["decision"] == "permit"
        grant = self.agent.post("/v1/delegations", json={"delegate": "agent:helper", "expires_at": later, "scope": [
            {"id": "s", "effect": "permit", "action": ["payments.transfer"], "when": "args.amount <= 10"}]})
        assert grant.status_code == 201, grant.text
        self.grant_id = grant.json()["grant"]["id"]
        assert self.owner.post("/v1/users", json={"email": "someone@example.com", "display_name": "Someone",
                                                   "role": "auditor"}).status_code == 201
        self.policy_id = self.owner.get("/v1/policies").json()["policies"][0]["id"]
        self.key_id = next(k["id"] for k in self.owner.get("/v1/keys").json()["keys"] if k["role"] == "agent")
        self.refusals = 0

    def stored(self) -> dict[str, Any]:
        """What the tenant has: policies and their versions, keys (and their revocations), users, grants,
        the newest audit event (the trail only grows) and the size of the evidence log."""
        get = self.owner.get
        return {"policies": get("/v1/policies").json(), "policy": get(f"/v1/policies/{self.policy_id}").json(),
                "keys": get("/v1/keys").json(), "users": get("/v1/users").json(),
                "grants": get("/v1/delegations").json(), "audit": get("/v1/audit", params={"limit": 1}).json(),
                "log size": get("/v1/evidence/checkpoint").json()["size"]}

    def refused(self, client: httpx.Client, method: str, path: str, status: int | tuple[int, ...] = 422,
                code: str | None = None, field: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Send a request that must be refused; the error, once nothing stored was seen to change."""
        before = self.stored()
        reply = client.request(method, path, **kwargs)
        error = error_of(reply, status, code)
        if field is not None:
            assert error["field"] == field, (path, error)
        assert self.stored() == before, (path, reply.text)
        self.refusals += 1
        return error

    def close(self) -> None:
        self.owner.close()
        self.agent.close()


def error_of(reply: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict[str, Any]:
    """The error document of `reply`, checked for its status and shape."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert reply.status_code in statuses, (reply.request.method, str(reply.request.url)[:200], reply.text[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert "field" in error and (error["field"] is None or isinstance(error["field"], str)), error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


@pytest.fixture(scope="module")
def hostile(server: Server) -> Iterator[Hostile]:
    # One tenant for the module: every refusal is checked to leave it as it was, so tests can share it.
    tenant = server.new_tenant()
    tenant.activate()
    made = Hostile(tenant)
    yield made
    made.close()


def _raw(body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json"}}


def test_oversized_bodies_are_413_declared_or_streamed(hostile: Hostile) -> None:
    h = hostile
    payload = {"action": "a.b", "resource": "/x", "args": {"pad": ""}}
    payload["args"]["pad"] = "x" * (LIMIT - len(json.dumps(payload)))
    at_limit = json.dumps(payload).encode()
    assert len(at_limit) == LIMIT
    assert h.agent.post("/v1/decide", **_raw(at_limit)).status_code == 200  # the limit itself is allowed
    for client, path in ((h.agent, "/v1/decide"), (h.owner, "/v1/policies"), (h.owner, "/v1/keys"),
                         (h.agent, "/v1/delegations"), (h.agent, "/v1/plans/verify")):
        over = at_limit + b" "
        h.refused(client, "POST", path, 413, "body_too_large", **_raw(over))
        h.refused(client, "POST", path, 413, "body_too_large", **_raw(b"[" + b"1," * (3 * LIMIT) + b"1]"))

        def streamed() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            yield b'{"action": "a.b", "resource": "/x", "args": {"pad": "'
            for _ in range(20):
                yield b"x" * 65536
            yield b'"}}'

        request = client.build_request("POST", path, content=streamed(), headers={"content-type": "application/json"})
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        before = h.stored()
        error_of(client.send(request), 413, "body_too_large")
        assert h.stored() == before


WRONG: list[tuple[str, str, str, Any, str]] = [
    # (who, method, path, body, the field the error names)
    ("agent", "POST", "/v1/decide", {"action": 5, "resource": "/x"}, "action"),
    ("agent", "POST", "/v1/decide", {"action": ["a.b"], "resource": "/x"}, "action"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": ["/x"]}, "resource"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": 7}, "resource"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": "/x", "args": "amount=5"}, "args"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": "/x", "args": [1, 2]}, "args"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": "/x", "delegation": 5}, "delegation"),
    ("agent", "POST", "/v1/decide", {"action": "", "resource": "/x"}, "action"),
    ("agent", "POST", "/v1/decide", {"action": "a.b", "resource": ""}, "resource"),
    ("agent", "POST", "/v1/decide", {"action": "a." + "b" * 300, "resource": "/x"}, "action"),
    ("agent", "POST", "/v1/decide", {"resource": "/x"}, "action"),
    ("agent", "POST", "/v1/decide", {"action": "a.b"}, "resource"),
    ("agent", "POST", "/v1/decide", {**transfer(), "sneaky": True}, "sneaky"),
    ("agent", "POST", "/v1/plans/verify", {"steps": "transfer"}, "steps"),
    ("agent", "POST", "/v1/plans/verify", {"steps": [1]}, "steps.0"),
    ("agent", "POST", "/v1/plans/verify", {}, "steps"),
    ("agent", "POST", "/v1/plans/verify", {"steps": [], "dry_run": True}, "dry_run"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "god", "principal_id": "p"}, "role"),
    ("owner", "POST", "/v1/keys", {"name": "", "role": "agent", "principal_id": "p"}, "name"),
    ("owner", "POST", "/v1/keys", {"name": 5, "role": "agent", "principal_id": "p"}, "name"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent"}, "principal_id"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p", "principal_roles": "ops"},
     "principal_roles"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p", "attributes": ["x"]},
     "attributes"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p", "attributes": {"tenant": "t"}},
     "attributes"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p", "expires_at": "tomorrow"},
     "expires_at"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p",
                                   "expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ("owner", "POST", "/v1/keys", {"name": "k", "role": "agent", "principal_id": "p", "tenant_id": "other"},
     "tenant_id"),
    ("owner", "POST", "/v1/users", {"email": "not-an-email", "display_name": "x", "role": "auditor"}, "email"),
    ("owner", "POST", "/v1/users", {"email": "a@b.c", "display_name": "x"}, "role"),
    ("owner", "POST", "/v1/users", {"email": "a@b.c", "display_name": "x", "role": "auditor", "password": "x"},
     "password"),
    ("owner", "POST", "/v1/policies", {}, "source"),
    ("owner", "POST", "/v1/policies", {"source": 5}, "source"),
    ("owner", "POST", "/v1/policies", {"source": ""}, "source"),
    ("owner", "POST", "/v1/policies", {"source": PAYMENTS, "activate": True}, "activate"),
    ("owner", "POST", "/v1/policies/validate", {"source": ["id: p"]}, "source"),
    ("owner", "POST", "/v1/policies/query", {}, "pattern"),
    ("owner", "POST", "/v1/webhooks", {"url": "http://[::1/x"}, "url"),
    ("owner", "POST", "/v1/webhooks", {"url": "ftp://93.184.216.34/x"}, "url"),
    ("owner", "POST", "/v1/webhooks", {"url": "https://user:secret@93.184.216.34/x"}, "url"),
    ("owner", "POST", "/v1/webhooks", {"url": "https:///x"}, "url"),
    ("owner", "POST", "/v1/policies/query", {"pattern": "anything"}, "pattern"),
    ("owner", "POST", "/v1/policies/rollback", {"reason": 5}, "reason"),
    ("agent", "POST", "/v1/delegations", {"delegate": "d", "scope": []}, "expires_at"),
    ("agent", "POST", "/v1/delegations", {"delegate": "d", "scope": "all", "expires_at": "2099-01-01T00:00:00Z"},
     "scope"),
    ("agent", "POST", "/v1/delegations", {"delegate": "", "scope": [], "expires_at": "2099-01-01T00:00:00Z"},
     "delegate"),
    ("agent", "POST", "/v1/delegations", {"delegate": "d", "scope": [], "expires_at": "2099-01-01T00:00:00Z",
                                          "max_depth": 17}, "max_depth"),
    ("agent", "POST", "/v1/delegations", {"delegate": "d", "scope": [], "expires_at": "2099-01-01T00:00:00Z",
                                          "issuer": "agent:boss"}, "issuer"),
]


@pytest.mark.parametrize("who,method,path,body,field", WRONG, ids=[f"{w[2]}:{w[4]}:{i}" for i, w in enumerate(WRONG)])
def test_wrong_types_unknown_and_missing_fields_are_422_naming_the_field(
        hostile: Hostile, who: str, method: str, path: str, body: Any, field: str) -> None:
    client = hostile.agent if who == "agent" else hostile.owner
    error = hostile.refused(client, method, path, 422, "invalid_input", field, json=body)
    assert error["problems"] and error["problems"][0]["field"] == field


def test_per_object_bodies_and_query_parameters_of_the_wrong_type(hostile: Hostile) -> None:
    h = hostile
    for path, body, field in (
            (f"/v1/policies/{h.policy_id}/versions/1/activate", {"reason": "x" * 501}, "reason"),
            (f"/v1/policies/{h.policy_id}/versions/1/activate", {"reason": "x", "by": "root"}, "by"),
            (f"/v1/policies/{h.policy_id}/diff", {"version": 0}, "version"),
            (f"/v1/policies/{h.policy_id}/diff", {"version": "newest"}, "version"),
            (f"/v1/policies/{h.policy_id}/diff", {"max_examples": 51}, "max_examples"),
            (f"/v1/keys/{h.key_id}/rotate", {"grace_seconds": -1}, "grace_seconds"),
            (f"/v1/keys/{h.key_id}/rotate", {"grace_seconds": "soon"}, "grace_seconds")):
        h.refused(h.owner, "POST", path, 422, "invalid_input", field, json=body)
    for path, params, field in (
            ("/v1/audit", {"limit": 0}, "limit"), ("/v1/audit", {"limit": 501}, "limit"),
            ("/v1/audit", {"before": "last"}, "before"), ("/v1/certificates", {"outcome": "maybe"}, "outcome"),
            ("/v1/certificates", {"before": -1}, "before"), ("/v1/evidence/entries", {"start": -1}, "start"),
            ("/v1/evidence/entries", {"limit": 1001}, "limit"), ("/v1/evidence/consistency", {"second": 1}, "first"),
            ("/v1/evidence/consistency", {"first": "a", "second": 1}, "first")):
        h.refused(h.owner, "GET", path, 422, "invalid_input", field, params=params)
    h.refused(h.owner, "GET", "/v1/evidence/checkpoints/latest", 422, "invalid_input", "size")
    h.refused(h.owner, "GET", f"/v1/policies/{h.policy_id}/versions/first", 422, "invalid_input", "number")


def test_arguments_of_the_wrong_type_are_never_permitted(hostile: Hostile) -> None:
    # Args are typed by the policy, not by the API: a transfer whose amount is not a number cannot
    # satisfy `args.amount <= 10000` nor be summed into the budget, so it is decided (and certified)
    # as not permitted, or refused as invalid, never permitted.
    h = hostile
    for amount in ([1], {"value": 1}, "1", "1e3", True, None, "", [], 2**53, -(2**53) - 1, 1e16, 1.5e308):
        reply = h.agent.post("/v1/decide", json=transfer(amount))
        assert reply.status_code in (200, 422), reply.text
        if reply.status_code == 200:
            assert reply.json()["decision"] in ("forbid", "deny"), (amount, reply.json()["decision"])
        else:
            assert error_of(reply, 422)["field"] in ("args", "args.amount")
    assert h.agent.post("/v1/decide", json=transfer(1)).json()["decision"] == "permit"  # the control


TRAVERSALS = ["/accounts/../../etc", "/accounts/%2e%2e/%2e%2e/etc", "/accounts/%2E%2E/%2E%2E/etc", "/..", "/../x",
              "/accounts/..%2f..%2fetc", "/accounts/%2e%2e%2f%2e%2e%2fetc", "\\..\\..\\etc", "/accounts/..\\..\\..",
              "/./../accounts/acc-1", "..", "../accounts/acc-1", "accounts/acc-1", "/accounts/%ff"]


def test_traversal_above_the_root_is_refused_never_permitted(hostile: Hostile) -> None:
    for resource in TRAVERSALS:
        hostile.refused(hostile.agent, "POST", "/v1/decide", 422, "invalid_request", "resource",
                        json=transfer(1, resource))
        step = hostile.agent.post("/v1/plans/verify", json={"steps": [transfer(1, resource)]})
        assert step.status_code == 422 and step.json()["error"]["field"].endswith("resource"), (resource, step.text)


def test_resources_are_decided_and_certified_in_normalised_form(hostile: Hostile) -> None:
    # Whatever the spelling, what is decided is the normalised path: `..` cannot walk out of a
    # forbidden subtree into a permitted one, nor escape a permitted prefix.
    cases = [("db.delete", "/scratch/../prod/db", "/prod/db", "forbid"),
             ("db.delete", "/scratch/%2e%2e/prod/db", "/prod/db", "forbid"),
             ("db.delete", "\\scratch\\..\\prod\\db", "/prod/db", "forbid"),
             ("db.delete", "/scratch//tmp/./x", "/scratch/tmp/x", "permit"),
             ("payments.transfer", "/prod/../accounts/acc-1", "/accounts/acc-1", "permit"),
             ("payments.transfer", "/accounts/acc-1/../../prod", "/prod", "deny")]
    # Decoded once only, and an escape that survives the one decode is refused (a tool that decodes
    # again would read `/accounts/%2e%2e/x` as `/x`): docs/policy-language.md, "Normalisation".
    hostile.refused(hostile.agent, "POST", "/v1/decide", 422, "invalid_request", "resource",
                    json=transfer(1, "/accounts/%252e%252e/x"))
    for action, resource, normalised, outcome in cases:
        reply = hostile.agent.post("/v1/decide", json={**transfer(1, resource), "action": action})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["certificate"]["request"]["resource"], body["decision"]) == (normalised, outcome), resource


@pytest.mark.parametrize("resource", ["/accounts/a\x00b", "/accounts/a\nb", "/accounts/a\r\nSet-Cookie: x",
                                      "/accounts/\tx", "/accounts/\x1b[31m", "/accounts/a\x7f", "/accounts/a\x85",
                                      "/accounts/a%00", "/accounts/a%0d%0ax", "/accounts/a%7f", "/accounts/a%c2%85"])
def test_control_characters_in_resources_are_refused(hostile: Hostile, resource: str) -> None:
    error = hostile.refused(hostile.agent, "POST", "/v1/decide", 422, "invalid_request", "resource",
                            json=transfer(1, resource))
    assert "control" in error["message"]


BAD_POLICIES: list[tuple[str, str, int | None, str | None]] = [
    # (name, source, line, field)
    ("bad indentation", "id: p\nrules:\n  - id: r\n   effect: permit\n", 4, None),
    ("tab indentation", "id: p\nrules:\n\t- id: r\n", 3, None),
    ("duplicate key", "id: p\nid: q\nrules: []\n", 2, "id"),
    ("duplicate nested key", "id: p\nrules:\n  - id: r\n    effect: permit\n    effect: forbid\n    action: [a.b]\n",
     5, "rules[0].effect"),
    ("json duplicate key", '{"id": "p",\n "id": "q", "rules": []}', 2, "id"),
    ("json syntax", '{"id": "p",\n "rules": [}', 2, None),
    ("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nid: p\nrules: []\n", None, None),
    ("merge key", "id: p\nbase: &b {effect: permit}\nrules:\n  - <<: *b\n    id: r\n    action: [a.b]\n", None, None),
    ("python tag", "id: !!python/object/apply:os.system ['true']\nrules: []\n", 1, "id"),
    ("not a mapping", "- a\n- b\n", 1, None),
    ("a scalar", "just text", 1, None),
    ("blank", "   \n", 1, None),
    ("unknown effect", "id: p\nrules:\n  - id: r\n    action: [a.b]\n    effect: allow\n", 5, "rules[0].effect"),
    ("bad condition", "id: p\nrules:\n  - id: r\n    effect: permit\n    action: [a.b]\n    when: 'args.x <'\n", 6,
     "rules[0].when"),
    ("nested too deeply", "id: p\nrules: " + "[" * 1000 + "]" * 1000 + "\n", 1, None),
    ("json nested too deeply", '{"id": "p", "rules": ' + "[" * 1000 + "]" * 1000 + "}", 1, None),
    ("id too long for the store", f"id: {'p' * 201}\nrules: []\n", 1, "id"),
    ("a NUL character", "id: p\x00\nrules: []\n", 1, None),
    ("a NUL escape in JSON", '{"id": "p\\u0000", "rules": []}', 1, "id"),
]


@pytest.mark.parametrize("name,source,line,field", BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES])
def test_malformed_policies_are_422_with_line_and_column(hostile: Hostile, name: str, source: str, line: int | None,
                                                         field: str | None) -> None:
    for path in ("/v1/policies", "/v1/policies/validate"):
        error = hostile.refused(hostile.owner, "POST", path, 422, "invalid_policy", json={"source": source})
        assert isinstance(error["line"], int) and error["line"] >= 1, error
        assert isinstance(error["column"], int) and error["column"] >= 1, error
        if line is not None:
            assert error["line"] == line, error
        if field is not None:
            assert error["field"] == field, error
        assert error["rendered"].startswith(f"source:{error['line']}:{error['column']}: "), error


def test_non_json_bodies_and_wrong_content_types(hostile: Hostile) -> None:
    h = hostile
    body = json.dumps(transfer()).encode()
    error = h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", "body", **_raw(b'{"action": "a.b",'))
    assert "JSON" in error["message"] and "17" in error["message"]  # where it breaks
    h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", **_raw(b"{'action': 'a.b'}"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"):
        h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", "body", content=body,
                  headers={"content-type": content_type})
    h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", data={"action": "a.b", "resource": "/x"})
    for raw in (b"", b"null", b"[]", b'"decide"', b"42", b"true"):
        h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", **_raw(raw))
    for raw in (b"\xff\xfe\x00garbage", b"\x80", "{\"action\": \"caf\xe9\"}".encode("latin-1")):
        h.refused(h.agent, "POST", "/v1/decide", (400, 422), "invalid_input", **_raw(raw))
    h.refused(h.owner, "POST", "/v1/policies", 422, "invalid_input", content=PAYMENTS.encode(),
              headers={"content-type": "application/yaml"})


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]


def test_numbers_json_cannot_hold_are_refused(hostile: Hostile) -> None:
    h = hostile
    for number in NON_FINITE:
        decide = b'{"action": "payments.transfer", "resource": "/accounts/a", "args": {"amount": %s}}' % number
        assert h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_request", **_raw(decide))["field"] == \
            "args.amount"
        key = b'{"name": "k", "role": "agent", "principal_id": "p", "attributes": {"limit": [1, {"x": %s}]}}' % number
        h.refused(h.owner, "POST", "/v1/keys", 422, "invalid_input", "attributes", **_raw(key))
        grant = (b'{"delegate": "d", "expires_at": "2099-01-01T00:00:00Z", "scope": [{"id": "r", "effect": "permit",'
                 b' "action": ["a.b"], "approval": {"quorum": %s}}]}' % number)
        h.refused(h.agent, "POST", "/v1/delegations", 422, "invalid_input", "scope", **_raw(grant))
        query = b'{"pattern": {"action": "payments.transfer", "when": "args.amount > 1", "x": %s}}' % number
        h.refused(h.owner, "POST", "/v1/policies/query", 422, "invalid_input", "pattern", **_raw(query))
        plan = b'{"steps": [{"action": "payments.transfer", "resource": "/accounts/a", "args": {"amount": %s}}]}' % number
        h.refused(h.agent, "POST", "/v1/plans/verify", 422, "invalid_request", **_raw(plan))
    for amount in (2**53, 10**30, -(10**30)):
        h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_request", "args.amount", json=transfer(amount))
    digits = b'{"action": "payments.transfer", "resource": "/accounts/a", "args": {"amount": ' + b"9" * 5000 + b"}}"
    h.refused(h.agent, "POST", "/v1/decide", (400, 422), "invalid_input", **_raw(digits))


HUGE = [2**31, 2**63, 10**30]


def test_integers_beyond_the_database_columns_are_422(hostile: Hostile) -> None:
    h = hostile
    for n in HUGE:
        h.refused(h.owner, "GET", f"/v1/policies/{h.policy_id}/versions/{n}", 422, "invalid_input", "number")
        h.refused(h.owner, "POST", f"/v1/policies/{h.policy_id}/versions/{n}/activate", 422, "invalid_input",
                  "number", json={})
        h.refused(h.owner, "POST", f"/v1/policies/{h.policy_id}/diff", 422, "invalid_input", "version",
                  json={"version": n})
        h.refused(h.owner, "POST", f"/v1/policies/{h.policy_id}/diff", 422, "invalid_input", "against",
                  json={"against": n})
        h.refused(h.owner, "GET", "/v1/audit", 422, "invalid_input", "before", params={"before": n * 2**32})
        h.refused(h.owner, "GET", "/v1/certificates", 422, "invalid_input", "before", params={"before": n * 2**32})
        h.refused(h.owner, "GET", "/v1/evidence/entries", 422, "invalid_input", "start", params={"start": n * 2**32})
        h.refused(h.owner, "GET", f"/v1/evidence/checkpoints/{n * 2**32}", 422, "invalid_input", "size")
    # The widest values the columns hold are fine: nothing is there.
    assert h.owner.get(f"/v1/policies/{h.policy_id}/versions/{2**31 - 1}").status_code == 404
    assert h.owner.get(f"/v1/evidence/checkpoints/{2**63 - 1}").status_code == 404
    page = h.owner.get("/v1/evidence/entries", params={"start": 2**63 - 1, "limit": 1000})
    assert page.status_code == 200 and page.json()["entries"] == []
    assert h.owner.get("/v1/audit", params={"before": 2**63 - 1}).json()["events"]


def test_version_zero_is_not_the_newest_version(hostile: Hostile) -> None:
    h = hostile
    created = h.owner.post("/v1/policies", json={"source": PAYMENTS.replace("<= 10000", "<= 10")})
    assert created.json()["version"]["number"] == 2
    for number in (0, -1):
        h.refused(h.owner, "GET", f"/v1/policies/{h.policy_id}/versions/{number}", 422, "invalid_input", "number")
        # Activating "version 0" once activated the newest draft.
        h.refused(h.owner, "POST", f"/v1/policies/{h.policy_id}/versions/{number}/activate", 422, "invalid_input",
                  "number", json={})
    assert h.owner.get("/v1/policies").json()["active"]["number"] == 1


def test_idempotency_keys_are_bounded(hostile: Hostile) -> None:
    h = hostile
    h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_input", "idempotency-key", json=transfer(),
              headers={"Idempotency-Key": "k" * 201})
    first = h.agent.post("/v1/decide", json=transfer(2), headers={"Idempotency-Key": "k" * 200})
    again = h.agent.post("/v1/decide", json=transfer(2), headers={"Idempotency-Key": "k" * 200})
    assert first.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["certificate_id"] == first.json()["certificate_id"]
    latin = "cl\xe9-\xff"  # header bytes are Latin-1: still a key like any other
    first = h.agent.post("/v1/decide", json=transfer(3), headers={"Idempotency-Key": latin.encode("latin-1")})
    again = h.agent.post("/v1/decide", json=transfer(3), headers={"Idempotency-Key": latin.encode("latin-1")})
    assert first.status_code == 200 and again.json()["certificate_id"] == first.json()["certificate_id"]


def test_strings_the_database_cannot_hold_are_422_naming_the_field(hostile: Hostile) -> None:
    # PostgreSQL text cannot hold NUL; these were 500s there (and stored as-is on SQLite).
    h = hostile
    later = "2099-01-01T00:00:00Z"
    for who, path, body, field in (
            (h.owner, "/v1/keys", {"name": "a\x00", "role": "agent", "principal_id": "p"}, "name"),
            (h.owner, "/v1/keys", {"name": "a", "role": "agent", "principal_id": "p\x00"}, "principal_id"),
            (h.owner, "/v1/keys", {"name": "a", "role": "agent", "principal_id": "p", "principal_roles": ["\x00"]},
             "principal_roles.0"),
            (h.owner, "/v1/users", {"email": "a\x00@b.c", "display_name": "x", "role": "auditor"}, "email"),
            (h.owner, "/v1/users", {"email": "a@b.c", "display_name": "x\x00", "role": "auditor"}, "display_name"),
            (h.owner, f"/v1/policies/{h.policy_id}/versions/1/activate", {"reason": "\x00"}, "reason"),
            (h.owner, "/v1/policies/rollback", {"reason": "\x00"}, "reason"),
            (h.owner, "/v1/policies/query", {"pattern": {}, "version_id": "\x00"}, "version_id"),
            (h.agent, "/v1/delegations", {"delegate": "d\x00", "scope": [], "expires_at": later}, "delegate"),
            (h.agent, "/v1/delegations", {"delegate": "d", "scope": [], "expires_at": later, "parent": "\x00"},
             "parent"),
            (h.agent, "/v1/decide", {**transfer(), "delegation": "\x00"}, "delegation")):
        error = h.refused(who, "POST", path, 422, "invalid_input", field, json=body)
        assert "NUL" in error["message"], error
    for method, path, field in (("POST", "/v1/keys/%00/revoke", "key_id"), ("POST", "/v1/keys/a%00b/rotate", "key_id"),
                                ("GET", "/v1/policies/%00", "policy_id"),
                                ("GET", "/v1/policies/%00/versions/1", "policy_id"),
                                ("POST", "/v1/policies/%00/diff", "policy_id"),
                                ("POST", "/v1/policies/%00/versions/1/activate", "policy_id"),
                                ("GET", "/v1/certificates/%00", "certificate_id"),
                                ("GET", "/v1/certificates/%00/proof", "certificate_id"),
                                ("POST", "/v1/delegations/%00/revoke", "grant_id")):
        h.refused(h.owner, method, path, 422, "invalid_input", field, json={} if method == "POST" else None)
    # Lower-casing can lengthen an email past what the column holds ('İ' becomes 'i' and a combining dot).
    h.refused(h.owner, "POST", "/v1/users", 422, "invalid_input", "email",
              json={"email": "a@" + "\u0130" * 318, "display_name": "x", "role": "auditor"})


def test_unpaired_surrogates_are_422(hostile: Hostile) -> None:
    # UTF-8 cannot encode them: stored JSON could not be shown again, and the kernel's canonical form
    # rejects them; these were 500s.
    h, s = hostile, "\\ud800"
    later = "2099-01-01T00:00:00Z"
    for who, path, body, field in (
            (h.owner, "/v1/keys", '{"name": "k", "role": "agent", "principal_id": "p", "attributes": {"k": "%s"}}',
             "attributes"),
            (h.owner, "/v1/keys", '{"name": "k", "role": "agent", "principal_id": "p", "attributes": {"%s": 1}}',
             "attributes"),
            (h.owner, "/v1/keys", '{"name": "k", "role": "agent", "principal_id": "p", "principal_roles": ["%s"]}',
             "principal_roles.0"),
            (h.owner, "/v1/policies/query", '{"pattern": {"resource": "/%s"}}', "pattern"),
            (h.agent, "/v1/delegations", '{"delegate": "d", "expires_at": "' + later + '", "scope": [{"id": "r", '
             '"effect": "permit", "action": ["a.b"], "description": "%s"}]}', "scope"),
            (h.agent, "/v1/decide", '{"action": "payments.transfer", "resource": "/accounts/a", "args": {"%s": 1}}',
             "args"),
            (h.agent, "/v1/plans/verify", '{"steps": [{"action": "payments.transfer", "resource": "/accounts/a", '
             '"args": {"amount": 1, "currency": "EUR", "%s": 1}}]}', "steps"),
            (h.owner, "/v1/keys", '{"name": "%s", "role": "agent", "principal_id": "p"}', "name")):
        error = h.refused(who, "POST", path, 422, "invalid_input", field, **_raw((body % s).encode()))
        assert "nicode" in error["message"], error
    h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_request", "args.currency",
              **_raw(b'{"action": "payments.transfer", "resource": "/accounts/a", "args": {"currency": "\\udfff"}}'))


def test_nesting_beyond_the_limit_is_422(hostile: Hostile) -> None:
    h = hostile
    deep = "[" * 40 + "]" * 40
    h.refused(h.owner, "POST", "/v1/keys", 422, "invalid_input", "attributes",
              **_raw(f'{{"name": "k", "role": "agent", "principal_id": "p", "attributes": {{"a": {deep}}}}}'.encode()))
    h.refused(h.agent, "POST", "/v1/decide", 422, "invalid_request",
              **_raw(f'{{"action": "a.b", "resource": "/x", "args": {{"a": {deep}}}}}'.encode()))
    very = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser follows
    h.refused(h.agent, "POST", "/v1/decide", (400, 422), "invalid_input",
              **_raw(f'{{"action": "a.b", "resource": "/x", "args": {{"a": {very}}}}}'.encode()))


def test_times_out_of_range_once_in_utc_are_422(hostile: Hostile) -> None:
    h = hostile
    h.refused(h.owner, "POST", "/v1/keys", 422, "invalid_input", "expires_at",
              json={"name": "k", "role": "agent", "principal_id": "p", "expires_at": "0001-01-01T00:00:00+14:00"})
    h.refused(h.agent, "POST", "/v1/delegations", 422, "invalid_input", "expires_at",
              json={"delegate": "d", "scope": [], "expires_at": "9999-12-31T23:59:59-14:00"})
    far = h.agent.post("/v1/delegations", json={"delegate": "d", "scope": [], "expires_at": "9999-12-31T23:59:59Z"})
    assert far.status_code == 201 and far.json()["grant"]["expires_at"].startswith("9999-12-31T23:59:59")


def test_identity_and_tenant_fields_are_refused_everywhere_an_agent_writes(hostile: Hostile) -> None:
    h = hostile
    for name in ("principal", "context", "tenant", "tenant_id", "role", "roles", "mfa", "authenticated", "user"):
        for path, body in (("/v1/decide", transfer()), ("/v1/plans/verify", {"steps": [transfer()]})):
            error = h.refused(h.agent, "POST", path, 422, "invalid_input", json={**body, name: {"id": "root"}})
            assert repr(name) in error["message"], error


def test_the_check_that_nothing_changed_sees_a_change(hostile: Hostile) -> None:
    # The control for `refused`: a request that does change the tenant is seen to change it.
    h = hostile
    before = h.stored()
    assert h.agent.post("/v1/decide", json=transfer(1)).status_code == 200
    after = h.stored()
    assert after != before and after["log size"] == before["log size"] + 1
    h.owner.post("/v1/policies/validate", json={"source": PAYMENTS})
    assert h.stored() == after  # validating stores nothing


# Kernel defects the server now guards against at its boundary (reported; the kernel is not ours to change).

def test_kernel_refuses_an_unpaired_surrogate_in_an_args_key(payments: kernel.Policy) -> None:
    request = {"principal": {"id": "a"}, "action": "payments.transfer", "resource": "/accounts/a",
               "args": {"amount": 1, "currency": "EUR", "\ud800": 1}}
    with pytest.raises(kernel.InvalidRequest):
        kernel.decide(payments, request, now=0)


def test_kernel_refuses_an_unpaired_surrogate_in_a_policy_mapping() -> None:
    with pytest.raises(kernel.PolicyError):
        kernel.load_policy({"id": "p", "rules": [{"id": "r", "effect": "permit", "action": ["a.b"],
                                                  "description": "\ud800"}]}, "grant")


def test_kernel_refuses_a_policy_nested_too_deeply() -> None:
    with pytest.raises(kernel.PolicyError):
        kernel.load_policy("id: p\nrules: " + "[" * 1000 + "]" * 1000 + "\n", "deep.yaml")


def test_kernel_refuses_or_certifies_a_float_beyond_the_safe_range(payments: kernel.Policy,
                                                                   signer: kernel.Signer) -> None:
    request = {"principal": {"id": "a"}, "action": "payments.transfer", "resource": "/accounts/a",
               "args": {"amount": 1e16, "currency": "EUR"}}
    try:
        decision = kernel.decide(payments, request, now=0)
    except kernel.InvalidRequest:
        return
    now = datetime.now(UTC)
    kernel.issue_certificate(decision, signer=signer, tenant="t", issued_at=now,
                             certificate_id=kernel.uuid7(now, b"\x00" * 10))
