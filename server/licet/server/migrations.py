"""Schema migrations (Alembic): the only way the schema is created, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config

from alembic import command
from licet import migrations


def alembic_config(url: str) -> Config:
    """The project's Alembic configuration (the scripts of the `licet.migrations` package), aimed at `url`."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__path__[0])))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at `url` down to `revision`."""
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> None:
    """`upgrade` from async code (Alembic's environment runs its own event loop)."""
    await asyncio.to_thread(upgrade, url)
