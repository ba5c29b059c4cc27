"""Key history (issue 22 §2): `licet keys rotate` with an overlap, `/v1/evidence/keys` publishing every
key with its period, and offline verification choosing the key by id and refusing a certificate issued
outside its key's period."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from licet import kernel
from licet.cli import app
from licet.kernel.canonical import canonical_json
from licet.kernel.checkpoint import check_consistency
from licet.kernel.keys import KeyPeriod, parse_key_history
from licet.kernel.note import NoteVerifier
from licet.kernel.report import Check, all_ok
from licet.sdk.errors import LicetError as SdkError
from licet.sdk.types import TrustedKeys
from licet.sdk.verify import verify_bundle, verify_certificate
from licet.server.keyring import Keyring, KeyringEntry, KeyringError, KeyringFile, load_keyring, parse_keyring
from tests.server_harness import Server, Tenant, launch

runner = CliRunner()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.ok}


def transfer(amount: int) -> dict[str, Any]:
    return {"action": "payments.transfer", "resource": "/accounts/acc-1", "args": {"amount": amount, "currency": "EUR"}}


def licet(*args: str) -> Any:
    return runner.invoke(app, list(args))


def resign(certificate: dict[str, Any], signer: kernel.Signer, **changes: Any) -> dict[str, Any]:
    """`certificate` with `changes`, signed again by `signer` (what a holder of that private key can make)."""
    body = {k: v for k, v in {**certificate, **changes}.items() if k != "signature"}
    body["key_id"] = signer.key_id
    body["signature"] = base64.b64encode(signer.sign(canonical_json(body))).decode()
    return body


# ------------------------------------------------------------------------------------ the keyring


def test_a_key_file_from_keygen_is_one_key_signing_at_every_moment(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    assert licet("keygen", "--out", str(path)).exit_code == 0
    keyring = load_keyring(path)
    assert len(keyring.entries) == 1 and keyring.history[0].not_before is None
    assert keyring.signer_at(T0).key_id == keyring.signer_at(T0 + timedelta(days=9999)).key_id


def test_rotate_with_overlap_publishes_first_and_switches_at_the_written_time() -> None:
    first = kernel.Signer(os.urandom(32))
    keyring = Keyring((KeyringEntry(KeyPeriod(first.public_key), first),))
    rotated = keyring.rotate(T0, timedelta(seconds=60), os.urandom(32))
    old, new = rotated.entries
    assert old.period.not_after == new.period.not_before == T0 + timedelta(seconds=60)
    assert [old.status(T0), new.status(T0)] == ["current", "pending"]
    assert rotated.signer_at(T0 + timedelta(seconds=59.999999)).key_id == first.key_id
    assert rotated.signer_at(T0 + timedelta(seconds=60)).key_id == new.period.key_id  # not_after excluded
    assert old.signer is not None  # the old key still signs during the overlap
    with pytest.raises(KeyringError, match="already due to sign"):  # one successor at a time
        rotated.rotate(T0 + timedelta(seconds=1), timedelta(0), os.urandom(32))
    # After the overlap, the next rotation deletes the private part of every retired key.
    third = rotated.rotate(T0 + timedelta(seconds=61), timedelta(0), os.urandom(32))
    assert [e.signer is not None for e in third.entries] == [False, False, True]
    assert [e.status(T0 + timedelta(seconds=61)) for e in third.entries] == ["retired", "retired", "current"]
    assert parse_keyring(json.dumps(third.to_json())).to_json() == third.to_json()
    with pytest.raises(KeyringError, match="no private part"):
        third.signer_at(T0)


@pytest.mark.parametrize(("change", "message"), [
    (lambda keys: keys[1].update(not_before="2026-01-01T00:00:01Z"), "must start signing exactly when"),
    (lambda keys: keys[1].update(not_after="2027-01-01T00:00:00Z"), "newest key must not have a not_after"),
    (lambda keys: keys[1].update(seed=keys[0]["public_key"]), "its seed is of another key"),
    (lambda keys: keys[0].update(key_id="ed25519:0000000000000000"), "is not the id of its public key"),
    (lambda keys: keys[1].update(not_before="yesterday"), "not an RFC 3339 time"),
])
def test_an_inconsistent_keyring_is_refused_naming_what(change: Any, message: str) -> None:
    first = kernel.Signer(os.urandom(32))
    data = Keyring((KeyringEntry(KeyPeriod(first.public_key), first),)).rotate(T0, timedelta(0), os.urandom(32)).to_json()
    change(data["keys"])
    with pytest.raises(KeyringError, match=message):
        parse_keyring(json.dumps(data))


def test_a_running_process_reads_the_rotated_file_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    assert licet("keygen", "--out", str(path)).exit_code == 0
    held = KeyringFile(path)
    before = held.signer_at(datetime.now(UTC)).key_id
    assert licet("keys", "rotate", "--key-file", str(path)).exit_code == 0
    time.sleep(KeyringFile.RECHECK_SECONDS + 0.05)
    after = held.signer_at(datetime.now(UTC)).key_id
    assert after != before and after == load_keyring(path).history[-1].key_id


def test_rotate_keeps_the_file_private_and_refuses_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    missing = licet("keys", "rotate", "--key-file", str(path))
    assert missing.exit_code == 2 and "licet keygen" in missing.stderr
    assert licet("keygen", "--out", str(path)).exit_code == 0
    made = licet("keys", "rotate", "--key-file", str(path), "--overlap", "3600", "--json")
    assert made.exit_code == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k["status"] for k in json.loads(made.stdout)["keys"]] == ["current", "pending"]
    again = licet("keys", "rotate", "--key-file", str(path))
    assert again.exit_code == 2 and "already due to sign" in again.stderr
    assert list(tmp_path.glob(".signing.key.*")) == []  # no temporary file left behind
    listed = json.loads(licet("keys", "list", "--key-file", str(path), "--json").stdout)
    assert [k["private_part_kept"] for k in listed] == [True, True]  # the old key signs during the overlap


# ---------------------------------------------------------------------- kernel: the key's period


def test_a_certificate_is_checked_against_its_own_keys_period(signer: kernel.Signer, payments: kernel.Policy) -> None:
    request = kernel.normalise_request({"principal": {"id": "a", "tenant": "acme", "roles": ["ops"]}, **transfer(5)})
    decision = kernel.decide(payments, request, now=T0)
    cert = kernel.issue_certificate(decision, signer=signer, tenant="acme", issued_at=T0, certificate_id="c1")
    retired = KeyPeriod(signer.public_key, None, T0)
    assert "after the key was retired" in failed(kernel.verify_certificate(cert, [retired]))["key-period"]
    assert all_ok(kernel.verify_certificate(cert, [KeyPeriod(signer.public_key, T0, None)]))
    early = KeyPeriod(signer.public_key, T0 + timedelta(microseconds=1), None)
    assert "before the key began" in failed(kernel.verify_certificate(cert, [early]))["key-period"]
    # A period given anywhere for the key applies, even beside the bare key (fail closed).
    assert "key-period" in failed(kernel.verify_certificate(cert, [signer.public_key, retired]))
    assert "key-period" in failed(kernel.verify_certificate({**cert, "issued_at": "soon"}, [early]))
    assert parse_key_history([retired.to_json()]) == (retired,)
    with pytest.raises(kernel.LicetError, match="listed twice"):
        parse_key_history([retired.to_json(), retired.to_json()])


# ------------------------------------------------------------- end to end: two rotations, a server


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of this module's own: its key file is rotated under it."""
    data_dir = tmp_path / "data"
    database_url = f"sqlite+aiosqlite:///{data_dir / 'licet.db'}"
    process, url = launch(database_url, data_dir, tmp_path / "server.log")
    yield Server("sqlite", url, database_url, data_dir, process)
    process.terminate()
    process.wait(10)


def _evidence(client: httpx.Client, certificate_id: str) -> tuple[dict[str, Any], str]:
    certificate = client.get(f"/v1/certificates/{certificate_id}").json()["certificate"]
    return certificate, client.get(f"/v1/certificates/{certificate_id}/proof").json()["bundle"]


def _decide(client: httpx.Client, amount: int) -> str:
    reply = client.post("/v1/decide", json=transfer(amount))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["certificate_id"])


def _verify_cli(tmp: Path, certificate: dict[str, Any], bundle: str, keys: dict[str, Any]) -> Any:
    (tmp / "cert.json").write_text(json.dumps(certificate))
    (tmp / "bundle.tlog-proof").write_text(bundle)
    (tmp / "keys.json").write_text(json.dumps(keys))
    return licet("verify", str(tmp / "cert.json"), "--keys", str(tmp / "keys.json"),
                 "--bundle", str(tmp / "bundle.tlog-proof"), "--json")


def test_after_two_rotations_old_and_new_evidence_verify_from_what_the_server_publishes(
        own_server: Server, tmp_path: Path) -> None:
    key_file = own_server.data_dir / "signing.key"
    first_signer = kernel.parse_signer(key_file.read_text())  # kept by the test: a leaked retired key
    tenant: Tenant = own_server.new_tenant()
    tenant.activate()
    with own_server.client(tenant.key()) as client:
        old_id = _decide(client, 1)
        old_certificate, old_bundle = _evidence(client, old_id)
        old_checkpoint = client.get("/v1/evidence/checkpoint").json()

        assert licet("keys", "rotate", "--key-file", str(key_file)).exit_code == 0  # at once
        time.sleep(KeyringFile.RECHECK_SECONDS + 0.2)  # the running server reads the file again
        middle_id = _decide(client, 2)
        rotation = licet("keys", "rotate", "--key-file", str(key_file), "--overlap", "2", "--json")
        assert rotation.exit_code == 0, rotation.stderr
        pending = client.get("/v1/evidence/keys").json()
        assert [k["status"] for k in pending["history"]] == ["retired", "current", "pending"]
        time.sleep(KeyringFile.RECHECK_SECONDS + 0.2)
        still_middle = _decide(client, 3)  # the overlap: the second key signs, the third is published
        time.sleep(max(0.0, (datetime.fromisoformat(json.loads(rotation.stdout)["starts_signing"])
                             - datetime.now(UTC)).total_seconds()) + 0.1)
        new_id = _decide(client, 4)

        keys = client.get("/v1/evidence/keys").json()
        new_certificate, new_bundle = _evidence(client, new_id)
        middle_certificate, _ = _evidence(client, middle_id)
        overlap_certificate, _ = _evidence(client, still_middle)
        checkpoint = client.get("/v1/evidence/checkpoint").json()
        consistency = client.get("/v1/evidence/consistency", params={"first": 1, "second": checkpoint["size"]}).json()

    history = keys["history"]
    assert [k["status"] for k in history] == ["retired", "retired", "current"]
    assert history[0]["key_id"] == first_signer.key_id and history[0]["not_before"] is None
    assert history[0]["not_after"] == history[1]["not_before"] and history[1]["not_after"] == history[2]["not_before"]
    assert [k["key_id"] for k in keys["certificate_keys"]] == [h["key_id"] for h in reversed(history)]
    assert keys["log"]["verifier_key"] == history[2]["log_verifier_key"]
    assert [c["key_id"] for c in (old_certificate, middle_certificate, overlap_certificate, new_certificate)] == [
        history[0]["key_id"], history[1]["key_id"], history[1]["key_id"], history[2]["key_id"]]
    # The second key's private part outlives its overlap until `prune` (or the next rotation).
    assert [("seed" in k) for k in json.loads(key_file.read_text())["keys"]] == [False, True, True]
    pruned = licet("keys", "prune", "--key-file", str(key_file))
    assert pruned.exit_code == 0 and history[1]["key_id"] in pruned.stdout
    assert [("seed" in k) for k in json.loads(key_file.read_text())["keys"]] == [False, False, True]

    trusted = TrustedKeys.from_json(keys)
    for certificate, bundle in ((old_certificate, old_bundle), (new_certificate, new_bundle)):
        checks = verify_certificate(certificate, trusted) + verify_bundle(certificate, bundle, trusted)
        assert all_ok(checks), checks
        assert "key-period" in {c.name for c in checks}
        cli = _verify_cli(tmp_path, certificate, bundle, keys)
        assert cli.exit_code == 0, cli.stdout
    # The old checkpoint (signed by the first key) and the newest (by the third) are one log.
    hashes = [base64.b64decode(h) for h in consistency["proof"]]
    assert old_checkpoint["size"] == 1
    assert all_ok(check_consistency(old_checkpoint["note"], checkpoint["note"], hashes, list(trusted.log_keys)))
    assert old_bundle.endswith(old_checkpoint["note"]) and new_bundle.endswith(checkpoint["note"])

    # What the leaked first key signs after its retirement is refused, by the SDK and by `licet verify`.
    forged = resign(old_certificate, first_signer, issued_at=new_certificate["issued_at"], id="forged")
    assert "after the key was retired" in failed(verify_certificate(forged, trusted))["key-period"]
    refused = _verify_cli(tmp_path, forged, old_bundle, keys)
    assert refused.exit_code == 1
    assert "key-period" in {c["check"] for c in json.loads(refused.stdout)["checks"] if not c["ok"]}
    # A verifier with only the bare old key (no history) cannot tell; the history is what refuses it.
    assert "key-period" not in failed(kernel.verify_certificate(forged, [first_signer.public_key]))


def test_verify_without_keys_or_with_a_malformed_keys_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "cert.json").write_text("{}")
    (tmp_path / "keys.json").write_text(json.dumps({"certificate_keys": [], "log": {}}))
    bare = licet("verify", str(tmp_path / "cert.json"))
    assert bare.exit_code == 2 and "--keys" in bare.stderr
    malformed = licet("verify", str(tmp_path / "cert.json"), "--keys", str(tmp_path / "keys.json"))
    assert malformed.exit_code == 2 and "certificate_keys" in malformed.stderr


def test_trusted_keys_name_a_malformed_history_field() -> None:
    signer = kernel.Signer(os.urandom(32))
    body = {"certificate_keys": [signer.public_key.to_json()],
            "log": {"origin": "x.example/licet/acme",
                    "verifier_key": NoteVerifier("x.example/licet/acme", signer.public_key).vkey()},
            "history": [{**signer.public_key.to_json(), "not_before": "not a time", "not_after": None}]}
    with pytest.raises(SdkError, match=r"history\[0\]\.not_before"):
        TrustedKeys.from_json(body)
    del body["history"]  # a server from before key history: the bare keys verify, without periods
    assert TrustedKeys.from_json(body).certificate_periods == (signer.public_key,)

