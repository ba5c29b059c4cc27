"""Witness cosignatures (c2sp.org/tlog-cosignature) and the witness (c2sp.org/tlog-witness) (issue 24):
a real Licet log grows, the witness cosigns each checkpoint after checking it extends the last one,
refuses split views and stale clients, keeps its state across restarts; the cosignatures verify with
the kernel and with Go's golang.org/x/mod/sumdb/note, and the witness accepts Go's checkpoints and
proofs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from licet.kernel.checkpoint import Checkpoint, parse_checkpoint
from licet.kernel.cosignature import (
    CosignatureError,
    WitnessSigner,
    WitnessVerifier,
    cosigned_message,
    note_cosignatures,
    parse_witness_key,
    verify_cosignature,
)
from licet.kernel.keys import Signer
from licet.kernel.log import MemoryLogStore, TransparencyLog
from licet.kernel.merkle import tree_hash
from licet.kernel.note import NoteSigner, parse_note
from licet.witness import SIZE_CONTENT_TYPE, Refusal, Witness, WitnessConfigError, create_app, load_config
from tests.server_harness import free_port

ORIGIN = "licet.example/licet/acme"
WITNESS_NAME = "witness.example/w1"
GO_SOURCE = Path(__file__).parent / "go" / "witness_interop.go"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    return (f"old {old}\n" + "".join(_b64(h) + "\n" for h in proof) + "\n" + note).encode()


@dataclass
class Setup:
    config: Path
    log: TransparencyLog
    log_key: NoteSigner
    witness_key: Signer

    @property
    def witness(self) -> WitnessVerifier:
        return WitnessVerifier(WITNESS_NAME, self.witness_key.public_key)

    def client(self) -> TestClient:
        """A fresh witness process's view: config and state read from disk."""
        return TestClient(create_app(Witness(load_config(self.config))))

    def grow(self, n: int) -> str:
        start = self.log.size
        self.log.append_many([f"decision {i}".encode() for i in range(start, start + n)])
        return self.log.sign_checkpoint(self.log_key)


def write_config(folder: Path, witness_key: Signer, logs: dict[str, list[str]]) -> Path:
    (folder / "witness.key").write_text(json.dumps(witness_key.to_json()))
    entries = "".join(f'\n[[logs]]\norigin = "{origin}"\nkeys = {json.dumps(keys)}\n' for origin, keys in logs.items())
    config = folder / "witness.toml"
    config.write_text(f'name = "{WITNESS_NAME}"\nkey_file = "witness.key"\nstate = "witness.sqlite"\n{entries}')
    return config


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    log_key = NoteSigner(ORIGIN, Signer(os.urandom(32)))
    witness_key = Signer(os.urandom(32))
    config = write_config(tmp_path, witness_key, {ORIGIN: [log_key.verifier.vkey()]})
    return Setup(config, TransparencyLog(MemoryLogStore(), ORIGIN), log_key, witness_key)


# --- the cosignature format -----------------------------------------------------------------------


def a_checkpoint(size: int = 5) -> Checkpoint:
    return Checkpoint(ORIGIN, size, hashlib.sha256(os.urandom(8)).digest())


def test_cosignature_layout_is_the_spec() -> None:
    key = Signer(os.urandom(32))
    signer = WitnessSigner(WITNESS_NAME, key)
    checkpoint = a_checkpoint()
    line = signer.cosign(checkpoint, 1_700_000_000)
    name, blob = line.removeprefix("— ").removesuffix("\n").split(" ")
    raw = base64.b64decode(blob)
    key_id = hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + key.public_key.raw).digest()[:4]
    assert name == WITNESS_NAME and raw[:4] == key_id and len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[4:12], "big") == 1_700_000_000
    message = b"cosignature/v1\ntime 1700000000\n" + checkpoint.text().encode()
    assert cosigned_message(checkpoint, 1_700_000_000) == message
    assert key.public_key.verify(message, raw[12:])
    # A cosignature key is not a note key: the key IDs differ by the type byte.
    assert signer.verifier.key_hash != NoteSigner(WITNESS_NAME, key).key_hash


def test_cosignature_verifies_and_tampering_does_not() -> None:
    signer = WitnessSigner(WITNESS_NAME, Signer(os.urandom(32)))
    checkpoint = a_checkpoint()
    line = signer.cosign(checkpoint, 1_700_000_000)
    verified = verify_cosignature(checkpoint, line, parse_witness_key(signer.verifier.vkey()))
    assert verified.timestamp == 1_700_000_000 and verified.checkpoint == checkpoint
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    for offset in (11, 12, 75):  # the timestamp's last byte, the signature's first and last
        tampered = bytearray(raw)
        tampered[offset] ^= 1
        with pytest.raises(CosignatureError, match="does not verify"):
            verify_cosignature(checkpoint, f"— {WITNESS_NAME} {_b64(bytes(tampered))}", signer.verifier)
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignature(Checkpoint(ORIGIN, 6, checkpoint.root_hash), line, signer.verifier)
    other = WitnessVerifier(WITNESS_NAME, Signer(os.urandom(32)).public_key)
    with pytest.raises(CosignatureError, match="not by witness"):
        verify_cosignature(checkpoint, line, other)
    with pytest.raises(CosignatureError, match="71 bytes after its key ID, not 72"):
        verify_cosignature(checkpoint, f"— {WITNESS_NAME} {_b64(bytes(raw[:-1]))}", signer.verifier)


def test_witness_key_parsing_is_strict() -> None:
    verifier = WitnessSigner(WITNESS_NAME, Signer(os.urandom(32))).verifier
    assert parse_witness_key(verifier.vkey()) == verifier
    name, key_id, material = verifier.vkey().split("+", 2)
    note_type = _b64(b"\x01" + base64.b64decode(material)[1:])
    with pytest.raises(CosignatureError, match="type 0x04"):
        parse_witness_key(f"{name}+{key_id}+{note_type}")
    with pytest.raises(CosignatureError, match="does not match"):
        parse_witness_key(f"{name}+00000000+{material}")


def test_note_cosignatures_ignores_unknown_witnesses() -> None:
    log_key = NoteSigner(ORIGIN, Signer(os.urandom(32)))
    checkpoint = a_checkpoint()
    w1, w2, stranger = (WitnessSigner(f"w{i}.example", Signer(os.urandom(32))) for i in range(3))
    note = log_key.signature_line(checkpoint.text())
    cosigned = (checkpoint.text() + "\n" + note + w1.cosign(checkpoint, 10) + stranger.cosign(checkpoint, 11)
                + w2.cosign(checkpoint, 12))
    found = note_cosignatures(cosigned, [w1.verifier, w2.verifier])
    assert [(c.witness, c.timestamp) for c in found] == [(w1.verifier, 10), (w2.verifier, 12)]
    assert note_cosignatures(cosigned, []) == []
    forged = cosigned.replace(w2.cosign(checkpoint, 12), w2.cosign(a_checkpoint(), 12))
    with pytest.raises(CosignatureError, match="does not verify"):
        note_cosignatures(forged, [w1.verifier, w2.verifier])


# --- the witness ----------------------------------------------------------------------------------


def add(client: TestClient, old: int, proof: Sequence[bytes], note: str) -> tuple[int, str, str]:
    response = client.post("/add-checkpoint", content=body(old, proof, note))
    return response.status_code, response.headers.get("content-type", ""), response.text


def cosign_ok(setup: Setup, client: TestClient, old: int, note: str) -> str:
    new_size = parse_checkpoint(note).size
    proof = setup.log.consistency_proof(old, new_size).hashes if old else ()
    status, _, text = add(client, old, proof, note)
    assert status == 200, text
    return text


def test_witness_cosigns_a_growing_log(setup: Setup) -> None:
    client = setup.client()
    old = 0
    for grow_by in (1, 4, 3, 100, 1):
        note = setup.grow(grow_by)
        line = cosign_ok(setup, client, old, note)
        checkpoint = parse_checkpoint(note)
        # The response concatenated to the checkpoint is a note every verifier reads (the spec's way).
        [cosignature] = note_cosignatures(note + line, [setup.witness])
        assert cosignature.checkpoint == checkpoint and abs(cosignature.timestamp - time.time()) < 60
        old = checkpoint.size
    # Re-submitting the head it holds (same size, same root, no proof) is cosigned again.
    cosign_ok(setup, client, old, setup.log.latest_checkpoint() or "")


def test_stale_client_gets_409_with_the_size(setup: Setup) -> None:
    client = setup.client()
    cosign_ok(setup, client, 0, setup.grow(3))
    newer = setup.grow(4)
    status, content_type, text = add(client, 0, (), newer)
    assert (status, content_type, text) == (409, SIZE_CONTENT_TYPE, "3\n")
    status, content_type, text = add(client, 5, setup.log.consistency_proof(5, 7).hashes, newer)
    assert (status, content_type, text) == (409, SIZE_CONTENT_TYPE, "3\n")
    cosign_ok(setup, client, 3, newer)  # the client retries with the size it was told


def forked_log(setup: Setup, common: int, extra: int) -> TransparencyLog:
    """A second history of the same log, signed by the same key: the first `common` entries, then others."""
    fork = TransparencyLog(MemoryLogStore(), ORIGIN)
    fork.append_many([setup.log.leaf(i) for i in range(common)])
    fork.append_many([f"rewritten {i}".encode() for i in range(extra)])
    return fork


def test_split_view_is_refused(setup: Setup) -> None:
    client = setup.client()
    cosign_ok(setup, client, 0, setup.grow(5))
    cosign_ok(setup, client, 5, setup.grow(3))  # the witness holds size 8
    # A fork of the same size: the first 6 entries kept, 2 rewritten.
    same_size = forked_log(setup, 6, 2)
    status, _, text = add(client, 8, (), same_size.sign_checkpoint(setup.log_key))
    assert status == 409 and "fork" in text
    # A larger head of the fork, with a genuine proof of the fork's own history from 8: refused.
    larger = forked_log(setup, 6, 6)
    status, _, text = add(client, 8, larger.consistency_proof(8, 12).hashes, larger.sign_checkpoint(setup.log_key))
    assert status == 422 and "does not verify" in text
    # ... and with the honest log's proof from 8 to 12 (a real proof, for other roots): refused.
    honest_twelve = setup.grow(4)
    status, _, _ = add(client, 8, setup.log.consistency_proof(8, 12).hashes, larger.sign_checkpoint(setup.log_key))
    assert status == 422
    # Both refusals are kept as the log's signed evidence; the honest log still advances.
    refused = Witness(load_config(setup.config)).state.refused(ORIGIN)
    assert [status for status, _ in refused] == [409, 422, 422]
    cosign_ok(setup, client, 8, honest_twelve)


def test_requests_are_checked_in_the_specs_order(setup: Setup) -> None:
    client = setup.client()
    note = setup.grow(4)
    stranger = NoteSigner(ORIGIN, Signer(os.urandom(32)))
    unsigned_by_log = setup.log.checkpoint().text() + "\n" + stranger.signature_line(setup.log.checkpoint().text())
    other_origin = TransparencyLog(MemoryLogStore(), "other.example/log")
    other_origin.append(b"x")
    cases = [
        (body(0, (), other_origin.sign_checkpoint(NoteSigner("other.example/log", Signer(os.urandom(32))))), 404),
        (body(0, (), unsigned_by_log), 403),
        (body(5, (), note), 400),  # old size larger than the checkpoint's
        (b"old 01\n\n" + note.encode(), 400),
        (b"old 0\n" + note.encode(), 400),  # no blank line before the checkpoint
        (b"old 0\nnot base64!\n\n" + note.encode(), 400),
        (("old 0\n" + (_b64(b"h" * 32) + "\n") * 64 + "\n" + note).encode(), 400),
        (body(0, [b"h" * 32], note), 422),  # a proof from size 0 must be empty
        (b"old 0\n\n" + note.encode() + b"trailing garbage\n", 400),
    ]
    for request, status in cases:
        response = client.post("/add-checkpoint", content=request)
        assert response.status_code == status, (request[:60], response.text)
    assert client.get("/add-checkpoint").status_code == 405
    assert client.post("/add-checkpoint", content=b"old 0\n" * 20_000).status_code == 413
    cosign_ok(setup, client, 0, note)  # nothing above changed the state


def test_state_survives_a_restart(setup: Setup) -> None:
    cosign_ok(setup, setup.client(), 0, setup.grow(6))
    restarted = setup.client()
    status, content_type, text = add(restarted, 0, (), setup.grow(2))
    assert (status, content_type, text) == (409, SIZE_CONTENT_TYPE, "6\n")
    fork = forked_log(setup, 3, 3)
    status, _, _ = add(setup.client(), 6, (), fork.sign_checkpoint(setup.log_key))
    assert status == 409
    cosign_ok(setup, setup.client(), 6, setup.log.latest_checkpoint() or "")


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    key = Signer(os.urandom(32))
    with pytest.raises(WitnessConfigError, match="at least one log"):
        load_config(write_config(tmp_path, key, {}))
    with pytest.raises(WitnessConfigError, match="logs entry 1"):
        load_config(write_config(tmp_path, key, {ORIGIN: ["not+a+key"]}))
    config = write_config(tmp_path, key, {ORIGIN: [NoteSigner(ORIGIN, key).verifier.vkey()]})
    config.write_text(config.read_text().replace('key_file = "witness.key"', 'key_file = "missing.key"'))
    with pytest.raises(WitnessConfigError, match=r"missing\.key"):
        load_config(config)


def test_concurrent_requests_advance_the_state_once(setup: Setup) -> None:
    """The spec's race: requests checked against the same old size must not both be cosigned (one
    would roll the other back). Eight threads, eight sizes, one old size: exactly one wins."""
    witness = Witness(load_config(setup.config))
    witness.add_checkpoint(body(0, (), setup.grow(5)))
    notes = [setup.grow(1) for _ in range(8)]
    requests = [body(5, setup.log.consistency_proof(5, parse_checkpoint(n).size).hashes, n) for n in notes]

    def submit(request: bytes) -> int | str:
        try:
            return witness.add_checkpoint(request)
        except Refusal as refusal:
            return refusal.known_size if refusal.known_size is not None else refusal.message

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit, requests))
    winners = [i for i, result in enumerate(results) if isinstance(result, str) and result.startswith("— ")]
    assert len(winners) == 1, results
    won_size = parse_checkpoint(notes[winners[0]]).size
    assert [r for i, r in enumerate(results) if i != winners[0]] == [won_size] * 7
    assert parse_checkpoint(witness.state.latest(ORIGIN) or "").size == won_size


def test_licet_witness_serve(setup: Setup) -> None:
    """The command line: `licet witness vkey` prints the key, `licet witness serve` answers over HTTP."""
    licet = [sys.executable, "-m", "licet"]
    vkey = subprocess.run([*licet, "witness", "vkey", "--config", str(setup.config)], capture_output=True,
                          text=True, timeout=120, check=True).stdout.strip()
    assert vkey == setup.witness.vkey()
    port = free_port()
    server = subprocess.Popen([*licet, "witness", "serve", "--config", str(setup.config), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        note = setup.grow(3)
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/add-checkpoint", content=body(0, (), note), timeout=5)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200, response.text
        assert note_cosignatures(note + response.text, [parse_witness_key(vkey)])[0].checkpoint.size == 3
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- interoperability with Go's golang.org/x/mod/sumdb ---------------------------------------------


@pytest.fixture(scope="module")
def go_interop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go program tests/go/witness_interop.go, built once per run against Debian's
    golang-golang-x-mod-dev (GOPATH mode: the Debian package installs no module)."""
    gopath = Path("/usr/share/gocode")
    go = shutil.which("go")
    if go is None or not (gopath / "src/golang.org/x/mod/sumdb/note").is_dir():
        message = "Go or golang.org/x/mod is missing (Debian: golang-go golang-golang-x-mod-dev)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    binary = tmp_path_factory.mktemp("go") / "witness_interop"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(gopath), "GOFLAGS": ""}
    subprocess.run([go, "build", "-o", str(binary), str(GO_SOURCE)], check=True, env=env, timeout=300)
    return binary


def test_go_verifies_the_witness_cosignature(setup: Setup, go_interop: Path, tmp_path: Path) -> None:
    client = setup.client()
    cosign_ok(setup, client, 0, setup.grow(3))
    note = setup.grow(9)
    cosigned = note + cosign_ok(setup, client, 3, note)
    witness_vkey = setup.witness.vkey()
    good = tmp_path / "cosigned.note"
    good.write_text(cosigned)
    run = subprocess.run([str(go_interop), "verify", setup.log_key.verifier.vkey(), witness_vkey, str(good)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [ORIGIN, WITNESS_NAME]
    # A cosignature whose timestamp was changed no longer verifies in Go either.
    last = parse_note(cosigned).signatures[-1]
    shifted = (last.signature[:7] + bytes([last.signature[7] ^ 1]) + last.signature[8:])
    line = f"— {WITNESS_NAME} {_b64(last.key_hash.to_bytes(4, 'big') + shifted)}\n"
    bad = tmp_path / "tampered.note"
    bad.write_text(cosigned.rsplit("— ", 1)[0] + line)
    run = subprocess.run([str(go_interop), "verify", setup.log_key.verifier.vkey(), witness_vkey, str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "invalid signature" in run.stderr.lower(), run.stderr


def test_witness_accepts_go_checkpoints_and_proofs(tmp_path: Path, go_interop: Path) -> None:
    origin = "go.example/log"
    run = subprocess.run([str(go_interop), "grow", origin, "13", "37"], capture_output=True, text=True, timeout=60,
                         check=True)
    made = json.loads(run.stdout)
    # Go's tree of the same leaves is Licet's tree (RFC 6962 both).
    assert parse_checkpoint(made["new"]).root_hash == tree_hash(f"leaf {i}".encode() for i in range(37))
    witness_key = Signer(os.urandom(32))
    client = TestClient(create_app(Witness(load_config(write_config(tmp_path, witness_key, {origin: [made["vkey"]]})))))
    assert client.post("/add-checkpoint", content=body(0, (), made["old"])).status_code == 200
    proof = [base64.b64decode(h) for h in made["proof"]]
    # One flipped bit in Go's proof and the witness refuses; Go's own proof is accepted.
    flipped = [proof[0], bytes([proof[1][0] ^ 1]) + proof[1][1:], *proof[2:]]
    assert client.post("/add-checkpoint", content=body(13, flipped, made["new"])).status_code == 422
    response = client.post("/add-checkpoint", content=body(13, proof, made["new"]))
    assert response.status_code == 200, response.text
    witness = WitnessVerifier(WITNESS_NAME, witness_key.public_key)
    [cosignature] = note_cosignatures(made["new"] + response.text, [witness])
    assert cosignature.checkpoint.size == 37
