"""A device's own alerts, turned into Vigil's documented technical alarms.

- `nibp_failed`: `engine.report_nibp_failure`, once per failed cycle; the second in a
  row raises `nibp_failed`.
- `probe_off`: an SpO2 sample with no value, flagged `probe_off` (unflagged when the
  alert ends): `spo2_probe_off`.
- `equipment_fault`: `engine.device_fault` with the device's text and priority:
  `device_fault_<code>`, ended when the device says so.
- `other`: nothing (logged).

The probe-off alert goes in as a sample because that is how the engine already knows a
probe is off (the monitor flags its samples): one condition, whichever way it arrives.
docs/ALARMS.md ("From the wire") gives the reasoning for each.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict

from app.events import DeviceAlert, DeviceAlertKind
from monitor.conditions import VITAL_INDEX, SampleBatch
from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmTransition
from monitor.protocol import Priority, TechnicalKind
from monitor.vitals import SampleQuality, Vital

log = logging.getLogger(__name__)

# The device's priority → the fault alarm's. "none" (IEC 60601-1-8: an information
# signal) is still shown, at low; a device that gives none gets medium, like the
# protocol's other technical alarms. Crisis is Vigil's own escalation, never a device's.
FAULT_PRIORITIES: dict[str, Priority] = {
    "high": Priority.HIGH,
    "medium": Priority.MEDIUM,
    "low": Priority.LOW,
    "none": Priority.LOW,
}
DEFAULT_FAULT_PRIORITY = Priority.MEDIUM
# Codes that name no fault in particular (MDC_EVT_ALARM): the device's text tells them apart.
GENERIC_ALERT_CODES = frozenset({"196616", "MDC_EVT_ALARM"})
FAULT_CODE_LENGTH = 24  # an alarm id (session:rule:ms) must fit in 64 characters
FAULT_TEXT_LENGTH = 120
_REMEMBERED_FAILURES = 64  # alert ids per session counted as NIBP failures


def fault_code(alert: DeviceAlert) -> str:
    """The code of a device's fault alarm: the device's own code, or its words when the
    code is generic or absent. The start and the end of one fault give the same code."""
    raw = alert.alert_code.strip()
    if not raw or raw.upper() in GENERIC_ALERT_CODES:
        raw = alert.text
    code = re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")[:FAULT_CODE_LENGTH].strip("_")
    return code or "unknown"


class DeviceAlertMapper:
    """Remembers what the alarms need across alerts: which NIBP failures were counted (a
    resend or an update of one is not a second failure) and which devices report each
    fault (a fault two devices report ends when both say so)."""

    def __init__(self) -> None:
        self._counted: dict[str, OrderedDict[str, None]] = {}
        self._fault_devices: dict[tuple[str, str], set[str]] = {}

    def transitions(
        self, engine: AlarmEngine, key: str, alert: DeviceAlert
    ) -> list[AlarmTransition]:
        """What `alert` does to session `key`'s alarms, at the moment Vigil received it."""
        at = alert.received_time.timestamp()
        if alert.kind is DeviceAlertKind.NIBP_FAILED:
            if not alert.onset or not self._first_report(key, alert.alert_id):
                return []  # the same failed cycle again, or its end: not another failure
            return engine.report_nibp_failure(key, at)
        if alert.kind is DeviceAlertKind.PROBE_OFF:
            check = engine.protocol.technical_check(TechnicalKind.PROBE_OFF)
            vital = check.vital if check is not None and check.vital is not None else Vital.SPO2
            quality = SampleQuality.PROBE_OFF if alert.active else SampleQuality.NONE
            sample = SampleBatch.from_arrays(
                [engine.session_index(key)], [VITAL_INDEX[vital]], [math.nan], [at], [int(quality)]
            )
            return engine.ingest(sample)
        if alert.kind is DeviceAlertKind.EQUIPMENT_FAULT:
            return self._fault(engine, key, alert, at)
        log.info(
            "device alert from %s not raised (%s): %s",
            alert.device_identifier,
            alert.kind.value,
            alert.text,
        )
        return []

    def _first_report(self, key: str, alert_id: str | None) -> bool:
        if alert_id is None:
            return True
        seen = self._counted.setdefault(key, OrderedDict())
        if alert_id in seen:
            return False
        seen[alert_id] = None
        while len(seen) > _REMEMBERED_FAILURES:
            seen.popitem(last=False)
        return True

    def _fault(
        self, engine: AlarmEngine, key: str, alert: DeviceAlert, at: float
    ) -> list[AlarmTransition]:
        code = fault_code(alert)
        devices = self._fault_devices.setdefault((key, code), set())
        priority = FAULT_PRIORITIES.get(alert.priority or "", DEFAULT_FAULT_PRIORITY)
        text = " ".join(alert.text.split())[:FAULT_TEXT_LENGTH] or code
        if alert.active:
            devices.add(alert.device_identifier)
        else:
            devices.discard(alert.device_identifier)
            if devices:
                return []  # another device still reports it
            del self._fault_devices[(key, code)]
        return engine.device_fault(
            key, code, priority=priority, text=text, active=alert.active, time=at
        )
