"""Read one session and its samples for export."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFoundError
from app.storage.models import Chair, Device, InfusionSession, Patient, Sample, Site
from monitor.vitals import SampleQuality, Vital


@dataclass(frozen=True, slots=True)
class ExportSample:
    id: int
    vital: Vital
    value: float
    unit: str  # canonical UCUM unit
    device_time: datetime
    received_time: datetime
    quality: list[str]  # flag names, e.g. ["artifact"]
    device: str  # the device's identifier


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: int
    site_name: str
    chair_name: str
    patient_pseudonym: str
    started_at: datetime
    ended_at: datetime | None
    samples: list[ExportSample]


def load_session(session: Session, session_id: int) -> SessionRecord:
    """The session and every sample stored in it, in device-time order."""
    row = session.execute(
        select(InfusionSession, Chair.name, Site.name, Patient.pseudonym)
        .join(Chair, InfusionSession.chair_id == Chair.id)
        .join(Site, Chair.site_id == Site.id)
        .join(Patient, InfusionSession.patient_id == Patient.id)
        .where(InfusionSession.id == session_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"unknown session {session_id}")
    infusion, chair_name, site_name, pseudonym = row
    samples = [
        ExportSample(
            sample.id,
            Vital(sample.vital),
            sample.value,
            sample.unit,
            sample.device_time,
            sample.received_time,
            SampleQuality(sample.quality).names(),
            identifier,
        )
        for sample, identifier in session.execute(
            select(Sample, Device.identifier)
            .join(Device, Sample.device_id == Device.id)
            .where(Sample.session_id == session_id)
            .order_by(Sample.device_time, Sample.id)
        )
    ]
    return SessionRecord(
        infusion.id,
        site_name,
        chair_name,
        pseudonym,
        infusion.started_at,
        infusion.ended_at,
        samples,
    )
