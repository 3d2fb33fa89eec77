"""Request and response bodies for sign-in, people, device credentials and the audit trail."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from app.auth.principal import Principal
from app.params import RowId
from app.storage.models import AuditEvent, DeviceCredential, Role, User

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)
    label: str = Field(default="api", min_length=1, max_length=80)


class NewTokenIn(BaseModel):
    label: str = Field(min_length=1, max_length=80, description="What the token is for.")
    days: int = Field(default=30, ge=1, le=365, description="Lifetime in days.")


class MeOut(BaseModel):
    user_id: int
    username: str
    display_name: str
    role: Role
    site_ids: list[int] | None = Field(description="Sites the user may see; null: every site.")

    @classmethod
    def of(cls, principal: Principal) -> MeOut:
        sites = None if principal.site_ids is None else sorted(principal.site_ids)
        return cls(
            user_id=principal.user_id,
            username=principal.username,
            display_name=principal.display_name,
            role=principal.role,
            site_ids=sites,
        )


class TokenOut(BaseModel):
    access_token: str = Field(description="Shown once; send as `Authorization: Bearer …`.")
    token_type: str = "bearer"
    expires_at: datetime
    user: MeOut


class UserIn(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    display_name: str = Field(min_length=1, max_length=80)
    role: Role
    password: str = Field(max_length=200)
    site_ids: list[RowId] = Field(default_factory=list, max_length=200)
    all_sites: bool = False


class UserPatch(BaseModel):
    display_name: str | None = Field(default=None, min_length=1, max_length=80)
    role: Role | None = None
    site_ids: list[RowId] | None = Field(default=None, max_length=200)
    all_sites: bool | None = None
    active: bool | None = None
    password: str | None = Field(default=None, max_length=200)
    unlock: bool = Field(default=False, description="End the waits failed sign-ins put on it.")


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: Role
    active: bool
    all_sites: bool
    site_ids: list[int]
    created_at: datetime

    @classmethod
    def of(cls, user: User, site_ids: list[int]) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            active=user.active,
            all_sites=user.all_sites,
            site_ids=site_ids,
            created_at=user.created_at,
        )


class RevokedOut(BaseModel):
    revoked: int


class DeviceCredentialIn(BaseModel):
    label: str = Field(min_length=1, max_length=80)
    device_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Bind to this one device…"
    )
    site_id: RowId | None = Field(
        default=None, description="…or make a gateway credential for every device at a site."
    )

    @model_validator(mode="after")
    def _one_binding(self) -> DeviceCredentialIn:
        if (self.device_id is None) == (self.site_id is None):
            raise ValueError("give exactly one of device_id or site_id")
        return self


class DeviceCredentialOut(BaseModel):
    id: int
    label: str
    device_id: str | None
    site_id: int | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @classmethod
    def of(cls, credential: DeviceCredential, device_identifier: str | None) -> DeviceCredentialOut:
        return cls(
            id=credential.id,
            label=credential.label,
            device_id=device_identifier,
            site_id=credential.site_id,
            created_at=credential.created_at,
            created_by=credential.created_by,
            revoked_at=credential.revoked_at,
        )


class IssuedDeviceCredentialOut(DeviceCredentialOut):
    token: str = Field(description="Shown once; the device sends `Authorization: Bearer …`.")


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    outcome: str
    target_type: str | None
    target_id: str | None
    site_id: int | None
    source: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            actor=event.actor,
            action=event.action,
            outcome=event.outcome,
            target_type=event.target_type,
            target_id=event.target_id,
            site_id=event.site_id,
            source=event.source,
            detail=json.loads(event.detail or "{}"),
        )
