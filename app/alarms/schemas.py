"""The alarm API's requests and answers (an alarm itself is `app.events.AlarmOut`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.events import AlarmOut


class AudioPauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float | None = Field(
        default=None, gt=0, le=600, description="Pause length; the protocol's default if omitted."
    )


class LimitOverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rule_id: str = Field(min_length=1, max_length=64)
    limit: float
    reason: str = Field(min_length=1, max_length=2000)


class LimitOverrideOut(BaseModel):
    session_id: int
    rule_id: str
    old: float
    new: float
    by: str
    reason: str
    at: datetime
    reverted: bool


class ActionResult(BaseModel):
    """What an acknowledgement or pause changed."""

    alarms: list[AlarmOut]


class RuleOut(BaseModel):
    id: str
    vital: str
    op: str
    limit: float
    priority: str
    delay_s: float
    relative_to_baseline: bool
    phases: list[str]
    overridable: bool


class ProtocolOut(BaseModel):
    """The alarm protocol in force. An admin changes it by replacing the clinic's protocol
    file (VIGIL_PROTOCOL_FILE) and restarting: it is validated before Vigil starts."""

    name: str
    version: str
    rules: list[RuleOut]
    audio_pause_s: float
