"""`licet log`: a local evidence log directory — append, checkpoint, prove, consistency, audit.

The log lives in one SQLite file in `--dir` (default `./licet-log`), fixed to one origin
(`<deployment>/licet/<tenant>`) when it is created. Checkpoints are C2SP signed notes made with a
Licet private key file (`licet keygen`) or a `PRIVATE+KEY+...` note key; bundles are C2SP
tlog-proof texts (docs/evidence.md).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from licet.cli_inputs import file_or_inline
from licet.cli_typer import LicetTyper
from licet.kernel.bundle import make_bundle, verify_bundle
from licet.kernel.canonical import canonical_json
from licet.kernel.certificate import certificate_leaf
from licet.kernel.checkpoint import (
    Checkpoint,
    CheckpointError,
    LogKey,
    check_consistency,
    origin_matches_tenant,
    parse_checkpoint,
    tenant_origin,
    verify_checkpoint,
)
from licet.kernel.errors import LicetError
from licet.kernel.keys import parse_public_key, parse_signer
from licet.kernel.log import AuditReport, TransparencyLog, audit_log
from licet.kernel.note import NoteError, NoteSigner, parse_signer_key, parse_verifier_key
from licet.kernel.report import Check
from licet.output import console, errors, fail, print_checks
from licet.sdk.logstore import LOG_FILE, SQLiteLogStore, open_log, parallel_chunk_mapper

log_app = LicetTyper(
    help="The evidence log: append certificates, sign checkpoints, prove inclusion and consistency, audit.",
    no_args_is_help=True,
)

DEFAULT_DEPLOYMENT = "localhost"
PARALLEL_AUDIT_MIN = 1 << 16  # below this many entries, worker start-up costs more than it saves

DirOption = Annotated[Path, typer.Option("--dir", metavar="DIR", help="Log directory.")]
OriginOption = Annotated[
    str | None,
    typer.Option(
        "--origin", metavar="ORIGIN", help="Log origin, <deployment>/licet/<tenant> (fixed when the log is created)."
    ),
]
LogKeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--log-key",
        metavar="KEY",
        help="Trusted checkpoint key: note verifier key <name>+<hash>+<key>, a Licet public key, "
        "or a file holding one (repeatable). Default: the key recorded when checkpoints were signed.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise fail(f"{what} {path}: not UTF-8 text") from exc


def _open(directory: Path, origin: str | None = None, *, create: bool = False) -> TransparencyLog:
    try:
        return open_log(directory, origin, create=create)
    except LicetError as exc:
        raise fail(str(exc)) from exc


def _store(log: TransparencyLog) -> SQLiteLogStore:
    store = log.store
    if not isinstance(store, SQLiteLogStore):  # open_log always makes one; this informs mypy
        raise fail("not a SQLite log")
    return store


def _load_signer(path: Path, origin: str) -> NoteSigner:
    """A checkpoint signer from a Licet private key file (key name = origin) or a note key."""
    text = _read_text(path, "signing key")
    try:
        if text.strip().startswith("PRIVATE+KEY+"):
            return parse_signer_key(text)
        return NoteSigner(origin, parse_signer(text))
    except LicetError as exc:
        raise fail(f"signing key {path}: {exc}") from exc


def _log_key_text(text: str) -> LogKey:
    text = text.strip()
    if text.startswith("{"):
        return parse_public_key(text)
    try:
        return parse_verifier_key(text)
    except NoteError:
        return parse_public_key(text)  # bare base64 of the 32-byte key


def parse_log_key(value: str) -> LogKey:
    """A trusted log key from the command line: a verifier key string, a Licet public key (JSON or
    base64), or the path of a file holding either (a path that does not exist says "file not found")."""
    return file_or_inline(value, "log key", _log_key_text)


def _log_keys(values: Sequence[str] | None, store: SQLiteLogStore | None) -> list[LogKey]:
    if values:
        return [parse_log_key(v) for v in values]
    recorded = store.get_meta("vkey") if store is not None else None
    if not recorded:
        return []
    try:
        return [parse_verifier_key(recorded)]
    except NoteError as exc:
        raise fail(f"the log key recorded in the log directory is unreadable ({exc}); pass --log-key", 1) from exc


def bundle_checks(
    certificate: Any,
    bundle: Path,
    log_key_values: Sequence[str],
    public_keys: Sequence[LogKey] = (),
    *,
    origin: str | None = None,
) -> list[Check]:
    """The log checks of `licet verify --bundle`: reads the bundle file and the `--log-key`
    values (falling back to the certificate public keys and published log keys) and runs
    `kernel.bundle.verify_bundle`."""
    if not isinstance(certificate, dict):
        return [Check("bundle", False, "the certificate is not a JSON object")]
    try:
        data = bundle.read_bytes()
    except OSError as exc:
        return [Check("bundle", False, f"{bundle}: {exc.strerror}")]
    keys: list[LogKey] = [parse_log_key(v) for v in log_key_values] or list(public_keys)
    return verify_bundle(certificate, data, keys, origin=origin)


# --- commands -------------------------------------------------------------------------------------


@log_app.command()
def append(
    certificates: Annotated[
        list[Path], typer.Argument(metavar="CERTIFICATE", help="Certificate JSON files, appended in this order.")
    ],
    directory: DirOption = Path("licet-log"),
    origin: OriginOption = None,
    json_out: JsonOption = False,
) -> None:
    """Append certificates to the log (one atomic batch); prints each one's index."""
    loaded: list[dict[str, Any]] = []
    for path in certificates:
        try:
            value = json.loads(_read_text(path, "certificate"))
        except ValueError as exc:
            raise fail(f"certificate {path}: not valid JSON ({exc})") from exc
        if not isinstance(value, dict) or not isinstance(value.get("tenant"), str) or not value["tenant"]:
            raise fail(f"certificate {path}: not a certificate (a JSON object with a tenant)")
        loaded.append(value)
    if origin is None and not (directory / LOG_FILE).exists():
        origin = tenant_origin(DEFAULT_DEPLOYMENT, loaded[0]["tenant"])
    log = _open(directory, origin, create=True)
    for path, cert in zip(certificates, loaded, strict=True):
        if not origin_matches_tenant(log.origin, cert["tenant"]):
            raise fail(f"certificate {path} is for tenant {cert['tenant']!r}, but this is the log {log.origin}")
    try:
        leaves = [certificate_leaf(cert) for cert in loaded]
    except ValueError as exc:
        raise fail(f"a certificate has no canonical JSON form: {exc}") from exc
    indices = log.append_many(leaves)
    rows = [
        {"index": index, "id": cert.get("id"), "file": str(path)}
        for index, cert, path in zip(indices, loaded, certificates, strict=True)
    ]
    if json_out:
        print(json.dumps({"origin": log.origin, "size": indices.stop, "appended": rows}, indent=2))
    else:
        for row in rows:
            console.print(f"{row['index']:>8}  {row['id']}  {row['file']}", highlight=False)
        console.print(f"log {log.origin}: {indices.stop} entries", highlight=False)


@log_app.command()
def checkpoint(
    key: Annotated[
        Path,
        typer.Option("--key", metavar="FILE", help="Signing key file (licet keygen, or a PRIVATE+KEY+... note key)."),
    ],
    directory: DirOption = Path("licet-log"),
    origin: OriginOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="FILE", help="Also write the checkpoint here.")
    ] = None,
) -> None:
    """Sign a checkpoint of the current tree (C2SP tlog-checkpoint) and print it."""
    log = _open(directory, origin)
    signer = _load_signer(key, log.origin)
    store = _store(log)
    recorded = store.get_meta("vkey")
    if recorded is not None and recorded != signer.verifier.vkey():
        errors.print(f"note: this log's checkpoints were signed by {recorded}; now signing with a new key")
    try:
        note = log.sign_checkpoint(signer)
    except LicetError as exc:
        raise fail(f"refusing to sign: {exc}", 1) from exc
    store.set_meta("vkey", signer.verifier.vkey())
    if out is not None:
        out.write_text(note, encoding="utf-8")
    sys.stdout.write(note)
    print(f"log key: {signer.verifier.vkey()}", file=sys.stderr)


@log_app.command()
def prove(
    index: Annotated[int, typer.Argument(metavar="INDEX", help="Leaf index of the certificate.")],
    directory: DirOption = Path("licet-log"),
    checkpoint_file: Annotated[
        Path | None,
        typer.Option("--checkpoint", metavar="FILE", help="Prove against this checkpoint (default: the newest kept)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE", help="Write the bundle here.")] = None,
) -> None:
    """Print the evidence bundle (C2SP tlog-proof) of entry INDEX against a signed checkpoint."""
    log = _open(directory)
    note = _read_text(checkpoint_file, "checkpoint") if checkpoint_file else log.latest_checkpoint()
    if note is None:
        raise fail("no checkpoint has been signed yet: run `licet log checkpoint --key KEY` first")
    try:
        head = parse_checkpoint(note)
    except CheckpointError as exc:
        raise fail(str(exc)) from exc
    if head.origin != log.origin:
        raise fail(f"the checkpoint is of log {head.origin}, this is {log.origin}")
    if not 0 <= index < head.size:
        raise fail(f"entry {index} is not in the checkpointed tree of {head.size} entries (sign a new checkpoint?)")
    if head.size > log.size:
        raise fail(f"the checkpoint is for {head.size} entries but the log has only {log.size}", 1)
    try:
        bundle = make_bundle(log.leaf(index), log.inclusion_proof(index, head.size), note)
    except LicetError as exc:
        raise fail(f"the stored log does not match the checkpoint: {exc}", 1) from exc
    if out is not None:
        out.write_text(bundle, encoding="utf-8")
    else:
        sys.stdout.write(bundle)


@log_app.command()
def consistency(
    old_checkpoint: Annotated[Path, typer.Argument(metavar="OLD", help="The earlier checkpoint you hold.")],
    new_checkpoint: Annotated[Path, typer.Argument(metavar="NEW", help="The later checkpoint.")],
    directory: DirOption = Path("licet-log"),
    log_key: LogKeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Prove from the log that NEW_CHECKPOINT extends OLD_CHECKPOINT; print and verify the proof."""
    log = _open(directory)
    keys = _log_keys(log_key, _store(log))
    if not keys:
        raise fail("no trusted log key: pass --log-key")
    old_note = _read_text(old_checkpoint, "checkpoint")
    new_note = _read_text(new_checkpoint, "checkpoint")
    proof: list[bytes] = []
    try:
        old, new = parse_checkpoint(old_note), parse_checkpoint(new_note)
    except CheckpointError as exc:
        raise fail(str(exc), 1) from exc
    problem = None
    if old.size <= new.size <= log.size:
        proof = list(log.consistency_proof(old.size, new.size).hashes)
    elif new.size > log.size:
        problem = Check("log-size", False, f"the local log has {log.size} entries, the new checkpoint {new.size}")
    checks = check_consistency(old_note, new_note, proof, keys, origin=log.origin)
    if problem is not None:
        checks.append(problem)
    encoded = [base64.b64encode(h).decode() for h in proof]
    if not json_out:
        console.print(f"consistency proof {old.size} -> {new.size} ({len(proof)} hashes):", highlight=False)
        for line in encoded:
            console.print(f"  {line}", highlight=False)
    print_checks(checks, json_out, {"old_size": old.size, "new_size": new.size, "proof": encoded})


def check_certificate_entry(index: int, leaf: bytes) -> str | None:
    """`--deep` audit check: the entry is a certificate object stored in canonical JSON."""
    try:
        value = json.loads(leaf)
    except ValueError:
        return "not JSON"
    if not isinstance(value, dict) or "signature" not in value or "tenant" not in value:
        return "not a signed certificate"
    try:
        if canonical_json(value) != leaf:
            return "not in canonical (RFC 8785) form"
    except ValueError as exc:
        return f"no canonical form: {exc}"
    return None


@log_app.command()
def audit(
    directory: DirOption = Path("licet-log"),
    log_key: LogKeyOption = None,
    trusted: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            metavar="FILE",
            help="A checkpoint you obtained earlier; the log must reproduce it (repeatable).",
        ),
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also check each entry is a canonical certificate.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", metavar="N", help="Worker processes (0: one per CPU).")] = 0,
    json_out: JsonOption = False,
) -> None:
    """Recompute every leaf, subtree hash and root from the stored certificates; report the first bad entry."""
    log = _open(directory)
    store = _store(log)
    keys = _log_keys(log_key, store)
    heads: list[Checkpoint] = []
    for path in trusted or []:
        note = _read_text(path, "checkpoint")
        try:
            heads.append(verify_checkpoint(note, keys).checkpoint if keys else parse_checkpoint(note))
        except CheckpointError as exc:
            raise fail(f"checkpoint {path}: {exc}", 1) from exc
    size = log.size
    processes = jobs or os.cpu_count() or 1
    check = check_certificate_entry if deep else None

    def run(progress_cb: Any, mapper: Any) -> AuditReport:
        with SQLiteLogStore(store.path, read_only=True) as reader:
            return audit_log(
                reader,
                origin=log.origin,
                log_keys=keys,
                trusted=heads,
                check_entry=check,
                progress=progress_cb,
                map_chunks=mapper,
            )

    def with_progress(mapper: Any) -> AuditReport:
        if json_out:
            return run(None, mapper)
        with Progress(
            TextColumn("auditing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=errors,
            transient=True,
        ) as bar:
            task = bar.add_task("audit", total=size)
            return run(lambda done: bar.update(task, completed=done), mapper)

    if processes > 1 and size >= PARALLEL_AUDIT_MIN:
        # Workers start before the progress bar's thread does (see parallel_chunk_mapper).
        with parallel_chunk_mapper(store.path, processes, check) as mapper:
            report = with_progress(mapper)
    else:
        report = with_progress(None)
    summary = {
        "origin": log.origin,
        "size": report.size,
        "root": base64.b64encode(report.root_hash).decode(),
        "checkpoints_checked": report.checkpoints_checked,
        "ok": report.ok,
        "first_bad_index": report.first_bad_index,
        "problems": report.problems,
    }
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"log {log.origin}: {report.size} entries, root {summary['root']}, "
            f"{report.checkpoints_checked} checkpoints reproduced",
            highlight=False,
        )
        if not log_key:
            console.print(
                "note: checkpoints were checked with the key recorded in the log itself; pass --log-key "
                "(the published key) and --checkpoint (heads you kept) for an independent audit",
                highlight=False,
            )
        if report.ok:
            console.print("[green]audit passed[/]: every entry, subtree hash and checkpoint matches")
        else:
            if report.first_bad_index is not None:
                console.print(f"[red]first bad entry: {report.first_bad_index}[/]")
            for problem in report.problems:
                console.print(f"[red]FAIL[/] {problem}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
