"""Alarm routes: list, acknowledge, audio pause, per-session limit overrides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.alarms import repository
from app.alarms.schemas import (
    ActionResult,
    AudioPauseIn,
    LimitOverrideIn,
    LimitOverrideOut,
    ProtocolOut,
    RuleOut,
)
from app.alarms.service import AlarmService, get_alarm_service
from app.auth.deps import (
    ClinicianOnSession,
    NurseAtSite,
    NurseOnAlarm,
    NurseOnSession,
    SignedIn,
    record_act,
)
from app.deps import get_db
from app.events import AlarmOut
from app.params import AlarmId, SessionId, SiteId
from app.storage.db import Database

router = APIRouter(prefix="/api/v1", tags=["alarms"])
Alarms = Annotated[AlarmService, Depends(get_alarm_service)]
Db = Annotated[Database, Depends(get_db)]


@router.get("/sites/{site_id}/alarms", response_model=list[AlarmOut])
async def site_alarms(
    site_id: SiteId,
    _: NurseAtSite,
    db: Db,
    active: Annotated[bool, Query(description="Only alarms not yet cleared.")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AlarmOut]:
    """A site's alarms, newest first."""
    return await db.read(
        lambda s: repository.list_alarms(s, site_id=site_id, active_only=active, limit=limit)
    )


@router.get("/sessions/{session_id}/alarms", response_model=list[AlarmOut])
async def session_alarms(
    session_id: SessionId,
    _: NurseOnSession,
    db: Db,
    active: Annotated[bool, Query(description="Only alarms not yet cleared.")] = False,
) -> list[AlarmOut]:
    """A session's alarms, newest first."""
    return await db.read(
        lambda s: repository.list_alarms(s, session_id=session_id, active_only=active, limit=5000)
    )


@router.post("/alarms/{alarm_id}/acknowledge", response_model=ActionResult, responses={404: {}})
async def acknowledge(
    alarm_id: AlarmId, who: NurseOnAlarm, alarms: Alarms, request: Request
) -> ActionResult:
    """Acknowledge an alarm: it stops sounding and escalating, on every screen."""
    result = ActionResult(alarms=await alarms.acknowledge(alarm_id, who.username))
    await record_act(request, who, "alarm_acknowledged", target_type="alarm", target_id=alarm_id)
    return result


@router.post("/sessions/{session_id}/audio-pause", response_model=ActionResult, responses={404: {}})
async def pause_audio(
    session_id: SessionId, body: AudioPauseIn, who: NurseOnSession, alarms: Alarms, request: Request
) -> ActionResult:
    """Silence a session's raised alarms for a while; a new or higher alarm sounds anyway."""
    result = ActionResult(alarms=await alarms.pause_audio(session_id, who.username, body.seconds))
    await record_act(
        request,
        who,
        "audio_paused",
        target_type="session",
        target_id=session_id,
        detail={"seconds": body.seconds},
    )
    return result


@router.post(
    "/sessions/{session_id}/limits",
    status_code=status.HTTP_201_CREATED,
    response_model=LimitOverrideOut,
    responses={404: {}, 422: {}},
)
async def override_limit(
    session_id: SessionId,
    body: LimitOverrideIn,
    who: ClinicianOnSession,
    alarms: Alarms,
    request: Request,
) -> LimitOverrideOut:
    """Change one rule's limit for this session only; who and why are kept."""
    result = await alarms.override_limit(
        session_id, body.rule_id, body.limit, who.username, body.reason
    )
    await record_act(
        request,
        who,
        "limit_changed",
        target_type="session",
        target_id=session_id,
        detail={"rule_id": body.rule_id, "old": result.old, "new": result.new},
    )
    return result


@router.get("/protocol", response_model=ProtocolOut)
async def clinic_protocol(_: SignedIn, alarms: Alarms) -> ProtocolOut:
    """The alarm protocol in force: its version and every physiological rule."""
    protocol = alarms.engine.protocol
    return ProtocolOut(
        name=protocol.name,
        version=protocol.version,
        rules=[
            RuleOut(
                id=rule.id,
                vital=rule.vital.value,
                op=rule.op.value,
                limit=rule.limit,
                priority=rule.priority.value,
                delay_s=rule.delay_s,
                relative_to_baseline=rule.relative_to_baseline,
                phases=sorted(phase.value for phase in rule.phases),
                overridable=rule.overridable,
            )
            for rule in protocol.rules
        ],
        audio_pause_s=protocol.lifecycle.audio_pause_s,
    )
