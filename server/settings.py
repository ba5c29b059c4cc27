"""Server settings: environment variables `LICET_*`, optionally a TOML/YAML/JSON file named by
`LICET_CONFIG`; the environment wins over the file."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _config_file() -> dict[str, Any]:
    name = os.environ.get("LICET_CONFIG")
    if not name:
        return {}
    path = Path(name)
    text = path.read_text()
    if path.suffix == ".toml":
        data: Any = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the configuration file must hold a mapping")
    return data


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _config_file()


class Settings(BaseSettings):
    """Everything the server reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="LICET_", extra="forbid")

    mode: Literal["embedded", "production"] = "embedded"
    data_dir: Path = Path("licet-data")
    database_url: str = ""
    signing_key_file: Path | None = None
    deployment: str = "licet.localhost"  # prefix of every tenant's log origin line
    max_body_bytes: int = 1 << 20
    max_plan_steps: int = 10_000
    idempotency_ttl_seconds: int = 24 * 3600
    trusted_proxies: list[str] = []
    log_json: bool = True
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"

    @field_validator("max_body_bytes", "max_plan_steps")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    @property
    def url(self) -> str:
        """The database URL; the embedded default is a SQLite file in the data directory."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'licet.db'}"

    @property
    def key_file(self) -> Path:
        """Where the deployment's Ed25519 signing key lives."""
        return self.signing_key_file or self.data_dir / "signing.key"
