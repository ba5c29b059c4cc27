"""Secrets at rest (server/sealing.py, docs/secrets.md): TOTP and webhook secrets are sealed in the
database under a key-encryption key that is not in it. Real `licet serve` processes on SQLite and
PostgreSQL: the database's bytes (the SQLite files, a `pg_dump`) hold no secret in any encoding,
sign-in and signed deliveries still work, a value moved to another row fails closed, `licet secrets
rotate` moves everything to a new key, and a server with the wrong key refuses to start."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from licet.server.approvals import webhooks
from licet.server.models import User, Webhook
from licet.server.sealing import SecretBox, SecretsKeyError, UnsealError, load_box, read_key_file, write_new_key
from licet.server.settings import Settings
from tests.server_harness import (
    BACKENDS,
    Person,
    Server,
    Tenant,
    drop_pg_database,
    fresh_pg_database,
    launch,
    run_sql,
)
from tests.test_approvals import ask, wait_for
from tests.test_auth import login
from tests.test_workers import Receiver, _start_receiver

ROW, OTHER_ROW = str(uuid.uuid4()), str(uuid.uuid4())


# --- the box on its own ------------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_in_its_own_row_and_column_under_its_own_key() -> None:
    box = SecretBox(os.urandom(32))
    stored = box.seal("JBSWY3DPEHPK3PXP", User.totp_secret, ROW)
    assert stored.startswith(f"v1:{box.kid}:") and "JBSWY3DPEHPK3PXP" not in stored
    assert box.open(stored, User.totp_secret, ROW) == "JBSWY3DPEHPK3PXP"
    assert box.seal("JBSWY3DPEHPK3PXP", User.totp_secret, ROW) != stored  # a fresh nonce each time

    with pytest.raises(UnsealError, match=rf"users\.totp_secret of row {OTHER_ROW} does not open.*another row"):
        box.open(stored, User.totp_secret, OTHER_ROW)
    with pytest.raises(UnsealError, match=r"users\.totp_pending_secret"):
        box.open(stored, User.totp_pending_secret, ROW)
    with pytest.raises(UnsealError, match=r"webhooks\.secret"):
        box.open(stored, Webhook.secret, ROW)
    other = SecretBox(os.urandom(32))
    with pytest.raises(UnsealError, match=f"sealed under key id {box.kid}, but this process holds key id {other.kid}"):
        other.open(stored, User.totp_secret, ROW)
    forged = stored.replace(box.kid, other.kid)  # the key id is authenticated too
    with pytest.raises(UnsealError, match="does not open"):
        other.open(forged, User.totp_secret, ROW)
    body = bytearray(base64.b64decode(stored.split(":")[2]))
    body[-1] ^= 1
    with pytest.raises(UnsealError, match="altered"):
        box.open(f"v1:{box.kid}:{base64.b64encode(bytes(body)).decode()}", User.totp_secret, ROW)
    with pytest.raises(UnsealError, match="not a sealed secret"):  # plaintext is never read as a secret
        box.open("JBSWY3DPEHPK3PXP", User.totp_secret, ROW)


def test_the_key_comes_from_the_settings_and_production_never_makes_one(tmp_path: Path) -> None:
    made = load_box(Settings(data_dir=tmp_path))  # embedded: created on first use, 0600, then reused
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
    assert load_box(Settings(data_dir=tmp_path)).kid == made.kid
    with pytest.raises(SecretsKeyError, match=r"production needs the key .* LICET_SECRETS_KEY_FILE"):
        load_box(Settings(mode="production", data_dir=tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()
    inline = base64.b64encode(os.urandom(32)).decode()
    assert load_box(Settings(mode="production", secrets_key=SecretStr(inline))).kid != made.kid
    (tmp_path / "short.key").write_text(base64.b64encode(os.urandom(16)).decode())
    with pytest.raises(SecretsKeyError, match=r"short\.key: the key is 16 bytes, not 32"):
        load_box(Settings(mode="production", secrets_key_file=tmp_path / "short.key"))
    with pytest.raises(SecretsKeyError, match=r"missing\.key"):
        load_box(Settings(mode="production", secrets_key_file=tmp_path / "missing.key"))
    with pytest.raises(SecretsKeyError, match="not both"):
        load_box(Settings(secrets_key=SecretStr(inline), secrets_key_file=tmp_path / "secrets.key"))
    with pytest.raises(FileExistsError):  # a key is never overwritten
        write_new_key(tmp_path / "secrets.key")


# --- a real deployment -------------------------------------------------------------------------------


@dataclass
class Deployment:
    """A `licet serve` of its own (restarted by the tests), with a local webhook receiver."""

    backend: str
    database_url: str
    data_dir: Path
    tmp: Path
    receiver: Receiver
    env: dict[str, str] = field(default_factory=dict)
    server: Server | None = None
    starts: int = 0

    def start(self, **env: str) -> Server:
        self.starts += 1
        self.env = {"LICET_WEBHOOK_PRIVATE_TARGETS": "true", **env}
        process, url = launch(self.database_url, self.data_dir, self.tmp / f"server-{self.starts}.log", self.env)
        self.server = Server(self.backend, url, self.database_url, self.data_dir, process)
        return self.server

    def stop(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.process.terminate()
            self.server.process.wait(30)
        self.server = None

    def licet(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `licet` command with this deployment's settings."""
        env = {**os.environ, "LICET_DATABASE_URL": self.database_url, "LICET_DATA_DIR": str(self.data_dir)}
        return subprocess.run([sys.executable, "-m", "licet", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    def at_rest(self) -> bytes:
        """Everything the database keeps: the SQLite files (with the write-ahead log), or a full dump."""
        if self.backend == "sqlite":
            return b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("licet.db*")))
        url = make_url(self.database_url).set(drivername="postgresql")
        dumped = subprocess.run(["pg_dump", "--data-only", url.render_as_string(hide_password=False)],
                                capture_output=True, timeout=120)
        assert dumped.returncode == 0, dumped.stderr.decode()
        return dumped.stdout


@pytest.fixture(params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    name = f"licet_secrets_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    database_url = (fresh_pg_database(name) if request.param == "postgresql"
                    else f"sqlite+aiosqlite:///{tmp_path / 'data' / 'licet.db'}")
    receiver, httpd = _start_receiver()
    running = Deployment(request.param, database_url, tmp_path / "data", tmp_path, receiver)
    try:
        yield running
    finally:
        running.stop()
        httpd.shutdown()
        if request.param == "postgresql":
            drop_pg_database(name)


def encodings(secret: str) -> list[bytes]:
    """`secret` as text and as the bytes it stands for, each raw, in hex and in base64 (both alphabets,
    padded or not): whatever form of it the database holds is found."""
    forms = [secret.encode()]
    text = secret.removeprefix("whsec_")
    with contextlib.suppress(binascii.Error, ValueError):  # a TOTP secret is base32
        forms.append(base64.b32decode(text + "=" * (-len(text) % 8)))
    with contextlib.suppress(binascii.Error, ValueError):  # a webhook secret's random part is URL-safe base64
        forms.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    found = []
    for raw in forms:
        found += [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw),
                  base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")]
    return found


def signs_in(server: Server, tenant: Tenant, who: Person, at: timedelta = timedelta(seconds=30)) -> Any:
    """A password sign-in of `who` followed by their TOTP code of now + `at`: the second factor's answer."""
    pending = login(server, tenant.id, who.email, who.password)
    assert pending.status_code == 200 and pending.json()["session"]["stage"] == "mfa_pending", pending.text
    with server.client(pending.json()["token"]) as client:
        reply = client.post("/v1/auth/mfa/totp", json={"code": pyotp.TOTP(who.totp_secret).at(datetime.now(UTC) + at)})
        still_pending = client.get("/v1/policies").json().get("error", {}).get("code") == "mfa_required"
    return reply, still_pending


def add_webhook(tenant: Tenant, receiver: Receiver, path: str) -> dict[str, Any]:
    with tenant.owner_session() as owner:
        made = owner.post("/v1/webhooks", json={"url": receiver.url + path, "events": ["opened"]})
    assert made.status_code == 201, made.text
    return dict(made.json())


def open_approval_and_receive(tenant: Tenant, receiver: Receiver, path: str) -> list[Any]:
    """Open an approval (a webhook event) and wait for its delivery to `path`; every delivery there."""
    before = len(receiver.for_tenant(tenant.id, path))
    with tenant.server.client(tenant.key()) as agent:
        assert not ask(agent, memo=uuid.uuid4().hex)["approval"].get("reused")  # a new request: a new approval
    return list(receiver.wait(lambda: len(got := receiver.for_tenant(tenant.id, path)) > before and got,
                              what=f"a delivery to {path}"))


def verified(entry: Any, secret: str) -> bool:
    headers = {k.lower(): v for k, v in entry.headers.items()}
    return webhooks.verify(secret, headers[webhooks.TIMESTAMP_HEADER.lower()], entry.body,
                           headers[webhooks.SIGNATURE_HEADER.lower()])


def stored(database_url: str, column: Any, row_id: str) -> str:
    """What the database holds in `column` of the row `row_id`."""
    table, name = column.class_.__tablename__, column.key
    return str(run_sql(database_url, f"SELECT {name} FROM {table} WHERE id = :id", id=row_id)[0][0])


def put(database_url: str, column: Any, row_id: str, value: str) -> None:
    """Overwrite `column` of the row `row_id` in the database."""
    table, name = column.class_.__tablename__, column.key
    run_sql(database_url, f"UPDATE {table} SET {name} = :value WHERE id = :id", value=value, id=row_id)


def test_the_database_holds_no_secret_and_sign_in_and_signed_deliveries_still_work(deployment: Deployment) -> None:
    server = deployment.start()
    tenant = server.new_tenant()
    tenant.activate()
    ana, ben = tenant.person("approver"), tenant.person("approver")
    first, second = add_webhook(tenant, deployment.receiver, "/one"), add_webhook(tenant, deployment.receiver, "/two")
    assert all(verified(e, first["secret"]) for e in open_approval_and_receive(tenant, deployment.receiver, "/one"))
    to_second = deployment.receiver.wait(lambda: deployment.receiver.for_tenant(tenant.id, "/two"), what="/two")
    assert all(verified(e, second["secret"]) for e in to_second)
    assert not verified(to_second[0], first["secret"])

    secrets = [tenant.owner_person().totp_secret, ana.totp_secret, ben.totp_secret, first["secret"], second["secret"]]
    kept = deployment.at_rest()
    assert b"v1:" in kept  # what is there is sealed, not absent
    for secret in secrets:
        for form in encodings(secret):
            assert form not in kept, f"{deployment.backend}: the database holds {form!r}, a form of a secret"

    reply, still_pending = signs_in(server, tenant, ana)
    assert reply.status_code == 200 and not still_pending, reply.text

    # Ben's row gets Ana's sealed secret (someone with write access to the database): it does not open
    # there, whichever code is offered, and Ben's session does not pass MFA.
    db = deployment.database_url
    bens = stored(db, User.totp_secret, ben.user_id)
    put(db, User.totp_secret, ben.user_id, stored(db, User.totp_secret, ana.user_id))
    for whose in (ana, ben):
        pretender = Person(server, ben.user_id, ben.email, ben.role, ben.password, "", whose.totp_secret, ())
        reply, still_pending = signs_in(server, tenant, pretender, timedelta(seconds=0))
        assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal", reply.text
        assert still_pending
    log = (deployment.tmp / "server-1.log").read_text()
    assert f"users.totp_secret of row {ben.user_id} does not open" in log  # the operator is told why
    put(db, User.totp_secret, ben.user_id, bens)
    reply, still_pending = signs_in(server, tenant, ben)
    assert reply.status_code == 200 and not still_pending, reply.text

    # The second webhook gets the first one's sealed secret: nothing goes out unsigned or signed with
    # it, and the delivery records why.
    put(db, Webhook.secret, second["id"], stored(db, Webhook.secret, first["id"]))
    sent_before = len(deployment.receiver.for_tenant(tenant.id, "/two"))
    assert all(verified(e, first["secret"]) for e in open_approval_and_receive(tenant, deployment.receiver, "/one"))

    def refused() -> Any:
        with tenant.owner() as owner:
            rows = owner.get(f"/v1/webhooks/{second['id']}/deliveries").json()["deliveries"]
        return [d for d in rows if d["last_error"] and "does not open" in d["last_error"]]

    assert "webhooks.secret of row" in wait_for(refused, what="the refused delivery")[0]["last_error"]
    assert len(deployment.receiver.for_tenant(tenant.id, "/two")) == sent_before


def test_rotation_moves_every_secret_to_the_new_key_and_a_wrong_key_stops_the_server(deployment: Deployment,
                                                                                     tmp_path: Path) -> None:
    server = deployment.start()
    tenant = server.new_tenant()
    tenant.activate()
    ana, ben, cid = tenant.person("approver"), tenant.person("approver"), tenant.person("approver")
    hook = add_webhook(tenant, deployment.receiver, "/hook")
    old_key, db = read_key_file(deployment.data_dir / "secrets.key"), deployment.database_url

    # A value from before secrets were sealed (plaintext, as upgrading from revision 0008 leaves it) is
    # sealed when the server starts.
    put(db, User.totp_secret, ben.user_id, ben.totp_secret)
    deployment.stop()
    server = deployment.start()
    assert stored(db, User.totp_secret, ben.user_id).startswith(f"v1:{SecretBox(old_key).kid}:")
    reply, _ = signs_in(server, tenant, ben)
    assert reply.status_code == 200, reply.text
    deployment.stop()

    # A rotation from a key that is not the current one changes nothing.
    wrong, new = tmp_path / "wrong.key", tmp_path / "new.key"
    assert deployment.licet("secrets", "keygen", "--out", str(wrong)).returncode == 0
    made = deployment.licet("secrets", "keygen", "--out", str(new))
    assert made.returncode == 0 and SecretBox(read_key_file(new)).kid in made.stdout, made.stderr
    before = {(column, row): stored(db, column, row) for column, row in sealed_rows(tenant, hook, ana, ben, cid)}
    moved = deployment.licet("secrets", "rotate", "--new-key-file", str(new))  # from the current key: works
    assert moved.returncode == 0, moved.stderr
    assert "4 in users.totp_secret" in moved.stdout and "1 in webhooks.secret" in moved.stdout, moved.stdout

    newer = SecretBox(read_key_file(new))
    for column, row in sealed_rows(tenant, hook, ana, ben, cid):
        now = stored(db, column, row)
        assert now != before[(column, row)] and now.startswith(f"v1:{newer.kid}:")
        with pytest.raises(UnsealError):  # the old key opens none of them
            SecretBox(old_key).open(now, column, row)
    assert newer.open(stored(db, User.totp_secret, cid.user_id), User.totp_secret, cid.user_id) == cid.totp_secret
    assert newer.open(stored(db, Webhook.secret, hook["id"]), Webhook.secret, hook["id"]) == hook["secret"]

    again = deployment.licet("secrets", "rotate", "--new-key-file", str(wrong))  # the current key is the old one
    assert again.returncode == 1 and "nothing was changed" in again.stderr and newer.kid in again.stderr, again.stderr
    assert all(stored(db, c, r).startswith(f"v1:{newer.kid}:")
               for c, r in sealed_rows(tenant, hook, ana, ben, cid))

    # The old key (still the embedded default file): the server refuses to start, and says why.
    with pytest.raises(RuntimeError, match=f"sealed under another key .*key id {newer.kid}"):
        deployment.start()
    server = deployment.start(LICET_SECRETS_KEY_FILE=str(new))
    tenant.server, tenant._owner = server, replace(tenant.owner_person(), server=server)  # its new address
    reply, still_pending = signs_in(server, tenant, cid)
    assert reply.status_code == 200 and not still_pending, reply.text
    assert all(verified(e, hook["secret"]) for e in open_approval_and_receive(tenant, deployment.receiver, "/hook"))


def sealed_rows(tenant: Tenant, hook: dict[str, Any], *people: Person) -> list[tuple[Any, str]]:
    owner = tenant.owner_person()
    return [(User.totp_secret, p.user_id) for p in (owner, *people)] + [(Webhook.secret, hook["id"])]


def test_a_database_holding_sealed_secrets_is_not_downgraded_below_0009(tmp_path: Path) -> None:
    """Code from before 0009 would take the sealed text for the secret: the downgrade stops at 0009 with
    the sealed value untouched."""
    from licet.server import migrations

    url = f"sqlite+aiosqlite:///{tmp_path / 'licet.db'}"
    migrations.upgrade(url)
    box, user = SecretBox(os.urandom(32)), str(uuid.uuid4())
    run_sql(url, "INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', '2026-01-01 00:00:00')")
    run_sql(url, "INSERT INTO users (id, tenant_id, email, display_name, role, created_at, totp_secret) VALUES "
             "(:id, 'acme', 'ana@acme.example', 'Ana', 'approver', '2026-01-01 00:00:00', :secret)",
        id=user, secret=(sealed := box.seal(pyotp.random_base32(), User.totp_secret, user)))
    with pytest.raises(RuntimeError, match=r"users\.totp_secret holds 1 sealed secrets .* refused"):
        migrations.downgrade(url, "0008")
    assert run_sql(url, "SELECT version_num FROM alembic_version") == [("0009",)]
    assert stored(url, User.totp_secret, user) == sealed
    run_sql(url, "UPDATE users SET totp_secret = NULL")
    migrations.downgrade(url, "0008")  # nothing sealed: it goes down
    assert run_sql(url, "SELECT version_num FROM alembic_version") == [("0008",)]
