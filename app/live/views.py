"""What a nurse-station screen needs to know about a site, held in memory between samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class LatestValue:
    value: float
    unit: str
    device_time: datetime
    received_time: datetime
    quality: int

    def is_older_than(self, received_time: datetime, device_time: datetime) -> bool:
        return (self.received_time, self.device_time) <= (received_time, device_time)


@dataclass(slots=True)
class SessionView:
    session_id: int
    phase: str
    patient_initials: str
    started_at: datetime
    infusion_started_at: datetime | None
    nibp_interval_s: float | None = None  # the session's own; None: the phase's default


@dataclass(slots=True)
class ChairView:
    chair_id: int
    name: str
    position: int
    devices: list[str]
    session: SessionView | None
    vitals: dict[str, LatestValue] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # live alarms by id, as sent

    @property
    def session_id(self) -> int | None:
        return self.session.session_id if self.session else None


@dataclass(slots=True)
class SiteView:
    site_id: int
    name: str
    chairs: dict[int, ChairView]
