"""`licet secrets`: the key that seals TOTP and webhook secrets in the database (docs/secrets.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from licet.cli_server import _prepare, _settings
from licet.cli_typer import LicetTyper
from licet.output import NEGATIVE, console, fail

secrets_app = LicetTyper(help="The key that seals TOTP and webhook secrets at rest: create it, rotate it.",
                         no_args_is_help=True)

DataDirOption = Annotated[Path | None, typer.Option(metavar="DIR", help="Where the embedded database lives.")]


@secrets_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(metavar="FILE", help="Where to write the key (mode 0600).")]) -> None:
    """Create a random secrets key (32 bytes, base64) and print its key id; never overwrites a file."""
    from licet.server.sealing import key_id, write_new_key

    try:
        key = write_new_key(out)
    except FileExistsError as exc:
        raise fail(f"{out} exists: a secrets key is never overwritten (a lost key loses every sealed secret)") from exc
    except OSError as exc:
        raise fail(f"{out}: {exc.strerror or exc}") from exc
    console.print(f"secrets key {key_id(key)} written to {out}", markup=False)


@secrets_app.command("rotate")
def rotate(
    new_key_file: Annotated[Path, typer.Option(metavar="FILE", help="The new key (from `licet secrets keygen`).")],
    data_dir: DataDirOption = None,
) -> None:
    """Re-seal every stored TOTP and webhook secret under the key in FILE, in one transaction: either
    all of them move to the new key or none does. The current key comes from the settings
    (LICET_SECRETS_KEY or LICET_SECRETS_KEY_FILE, embedded default `<data dir>/secrets.key`). Stop the
    servers and workers first; restart them with LICET_SECRETS_KEY_FILE=FILE."""
    from licet.server.sealing import SecretBox, SecretsKeyError, UnsealError, load_box, read_key_file

    settings = _settings(data_dir)
    try:
        old, new = load_box(settings), SecretBox(read_key_file(new_key_file))
    except SecretsKeyError as exc:
        raise fail(str(exc)) from exc
    if old.kid == new.kid:
        raise fail(f"{new_key_file} holds the current key ({old.kid}): create a new one with "
                   "`licet secrets keygen --out FILE`")
    _prepare(settings)
    try:
        counts = asyncio.run(_reseal(settings, old, new))
    except UnsealError as exc:
        raise fail(f"nothing was changed: {exc}", NEGATIVE) from exc
    moved = ", ".join(f"{count} in {column}" for column, count in sorted(counts.items())) or "none"
    console.print(f"secrets re-sealed from key {old.kid} to key {new.kid}: {moved}.\nThe old key opens none of them "
                  f"now. Start every server and worker with LICET_SECRETS_KEY_FILE={new_key_file}.", markup=False)


async def _reseal(settings: Any, old: Any, new: Any) -> dict[str, int]:
    from licet.server.db import Database
    from licet.server.sealing import reseal

    db = Database(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        async with db.write() as session:
            counts: dict[str, int] = await session.run_sync(reseal, old, new)
        return counts
    finally:
        await db.dispose()
