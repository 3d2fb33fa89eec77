"""The signed-in person or device a request acts for."""

from __future__ import annotations

from dataclasses import dataclass

from app.storage.models import Role

_RANK = {Role.NURSE: 1, Role.CLINICIAN: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Principal:
    """A person, as one of their valid tokens identifies them."""

    user_id: int
    username: str
    display_name: str
    role: Role
    site_ids: frozenset[int] | None  # None: every site
    token_id: int

    def has_role(self, role: Role) -> bool:
        """Roles nest: a clinician may do what a nurse may, an admin what a clinician may."""
        return _RANK[self.role] >= _RANK[role]

    def may_see(self, site_id: int) -> bool:
        return self.site_ids is None or site_id in self.site_ids


@dataclass(frozen=True)
class DeviceCaller:
    """A device or gateway, as its ingest credential identifies it."""

    credential_id: int
    label: str
    device_id: int | None  # bound to one device…
    site_id: int | None  # …or a gateway for every device at one site

    @property
    def actor(self) -> str:
        return f"device-credential:{self.credential_id}"
