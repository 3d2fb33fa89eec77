"""Request bodies and query vocabulary of the review API; answers are the dataclasses of
contracts/review.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AlarmLogSort = Literal["raised_at", "priority", "rule_id", "time_to_ack_s", "acknowledged_by"]
SortOrder = Literal["asc", "desc"]


class AnnotationIn(BaseModel):
    """A note on the session, or a mark on one of its alarms (with an optional note). The
    author is the signed-in user."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4000)
    alarm_id: str | None = Field(default=None, min_length=1, max_length=64)
    actionable: bool | None = Field(
        default=None, description="With alarm_id: was this alarm actionable?"
    )
