"""Sites and chairs as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
