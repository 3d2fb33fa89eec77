"""The NIBP interval of a session: the monitor's cuff schedule, as the alarm engine uses it.

A nurse sets it to what the monitor's auto interval is (1, 2, 3, 5, 10, 15, 30 or 60 min,
or 0: no schedule, manual readings only); unset, the protocol's interval for the phase
applies (docs/ALARMS.md, "NIBP interval"). It decides when `nibp_stale` is raised (the
interval plus the check's grace) and the "next cuff" countdown on the tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.storage.models import InfusionSession
from monitor.protocol import Phase, Protocol, TechnicalKind

# The intervals a bedside monitor's automatic NIBP mode offers, in seconds; 0: none.
ALLOWED_NIBP_INTERVALS_S: tuple[float, ...] = (0, 60, 120, 180, 300, 600, 900, 1800, 3600)


@dataclass(frozen=True, slots=True)
class NibpSchedule:
    """What applies to a session now: its own setting (None: the phase's default), the
    interval in effect, and how long without a reading raises `nibp_stale` (None: never)."""

    setting_s: float | None
    interval_s: float
    stale_after_s: float | None


def nibp_schedule(protocol: Protocol, phase: Phase, setting_s: float | None) -> NibpSchedule:
    interval = protocol.nibp_interval(phase) if setting_s is None else setting_s
    check = protocol.technical_check(TechnicalKind.NIBP_STALE)
    stale = None
    if check is not None and interval > 0 and phase in check.phases:
        stale = interval + check.grace_s
    return NibpSchedule(setting_s, interval, stale)


def open_session_intervals(session: Session) -> list[tuple[int, float]]:
    """(session id, seconds) of every open session with an NIBP interval of its own."""
    rows = session.execute(
        select(InfusionSession.id, InfusionSession.nibp_interval_s).where(
            InfusionSession.ended_at.is_(None), InfusionSession.nibp_interval_s.is_not(None)
        )
    ).all()
    return [(session_id, seconds) for session_id, seconds in rows if seconds is not None]
