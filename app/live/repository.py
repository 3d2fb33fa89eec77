"""Load a site's live view (chairs, devices, open sessions, latest values) from the database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.events import AlarmOut
from app.live.views import ChairView, LatestValue, SessionView, SiteView
from app.storage.models import (
    Alarm,
    Chair,
    Device,
    EventKind,
    InfusionSession,
    Patient,
    Sample,
    SessionEvent,
    Site,
)
from monitor.vitals import Vital


def load_site_view(session: Session, site_id: int) -> SiteView | None:
    site = session.get(Site, site_id)
    if site is None:
        return None
    chairs = {
        chair.id: ChairView(chair.id, chair.name, chair.position, [], None)
        for chair in session.scalars(
            select(Chair).where(Chair.site_id == site_id).order_by(Chair.position, Chair.id)
        )
    }
    for identifier, chair_id in session.execute(
        select(Device.identifier, Device.chair_id)
        .where(Device.chair_id.in_(chairs))
        .order_by(Device.identifier)
    ):
        if chair_id is not None:  # always true here; the column itself is nullable
            chairs[chair_id].devices.append(identifier)
    for infusion_session, initials in session.execute(
        select(InfusionSession, Patient.initials)
        .join(Patient, InfusionSession.patient_id == Patient.id)
        .where(InfusionSession.chair_id.in_(chairs), InfusionSession.ended_at.is_(None))
        .order_by(InfusionSession.started_at)
    ):
        infusion_start = session.scalar(
            select(SessionEvent.at)
            .where(
                SessionEvent.session_id == infusion_session.id,
                SessionEvent.kind == EventKind.INFUSION_START,
            )
            .order_by(SessionEvent.at.desc())
            .limit(1)
        )
        chairs[infusion_session.chair_id].session = SessionView(
            infusion_session.id,
            infusion_session.phase.value,
            initials,
            infusion_session.started_at,
            infusion_start,
            infusion_session.nibp_interval_s,
        )
    for alarm in session.scalars(
        select(Alarm)
        .where(Alarm.chair_id.in_(chairs), Alarm.state != "cleared")
        .order_by(Alarm.raised_at)
    ):
        chairs[alarm.chair_id].alarms[alarm.id] = AlarmOut.of(
            alarm.record(), alarm.chair_id
        ).model_dump(mode="json")
    for chair in chairs.values():
        for vital in Vital:
            # One indexed lookup per chair and vital: cheap, and independent of table size.
            latest = session.execute(
                select(
                    Sample.value,
                    Sample.unit,
                    Sample.device_time,
                    Sample.received_time,
                    Sample.quality,
                )
                .where(Sample.chair_id == chair.chair_id, Sample.vital == vital.value)
                .order_by(Sample.received_time.desc(), Sample.device_time.desc())
                .limit(1)
            ).one_or_none()
            if latest is not None:
                chair.vitals[vital.value] = LatestValue(*latest)
    return SiteView(site.id, site.name, chairs)
