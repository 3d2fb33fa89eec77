"""The ingest request and answer, as devices and gateways see them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.events import StoredBatch
from app.params import Moment

MAX_BATCH = 1000

QualityName = Literal["artifact", "low_perfusion", "probe_off", "cuff_inflating", "questionable"]


class ObservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    vital: str = Field(
        min_length=1,
        max_length=64,
        description="Canonical code (hr, pr, spo2, pi, nibp_sys, nibp_dia, nibp_mean), "
        "or its IEEE 11073 MDC code or LOINC code.",
        examples=["spo2"],
    )
    value: float = Field(description="The measured value, in `unit`.", examples=[97])
    unit: str = Field(
        min_length=1, max_length=32, description="UCUM unit; kPa is converted.", examples=["%"]
    )
    device_time: Moment = Field(
        description="When the device measured it, by the device's clock, with a UTC offset."
    )
    quality: list[QualityName] = Field(
        default_factory=list, description="Flags the device set on this value."
    )


class ObservationBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(
        min_length=1, max_length=128, description="The device's registered identifier."
    )
    observations: list[ObservationIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestAccepted(BaseModel):
    device_id: str
    accepted: int = Field(
        description="Observations accepted: all of the batch (or the request fails), "
        "`stored` now plus `duplicates`."
    )
    stored: int = Field(description="Observations this request stored.")
    duplicates: int = Field(
        description="Observations already stored before (a resend: same device, vital and "
        "device time, or the same Idempotency-Key); kept as first stored, not stored again."
    )
    chair_id: int | None = Field(description="Chair the device is bound to; null when unbound.")
    session_id: int | None = Field(description="Open session on that chair, if any.")
    received_time: datetime = Field(description="Vigil's clock when the batch arrived.")

    @classmethod
    def of(cls, stored: StoredBatch) -> IngestAccepted:
        """The answer for a stored batch, the same whichever door it came through."""
        return cls(
            device_id=stored.device_identifier,
            accepted=len(stored.observations) + stored.duplicates,
            stored=len(stored.observations),
            duplicates=stored.duplicates,
            chair_id=stored.chair_id,
            session_id=stored.session_id,
            received_time=stored.received_time,
        )
