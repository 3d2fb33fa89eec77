"""Sessions and their events as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.alarms.nibp import ALLOWED_NIBP_INTERVALS_S
from app.params import Moment
from app.storage.models import EventKind
from monitor.protocol import Phase


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pseudonym: str = Field(min_length=1, max_length=64, description="The clinic's opaque id.")
    initials: str = Field(min_length=1, max_length=8, examples=["A.B."])
    weight_kg: float | None = Field(default=None, gt=2, lt=400)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class PatientPatch(BaseModel):
    """A correction of a patient's details: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    initials: str | None = Field(default=None, min_length=1, max_length=8, examples=["A.B."])
    weight_kg: float | None = Field(default=None, gt=2, lt=400)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)

    @model_validator(mode="after")
    def _something(self) -> PatientPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of initials, weight_kg, birth_year")
        return self


class PatientOut(BaseModel):
    id: int
    pseudonym: str
    initials: str
    weight_kg: float | None
    birth_year: int | None


class SessionStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: PatientIn
    at: Moment | None = Field(default=None, description="Check-in time; now if omitted.")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: EventKind
    at: Moment | None = Field(default=None, description="When it happened; now if omitted.")
    value: float | None = Field(default=None, description="E.g. the new rate for rate_change.")
    unit: str | None = Field(default=None, max_length=24, examples=["mg/kg/h"])
    note: str | None = Field(default=None, max_length=2000)


class EventOut(BaseModel):
    id: int
    kind: EventKind
    at: datetime
    recorded_by: str
    recorded_at: datetime
    value: float | None
    unit: str | None
    note: str | None


class SessionOut(BaseModel):
    id: int
    chair_id: int
    site_id: int
    patient_id: int
    patient_initials: str
    phase: Phase  # the alarm engine's phases are the session's (no copy to keep in step)
    started_at: datetime
    ended_at: datetime | None
    events: list[EventOut]
    nibp_interval_s: float | None = Field(
        default=None,
        description="The monitor's NIBP interval set for this session, in seconds (0: no "
        "schedule); null: the protocol's interval for the phase.",
    )


class NibpIntervalIn(BaseModel):
    """The NIBP auto interval the session's monitor is set to."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seconds: float | None = Field(
        description="60, 120, 180, 300, 600, 900, 1800 or 3600 (the cuff intervals a "
        "monitor offers); 0: no schedule (manual readings only, no NIBP-stale alarm); "
        "null: back to the protocol's interval for the phase.",
        examples=[300],
    )

    @field_validator("seconds")
    @classmethod
    def _a_cuff_interval(cls, seconds: float | None) -> float | None:
        if seconds is not None and seconds not in ALLOWED_NIBP_INTERVALS_S:
            allowed = ", ".join(f"{s:g}" for s in ALLOWED_NIBP_INTERVALS_S)
            raise ValueError(f"{seconds:g} s is not a cuff interval; one of {allowed}, or null")
        return seconds


class NibpIntervalOut(BaseModel):
    session_id: int
    nibp_interval_s: float | None = Field(description="The session's own setting; null: none.")
    interval_s: float = Field(description="The interval in effect now (0: no schedule).")
    stale_after_s: float | None = Field(
        description="How long without a valid reading raises NIBP stale (interval + grace); "
        "null: never, in this phase or with no schedule."
    )
