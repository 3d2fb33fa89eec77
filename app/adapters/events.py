"""What adapters tell the rest of Vigil besides samples: link state changes and device alerts.

The alarm engine subscribes here: a `LinkEvent` with state `disconnected` and a
`device_identifier` means that device's link to Vigil was lost (a technical alarm on
`chair_id`); a `DeviceAlert` is an alarm the device itself raised (HL7 ORU^R40). The event
types are defined in `app.events`, beneath every domain, so the alarm service can read them
without importing the adapters; they are re-exported here for adapter authors.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from app.events import AdapterEvent as AdapterEvent
from app.events import ConnectionState as ConnectionState
from app.events import DeviceAlert as DeviceAlert
from app.events import DeviceAlertKind as DeviceAlertKind
from app.events import LinkEvent as LinkEvent

log = logging.getLogger(__name__)


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
