"""Server settings: environment variables `LICET_*`, optionally a TOML/YAML/JSON file named by
`LICET_CONFIG`; the environment wins over the file."""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url


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


class MissingRelyingParty(ValueError):
    """Production mode without an explicit WebAuthn relying party (LICET_RP_ID, LICET_RP_ORIGINS)."""


class Settings(BaseSettings):
    """Everything the server reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="LICET_", extra="forbid")

    mode: Literal["embedded", "production"] = "embedded"
    data_dir: Path = Path("licet-data")
    database_url: str = ""
    signing_key_file: Path | None = None
    # The key-encryption key that seals TOTP and webhook secrets in the database (server/sealing.py,
    # docs/secrets.md): inline (base64 of 32 bytes) or a file holding it; production requires one of them.
    secrets_key: SecretStr | None = None
    secrets_key_file: Path | None = None
    deployment: str = "licet.localhost"  # prefix of every tenant's log origin line
    max_body_bytes: int = 1 << 20
    # A request's head: its target plus header names and values, and its number of header fields; more
    # is refused with 431 before the application sees it (server/request_heads.py).
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_plan_steps: int = 10_000
    idempotency_ttl_seconds: int = 24 * 3600
    # How long a starting server waits for an unreachable database (a worker restarted while it restarts)
    # before it gives up; uvicorn stops every worker when one fails to start.
    startup_database_wait_seconds: int = 60
    trusted_proxies: list[str] = []
    log_json: bool = True
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    # The newest checkpoint signed for each tenant, kept outside the database (server/logstore.py
    # SignedHeads); default: next to the SQLite file, or in the data directory.
    signed_heads_file: Path | None = None
    # Sign-in for people (server/auth/).
    session_idle_seconds: int = 30 * 60
    session_absolute_seconds: int = 12 * 3600
    mfa_pending_seconds: int = 5 * 60  # how long a password sign-in may wait for its second factor
    step_up_seconds: int = 10 * 60  # how recent MFA must be to approve, activate a policy or manage keys
    invitation_ttl_seconds: int = 72 * 3600
    password_min_length: int = 12
    login_lock_failures: int = 5  # per account (tenant and email), within login_lock_seconds
    source_lock_failures: int = 30  # per source address, within login_lock_seconds
    login_lock_seconds: int = 15 * 60
    login_delay_cap_seconds: float = 2.0  # failed attempts answer slower, up to this
    # The WebAuthn relying party: its id (a domain) and the origins people open the dashboard at. Unset,
    # `licet serve` derives them from the address it listens on (development); production requires both.
    rp_id: str = ""
    rp_name: str = "Licet"
    rp_origins: list[str] = []
    # Pages of other origins allowed to run a ceremony in an iframe (clientData.topOrigin); none by default.
    rp_top_origins: list[str] = []
    cookie_secure: bool = True
    # Approvals (server/approvals/) and their workers (server/workers/). Defaults apply where neither a
    # rule's `approval:` block nor the tenant's approval settings say otherwise.
    approval_quorum: int = 1
    approval_role: str = "approver"
    approval_ttl_seconds: int = 3600
    approval_deny_quorum: int = 1  # denials that close an approval as denied
    approval_escalate_after_seconds: int = 0  # 0: never escalate
    approval_escalate_role: str = "admin"
    broker_url: str = ""  # Celery broker (e.g. redis://redis:6379/0); empty: tasks run in the server process
    result_backend: str = ""  # Celery result backend; empty: the broker's URL
    task_queue: str = "licet"
    broker_visibility_timeout: int = 3600  # seconds before an unacknowledged task goes to another worker
    sweep_seconds: float = 15.0  # the periodic sweep: expiries, escalations and deliveries due
    webhook_timeout_seconds: float = 10.0
    webhook_private_targets: bool = False  # allow loopback and private addresses (tests, closed networks)
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 5.0  # the first retry's delay; doubled each attempt, capped at an hour

    @field_validator("max_body_bytes", "max_header_bytes", "max_headers", "max_plan_steps", "session_idle_seconds",
                     "session_absolute_seconds",
                     "mfa_pending_seconds", "step_up_seconds", "invitation_ttl_seconds", "password_min_length",
                     "login_lock_failures", "source_lock_failures", "login_lock_seconds", "approval_quorum",
                     "approval_ttl_seconds", "approval_deny_quorum", "broker_visibility_timeout",
                     "webhook_max_attempts")
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

    def listening_on(self, host: str, port: int) -> Settings:
        """These settings for a server listening on `host`:`port`. An unset relying party becomes that
        address as a browser opens it: for a host name, the name (`--host licet.localhost --port 8123`:
        id `licet.localhost`, origin `http://licet.localhost:8123`); for an IP address (which cannot be
        a relying-party id), the machine's own browser (id `localhost`, origins `http://localhost:8123`
        and `http://127.0.0.1:8123`). Production refuses an unset relying party instead: passkeys work
        only for the public name people open, which no listening address reveals."""
        if self.rp_id and self.rp_origins:
            return self
        if self.mode == "production":
            missing = [name for name, value in (("LICET_RP_ID", self.rp_id), ("LICET_RP_ORIGINS", self.rp_origins))
                       if not value]
            raise MissingRelyingParty(
                f"production needs the WebAuthn relying party: set {' and '.join(missing)} (e.g. "
                "LICET_RP_ID=licet.example.com LICET_RP_ORIGINS='[\"https://licet.example.com\"]', the name and "
                "origin people open the dashboard at); see docs/production.md")
        try:
            ipaddress.ip_address(host.strip("[]"))
            names = ["localhost", "127.0.0.1"]
        except ValueError:  # a name
            names = [host.lower()] if host.lower() != "localhost" else ["localhost", "127.0.0.1"]
        return self.model_copy(update={"rp_id": self.rp_id or names[0],
                                       "rp_origins": self.rp_origins or [f"http://{n}:{port}" for n in names]})

    @property
    def url(self) -> str:
        """The database URL; the embedded default is a SQLite file in the data directory."""
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'licet.db'}"

    @property
    def signed_heads_path(self) -> Path:
        """Where the record of signed checkpoints lives: beside the SQLite file it guards, else in the
        data directory."""
        if self.signed_heads_file is not None:
            return self.signed_heads_file
        database = make_url(self.url).database if self.url.startswith("sqlite") else None
        if database and database != ":memory:":
            return Path(database).with_name(Path(database).name + ".signed-heads.json")
        return self.data_dir / "signed-heads.json"

    @property
    def key_file(self) -> Path:
        """Where the deployment's Ed25519 signing key lives."""
        return self.signing_key_file or self.data_dir / "signing.key"

    @property
    def secrets_key_path(self) -> Path:
        """Where the key-encryption key lives when it is not given inline: the embedded default is a
        file beside the signing key, created on first use."""
        return self.secrets_key_file or self.data_dir / "secrets.key"
