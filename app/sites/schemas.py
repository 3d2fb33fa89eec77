"""Sites and chairs as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SiteIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)


class ChairIn(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    position: int | None = Field(
        default=None, ge=0, le=10_000, description="Display order; after the last if omitted."
    )


class SiteOut(BaseModel):
    id: int
    name: str
    chair_count: int


class SessionOut(BaseModel):
    id: int
    phase: str
    patient_initials: str
    started_at: datetime


class ChairOut(BaseModel):
    id: int
    name: str
    position: int
    devices: list[str]
    session: SessionOut | None


class SiteDetailOut(BaseModel):
    id: int
    name: str
    chairs: list[ChairOut]
