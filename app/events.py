"""What one part of the server tells the others, and the fan-out that carries it.

This module sits at the bottom of app/: ingest, the alarm service, the live view and the
adapters all import it and it imports none of them. The facts that cross domains live
here: a committed batch of samples, an alarm transition as every screen sees it, a
device's link state. `create_app` wires who hears what (`Fanout.subscribe`), so no
service calls another one's methods to tell it something happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from monitor.lifecycle import AlarmRecord, AlarmState, TransitionEvent
from monitor.protocol import AlarmKind, Priority
from monitor.vitals import VITALS, SampleQuality, Vital

# --- samples ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation in canonical code and unit."""

    vital: Vital
    value: float
    device_time: datetime
    quality: SampleQuality

    @property
    def unit(self) -> str:
        return VITALS[self.vital].unit


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A committed batch, with where it belongs: what ingest publishes after the commit."""

    device_identifier: str
    site_id: int | None
    chair_id: int | None
    session_id: int | None
    received_time: datetime
    observations: list[Observation]


# --- alarms -------------------------------------------------------------------------------

_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(AlarmRecord))
# `AlarmRecord` fields that are epoch seconds in monitor/ and UTC datetimes on the wire.
_MOMENTS = frozenset({"raised_at", "acknowledged_at", "cleared_at", "escalate_at"})


class AlarmOut(BaseModel):
    """An alarm as the API and every screen show it: `monitor.lifecycle.AlarmRecord`, field
    for field (built only by `AlarmOut.of`), with the server's session id for the engine's
    session key, times as UTC datetimes, and the chair the alarm is on."""

    # A field added to the record and not here fails at once, not silently on the wire.
    model_config = ConfigDict(extra="forbid")

    alarm_id: str
    session_id: int
    chair_id: int
    rule_id: str
    kind: AlarmKind = Field(description="physiological or technical")
    priority: Priority = Field(description="low, medium, high or crisis (crisis shows as high)")
    state: AlarmState = Field(description="raised, acknowledged or cleared")
    text: str = Field(examples=["SpO2 86 ≤ 90"])
    value: float | None = Field(
        description="Its latest value: at the raise, a tier change or a new worst value."
    )
    limit: float | None = Field(description="The limit of the tier it shows.")
    condition_active: bool
    audio_paused: bool
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    escalate_at: datetime | None
    protocol_version: str = Field(description="The protocol version it was raised under.")
    group: str = Field(
        description="Its alarm group: a session has one alarm per group (e.g. spo2_low), "
        "whose rule, priority and text follow the worst tier that holds.",
        examples=["spo2_low"],
    )
    vital: Vital | None = Field(
        description="The vital its tiers watch (physiological rule alarms), else null."
    )
    worst_value: float | None = Field(
        description="The worst value reached while its condition held (lowest for a low "
        "limit, highest for a high one), else null."
    )

    @classmethod
    def of(cls, alarm: AlarmRecord, chair_id: int) -> AlarmOut:
        """The wire form of `alarm` (a record, or a transition's record) on `chair_id`."""
        fields: dict[str, object] = {}
        for name in _RECORD_FIELDS:
            value = getattr(alarm, name)
            if name == "session_key":
                fields["session_id"] = int(value)
            elif name in _MOMENTS:
                fields[name] = None if value is None else datetime.fromtimestamp(value, UTC)
            else:
                fields[name] = value
        return cls(chair_id=chair_id, **fields)


@dataclass(frozen=True, slots=True)
class AlarmPublished:
    """An alarm transition, stored, as it goes to the site's screens."""

    site_id: int
    event: TransitionEvent
    actor: str | None
    alarm: AlarmOut
    # Set for an audio pause: when it ends, so every screen counts down to the same moment.
    audio_paused_until: datetime | None = None


# --- device links (reported by adapters) --------------------------------------------------


class ConnectionState(enum.StrEnum):
    """A link's state: an adapter's own (listener, broker) or one device's."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A link changed state.

    `device_identifier` is None for the adapter's own link (the MLLP listener, the MQTT
    broker connection); otherwise it names a registered device, with the chair and site
    it was bound to when the event happened (None when unbound).
    """

    adapter: str
    state: ConnectionState
    at: datetime
    device_identifier: str | None = None
    chair_id: int | None = None
    site_id: int | None = None
    peer: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceAlert:
    """An alarm raised by the device itself (IHE PCD-04, HL7 ORU^R40); not stored as a sample."""

    adapter: str
    device_identifier: str
    chair_id: int | None
    site_id: int | None
    device_time: datetime
    received_time: datetime
    alert_code: str  # e.g. "196670" (MDC_EVT_LO)
    alert_name: str  # e.g. "MDC_EVT_LO"
    text: str  # the device's words, e.g. "Low SpO2"
    priority: str | None  # "high", "medium", "low", "none" (from OBX-8 PH/PM/PL/PN)
    source: str | None  # "physiological" or "technical" (OBX-8 SP/ST)
    phase: str | None  # "start", "continue", "end", ... (MDC_ATTR_EVENT_PHASE)
    state: str | None  # "active", "inactive", ... (MDC_ATTR_ALARM_STATE)
    vital: str | None  # canonical vital the alert is about, when Vigil knows it
    value: float | None  # its value in the vital's canonical unit
    message_id: str  # MSH-10, to tie the alert to the device's own log


AdapterEvent = LinkEvent | DeviceAlert


# --- the fan-out --------------------------------------------------------------------------

EventT = TypeVar("EventT")


class Fanout(Generic[EventT]):
    """Hands each event to every subscriber, one after the other, in subscription order.

    The publisher awaits them all, so whatever it does next (answering a device, say)
    comes after every subscriber has had the event; a subscriber's exception reaches the
    publisher. With `yield_between`, the loop is handed to other tasks between two
    subscribers: what the first one queued (websocket sends) goes out before the second
    one (alarm evaluation) takes the loop.
    """

    def __init__(self, *, yield_between: bool = False) -> None:
        self._subscribers: list[Callable[[EventT], Awaitable[None]]] = []
        self._yield_between = yield_between

    def subscribe(self, subscriber: Callable[[EventT], Awaitable[None]]) -> None:
        self._subscribers.append(subscriber)

    async def publish(self, event: EventT) -> None:
        first = True
        for subscriber in self._subscribers:
            if not first and self._yield_between:
                await asyncio.sleep(0)
            first = False
            await subscriber(event)
