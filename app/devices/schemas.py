"""Devices and bindings as the registry API shows them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.params import RowId


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A registered device and where it is bound right now (what adapters look up)."""

    identifier: str
    chair_id: int | None
    site_id: int | None


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    identifier: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="What the device calls itself on the wire: its ingest device_id, an HL7 "
        "equipment or sending-application id (e.g. an EUI-64), or `bed:<unit/room/bed>`.",
        examples=["demo-monitor-09", "080019FFFE1443EC", "bed:HO Surgery/OR/1"],
    )
    kind: str = Field(
        default="multiparameter",
        min_length=1,
        max_length=40,
        description="Free text: multiparameter, oximeter, gateway, ...",
    )
    chair_id: RowId | None = Field(default=None, description="Bind to this chair at once.")


class BindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chair_id: RowId = Field(description="The chair whose sessions this device's samples join.")


class DeviceOut(BaseModel):
    identifier: str
    kind: str
    chair_id: int | None = Field(description="Bound chair; null when unbound.")
    chair_name: str | None
    site_id: int | None
    created_at: datetime
    last_received_time: datetime | None = Field(
        description="When Vigil last stored a sample from this device."
    )
    unbound_samples: int = Field(description="Samples kept from times it was bound to no chair.")


class UnboundSampleOut(BaseModel):
    id: int
    device_id: str
    vital: str
    value: float
    unit: str
    device_time: datetime
    received_time: datetime
    quality: list[str] = Field(description="Flags, always including `unbound`.")
