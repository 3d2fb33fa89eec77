"""Which adapters run, read from VIGIL_* environment variables.

Each adapter reads its own settings (VIGIL_MLLP_*, VIGIL_MQTT_*) in its module.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def split_names(value: Any) -> Any:
    """ "mllp, mqtt" → ["mllp", "mqtt"]; lists pass through."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


class AdapterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    adapters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Adapters to run, by entry-point name, comma-separated: e.g. mllp,mqtt. "
        "HTTP and websocket ingest are always on.",
    )
    adapter_start_timeout_s: float = Field(
        default=15.0, description="How long one adapter may take to start before it is skipped."
    )
    adapter_stop_timeout_s: float = Field(
        default=5.0, description="How long one adapter may take to stop at shutdown."
    )

    @field_validator("adapters", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_names(value)
