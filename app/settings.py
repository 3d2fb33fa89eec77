"""Runtime configuration, read from VIGIL_* environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
        "TLS proxy on another host, set FORWARDED_ALLOW_IPS to its address so uvicorn "
        "believes its X-Forwarded-Proto). Set true in production.",
    )
    sign_in_rate: str = Field(
        default="10/minute", description="Sign-in attempts allowed per source address."
    )
    lockout_after: int = Field(
        default=5, ge=1, description="Consecutive failed sign-ins that lock an account."
    )
    lockout_minutes: float = Field(default=15.0, gt=0, description="How long a lockout lasts.")
    ingest_queue_limit: int = Field(
        default=2048,
        ge=1,
        description="Batches that may wait for the sample writer; past that, ingest answers "
        "503 with Retry-After (MLLP: AE) and takes nothing.",
    )

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vigil.sqlite').resolve()}"
