"""What one part of the server tells the others, and the fan-out that carries it.

This module sits at the bottom of app/: ingest, the alarm service, the live view and the
adapters all import it and it imports none of them. The facts that cross domains live
here: a committed batch of samples, an alarm transition as every screen sees it, a
device's link state. `create_app` wires who hears what (`Fanout.subscribe`), so no
service calls another one's methods to tell it something happened.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
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
    """A committed batch, with where it belongs: what ingest publishes after the commit.

    `observations` are the ones this batch stored; `duplicates` counts those it carried that
    were already stored (a resend: same device, vital and device time), which nobody is told
    about twice.
    """

    device_identifier: str
    site_id: int | None
    chair_id: int | None
    session_id: int | None
    received_time: datetime
    observations: list[Observation]
    duplicates: int = 0


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
    """An alarm transition as it goes to the site's screens."""

    site_id: int
    event: TransitionEvent
    actor: str | None
    alarm: AlarmOut
    # Set for an audio pause: when it ends, so every screen counts down to the same moment.
    audio_paused_until: datetime | None = None
    # False: shown at once, still on its way to the database (the alarm outbox); an
    # `AlarmStored` follows when it is written.
    stored: bool = True


@dataclass(frozen=True, slots=True)
class AlarmStored:
    """A transition published as not yet stored is now in the database."""

    site_id: int
    chair_id: int
    session_id: int
    alarm_id: str
    event: TransitionEvent
    at: datetime


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


class DeviceAlertKind(enum.StrEnum):
    """What a device's own alert means for Vigil (docs/ALARMS.md, "From the wire").

    `nibp_failed`: a cuff cycle ended without a reading; `probe_off`: the SpO2 probe is off
    the patient; `equipment_fault`: any other technical alert (a sensor, the monitor, its
    battery), shown with the device's own text; `other`: an alert Vigil does not raise (the
    device's physiological and advisory alerts: Vigil judges the same values by the
    clinic's protocol).
    """

    NIBP_FAILED = "nibp_failed"
    PROBE_OFF = "probe_off"
    EQUIPMENT_FAULT = "equipment_fault"
    OTHER = "other"


# PCD-04 event phases that begin an alert; the others update or end one already begun.
_ONSET_PHASES = frozenset({"start", "start_only", "tpoint"})


@dataclass(frozen=True, slots=True)
class DeviceAlert:
    """An alarm raised by the device itself (IHE PCD-04 ORU^R40 over MLLP, or the JSON alert
    of HTTP, MQTT and websocket ingest); not stored as a sample. The alarm service turns it
    into Vigil's technical alarms by `kind`."""

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
    message_id: str  # MSH-10 (or the JSON door's `ref`), to tie it to the device's own log
    kind: DeviceAlertKind = DeviceAlertKind.OTHER
    active: bool = True  # False: the device says the alert condition has ended
    # The device's id of this alert instance (PCD-04: OBR-3 filler number), so that updates
    # and resends of one alert are recognised as such; None when the device gives none.
    alert_id: str | None = None

    @property
    def onset(self) -> bool:
        """This report begins an alert (not an update or the end of one already reported)."""
        return self.active and (self.phase is None or self.phase.lower() in _ONSET_PHASES)


AdapterEvent = LinkEvent | DeviceAlert


# --- the fan-out --------------------------------------------------------------------------

EventT = TypeVar("EventT")
Subscriber = Callable[[EventT], Awaitable[None]]

log = logging.getLogger(__name__)

# After a subscriber raised for an event: wait this long, and try it again, once per delay.
RETRY_DELAYS_S = (0.1, 1.0)


class Fanout(Generic[EventT]):
    """Hands each event to every subscriber, in subscription order.

    Two ways to publish:

    - `publish` awaits every subscriber, one after the other; a subscriber's exception
      reaches the publisher. With `yield_between`, the loop is handed to other tasks between
      two subscribers: what the first one queued (websocket sends) goes out before the second
      one (alarm evaluation) takes the loop.
    - `post` returns at once and delivers in the background, for a publisher whose own work
      must not wait for, or fail with, its subscribers (ingest answers a device once its
      samples are committed). Each subscriber has its own lane: it gets the events in the
      order they were posted, and one subscriber that raises or is slow never holds up
      another. A failure is logged, counted (`failures`) and retried after each of
      `RETRY_DELAYS_S`; while a subscriber keeps failing (its previous event was given up
      on) it is not retried, so its lane keeps up, and it is logged once per streak.
      With `yield_between`, every lane but the first yields once before each delivery, so
      the first subscriber's sends still go out before the next one takes the loop.
    """

    def __init__(self, *, yield_between: bool = False, name: str = "fanout") -> None:
        self._subscribers: list[Callable[[EventT], Awaitable[None]]] = []
        self._yield_between = yield_between
        self.name = name
        self._lanes: list[_Lane[EventT]] = []

    def subscribe(self, subscriber: Callable[[EventT], Awaitable[None]]) -> None:
        self._subscribers.append(subscriber)
        self._lanes.append(
            _Lane(self, subscriber, yields=self._yield_between and len(self._lanes) > 0)
        )

    async def publish(self, event: EventT) -> None:
        first = True
        for subscriber in self._subscribers:
            if not first and self._yield_between:
                await asyncio.sleep(0)
            first = False
            await subscriber(event)

    def post(self, events: Sequence[EventT]) -> None:
        """Queue `events` for every subscriber, in order; deliver them after the caller
        yields. Never raises and never waits."""
        if events:
            for lane in self._lanes:
                lane.post(events)

    @property
    def failures(self) -> int:
        """Deliveries (first tries and retries) that raised, since start."""
        return sum(lane.failures for lane in self._lanes)

    @property
    def given_up(self) -> int:
        """Events some subscriber never took, after every retry."""
        return sum(lane.given_up for lane in self._lanes)

    @property
    def pending(self) -> int:
        """Events posted and not yet delivered to every subscriber."""
        return max((lane.pending for lane in self._lanes), default=0)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every posted event has been delivered (or given up); False when
        `timeout_s` passed first."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        while True:
            busy = [lane.task for lane in self._lanes if lane.task is not None]
            if not busy:
                return True
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(busy, timeout=remaining)


class _Lane(Generic[EventT]):
    """One subscriber's queue of posted events and the task that works through it."""

    def __init__(self, owner: Fanout[EventT], subscriber: Subscriber[EventT], yields: bool) -> None:
        self._owner = owner
        self._subscriber = subscriber
        self._yields = yields
        self._queue: collections.deque[EventT] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.given_up = 0
        self._failing = False  # the last event was given up on: a streak of failures
        self._streak = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def label(self) -> str:
        name = getattr(self._subscriber, "__qualname__", None) or repr(self._subscriber)
        return f"{self._owner.name} → {name}"

    def post(self, events: Sequence[EventT]) -> None:
        self._queue.extend(events)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"vigil-{self._owner.name}"
            )

    async def _run(self) -> None:
        try:
            while self._queue:
                if self._yields:
                    await asyncio.sleep(0)
                await self._deliver(self._queue.popleft())
        finally:
            self.task = None
            if self._queue:  # cancelled with events left: they are not delivered
                log.warning("%s: %d events not delivered (stopped)", self.label, len(self._queue))
                self._queue.clear()

    async def _deliver(self, event: EventT) -> None:
        delays = () if self._failing else RETRY_DELAYS_S
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            try:
                await self._subscriber(event)
            except Exception:
                self.failures += 1
                self._streak += 1
                if self._streak == 1:
                    log.exception("%s failed (the event was stored; retrying)", self.label)
                continue
            if self._streak:
                log.warning("%s recovered after %d failed tries", self.label, self._streak)
            self._failing, self._streak = False, 0
            return
        self.given_up += 1
        if not self._failing:
            log.error("%s: gave up on an event after %d tries", self.label, len(delays) + 1)
        self._failing = True
