"""Database work for the device registry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.devices.schemas import DeviceOut, DeviceRef, UnboundSampleOut
from app.errors import ConflictError, NotFoundError
from app.storage.models import Chair, Device, Sample
from monitor.vitals import SampleQuality

_UNBOUND = int(SampleQuality.UNBOUND)


def _device(session: Session, identifier: str) -> Device:
    device = session.scalar(select(Device).where(Device.identifier == identifier))
    if device is None:
        raise NotFoundError(f"unknown device {identifier!r}: no device is registered under that id")
    return device


def _chair(session: Session, chair_id: int) -> Chair:
    chair = session.get(Chair, chair_id)
    if chair is None:
        raise NotFoundError(f"unknown chair {chair_id}")
    return chair


def _out(session: Session, device: Device) -> DeviceOut:
    chair = session.get(Chair, device.chair_id) if device.chair_id is not None else None
    last = session.scalar(
        select(func.max(Sample.received_time)).where(Sample.device_id == device.id)
    )
    unbound = session.scalar(
        select(func.count(Sample.id)).where(
            Sample.device_id == device.id, Sample.quality.op("&")(_UNBOUND) != 0
        )
    )
    return DeviceOut(
        identifier=device.identifier,
        kind=device.kind,
        chair_id=device.chair_id,
        chair_name=chair.name if chair else None,
        site_id=chair.site_id if chair else None,
        created_at=device.created_at,
        last_received_time=last,
        unbound_samples=unbound or 0,
    )


def register(
    session: Session, identifier: str, kind: str, chair_id: int | None, now: datetime
) -> DeviceOut:
    if session.scalar(select(Device.id).where(Device.identifier == identifier)) is not None:
        raise ConflictError(f"device {identifier!r} is already registered")
    if chair_id is not None:
        _chair(session, chair_id)
    device = Device(identifier=identifier, kind=kind, chair_id=chair_id, created_at=now)
    session.add(device)
    session.commit()
    return _out(session, device)


def list_devices(session: Session, unbound_only: bool = False) -> list[DeviceOut]:
    query = select(Device).order_by(Device.identifier)
    if unbound_only:
        query = query.where(Device.chair_id.is_(None))
    return [_out(session, device) for device in session.scalars(query)]


def get_device(session: Session, identifier: str) -> DeviceOut:
    return _out(session, _device(session, identifier))


def bind(session: Session, identifier: str, chair_id: int | None) -> tuple[DeviceOut, set[int]]:
    """Bind (or with None, unbind) a device; returns it and the sites whose chairs changed."""
    device = _device(session, identifier)
    changed: set[int] = set()
    if device.chair_id is not None:
        changed.add(_chair(session, device.chair_id).site_id)
    if chair_id is not None:
        changed.add(_chair(session, chair_id).site_id)
    device.chair_id = chair_id
    session.commit()
    return _out(session, device), changed


def unbound_samples(
    session: Session,
    identifier: str | None,
    limit: int,
    before_id: int | None,
) -> list[UnboundSampleOut]:
    """Samples stored while their device was bound to no chair, newest first."""
    query = (
        select(Sample, Device.identifier)
        .join(Device, Sample.device_id == Device.id)
        .where(Sample.quality.op("&")(_UNBOUND) != 0)
        .order_by(Sample.id.desc())
        .limit(limit)
    )
    if identifier is not None:
        query = query.where(Sample.device_id == _device(session, identifier).id)
    if before_id is not None:
        query = query.where(Sample.id < before_id)
    return [
        UnboundSampleOut(
            id=sample.id,
            device_id=device_identifier,
            vital=sample.vital,
            value=sample.value,
            unit=sample.unit,
            device_time=sample.device_time,
            received_time=sample.received_time,
            quality=SampleQuality(sample.quality).names(),
        )
        for sample, device_identifier in session.execute(query)
    ]


def find_first(session: Session, candidates: Sequence[str]) -> DeviceRef | None:
    """The first of `candidates` (in their order) that is a registered device."""
    wanted = [c for c in dict.fromkeys(candidates) if c]
    if not wanted:
        return None
    rows = session.execute(
        select(Device.identifier, Device.chair_id, Chair.site_id)
        .outerjoin(Chair, Device.chair_id == Chair.id)
        .where(Device.identifier.in_(wanted))
    ).all()
    by_identifier = {row[0]: DeviceRef(row[0], row[1], row[2]) for row in rows}
    return next((by_identifier[c] for c in wanted if c in by_identifier), None)
