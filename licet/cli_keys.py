"""`licet keys rotate`, `licet keys list`: the deployment's signing keys over time (the keyring in the
signing key file, server/licet/server/keyring.py)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from licet.cli_server import _settings
from licet.cli_typer import LicetTyper
from licet.output import console, escape, fail

if TYPE_CHECKING:
    from licet.server.keyring import Keyring

keys_app = LicetTyper(help="Rotate and list the deployment's signing keys (certificates and checkpoints).",
                      no_args_is_help=True)

KeyFileOption = Annotated[Path | None, typer.Option(
    "--key-file", metavar="FILE",
    help="The signing key file (default: LICET_SIGNING_KEY_FILE, else <data dir>/signing.key).")]
DataDirOption = Annotated[Path | None, typer.Option(metavar="DIR", help="The data directory (LICET_DATA_DIR).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _key_file(key_file: Path | None, data_dir: Path | None) -> Path:
    return key_file if key_file is not None else Path(_settings(data_dir).key_file)


def _load(path: Path) -> Keyring:
    from licet.server.keyring import KeyringError, load_keyring

    if not path.exists():
        raise fail(f"no signing key at {path}: create one with `licet keygen --out {path}`")
    try:
        return load_keyring(path)
    except KeyringError as exc:
        raise fail(str(exc)) from exc


def _listing(keyring: Keyring, now: datetime) -> list[dict[str, Any]]:
    return [{**entry.period.to_json(), "status": entry.status(now), "private_part_kept": entry.signer is not None}
            for entry in keyring.entries]


@keys_app.command("rotate")
def rotate(
    overlap: Annotated[int, typer.Option(
        "--overlap", metavar="SECONDS", min=0,
        help="Publish the new key this long before it starts signing (the current key signs until then).")] = 0,
    key_file: KeyFileOption = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a new signing key (certificates and checkpoints) that starts signing after --overlap
    seconds, when the current key retires. Every key stays published with its period; the private
    part of a retired key is deleted. Servers that see the file switch by themselves."""
    from licet.server.keyring import KeyringError, write_keyring

    path = _key_file(key_file, data_dir)
    now = datetime.now(UTC)
    try:
        rotated = _load(path).rotate(now, timedelta(seconds=overlap), os.urandom(32))
        write_keyring(path, rotated)
    except KeyringError as exc:
        raise fail(f"signing key {path}: {exc}") from exc
    except OSError as exc:
        raise fail(f"signing key {path}: {exc.strerror}") from exc
    added = rotated.entries[-1].period
    starts = added.to_json()["not_before"]
    if json_out:
        print(json.dumps({"key_file": str(path), "key_id": added.key_id, "starts_signing": starts,
                          "keys": _listing(rotated, now)}, indent=2))
        return
    console.print(f"new key {added.key_id} signs from {starts}; "
                  f"{rotated.entries[-2].period.key_id} retires then (keyring {escape(str(path))})", highlight=False)


@keys_app.command("list")
def list_keys(key_file: KeyFileOption = None, data_dir: DataDirOption = None, json_out: JsonOption = False) -> None:
    """Every signing key of the keyring, oldest first: its id, period and status."""
    path = _key_file(key_file, data_dir)
    rows = _listing(_load(path), datetime.now(UTC))
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table("key id", "not before", "not after", "status", "private part")
    for row in rows:
        table.add_row(row["key_id"], row["not_before"] or "…", row["not_after"] or "…", row["status"],
                      "kept" if row["private_part_kept"] else "deleted")
    console.print(table)


@keys_app.command("prune")
def prune(key_file: KeyFileOption = None, data_dir: DataDirOption = None) -> None:
    """Delete the private parts of keys retired by now (after a rotation's overlap has passed); the
    public parts stay published."""
    from licet.server.keyring import write_keyring

    path = _key_file(key_file, data_dir)
    keyring = _load(path)
    pruned = keyring.pruned(datetime.now(UTC))
    dropped = [old.period.key_id for old, new in zip(keyring.entries, pruned.entries, strict=True)
               if old.signer is not None and new.signer is None]
    if dropped:
        try:
            write_keyring(path, pruned)
        except OSError as exc:
            raise fail(f"signing key {path}: {exc.strerror}") from exc
    said = f"deleted the private part of {', '.join(dropped)}" if dropped else "no retired private part to delete"
    console.print(said, highlight=False)
