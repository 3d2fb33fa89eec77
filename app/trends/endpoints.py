"""Read-only routes for the nurse station: a chair's trend window, sparklines, station state."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.alarms.service import AlarmService, get_alarm_service
from app.auth.deps import NurseAtSite, NurseOnSession
from app.deps import get_db
from app.params import SessionId, SiteId
from app.storage.db import Database
from app.timeutil import utcnow
from app.trends import repository
from app.trends.schemas import ActiveLimit, SparklinesOut, StationStateOut, TrendOut
from monitor.protocol import Phase, TechnicalKind

router = APIRouter(prefix="/api/v1", tags=["nurse station"])
Alarms = Annotated[AlarmService, Depends(get_alarm_service)]
Db = Annotated[Database, Depends(get_db)]


def _active_limits(alarms: AlarmService, session_id: int, phase: str) -> list[ActiveLimit]:
    """The rules that apply in this phase, with this session's overrides applied."""
    engine = alarms.engine
    key = str(session_id)
    watched = key in engine.sessions()
    applicable = [r for r in engine.protocol.rules if phase in {p.value for p in r.phases}]
    return [
        ActiveLimit(
            rule_id=rule.id,
            vital=rule.vital.value,
            op=rule.op.value,
            priority=rule.priority.value,
            limit=engine.limit(key, rule.id) if watched else rule.limit,
            protocol_limit=rule.limit,
            relative_to_baseline=rule.relative_to_baseline,
        )
        for rule in applicable
    ]


@router.get("/sessions/{session_id}/trend", response_model=TrendOut, responses={404: {}})
async def session_trend(
    session_id: SessionId,
    _: NurseOnSession,
    db: Db,
    alarms: Alarms,
    minutes: Annotated[float, Query(gt=0, le=24 * 60)] = 60,
) -> TrendOut:
    """The last minutes of a session: samples, alarms, events and its active limits."""
    now = utcnow()
    since = now - timedelta(minutes=minutes)
    infusion_session = await db.read(repository.open_session, session_id)
    series = await db.read(repository.session_series, session_id, since)
    alarm_list = await db.read(repository.session_alarms, session_id, since)
    events = await db.read(repository.session_events, session_id, since)
    phase = infusion_session.phase.value
    return TrendOut(
        session_id=session_id,
        chair_id=infusion_session.chair_id,
        phase=phase,
        since=since,
        server_time=now,
        series=series,
        alarms=alarm_list,
        events=events,
        limits=_active_limits(alarms, session_id, phase),
    )


@router.get("/sites/{site_id}/sparklines", response_model=SparklinesOut)
async def site_sparklines(
    site_id: SiteId,
    _: NurseAtSite,
    db: Db,
    minutes: Annotated[float, Query(gt=0, le=60)] = 15,
    bucket_s: Annotated[float, Query(ge=1, le=60)] = 5,
) -> SparklinesOut:
    """HR, PR and SpO2 of every open session, as bucket means: what a reloaded screen draws."""
    now = utcnow()
    since = now - timedelta(minutes=minutes)
    chairs = await db.read(repository.site_sparklines, site_id, since, bucket_s)
    return SparklinesOut(
        site_id=site_id, since=since, server_time=now, bucket_s=bucket_s, chairs=chairs
    )


@router.get("/sites/{site_id}/station-state", response_model=StationStateOut)
async def station_state(site_id: SiteId, _: NurseAtSite, db: Db, alarms: Alarms) -> StationStateOut:
    """Cuff intervals per phase, the audio pause length, and which sessions are paused now."""
    protocol = alarms.engine.protocol
    pause_s = protocol.lifecycle.audio_pause_s
    silent = protocol.technical_check(TechnicalKind.DEVICE_SILENT)
    now = utcnow()
    paused_at = await db.read(repository.audio_paused_since, site_id)
    return StationStateOut(
        site_id=site_id,
        server_time=now,
        nibp_interval_s={phase.value: protocol.nibp_interval(phase) for phase in Phase},
        audio_pause_s=pause_s,
        device_silent_s=silent.window_s if silent is not None else 10.0,
        audio_paused_until={
            session_id: at + timedelta(seconds=pause_s)
            for session_id, at in paused_at.items()
            if at + timedelta(seconds=pause_s) > now
        },
    )
