"""Runtime configuration, read from VIGIL_* environment variables."""

from __future__ import annotations

import logging
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
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

    # --- operations: logs, audit retention, single sign-on (issue 19) -----------------------

    log_level: str | None = Field(
        default=None,
        description="DEBUG, INFO, WARNING or ERROR. Unset: INFO for `vigil serve`, WARNING for "
        "the demo.",
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json: one JSON event per line; text: for a terminal. Unset: json for "
        "`vigil serve`, text for the demo.",
    )
    access_log: bool = Field(
        default=False,
        description="One log event per HTTP request (method, path, status, duration, request "
        "id); about 0.25 ms of CPU a line as JSON (measured on the 2-core test machine), "
        "some 7 % of a core at 300 chairs.",
    )
    audit_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Audit events older than this many days are deleted by `vigil audit "
        "prune`. Unset: kept forever.",
    )

    oidc_issuer: str | None = Field(
        default=None,
        description="Issuer URL of the clinic's OpenID Connect provider. Set, with the client "
        "id and secret, to offer single sign-on beside passwords.",
    )
    oidc_client_id: str | None = Field(default=None, description="Vigil's client id there.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="Vigil's client secret there."
    )
    oidc_provider_name: str = Field(
        default="single sign-on",
        description='Shown on the sign-in page: "Sign in with <name>".',
    )
    oidc_scopes: str = Field(
        default="openid profile email",
        description="Scopes to ask for: those that release the role and site claims too.",
    )
    oidc_username_claim: str = Field(
        default="preferred_username", description="Claim that becomes the Vigil username."
    )
    oidc_name_claim: str = Field(default="name", description="Claim with the display name.")
    oidc_roles_claim: str = Field(
        default="groups", description="Claim whose values map to Vigil roles."
    )
    oidc_sites_claim: str = Field(
        default="groups", description="Claim whose values map to Vigil sites."
    )
    oidc_role_map: dict[str, Literal["nurse", "clinician", "admin"]] = Field(
        default_factory=dict,
        description='JSON: roles-claim value → Vigil role, e.g. {"icu-nurses": "nurse", '
        '"it-admins": "admin"}. The highest mapped role wins; none mapped: no sign-in.',
    )
    oidc_site_map: dict[str, list[int] | Literal["*"]] = Field(
        default_factory=dict,
        description='JSON: sites-claim value → site ids, or "*" for every site, e.g. '
        '{"north-clinic": [1], "regional-leads": "*"}.',
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="The callback URL registered at the provider "
        "(https://vigil.example.org/auth/oidc/callback). Unset: built from the request.",
    )

    # --- operations: metrics and readiness (issue 19) ---------------------------------------

    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Prometheus sends to GET /metrics (Authorization: Bearer "
        "<token>). Unset: /metrics answers 404.",
    )
    ready_database_timeout_s: float = Field(
        default=2.0, gt=0, description="GET /readyz: how long the database may take to answer."
    )
    ready_max_tick_age_s: float = Field(
        default=5.0,
        gt=0,
        description="GET /readyz: the alarm ticker (1 s period) must have turned this recently.",
    )

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str | None) -> str | None:
        if level is None:
            return None
        if not isinstance(logging.getLevelNamesMapping().get(level.upper()), int):
            raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
        return level.upper()

    # --- ingest back-pressure (issue 15) ----------------------------------------------------

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
