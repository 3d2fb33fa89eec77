"""Database work for ingest: check the sender's credential, find the device's chair and
session, store the batch — for a whole group of batches in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, select
from sqlalchemy.orm import Session

from app.errors import Forbidden, NotAuthenticated, NotFoundError, VigilError
from app.ingest.validation import Observation
from app.storage.models import Base, Chair, Device, DeviceCredential, InfusionSession
from monitor.vitals import SampleQuality

SAMPLES = Base.metadata.tables["samples"]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A committed batch, with where it belongs."""

    device_identifier: str
    site_id: int | None
    chair_id: int | None
    session_id: int | None
    received_time: datetime
    observations: list[Observation]


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A validated batch waiting for the writer."""

    device_identifier: str
    observations: list[Observation]
    received_time: datetime
    # The hash of the sender's device credential, checked with the batch, so a revocation
    # stops the next batch; None only for a door that vouches otherwise (MLLP, by address).
    credential_hash: str | None


def store_batches(session: Session, pending: list[PendingBatch]) -> list[StoredBatch | VigilError]:
    """Store every batch whose device is known, in one transaction and one commit.

    Each batch is still all-or-nothing: an unknown device refuses only its own batch, and a
    failed commit fails them all. One query resolves every device of the group with its
    chair, site and open session, whatever the group's size.
    """
    identifiers = {batch.device_identifier for batch in pending}
    devices: dict[str, tuple[int, int | None, int | None]] = {}
    open_sessions: dict[int, int] = {}
    for identifier, found_device, found_chair, found_site, found_session in session.execute(
        select(Device.identifier, Device.id, Device.chair_id, Chair.site_id, InfusionSession.id)
        .outerjoin(Chair, Device.chair_id == Chair.id)
        .outerjoin(
            InfusionSession,
            and_(InfusionSession.chair_id == Device.chair_id, InfusionSession.ended_at.is_(None)),
        )
        .where(Device.identifier.in_(identifiers))
        .order_by(InfusionSession.started_at)
    ):
        devices[identifier] = (found_device, found_chair, found_site)
        if found_chair is not None and found_session is not None:
            open_sessions[found_chair] = found_session  # the latest open one wins
    credentials = _live_credentials(session, pending)
    results: list[StoredBatch | VigilError] = []
    rows: list[dict[str, object]] = []
    for batch in pending:
        device = devices.get(batch.device_identifier)
        refusal = _refusal(batch, credentials, device)
        if refusal is not None:
            results.append(refusal)
            continue
        if device is None:
            results.append(
                NotFoundError(
                    f"unknown device {batch.device_identifier!r}: "
                    "no device is registered under that id"
                )
            )
            continue
        device_id, chair_id, site_id = device
        session_id = open_sessions.get(chair_id) if chair_id is not None else None
        # Samples from a device bound to no chair are kept and flagged, never dropped.
        extra = SampleQuality.UNBOUND if chair_id is None else SampleQuality.NONE
        rows.extend(
            {
                "session_id": session_id,
                "device_id": device_id,
                "chair_id": chair_id,
                "vital": observation.vital.value,
                "value": observation.value,
                "unit": observation.unit,
                "device_time": observation.device_time,
                "received_time": batch.received_time,
                "quality": int(observation.quality | extra),
            }
            for observation in batch.observations
        )
        results.append(
            StoredBatch(
                batch.device_identifier,
                site_id,
                chair_id,
                session_id,
                batch.received_time,
                batch.observations,
            )
        )
    if rows:
        # A Core insert: half the cost of the ORM's bulk path, and nothing is read back.
        session.connection().execute(insert(SAMPLES), rows)
    session.commit()
    return results


def _live_credentials(
    session: Session, pending: list[PendingBatch]
) -> dict[str, tuple[int | None, int | None]]:
    """Unrevoked credentials among the group's: hash → (device id, site id) it covers."""
    hashes = {batch.credential_hash for batch in pending if batch.credential_hash is not None}
    if not hashes:
        return {}
    query = select(
        DeviceCredential.token_hash, DeviceCredential.device_id, DeviceCredential.site_id
    ).where(DeviceCredential.token_hash.in_(hashes), DeviceCredential.revoked_at.is_(None))
    return {hashed: (device_id, site_id) for hashed, device_id, site_id in session.execute(query)}


def _refusal(
    batch: PendingBatch,
    credentials: dict[str, tuple[int | None, int | None]],
    device: tuple[int, int | None, int | None] | None,
) -> VigilError | None:
    """Why the sender may not store this batch, if it may not. An unknown device is left to
    the caller (a 404 naming it) once the credential itself is good."""
    if batch.credential_hash is None:
        return None
    covered = credentials.get(batch.credential_hash)
    if covered is None:
        return NotAuthenticated("the device credential is unknown or revoked")
    if device is None:
        return None
    bound_device, gateway_site = covered
    device_id, _chair_id, site_id = device
    allowed = (
        bound_device == device_id
        if bound_device is not None
        else site_id is not None and gateway_site == site_id
    )
    if allowed:
        return None
    return Forbidden(f"this credential may not send for device {batch.device_identifier!r}")
