"""What adapters tell the rest of Vigil besides samples: link state changes and device alerts.

The alarm engine subscribes here: a `LinkEvent` with state `disconnected` and a
`device_identifier` means that device's link to Vigil was lost (a technical alarm on
`chair_id`); a `DeviceAlert` is an alarm the device itself raised (HL7 ORU^R40).
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)


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
Listener = Callable[[AdapterEvent], Awaitable[None] | None]


class EventBus:
    """Fans adapter events out to listeners; a failing listener is logged, never propagated."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event from now on; returns the way to unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def publish(self, event: AdapterEvent) -> None:
        # A copy: a listener may unsubscribe itself while being called.
        for listener in list(self._listeners):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # An alarm-side bug must not break the device link that reported the event.
                # The event's kind and device, not its repr: an alert carries its value.
                log.exception(
                    "adapter event listener %r failed on a %s from %s",
                    listener,
                    type(event).__name__,
                    getattr(event, "device_identifier", None) or event.adapter,
                )
