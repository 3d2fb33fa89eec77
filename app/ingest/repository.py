"""Database work for ingest: find the device's chair and session, store the batch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.errors import NotFoundError
from app.ingest.validation import Observation
from app.storage.models import Chair, Device, InfusionSession, Sample
from monitor.vitals import SampleQuality


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A committed batch, with where it belongs."""

    device_identifier: str
    site_id: int | None
    chair_id: int | None
    session_id: int | None
    received_time: datetime
    observations: list[Observation]


def open_session_id(session: Session, chair_id: int) -> int | None:
    return session.scalar(
        select(InfusionSession.id)
        .where(InfusionSession.chair_id == chair_id, InfusionSession.ended_at.is_(None))
        .order_by(InfusionSession.started_at.desc())
        .limit(1)
    )


def store_batch(
    session: Session,
    device_identifier: str,
    observations: list[Observation],
    received_time: datetime,
) -> StoredBatch:
    """Insert every observation in one transaction and commit; raise if the device is unknown."""
    device = session.execute(
        select(Device.id, Device.chair_id, Chair.site_id)
        .outerjoin(Chair, Device.chair_id == Chair.id)
        .where(Device.identifier == device_identifier)
    ).one_or_none()
    if device is None:
        raise NotFoundError(
            f"unknown device {device_identifier!r}: no device is registered under that id"
        )
    device_id, chair_id, site_id = device
    session_id = open_session_id(session, chair_id) if chair_id is not None else None
    # Samples from a device bound to no chair are kept and flagged, never dropped.
    extra = SampleQuality.UNBOUND if chair_id is None else SampleQuality.NONE
    session.execute(
        insert(Sample),
        [
            {
                "session_id": session_id,
                "device_id": device_id,
                "chair_id": chair_id,
                "vital": observation.vital.value,
                "value": observation.value,
                "unit": observation.unit,
                "device_time": observation.device_time,
                "received_time": received_time,
                "quality": int(observation.quality | extra),
            }
            for observation in observations
        ],
    )
    session.commit()
    return StoredBatch(
        device_identifier, site_id, chair_id, session_id, received_time, observations
    )
