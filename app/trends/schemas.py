"""What the nurse station's chair view and sparklines read back (docs/API.md)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.events import AlarmOut
from app.sessions.schemas import EventOut


class Series(BaseModel):
    """One vital over time: parallel lists of Vigil's receipt times and values."""

    t: list[datetime]
    v: list[float]


class ActiveLimit(BaseModel):
    rule_id: str
    vital: str
    op: str = Field(description="<, <=, > or >=: the alarm condition is `value op limit`")
    priority: str
    limit: float
    protocol_limit: float
    relative_to_baseline: bool


class TrendOut(BaseModel):
    session_id: int
    chair_id: int
    phase: str
    since: datetime
    server_time: datetime
    series: dict[str, Series] = Field(
        description="hr, pr, spo2, pi, nibp_sys, nibp_dia, nibp_mean; flagged samples left out"
    )
    alarms: list[AlarmOut]
    events: list[EventOut]
    limits: list[ActiveLimit]


class ChairSparklines(BaseModel):
    chair_id: int
    session_id: int
    series: dict[str, Series]


class SparklinesOut(BaseModel):
    site_id: int
    since: datetime
    server_time: datetime
    bucket_s: float
    chairs: list[ChairSparklines]


class StationStateOut(BaseModel):
    """Site-wide facts a screen cannot derive from the websocket alone."""

    site_id: int
    server_time: datetime
    nibp_interval_s: dict[str, float] = Field(description="expected cuff interval per phase")
    device_silent_s: float = Field(description="a device quiet this long is disconnected")
    audio_pause_s: float = Field(description="the protocol's audio pause length")
    audio_paused_until: dict[int, datetime] = Field(
        description="by session id; assumes the pause was the protocol's length (the alarm "
        "record does not keep a pause's length)"
    )
