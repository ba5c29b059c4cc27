"""Defects found at the edges by probing as an attacker (issue 22): webhook targets that reach an
internal address through an IPv6 form embedding it or through DNS rebinding between the check and the
send, policies whose approvals nobody can give, and request headers of any size."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licet.server.approvals import webhooks
from tests.conftest import PAYMENTS
from tests.server_harness import Tenant, launch, pg_database
from tests.test_server_hostile import error_of

LARGE_TRANSFER = {"action": "payments.transfer", "resource": "/accounts/acc-1",
                  "args": {"amount": 2000, "currency": "EUR"}}

# --- Webhook targets ---------------------------------------------------------------------------------

# IPv4 ranges a webhook must never reach: loopback, private, link-local (cloud metadata), shared
# (carrier-grade NAT), "this network".
INTERNAL_V4 = [ipaddress.IPv4Network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                   "169.254.0.0/16", "100.64.0.0/10", "0.0.0.0/8")]


def v4_in(network: ipaddress.IPv4Network) -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.integers(int(network.network_address), int(network.broadcast_address)).map(ipaddress.IPv4Address)


internal_v4 = st.sampled_from(INTERNAL_V4).flatmap(v4_in)
public_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(lambda a: a.is_global and not a.is_multicast)
bits = st.integers  # bits(0, 2**n - 1): n free bits of an address


def nat64_local_use(v4: ipaddress.IPv4Address, prefix: int, rest: int) -> ipaddress.IPv6Address:
    """`v4` in the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) at the place RFC 6052 gives it for a
    translator prefix of `prefix` bits (48, 56, 64 or 96); `rest` fills the operator's prefix bits."""
    base = int(ipaddress.IPv6Address("64:ff9b:1::"))
    octets = v4.packed
    if prefix == 96:
        return ipaddress.IPv6Address(base | (rest % 2**48) << 32 | int(v4))
    # Bits 64..71 are the "u" octet, always zero; the IPv4 octets go around it.
    places = {48: (6, 7, 9, 10), 56: (7, 9, 10, 11), 64: (9, 10, 11, 12)}[prefix]
    address = bytearray(base.to_bytes(16, "big"))
    for i in range(6, prefix // 8):
        address[i] = (rest >> (8 * i)) & 0xFF
    for place, octet in zip(places, octets, strict=True):
        address[place] = octet
    return ipaddress.IPv6Address(bytes(address))


def teredo(server: ipaddress.IPv4Address, client: ipaddress.IPv4Address, flags: int, port: int) -> ipaddress.IPv6Address:
    """A Teredo address (RFC 4380): 2001:0::/32, the server, flags, and the client's port and address
    obfuscated (every bit inverted)."""
    return ipaddress.IPv6Address(0x20010000 << 96 | int(server) << 64 | flags << 48 | (port ^ 0xFFFF) << 32
                                 | (int(client) ^ 0xFFFFFFFF))


def embeddings(v4: st.SearchStrategy[ipaddress.IPv4Address]) -> st.SearchStrategy[ipaddress.IPv6Address]:
    """IPv6 addresses whose packets reach an IPv4 address drawn from `v4`, in every form that embeds one."""
    low = bits(0, 2**80 - 1)
    return st.one_of(
        v4.map(lambda a: ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(a))),  # NAT64
        st.builds(nat64_local_use, v4, st.sampled_from([48, 56, 64, 96]), bits(0, 2**48 - 1)),
        st.builds(lambda a, r: ipaddress.IPv6Address(0x2002 << 112 | int(a) << 80 | r), v4, low),  # 6to4
        v4.map(lambda a: ipaddress.IPv6Address(int(a))),  # IPv4-compatible ::a.b.c.d
        v4.map(lambda a: ipaddress.IPv6Address(0xFFFF << 32 | int(a))),  # IPv4-mapped ::ffff:a.b.c.d
        v4.map(lambda a: ipaddress.IPv6Address(0xFFFF << 48 | int(a))),  # IPv4-translated ::ffff:0:a.b.c.d
        st.builds(teredo, public_v4, v4, bits(0, 2**16 - 1), bits(0, 2**16 - 1)),  # Teredo, the client
    )


def hook_url(address: ipaddress.IPv6Address) -> str:
    return f"https://[{address}]/hook"


@settings(max_examples=600, deadline=None, database=None)
@given(embeddings(internal_v4))
def test_ipv6_embedding_an_internal_ipv4_address_is_refused(address: ipaddress.IPv6Address) -> None:
    """Every IPv6 form that carries packets to a loopback, private or link-local IPv4 address is as
    internal as that address: NAT64 (well-known and local-use), 6to4, IPv4-compatible, -mapped and
    -translated, Teredo (whose client address is the inverted low 32 bits)."""
    refusal = webhooks.not_public(hook_url(address))
    assert refusal is not None and "not a public address" in refusal, (str(address), refusal)


@settings(max_examples=300, deadline=None, database=None)
@given(bits(0, 2**118 - 1))
def test_site_local_ipv6_is_refused(rest: int) -> None:
    """fec0::/10, the deprecated site-local range, is as internal as any private range."""
    address = ipaddress.IPv6Address(0xFEC0 << 112 | rest)
    assert webhooks.not_public(hook_url(address)) is not None, str(address)


@settings(max_examples=200, deadline=None, database=None)
@given(public_v4)
def test_nat64_and_6to4_of_a_public_ipv4_address_are_accepted(v4: ipaddress.IPv4Address) -> None:
    """The check is of the address reached, not of the form: a public IPv4 address behind the
    well-known NAT64 prefix or 6to4 is a legitimate target (an IPv6-only network reaching the world)."""
    for address in (ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4)),
                    ipaddress.IPv6Address(0x2002 << 112 | int(v4) << 80 | 1)):
        assert webhooks.not_public(hook_url(address)) is None, (str(address), str(v4))


class Resolver:
    """A stand-in for `socket.getaddrinfo`: `name` resolves to each of `answers` in turn (the last one
    from then on; an exception in the list is raised, a list is several addresses); other names resolve
    normally."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str,
                 answers: list[str | list[str] | Exception]) -> None:
        self.name, self.answers, self.lookups = name, answers, 0
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name != self.name:
            return self.real(host, port, *args, **kwargs)
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        if isinstance(answer, Exception):
            raise answer
        return [info for address in ([answer] if isinstance(answer, str) else answer)
                for info in self.real(address, port, *args, **kwargs)]


def attempt_to(url: str) -> webhooks.Attempt:
    return webhooks.Attempt("d-1", "t-1", "h-1", url, "whsec_test", "opened", b'{"event":"opened"}', 1)


def test_dns_rebinding_between_check_and_send_does_not_reach_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to a public address when checked and to 127.0.0.1 a moment later: the send
    goes to the address that was checked (or nowhere), and nothing connects to the local listener."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        resolver = Resolver(monkeypatch, "rebind.example", ["93.184.216.34", "127.0.0.1"])
        status, error = webhooks.send(attempt_to(f"http://rebind.example:{port}/hook"), 2.0)
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()  # a connection the send made would be waiting here
        assert resolver.lookups == 1  # resolved once, and the connection used that answer
        assert status is None and error is not None  # 93.184.216.34 does not listen on that port


@contextmanager
def receiver(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A local HTTP server (HTTPS with `tls`) answering 200 to POSTs; its port and the headers of each
    request it got."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_send_connects_to_the_address_it_resolved_and_keeps_the_host_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned to the address resolved once, the request still names its host: the receiver sees the
    webhook's host name in `Host`, as a virtual host needs (private targets allowed, as on a closed
    network; a second lookup would fail)."""
    with receiver() as (port, seen):
        resolver = Resolver(monkeypatch, "hooks.example", ["127.0.0.1", socket.gaierror(socket.EAI_NONAME, "gone")])
        status, error = webhooks.send(attempt_to(f"http://hooks.example:{port}/hook"), 5.0, private_targets=True)
        assert (status, error) == (200, None)
        assert resolver.lookups == 1
        assert [h["Host"] for h in seen] == [f"hooks.example:{port}"]


def test_an_address_that_refuses_the_connection_gives_way_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a connection by name would, the send tries the checked addresses in the resolver's order: a
    name whose first address does not answer (an IPv6 address on an IPv4-only host) is still reached."""
    with receiver() as (port, seen):
        Resolver(monkeypatch, "hooks.example", [["127.0.0.2", "127.0.0.1"]])  # nothing listens on 127.0.0.2
        status, error = webhooks.send(attempt_to(f"http://hooks.example:{port}/hook"), 5.0, private_targets=True)
    assert (status, error) == (200, None) and len(seen) == 1


def certificate_authority(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A self-signed CA and a certificate it issued for `name`: (CA file, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
              ca: bool) -> x509.Certificate:
        made = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            made = made.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                      critical=True)
        else:
            made = made.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return made.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = tmp / "ca.pem", tmp / f"{name}.pem", tmp / f"{name}.key"
    files[0].write_bytes(issue("Test CA", ca_key, "Test CA", ca_key, True).public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(issue(name, key, "Test CA", ca_key, False).public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


@pytest.mark.parametrize("certified", ["hooks.example", "other.example"])
def test_a_pinned_https_send_verifies_the_certificate_for_the_host_name(
        certified: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connected to the resolved address, TLS still asks for the webhook's host name (SNI) and accepts
    only a certificate for that name: a certificate for another name fails the send."""
    ca, certificate, key = certificate_authority(tmp_path, certified)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    with receiver(context) as (port, seen):
        Resolver(monkeypatch, "hooks.example", ["127.0.0.1", socket.gaierror(socket.EAI_NONAME, "gone")])
        status, error = webhooks.send(attempt_to(f"https://hooks.example:{port}/hook"), 5.0, private_targets=True)
    assert names == ["hooks.example"]
    if certified == "hooks.example":
        assert (status, error) == (200, None) and [h["Host"] for h in seen] == [f"hooks.example:{port}"]
    else:
        assert status is None and error is not None and "CERTIFICATE_VERIFY_FAILED" in error and not seen


# --- Policies whose approvals nobody can give -------------------------------------------------------

# The payments policy with its large-transfer approval (rules[2]) asked of a role nobody has, and
# the budget invariant (invariants[0]) asking a role people have but may not vote with.
UNAPPROVABLE_RULE = PAYMENTS.replace("approval: {quorum: 2, role: approver, ttl: 15m}",
                                     "approval: {quorum: 2, role: treasurer, ttl: 15m}")
UNAPPROVABLE_INVARIANT = PAYMENTS.replace(
    "{id: daily-budget, kind: budget, action: [payments.transfer], sum: args.amount, limit: 5000, window: 24h}",
    "{id: daily-budget, kind: budget, action: [payments.transfer], sum: args.amount, limit: 5000, window: 24h,"
    " effect: require_approval, approval: {role: auditor}}")


def stored_version(owner: httpx.Client, source: str) -> tuple[str, int]:
    """`source` stored as a new (inactive) version: its policy id and number."""
    created = owner.post("/v1/policies", json={"source": source})
    assert created.status_code == 201, created.text
    return created.json()["policy"]["id"], created.json()["version"]["number"]


def active_version(owner: httpx.Client, policy_id: str) -> int | None:
    versions = owner.get(f"/v1/policies/{policy_id}").json()["versions"]
    return next((v["number"] for v in versions if v["active"]), None)


@pytest.mark.parametrize(("source", "rule", "role", "field", "line"), [
    (UNAPPROVABLE_RULE, "large-transfer", "treasurer", "rules[2].approval.role", 18),
    (UNAPPROVABLE_INVARIANT, "daily-budget", "auditor", "invariants[0].approval.role", 28)])
def test_a_policy_whose_approvals_nobody_can_give_is_not_activated(
        tenant: Tenant, source: str, rule: str, role: str, field: str, line: int) -> None:
    """Validation warns that the role is held by no person who may vote and that activation is refused;
    the version may be stored as a draft, and activating it is refused naming the rule, the role and
    where it is, while the version before stays active and keeps deciding."""
    agent = tenant.server.client(tenant.key())
    with tenant.owner_session() as owner:
        policy_id = owner.get("/v1/policies").json()["policies"][0]["id"]
        before = active_version(owner, policy_id)
        validated = owner.post("/v1/policies/validate", json={"source": source})
        assert validated.status_code == 200, validated.text
        warning = next(w for w in validated.json()["never_applying"] if w["rule"] == rule)
        assert f"approval role {role!r} is held by no person who may vote" in warning["reason"]
        assert "refuses to activate" in warning["reason"]
        _, number = stored_version(owner, source)
        refused = owner.post(f"/v1/policies/{policy_id}/versions/{number}/activate", json={"reason": "test"})
        error = error_of(refused, 422, "unapprovable_policy")
        assert error["field"] == field and (error["rule"], error["role"]) == (rule, role)
        assert rule in error["message"] and role in error["message"] and error["line"] == line
        assert active_version(owner, policy_id) == before
        audit = owner.get("/v1/audit", params={"limit": 5}).json()["events"]
        assert not any(e["action"] == "policy.activate" and e["details"].get("number") == number for e in audit)
    assert agent.post("/v1/decide", json=LARGE_TRANSFER).json()["decision"] == "require_approval"
    agent.close()


def test_rolling_back_to_a_version_whose_approvals_nobody_can_give_is_refused(tenant: Tenant) -> None:
    """A version activated before activation checked this (here: made active in the database) is not
    made active again by a roll-back either."""
    with tenant.owner_session() as owner:
        policy_id, unapprovable = stored_version(owner, UNAPPROVABLE_RULE)
        force_active(tenant, policy_id, unapprovable)
        _, fixed = stored_version(owner, PAYMENTS)
        assert owner.post(f"/v1/policies/{policy_id}/versions/{fixed}/activate",
                          json={"reason": "fixed"}).status_code == 200
        refused = owner.post("/v1/policies/rollback", json={"reason": "back"})
        assert error_of(refused, 422, "unapprovable_policy")["field"] == "rules[2].approval.role"
        assert active_version(owner, policy_id) == fixed


def force_active(tenant: Tenant, policy_id: str, number: int) -> None:
    """Make a stored version the tenant's active one in the database, as an activation before this
    check would have (an activation row and the tenant's pointer)."""
    from sqlalchemy import insert, select, update
    from sqlalchemy.ext.asyncio import create_async_engine

    from licet.server.models import PolicyActivation, PolicyVersion
    from licet.server.models import Tenant as TenantRow
    from licet.server.time import utcnow

    async def run() -> None:
        engine = create_async_engine(tenant.server.database_url)
        try:
            async with engine.begin() as connection:
                version_id = (await connection.execute(select(PolicyVersion.id).where(
                    PolicyVersion.policy_id == policy_id, PolicyVersion.number == number))).scalar_one()
                await connection.execute(update(TenantRow).where(TenantRow.id == tenant.id).values(
                    active_version_id=version_id))
                await connection.execute(insert(PolicyActivation).values(
                    tenant_id=tenant.id, version_id=version_id, at=utcnow(), by="test", reason="before",
                    rollback=False))
        finally:
            await engine.dispose()

    asyncio.run(run())


# --- Request heads of any size ----------------------------------------------------------------------

@contextmanager
def serving(tmp: Path, database_url: str | None = None, args: tuple[str, ...] = (), **env: str) -> Iterator[str]:
    """`licet serve` (on SQLite unless `database_url` says otherwise, with `args`) with `env` on top of
    the test environment; its URL."""
    process, url = launch(database_url or f"sqlite+aiosqlite:///{tmp / 'licet.db'}", tmp / "data",
                          tmp / "server.log", env, args)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the default limits."""
    with serving(tmp_path_factory.mktemp("heads")) as url:
        yield url


def exchange(url: str, head: bytes) -> bytes:
    """`head` (a request line and header fields, without the blank line) sent over a fresh TCP
    connection; whatever the server answered before it closed (b"" if it closed or reset at once)."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=30) as connection:
        with suppress(OSError):  # closed while we were still sending: the server stopped reading
            connection.sendall(head + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def requests_seen(url: str, route: str) -> float:
    """How many requests the application has answered on `route` (its Prometheus histogram)."""
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("licet_http_request_seconds_count{") and f'route="{route}"' in line)


def refused_431(answer: bytes) -> dict[str, Any]:
    """The error of a 431 answer (checked: status, closing the connection, the error document)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert fields["connection"] == "close" and fields["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == "headers_too_large", error
    return error


def test_a_multi_megabyte_header_is_refused_before_the_application(plain_server: str) -> None:
    """A 2 MB header: refused with 431 (or the connection closed while it is still being sent), and
    the application never sees the request."""
    before = requests_seen(plain_server, "/healthz")
    answer = exchange(plain_server, b"GET /healthz HTTP/1.1\r\nHost: licet\r\nX-Big: " + b"a" * (2 << 20))
    assert answer == b"" or refused_431(answer), answer[:300]
    assert requests_seen(plain_server, "/healthz") == before


def test_a_head_over_the_byte_limit_gets_431(plain_server: str) -> None:
    """Just over the default 16 KiB, in one header or spread over many: 431 with the error document."""
    before = requests_seen(plain_server, "/healthz")
    one = refused_431(exchange(plain_server, b"GET /healthz HTTP/1.1\r\nHost: licet\r\nCookie: " + b"c" * 17_000))
    assert "16384" in one["message"]
    many = b"".join(b"X-Part-%d: %s\r\n" % (i, b"p" * 300) for i in range(60))  # 60 fields, about 19 KiB
    refused_431(exchange(plain_server, b"GET /healthz HTTP/1.1\r\nHost: licet\r\n" + many[:-2]))
    assert requests_seen(plain_server, "/healthz") == before


def test_too_many_header_fields_get_431(plain_server: str) -> None:
    """More than 100 header fields, however small: 431."""
    fields = b"\r\n".join(b"X-F%d: 1" % i for i in range(101))
    error = refused_431(exchange(plain_server, b"GET /healthz HTTP/1.1\r\nHost: licet\r\n" + fields))
    assert "100" in error["message"]


def test_ordinary_requests_with_large_cookies_are_answered(plain_server: str) -> None:
    """A browser's head well within the limits (an 8 KiB cookie, 60 fields) and a keep-alive
    connection's requests one after another are answered as before."""
    headers = {"Cookie": "licet_session=" + "s" * 8000, **{f"X-Field-{i}": "v" for i in range(58)}}
    with httpx.Client(base_url=plain_server, timeout=30) as client:
        for _ in range(3):
            assert client.get("/healthz", headers=headers).status_code == 200
        assert client.post("/v1/policies/validate", content=b"x" * 100_000).status_code == 401  # bodies aren't heads


def test_the_limits_are_settings(tmp_path: Path) -> None:
    """LICET_MAX_HEADER_BYTES and LICET_MAX_HEADERS set the limits."""
    with serving(tmp_path, LICET_MAX_HEADER_BYTES="2048", LICET_MAX_HEADERS="10") as url:
        assert httpx.get(f"{url}/healthz", headers={"X-Small": "a" * 1500}, timeout=30).status_code == 200
        refused_431(exchange(url, b"GET /healthz HTTP/1.1\r\nHost: licet\r\nX-Big: " + b"a" * 2100))
        refused_431(exchange(url, b"GET /healthz HTTP/1.1\r\nHost: licet\r\n" + b"\r\n".join(
            b"X-F%d: 1" % i for i in range(11))))


def test_the_limits_hold_in_every_worker_process(tmp_path: Path) -> None:
    """`licet serve --workers 2` on PostgreSQL, as docker-compose.prod.yml runs it: the worker
    processes (started afresh, their protocol handed over pickled) bound request heads too."""
    with pg_database("licet_heads_workers") as database_url, serving(tmp_path, database_url, ("--workers", "2"),
                                                                      LICET_MAX_HEADERS="10") as url:
        for _ in range(4):  # new connections, spread over both workers
            refused_431(exchange(url, b"GET /healthz HTTP/1.1\r\nHost: licet\r\nX-Big: " + b"a" * 17_000))
            refused_431(exchange(url, b"GET /healthz HTTP/1.1\r\nHost: licet\r\n" + b"\r\n".join(
                b"X-F%d: 1" % i for i in range(11))))
            assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_a_head_within_the_limit_is_answered_however_it_arrives(plain_server: str) -> None:
    """A head whose target and fields are just within 16 KiB, sent in small pieces: the bytes counted
    while it is incomplete include the request line and each field's separators, which the limit does
    not, so it is still answered."""
    target = b"/healthz"
    fields = [(b"X-Field-%02d" % i, b"v" * 262) for i in range(60)]  # 60 × 272 bytes of names and values
    assert 16384 - 100 < len(target) + sum(len(n) + len(v) for n, v in fields) <= 16384
    head = b"GET " + target + b" HTTP/1.1\r\nHost: licet\r\n" + b"\r\n".join(n + b": " + v for n, v in fields)
    head = head.replace(b"Host: licet\r\n", b"")  # the Host field would count too
    host, port = httpx.URL(plain_server).host, httpx.URL(plain_server).port
    with socket.create_connection((host, port), timeout=30) as connection:
        whole = head + b"\r\nConnection: close\r\n\r\n"
        pieces = [whole[:-2][start:start + 1000] for start in range(0, len(whole) - 2, 1000)] + [whole[-2:]]
        for piece in pieces:  # the last one ends the head: all but 2 bytes of it arrive before
            connection.sendall(piece)
            time.sleep(0.05)  # separate reads on the server
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
