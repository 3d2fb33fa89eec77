"""The websocket messages, built in one place (docs/API.md describes them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.events import StoredBatch
from app.live.views import ChairView, LatestValue, SessionView, SiteView
from app.timeutil import iso
from monitor.display import (
    ALARM_LEVELS,
    LEVEL_COLOURS,
    PRIORITY_COLOURS,
    PRIORITY_LEVEL,
    fresh_s,
)
from monitor.protocol import PHASES, PRIORITIES, Protocol
from monitor.vitals import SampleQuality, Vital

NO_SESSION = "no_session"  # the `fresh_s` key of a chair with no session


def _value(latest: LatestValue, now: datetime) -> dict[str, Any]:
    return {
        "value": latest.value,
        "unit": latest.unit,
        "device_time": iso(latest.device_time),
        "received_time": iso(latest.received_time),
        "age_s": round((now - latest.received_time).total_seconds(), 3),
        "quality": SampleQuality(latest.quality).names(),
    }


def _session(session: SessionView | None) -> dict[str, Any] | None:
    if session is None:
        return None
    return {
        "session_id": session.session_id,
        "phase": session.phase,
        "patient_initials": session.patient_initials,
        "started_at": iso(session.started_at),
        "infusion_started_at": iso(session.infusion_started_at)
        if session.infusion_started_at
        else None,
        "nibp_interval_s": session.nibp_interval_s,
    }


def _chair(chair: ChairView, now: datetime) -> dict[str, Any]:
    return {
        "chair_id": chair.chair_id,
        "name": chair.name,
        "position": chair.position,
        "devices": chair.devices,
        "session": _session(chair.session),
        "vitals": {code: _value(latest, now) for code, latest in chair.vitals.items()},
        "alarms": list(chair.alarms.values()),
    }


def display_facts(protocol: Protocol) -> dict[str, Any]:
    """What a screen needs to show values and alarms as the protocol means them: how long
    each vital stays fresh in each phase, the priorities and alarm levels in order (least
    urgent first), which level each priority is shown at, and their colours."""
    phases = [None, *PHASES]
    return {
        "fresh_s": {
            vital.value: {
                NO_SESSION if phase is None else phase.value: fresh_s(protocol, vital, phase)
                for phase in phases
            }
            for vital in Vital
        },
        "priority_order": [priority.value for priority in PRIORITIES],
        "alarm_levels": [level.value for level in ALARM_LEVELS],
        "priority_level": {p.value: level.value for p, level in PRIORITY_LEVEL.items()},
        "priority_colours": {p.value: colour for p, colour in PRIORITY_COLOURS.items()},
        "level_colours": {level.value: colour for level, colour in LEVEL_COLOURS.items()},
    }


def snapshot(site: SiteView, seq: int, now: datetime, display: dict[str, Any]) -> dict[str, Any]:
    """The site's whole state; `display` is `display_facts` of the running protocol."""
    return {
        "type": "snapshot",
        "site_id": site.site_id,
        "site_name": site.name,
        "seq": seq,
        "server_time": iso(now),
        "display": display,
        "chairs": [
            _chair(chair, now)
            for chair in sorted(site.chairs.values(), key=lambda c: (c.position, c.chair_id))
        ],
    }


def samples(batch: StoredBatch, now: datetime) -> dict[str, Any]:
    """A delta; the hub adds its `seq`."""
    received = iso(batch.received_time)
    return {
        "type": "samples",
        "site_id": batch.site_id,
        "chair_id": batch.chair_id,
        "session_id": batch.session_id,
        "server_time": iso(now),
        "samples": [
            {
                "vital": observation.vital.value,
                "value": observation.value,
                "unit": observation.unit,
                "device_time": iso(observation.device_time),
                "received_time": received,
                "quality": observation.quality.names(),
            }
            for observation in batch.observations
        ],
    }


def session(
    site_id: int, chair_id: int, event: str, session: SessionView | None, now: datetime
) -> dict[str, Any]:
    """A session event on one chair (check-in, phase change, rate, note, discharge): the
    chair's session as it now is, None once discharged; the hub adds its `seq`."""
    return {
        "type": "session",
        "site_id": site_id,
        "chair_id": chair_id,
        "event": event,
        "server_time": iso(now),
        "session": _session(session),
    }


def alarm(
    site_id: int, event: str, actor: str | None, alarm: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """An alarm transition; the hub adds its `seq`."""
    return {
        "type": "alarm",
        "site_id": site_id,
        "chair_id": alarm["chair_id"],
        "session_id": alarm["session_id"],
        "event": event,
        "actor": actor,
        "server_time": iso(now),
        "alarm": alarm,
    }


def alarm_stored(
    site_id: int, chair_id: int, session_id: int, alarm_id: str, event: str, at: datetime
) -> dict[str, Any]:
    """A transition sent with `"stored": false` is now in the database; the hub adds its
    `seq`. `event` and `at` say which transition of the alarm."""
    return {
        "type": "alarm_stored",
        "site_id": site_id,
        "chair_id": chair_id,
        "session_id": session_id,
        "alarm_id": alarm_id,
        "event": event,
        # To the microsecond, as the alarm's own times: it names one transition.
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def status(database: str, now: datetime) -> dict[str, Any]:
    """Whether the server can reach its database ("ok" or "unreachable"); outside the
    numbered deltas: sent when it changes, and on connecting while it is unreachable."""
    return {"type": "status", "database": database, "server_time": iso(now)}


def heartbeat(site_id: int, seq: int, now: datetime) -> dict[str, Any]:
    return {"type": "heartbeat", "site_id": site_id, "seq": seq, "server_time": iso(now)}


def resync(site_id: int, reason: str) -> dict[str, Any]:
    return {"type": "resync", "site_id": site_id, "reason": reason}


def error(detail: str) -> dict[str, Any]:
    return {"type": "error", "detail": detail}
