"""The role table of docs/roles.md, checked against the code and then called: every route, as every
role, on SQLite and PostgreSQL.

The table is parsed from the document (not from the code), so what the document promises is what is
tested: a role marked "—" must get `403 forbidden`, a role marked "yes" must never get a 403. People
(every role but `agent`) call with a session that passed MFA just now, so step-up routes admit them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from licet.server.app import create_app
from licet.server.roles import ROLES
from licet.server.route_table import BEGIN, END, markdown, route_table
from tests.server_harness import Person, Server, Tenant

DOC = Path(__file__).resolve().parent.parent / "docs" / "roles.md"
SIGNING_OUT = {("POST", "/v1/auth/logout"), ("POST", "/v1/auth/logout-everywhere")}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    permission: str
    admits: dict[str, bool]


def documented() -> list[Row]:
    """The rows of the table in docs/roles.md."""
    text = DOC.read_text()
    table = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[2:] == list(ROLES), header
    rows = []
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method, path = cells[0].strip("`").split(" ", 1)
        rows.append(Row(method, path, cells[1], {role: mark == "yes" for role, mark in zip(ROLES, cells[2:],
                                                                                           strict=True)}))
    return rows


ROWS = documented()


def test_the_document_is_the_code_s_table() -> None:
    text = DOC.read_text()
    assert text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip() == markdown(route_table(create_app())).strip(), \
        "docs/roles.md is stale: regenerate its table with server.route_table.markdown"
    assert len(ROWS) >= 50


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "987654321" if m.group(1) in ("number", "size") else str(uuid.uuid4()),
                  path)


def _fresh_session(server: Server, tenant: Tenant, who: Person, codes: list[str]) -> str:
    """Another session of `who`, past its second factor (with a backup code) if it has one."""
    with server.client() as anonymous:
        login = anonymous.post("/v1/auth/login", json={"tenant": tenant.id, "email": who.email,
                                                       "password": who.password})
        assert login.status_code == 200, login.text
    token = str(login.json()["token"])
    if login.json()["session"]["stage"] == "mfa_pending":
        with server.client(token) as client:
            passed = client.post("/v1/auth/mfa/totp", json={"code": codes.pop()})
            assert passed.status_code == 200, passed.text
            token = str(passed.json()["token"])  # finishing a sign-in replaces the token
    return token


@pytest.mark.parametrize("role", ROLES)
def test_every_route_as_every_role(server: Server, role: str) -> None:
    tenant = server.new_tenant()
    tenant.activate()
    who = tenant.person(role) if role != "agent" else None
    credential = who.token if who else tenant.key("agent", "agent:role-test")
    ordered = sorted(ROWS, key=lambda r: (r.method, r.path) in SIGNING_OUT)  # signing out last
    codes = list(who.backup_codes) if who else []
    checked = 0
    for row in ordered:
        token = credential
        if who is not None and (row.method, row.path) in SIGNING_OUT:
            token = _fresh_session(server, tenant, who, codes) if row.path.endswith("logout") else credential
        with server.client(token) as client:
            reply = client.request(row.method, _concrete(row.path),
                                   json={} if row.method in ("POST", "PATCH") else None)
        assert reply.status_code < 500, (role, row, reply.text)
        if row.admits[role]:
            assert reply.status_code != 403, (role, row.method, row.path, reply.text)
        else:
            assert reply.status_code == 403 and reply.json()["error"]["code"] == "forbidden", \
                (role, row.method, row.path, reply.text)
        checked += 1
    assert checked == len(ROWS)


def test_an_api_key_of_any_role_cannot_step_up(server: Server, tenant: Tenant) -> None:
    """Step-up routes refuse even the owner key: only a person's recent MFA opens them."""
    step_up = [r for r in route_table(create_app()) if r.step_up]
    assert {(r.method, r.path) for r in step_up} >= {
        ("POST", "/v1/keys"), ("POST", "/v1/policies/{policy_id}/versions/{number}/activate")}
    with tenant.owner() as owner_key:
        for rule in step_up:
            reply = owner_key.request(rule.method, _concrete(rule.path), json={})
            assert reply.status_code == 403 and reply.json()["error"]["code"] == "step_up_required", reply.text


def test_a_person_without_recent_mfa_is_sent_to_step_up(server: Server, tenant: Tenant) -> None:
    plain = tenant.person("admin", mfa=False)  # signed in with a password only, no second factor yet
    with plain.client() as client:
        reply = client.post("/v1/keys", json={"name": "x", "role": "agent", "principal_id": "agent:x"})
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "step_up_required", reply.text
        assert "/v1/auth/mfa/" in reply.json()["error"]["message"]
        assert client.get("/v1/keys").status_code == 200  # listing is not managing
