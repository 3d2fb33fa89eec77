"""Runtime configuration, read from VIGIL_* environment variables."""

from __future__ import annotations

from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"), description="Where the embedded SQLite file lives."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://vigil@db/vigil. "
        "Unset: SQLite at <data_dir>/vigil.sqlite.",
    )
    migrations_dir: Path = Field(default=REPO_ROOT / "alembic")
    max_future_skew_s: float = Field(
        default=600.0,
        description="How far ahead of the server clock a device time may be before it is refused.",
    )
    max_batch: int = Field(default=1000, description="Most observations in one ingest request.")
    client_queue_size: int = Field(
        default=512, description="Messages a websocket client may fall behind before a resync."
    )
    heartbeat_s: float = Field(default=2.0, description="Websocket heartbeat period.")
    protocol_file: Path | None = Field(
        default=None,
        description="The clinic's alarm protocol (TOML); unset: the default ketamine-chair one.",
    )

    session_hours: float = Field(
        default=12.0, gt=0, description="How long a browser sign-in lasts (one shift)."
    )
    api_token_days: int = Field(
        default=90, ge=1, le=365, description="Longest life of an API bearer token."
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="Mark cookies Secure. Unset: when the request came over HTTPS (behind a "
        "TLS proxy, list it in VIGIL_TRUSTED_PROXIES so its X-Forwarded-Proto is believed). "
        "Set true in production.",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed, comma-separated addresses or networks (e.g. 127.0.0.1 for nginx on the "
        "same host). None by default: the connecting address is the client's.",
    )
    sign_in_rate: str = Field(
        default="10/minute", description="Sign-in attempts allowed per source address."
    )
    sign_in_free_failures: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed sign-ins to one account from one address before each "
        "further attempt from there waits (1 s, 2 s, 4 s, … up to sign_in_max_delay_s).",
    )
    sign_in_account_free_failures: int = Field(
        default=10,
        ge=1,
        description="Consecutive failed sign-ins to one account from anywhere before "
        "addresses it has not signed in from wait likewise.",
    )
    sign_in_max_delay_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait between sign-in attempts."
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return [ip_network(item, strict=False) if isinstance(item, str) else item for item in value]

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vigil.sqlite').resolve()}"
