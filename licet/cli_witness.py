"""`licet witness`: run a C2SP tlog-witness that cosigns the checkpoints of the logs it is given
(licet/witness.py, docs/witness.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from licet.cli_typer import LicetTyper
from licet.output import fail

if TYPE_CHECKING:
    from licet.witness import WitnessConfig

witness_app = LicetTyper(help="Run a transparency-log witness (C2SP tlog-witness).", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", metavar="FILE", help="The witness's configuration (TOML).")]


def _config(path: Path) -> WitnessConfig:
    from licet.witness import WitnessConfigError, load_config

    try:
        return load_config(path)
    except WitnessConfigError as exc:
        raise fail(str(exc)) from exc


@witness_app.command("serve")
def witness_serve(
    config: ConfigOption,
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8790,
) -> None:
    """Serve POST /add-checkpoint for the logs the configuration names."""
    import uvicorn

    from licet.witness import Witness, create_app

    loaded = _config(config)
    print(f"witness {loaded.signer.verifier.vkey()} on http://{host}:{port}/add-checkpoint", flush=True)
    uvicorn.run(create_app(Witness(loaded)), host=host, port=port, log_level="warning")


@witness_app.command("vkey")
def witness_vkey(config: ConfigOption) -> None:
    """Print the witness's verifier key, the one clients trust its cosignatures by."""
    print(_config(config).signer.verifier.vkey())
