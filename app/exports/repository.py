"""Read one session and its samples for export."""

from __future__ import annotations

import functools
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


@functools.cache
def _flag_names(quality: int) -> tuple[str, ...]:
    """A stored quality as its flag names; a handful of values recur in every session."""
    return tuple(SampleQuality(quality).names())


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
    # Columns, not ORM rows: a two-hour session is ~29,000 samples, and building an
    # identity-mapped Sample for each was most of the read.
    samples = [
        ExportSample(
            sample_id,
            Vital(vital),
            value,
            unit,
            device_time,
            received_time,
            list(_flag_names(quality)),
            identifier,
        )
        for sample_id, vital, value, unit, device_time, received_time, quality, identifier in (
            session.execute(
                select(
                    Sample.id,
                    Sample.vital,
                    Sample.value,
                    Sample.unit,
                    Sample.device_time,
                    Sample.received_time,
                    Sample.quality,
                    Device.identifier,
                )
                .join(Device, Sample.device_id == Device.id)
                .where(Sample.session_id == session_id)
                .order_by(Sample.device_time, Sample.id)
            )
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
