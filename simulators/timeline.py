"""A run's timeline and where it sits on the wall clock.

Every run (simulated chairs or a replayed recording) is a timeline of seconds from 0 to its
length, played at a speed S ≥ 1: the moment `t` of the timeline is sent at `t / S` wall seconds
after the run starts. Device times keep the timeline's spacing (a 5-minute NIBP interval stays
5 minutes apart in the stored session, whatever the speed), so they cannot also follow the
wall clock when S > 1. The rule:

    the timeline is placed so that its end is "now" when the run ends.

Second 0 gets the device time `now − length · (1 − 1/S)`. At S = 1 that is simply now; faster
runs lie in the recent past and catch up with the wall clock as they go, so no device time is
ever ahead of the moment it is sent (Vigil refuses device times more than 600 s ahead of its
clock). A run faster than real time therefore needs a known length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NotRequired, Protocol, TypedDict

from simulators.wire import Batch


class WireObservation(TypedDict):
    """An observation as a recording has it: any unit the ingest accepts (kPa, mmHg, …)."""

    vital: str
    value: float
    unit: str
    device_time: str
    quality: NotRequired[list[str]]


class WireBatch(TypedDict):
    device_id: str
    observations: list[WireObservation]


@dataclass(frozen=True)
class Send:
    """What one device has to send at one moment of the run's timeline."""

    at_s: float  # seconds from the timeline's start
    body: Batch | WireBatch | None  # None: nothing this moment (silent device); time moves on
    sources: tuple[str, ...] = ()  # where each observation came from (a file's row), for errors


Feed = Iterator[Send]  # one device's sends, in time order


class Run(Protocol):
    """Something the sender can play: one feed per device, on one timeline."""

    @property
    def span_s(self) -> float | None:
        """The timeline's length in seconds; None when it runs until stopped."""

    def feeds(self, start: datetime) -> list[Feed]:
        """The devices' feeds, with the timeline's second 0 at device time `start`."""


class TimelineError(ValueError):
    """The run cannot be placed on the wall clock as asked."""


def timeline_start(now: datetime, span_s: float | None, speed: float) -> datetime:
    """Device time of the timeline's second 0, for a run starting at `now` (see module doc)."""
    if speed < 1.0:
        raise TimelineError(f"speed must be 1 or more, got {speed:g}")
    if speed == 1.0:
        return now
    if span_s is None:
        raise TimelineError(
            "a run faster than real time needs a known length: give --duration "
            "(device times must never be ahead of the server's clock)"
        )
    return now - timedelta(seconds=span_s * (1.0 - 1.0 / speed))
