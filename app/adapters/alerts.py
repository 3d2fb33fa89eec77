"""Device alerts through the JSON doors: `POST /api/v1/alerts`, the websocket's `alert`
message and MQTT's `.../alerts` topic share this schema and this check of who may send.

An alert is a fact about a device at a moment ("NIBP measurement failed", "SpO2 probe
off", "battery low"), not a measurement: it is not stored as a sample. The door checks
the sender's credential covers the device, finds where the device is bound, and
publishes a `DeviceAlert` on the adapter event bus; the alarm service turns it into the
documented technical alarm (docs/ALARMS.md) before the door answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import repository as auth_repository
from app.auth.tokens import token_hash
from app.devices.schemas import DeviceRef
from app.errors import (
    FieldProblem,
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    NotFoundError,
    VigilError,
)
from app.events import DeviceAlert, DeviceAlertKind
from app.storage.db import Database
from app.storage.models import Chair, Device

DevicePriority = Literal["high", "medium", "low", "none"]


class DeviceAlertIn(BaseModel):
    """One alert as a device reports it (the JSON body of `POST /api/v1/alerts`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    device_id: str = Field(
        min_length=1, max_length=128, description="The device's registered identifier."
    )
    kind: DeviceAlertKind = Field(
        description="nibp_failed: a cuff cycle ended without a reading; probe_off: the SpO2 "
        "probe is off; equipment_fault: any other fault of the device, shown with `text`; "
        "other: recorded by the device, not raised by Vigil (docs/ALARMS.md)."
    )
    active: bool = Field(
        default=True, description="false: the alert has ended (the fault is gone)."
    )
    text: str = Field(
        min_length=1,
        max_length=120,
        description="The device's own words, shown on the alarm.",
        examples=["NBP MEASURE FAILED"],
    )
    priority: DevicePriority | None = Field(
        default=None,
        description="The device's priority; for equipment_fault it becomes the alarm's "
        "(none: low; absent: medium). NIBP failure and probe off take the protocol's.",
    )
    code: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The device's code for this alert: one equipment_fault alarm per code.",
        examples=["EQUIP_MALF"],
    )
    alert_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The device's id of this alert instance: a resend with the same id is "
        "not a second NIBP failure.",
    )
    device_time: AwareDatetime = Field(description="When the device raised (or ended) it.")


class AlertAccepted(BaseModel):
    """The answer to an alert: what Vigil understood, and where the device is bound."""

    device_id: str
    kind: DeviceAlertKind
    active: bool
    chair_id: int | None = Field(description="Chair the device is bound to; null when unbound.")
    received_time: datetime = Field(description="Vigil's clock when the alert arrived.")

    @classmethod
    def of(cls, alert: DeviceAlert) -> AlertAccepted:
        return cls(
            device_id=alert.device_identifier,
            kind=alert.kind,
            active=alert.active,
            chair_id=alert.chair_id,
            received_time=alert.received_time,
        )


def validate_alert(data: object) -> DeviceAlertIn:
    """A wire alert (decoded JSON) as `DeviceAlertIn`; problems located as HTTP locates
    them (``("body", "kind")``), so every door words its errors alike."""
    try:
        return DeviceAlertIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(
            [
                FieldProblem(("body", *error["loc"]), error["msg"], error["type"])
                for error in exc.errors()
            ]
        ) from None


def build_alert(
    alert: DeviceAlertIn,
    device: DeviceRef,
    *,
    adapter: str,
    received_time: datetime,
    reference: str = "",
) -> DeviceAlert:
    """The event for a validated JSON alert from `device`."""
    technical = alert.kind is not DeviceAlertKind.OTHER
    return DeviceAlert(
        adapter=adapter,
        device_identifier=device.identifier,
        chair_id=device.chair_id,
        site_id=device.site_id,
        device_time=alert.device_time,
        received_time=received_time,
        alert_code=alert.code or "",
        alert_name="",
        text=alert.text,
        priority=alert.priority,
        source="technical" if technical else None,
        phase=None,
        state="active" if alert.active else "inactive",
        vital="spo2" if alert.kind is DeviceAlertKind.PROBE_OFF else None,
        value=None,
        message_id=reference,
        kind=alert.kind,
        active=alert.active,
        alert_id=alert.alert_id,
    )


class DatabaseAlertSenders:
    """Checks that a credential may report alerts for a device, and finds the device.

    The same rule as ingest: a device credential covers its own device, a gateway
    credential every device at its site; a revoked one is refused at once.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sender(self, identifier: str, credential: str | None) -> DeviceRef:
        """The device, bound where it is now; raises 401, 403 or 404 as HTTP ingest does."""
        if not credential:
            raise NotAuthenticated("a device credential is required")
        found = await self._db.run(_sender, identifier, token_hash(credential))
        if isinstance(found, VigilError):
            raise found
        return found


def _sender(session: Session, identifier: str, hashed: str) -> DeviceRef | VigilError:
    caller = auth_repository.find_device_caller(session, hashed)
    if caller is None:
        return NotAuthenticated("the device credential is unknown or revoked")
    row = session.execute(
        select(Device.id, Device.chair_id, Chair.site_id)
        .outerjoin(Chair, Device.chair_id == Chair.id)
        .where(Device.identifier == identifier)
    ).first()
    if row is None:
        return NotFoundError(
            f"unknown device {identifier!r}: no device is registered under that id"
        )
    device_id, chair_id, site_id = row
    allowed = (
        caller.device_id == device_id
        if caller.device_id is not None
        else site_id is not None and caller.site_id == site_id
    )
    if not allowed:
        return Forbidden(f"this credential may not send for device {identifier!r}")
    return DeviceRef(identifier, chair_id, site_id)
